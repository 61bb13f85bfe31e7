"""Recorded runs → one rosbag2 "drive" (MCAP storage, zstd-compressed chunks, via `rosbags`).

Runs are BorealTC's (`terrain-odt bag-from-borealtc`) or any robot's CSV recordings
(`terrain_odt.data.csvdata`, `terrain-odt bag-from-csv`): any class names, IMU rates and column
orders.

Topics:

- `/imu/data` `sensor_msgs/msg/Imu` at 100 Hz, `header.frame_id = "imu_link"`: angular velocity
  and linear acceleration from the CSV; orientation unknown (`orientation_covariance[0] = -1`,
  as `sensor_msgs/Imu` prescribes); the other covariances 0 ("unknown").
- `/odom` `nav_msgs/msg/Odometry` at the `pro_NN.csv` rate (about 6.5 Hz), frames
  `odom` → `base_link`: planar differential-drive dead reckoning from the wheel speeds,
  `v = (velL + velR) / 2`, `ω = (velR − velL) / TRACK_WIDTH_M` (midpoint heading per step).
- `/joint_states` `sensor_msgs/msg/JointState` at the `pro` rate (runs with wheel data): joints
  `left_wheel` and `right_wheel`, `velocity` = wheel ground speed / `wheel_radius_m` (rad/s),
  `effort` = the recorded motor effort (BorealTC: motor current, A), `position` integrated.
- `/terrain/label_truth` `std_msgs/msg/String` at 1 Hz: the class name of the current segment,
  for evaluation only.

Runs without wheel data get neither `/odom` nor `/joint_states` (the labeler then needs
`require_motion: false`).

Segments (`CLASS/NN[:START-END]`, seconds from the run's start) are laid end to end on one
clock: segment `k + 1` starts `gap_s` after the last IMU sample of segment `k`, the pose is carried
over (the robot "waits" during the gap). Stamps are `base_epoch_s + drive time`; bag log
times equal header stamps. The `gap_s` pause is longer than the feature extractor bridges, so
windows across a seam are rejected as gaps rather than mixing two terrains silently.

**Assumption:** `TRACK_WIDTH_M = 0.555` m for the Husky A200 (the value the project brief gives;
BorealTC does not state one). Husky is skid-steered, so the yaw rate from this formula is only
approximate (skid-steer slip makes the effective track wider); position is dead reckoning, not
ground truth.
"""

from __future__ import annotations

import math
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import borealtc

TRACK_WIDTH_M = 0.555
"""Husky A200 wheel track used for odometry (an assumption, see the module docstring)."""
WHEEL_RADIUS_M = 0.1651
"""Husky A200 wheel radius (13 in wheels; an assumption, BorealTC gives ground speeds): the
`/joint_states` velocities are ground speed / radius, and the feature node multiplies back."""
WHEEL_JOINTS = ("left_wheel", "right_wheel")
JOINT_TOPIC = "/joint_states"

IMU_TOPIC = "/imu/data"
ODOM_TOPIC = "/odom"
LABEL_TOPIC = "/terrain/label_truth"
IMU_FRAME = "imu_link"
ODOM_FRAME = "odom"
BASE_FRAME = "base_link"
DEFAULT_BASE_EPOCH_S = 1_700_000_000.0
"""Drive time 0 as a Unix time (fixed so conversions are reproducible byte for byte)."""

_SEG_RE = re.compile(r"^([A-Za-z0-9_]+)/([A-Za-z0-9_.-]+?)(?::([0-9.]+)-([0-9.]+))?$")

Progress = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Segment:
    """Part of a run: `[start_s, end_s]` seconds after the run's first IMU sample (None = end)."""

    terrain: str
    number: int | str
    start_s: float = 0.0
    end_s: float | None = None

    @classmethod
    def parse(cls, spec: str, classes: Sequence[str] | None = borealtc.CLASSES) -> Segment:
        """`CLASS/RUN` (whole run) or `CLASS/RUN:START-END`, e.g. `SNOW/06:30-65`; `classes`
        (default: BorealTC's) are the allowed class names, `None` allows any."""
        m = _SEG_RE.match(spec.strip())
        if not m:
            raise ValueError(f"bad segment {spec!r}: expected CLASS/RUN or CLASS/RUN:START-END")
        terrain, run = m.group(1), m.group(2)
        number: int | str = int(run) if run.isdigit() else run
        if classes is not None and terrain not in classes:
            raise ValueError(f"bad segment {spec!r}: unknown class {terrain!r}")
        if classes is borealtc.CLASSES and not isinstance(number, int):
            raise ValueError(f"bad segment {spec!r}: BorealTC runs are numbered")
        if m.group(3) is None:
            return cls(terrain, number)
        start, end = float(m.group(3)), float(m.group(4))
        if not end > start:
            raise ValueError(f"bad segment {spec!r}: END must be after START")
        return cls(terrain, number, start, end)

    @property
    def run_id(self) -> str:
        if isinstance(self.number, str):
            return f"{self.terrain}/{self.number}"
        return f"{self.terrain}/{self.number:02d}"

    def __str__(self) -> str:
        if self.end_s is None and self.start_s == 0:
            return self.run_id
        end = "end" if self.end_s is None else f"{self.end_s:g}"
        return f"{self.run_id}:{self.start_s:g}-{end}"

    def cut(self, run: borealtc.Run) -> tuple[np.ndarray, np.ndarray]:
        """IMU and proprioception rows of `run` inside this segment."""
        t0 = run.imu[0, 0]
        lo = t0 + self.start_s
        hi = t0 + self.end_s if self.end_s is not None else math.inf
        imu = run.imu[(run.imu[:, 0] >= lo) & (run.imu[:, 0] <= hi)]
        pro = run.pro[(run.pro[:, 0] >= lo) & (run.pro[:, 0] <= hi)] if len(run.pro) else run.pro
        if len(imu) < 2:
            raise ValueError(f"segment {self} holds {len(imu)} IMU samples (run is shorter?)")
        return imu, pro


@dataclass
class ConversionStats:
    """What `convert` wrote."""

    path: Path
    counts: dict[str, int]
    duration_s: float
    segments: list[tuple[str, float, float]]
    """(segment, drive start s, drive end s) per segment."""


def _stamp(ns: int) -> tuple[int, int]:
    return ns // 1_000_000_000, ns % 1_000_000_000


def convert(
    segments: Sequence[Segment | str],
    out: str | Path,
    *,
    root: str | Path | None = None,
    runs: dict[tuple[str, int | str], borealtc.Run] | None = None,
    base_epoch_s: float = DEFAULT_BASE_EPOCH_S,
    gap_s: float = 1.0,
    track_width_m: float = TRACK_WIDTH_M,
    wheel_radius_m: float = WHEEL_RADIUS_M,
    classes: Sequence[str] | None = borealtc.CLASSES,
    source: str = "BorealTC (CC0 1.0; LaRocque et al., IROS 2024)",
    label_rate_hz: float = 1.0,
    overwrite: bool = False,
    progress: Progress | None = _stderr,
) -> ConversionStats:
    """Write `segments` as one drive to `out`.

    `out` ending in `.mcap` gives a single MCAP file (readable by `rosbags` and by
    `ros2 bag play FILE.mcap`); any other path gives a rosbag2 directory (`metadata.yaml` plus
    the MCAP file). Runs come from `runs` when given (tests, CSV recordings), else are loaded
    from `root` (default `borealtc.default_root()`). `classes`: the class names segments may
    use (`None`: any).
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
    from rosbags.typesys import Stores, get_typestore

    say = progress or (lambda _msg: None)
    segs = [s if isinstance(s, Segment) else Segment.parse(s, classes) for s in segments]
    if not segs:
        raise ValueError("no segments given")
    if gap_s < 0 or track_width_m <= 0 or label_rate_hz <= 0 or wheel_radius_m <= 0:
        raise ValueError("gap_s must be >= 0, track_width_m, wheel_radius_m, label_rate_hz > 0")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass overwrite=True / --force)")

    ts = get_typestore(Stores.ROS2_KILTED)
    Imu = ts.types["sensor_msgs/msg/Imu"]
    Odometry = ts.types["nav_msgs/msg/Odometry"]
    String = ts.types["std_msgs/msg/String"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    Vector3 = ts.types["geometry_msgs/msg/Vector3"]
    Quaternion = ts.types["geometry_msgs/msg/Quaternion"]
    Point = ts.types["geometry_msgs/msg/Point"]
    Pose = ts.types["geometry_msgs/msg/Pose"]
    PoseWithCov = ts.types["geometry_msgs/msg/PoseWithCovariance"]
    Twist = ts.types["geometry_msgs/msg/Twist"]
    TwistWithCov = ts.types["geometry_msgs/msg/TwistWithCovariance"]
    JointState = ts.types["sensor_msgs/msg/JointState"]

    base_ns = round(base_epoch_s * 1e9)
    orient_cov = np.zeros(9)
    orient_cov[0] = -1.0
    zero9 = np.zeros(9)
    zero36 = np.zeros(36)
    unknown_q = Quaternion(x=0.0, y=0.0, z=0.0, w=1.0)

    def header(ns: int, frame: str) -> object:
        sec, nsec = _stamp(ns)
        return Header(stamp=Time(sec=sec, nanosec=nsec), frame_id=frame)

    # (log time ns, topic order, topic, cdr bytes); topic order keeps equal stamps deterministic
    records: list[tuple[int, int, str, bytes]] = []
    cache: dict[tuple[str, int | str], borealtc.Run] = dict(runs or {})
    wheel_pos = [0.0, 0.0]
    cursor = 0.0  # drive time of the next segment's first IMU sample
    x = y = yaw = 0.0
    placed: list[tuple[str, float, float]] = []
    for si, seg in enumerate(segs):
        key = (seg.terrain, seg.number)
        if key not in cache:
            if not isinstance(seg.number, int):
                raise ValueError(f"segment {seg}: no such run given")
            cache[key] = borealtc.load_run(seg.terrain, seg.number, root)
        imu, pro = seg.cut(cache[key])
        shift = cursor - imu[0, 0]  # run clock → drive clock
        t_imu = imu[:, 0] + shift
        ns_imu = base_ns + np.round(t_imu * 1e9).astype(np.int64)
        for ns, row in zip(ns_imu.tolist(), imu[:, 1:].tolist(), strict=True):
            msg = Imu(
                header=header(ns, IMU_FRAME),
                orientation=unknown_q,
                orientation_covariance=orient_cov,
                angular_velocity=Vector3(x=row[0], y=row[1], z=row[2]),
                angular_velocity_covariance=zero9,
                linear_acceleration=Vector3(x=row[3], y=row[4], z=row[5]),
                linear_acceleration_covariance=zero9,
            )
            records.append((ns, 0, IMU_TOPIC, bytes(ts.serialize_cdr(msg, Imu.__msgtype__))))

        # Odometry: integrate between consecutive pro samples with the mean of their commands.
        prev_t = prev_v = prev_w = None
        for t_run, vl, vr in pro[:, [0, 3, 4]].tolist():
            v = 0.5 * (vl + vr)
            w = (vr - vl) / track_width_m
            if prev_t is not None:
                dt = t_run - prev_t
                vm, wm = 0.5 * (v + prev_v), 0.5 * (w + prev_w)
                x += vm * dt * math.cos(yaw + 0.5 * wm * dt)
                y += vm * dt * math.sin(yaw + 0.5 * wm * dt)
                yaw = math.remainder(yaw + wm * dt, math.tau)
            prev_t, prev_v, prev_w = t_run, v, w
            ns = base_ns + round((t_run + shift) * 1e9)
            msg = Odometry(
                header=header(ns, ODOM_FRAME),
                child_frame_id=BASE_FRAME,
                pose=PoseWithCov(
                    pose=Pose(
                        position=Point(x=x, y=y, z=0.0),
                        orientation=Quaternion(
                            x=0.0, y=0.0, z=math.sin(0.5 * yaw), w=math.cos(0.5 * yaw)
                        ),
                    ),
                    covariance=zero36,
                ),
                twist=TwistWithCov(
                    twist=Twist(
                        linear=Vector3(x=v, y=0.0, z=0.0), angular=Vector3(x=0.0, y=0.0, z=w)
                    ),
                    covariance=zero36,
                ),
            )
            records.append((ns, 1, ODOM_TOPIC, bytes(ts.serialize_cdr(msg, Odometry.__msgtype__))))
        # Wheel joints: velocity in rad/s from the ground speed, effort as recorded.
        prev_tj = None
        for t_run, cl, cr, vl, vr in pro[:, :5].tolist():
            wl, wr = vl / wheel_radius_m, vr / wheel_radius_m
            if prev_tj is not None:
                wheel_pos[0] += wl * (t_run - prev_tj)
                wheel_pos[1] += wr * (t_run - prev_tj)
            prev_tj = t_run
            ns = base_ns + round((t_run + shift) * 1e9)
            msg = JointState(
                header=header(ns, BASE_FRAME),
                name=list(WHEEL_JOINTS),
                position=np.array(wheel_pos),
                velocity=np.array([wl, wr]),
                effort=np.array([cl, cr]),
            )
            records.append(
                (ns, 3, JOINT_TOPIC, bytes(ts.serialize_cdr(msg, JointState.__msgtype__)))
            )

        end = float(t_imu[-1])
        label = bytes(ts.serialize_cdr(String(data=seg.terrain), String.__msgtype__))
        for t_lab in np.arange(cursor, end + 1e-9, 1.0 / label_rate_hz).tolist():
            records.append((base_ns + round(t_lab * 1e9), 2, LABEL_TOPIC, label))
        placed.append((str(seg), cursor, end))
        say(
            f"[{si + 1}/{len(segs)}] {seg}: {len(imu)} IMU, {len(pro)} odom samples, "
            f"drive {cursor:.2f}-{end:.2f} s"
        )
        cursor = end + gap_s

    records.sort(key=lambda r: (r[0], r[1]))
    counts = {IMU_TOPIC: 0, ODOM_TOPIC: 0, LABEL_TOPIC: 0, JOINT_TOPIC: 0}
    present = {r[2] for r in records}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".bagconv-") as tmp:
        bag_dir = Path(tmp) / (out.stem if out.suffix == ".mcap" else out.name)
        writer = Writer(bag_dir, version=9, storage_plugin=StoragePlugin.MCAP)
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        writer.set_custom_data(
            "terrain_odt.source", f"{source}, converted by terrain_odt.data.bagconv"
        )
        writer.set_custom_data("terrain_odt.segments", " ".join(str(s) for s in segs))
        writer.set_custom_data("terrain_odt.track_width_m", f"{track_width_m:g}")
        writer.set_custom_data("terrain_odt.wheel_radius_m", f"{wheel_radius_m:g}")
        types = {
            IMU_TOPIC: Imu.__msgtype__,
            ODOM_TOPIC: Odometry.__msgtype__,
            LABEL_TOPIC: String.__msgtype__,
            JOINT_TOPIC: JointState.__msgtype__,
        }
        with writer:
            conns = {
                t: writer.add_connection(t, m, typestore=ts)
                for t, m in types.items()
                if t in present
            }
            step = max(len(records) // 10, 1)
            for i, (ns, _, topic, data) in enumerate(records):
                writer.write(conns[topic], ns, data)
                counts[topic] += 1
                if (i + 1) % step == 0 or i + 1 == len(records):
                    pct = 100 * (i + 1) // len(records)
                    say(f"writing {i + 1}/{len(records)} messages ({pct}%)")
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        if out.suffix == ".mcap":
            shutil.move(str(bag_dir / f"{bag_dir.name}.mcap"), out)
        else:
            shutil.move(str(bag_dir), out)
    say(f"wrote {out} ({_size(out) / 1e6:.2f} MB): {counts}")
    return ConversionStats(out, counts, placed[-1][2] - placed[0][1], placed)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
