"""BorealTC runs → one rosbag2 "drive" (MCAP storage, zstd-compressed chunks, via `rosbags`).

Topics:

- `/imu/data` `sensor_msgs/msg/Imu` at 100 Hz, `header.frame_id = "imu_link"`: angular velocity
  and linear acceleration from the CSV; orientation unknown (`orientation_covariance[0] = -1`,
  as `sensor_msgs/Imu` prescribes); the other covariances 0 ("unknown").
- `/odom` `nav_msgs/msg/Odometry` at the `pro_NN.csv` rate (about 6.5 Hz), frames
  `odom` → `base_link`: planar differential-drive dead reckoning from the wheel speeds,
  `v = (velL + velR) / 2`, `ω = (velR − velL) / TRACK_WIDTH_M` (midpoint heading per step).
- `/terrain/label_truth` `std_msgs/msg/String` at 1 Hz: the class name of the current segment,
  for evaluation only.

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

IMU_TOPIC = "/imu/data"
ODOM_TOPIC = "/odom"
LABEL_TOPIC = "/terrain/label_truth"
IMU_FRAME = "imu_link"
ODOM_FRAME = "odom"
BASE_FRAME = "base_link"
DEFAULT_BASE_EPOCH_S = 1_700_000_000.0
"""Drive time 0 as a Unix time (fixed so conversions are reproducible byte for byte)."""

_SEG_RE = re.compile(r"^([A-Z_]+)/(\d+)(?::([0-9.]+)-([0-9.]+))?$")

Progress = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Segment:
    """Part of a run: `[start_s, end_s]` seconds after the run's first IMU sample (None = end)."""

    terrain: str
    number: int
    start_s: float = 0.0
    end_s: float | None = None

    @classmethod
    def parse(cls, spec: str) -> Segment:
        """`CLASS/NN` (whole run) or `CLASS/NN:START-END`, e.g. `SNOW/06:30-65`."""
        m = _SEG_RE.match(spec.strip())
        if not m:
            raise ValueError(f"bad segment {spec!r}: expected CLASS/NN or CLASS/NN:START-END")
        terrain, number = m.group(1), int(m.group(2))
        if terrain not in borealtc.CLASSES:
            raise ValueError(f"bad segment {spec!r}: unknown class {terrain!r}")
        if m.group(3) is None:
            return cls(terrain, number)
        start, end = float(m.group(3)), float(m.group(4))
        if not end > start:
            raise ValueError(f"bad segment {spec!r}: END must be after START")
        return cls(terrain, number, start, end)

    def __str__(self) -> str:
        if self.end_s is None and self.start_s == 0:
            return f"{self.terrain}/{self.number:02d}"
        end = "end" if self.end_s is None else f"{self.end_s:g}"
        return f"{self.terrain}/{self.number:02d}:{self.start_s:g}-{end}"

    def cut(self, run: borealtc.Run) -> tuple[np.ndarray, np.ndarray]:
        """IMU and proprioception rows of `run` inside this segment."""
        t0 = run.imu[0, 0]
        lo = t0 + self.start_s
        hi = t0 + self.end_s if self.end_s is not None else math.inf
        imu = run.imu[(run.imu[:, 0] >= lo) & (run.imu[:, 0] <= hi)]
        pro = run.pro[(run.pro[:, 0] >= lo) & (run.pro[:, 0] <= hi)]
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
    runs: dict[tuple[str, int], borealtc.Run] | None = None,
    base_epoch_s: float = DEFAULT_BASE_EPOCH_S,
    gap_s: float = 1.0,
    track_width_m: float = TRACK_WIDTH_M,
    label_rate_hz: float = 1.0,
    overwrite: bool = False,
    progress: Progress | None = _stderr,
) -> ConversionStats:
    """Write `segments` as one drive to `out`.

    `out` ending in `.mcap` gives a single MCAP file (readable by `rosbags` and by
    `ros2 bag play FILE.mcap`); any other path gives a rosbag2 directory (`metadata.yaml` plus
    the MCAP file). Runs come from `runs` when given (tests), else are loaded from `root`
    (default `borealtc.default_root()`).
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
    from rosbags.typesys import Stores, get_typestore

    say = progress or (lambda _msg: None)
    segs = [s if isinstance(s, Segment) else Segment.parse(s) for s in segments]
    if not segs:
        raise ValueError("no segments given")
    if gap_s < 0 or track_width_m <= 0 or label_rate_hz <= 0:
        raise ValueError("gap_s must be >= 0, track_width_m and label_rate_hz > 0")
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
    cache: dict[tuple[str, int], borealtc.Run] = dict(runs or {})
    cursor = 0.0  # drive time of the next segment's first IMU sample
    x = y = yaw = 0.0
    placed: list[tuple[str, float, float]] = []
    for si, seg in enumerate(segs):
        key = (seg.terrain, seg.number)
        if key not in cache:
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
    counts = {IMU_TOPIC: 0, ODOM_TOPIC: 0, LABEL_TOPIC: 0}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".bagconv-") as tmp:
        bag_dir = Path(tmp) / (out.stem if out.suffix == ".mcap" else out.name)
        writer = Writer(bag_dir, version=9, storage_plugin=StoragePlugin.MCAP)
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        writer.set_custom_data(
            "terrain_odt.source",
            "BorealTC (CC0 1.0; LaRocque et al., IROS 2024), converted by terrain_odt.bagconv",
        )
        writer.set_custom_data("terrain_odt.segments", " ".join(str(s) for s in segs))
        writer.set_custom_data("terrain_odt.track_width_m", f"{track_width_m:g}")
        with writer:
            conns = {
                IMU_TOPIC: writer.add_connection(IMU_TOPIC, Imu.__msgtype__, typestore=ts),
                ODOM_TOPIC: writer.add_connection(ODOM_TOPIC, Odometry.__msgtype__, typestore=ts),
                LABEL_TOPIC: writer.add_connection(LABEL_TOPIC, String.__msgtype__, typestore=ts),
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
