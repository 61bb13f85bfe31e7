"""Offline mode: a simulated drive written to a rosbag2 (MCAP, via `rosbags`), deterministic.

    terrain-odt sim --bag build/sim/drive.mcap [--world W.yaml] [--set route.speed_mps=0.6]

Topics (stamps = `base_epoch_s` + drive time; log time = header stamp, as `bagconv` writes):

- `/imu/data` `sensor_msgs/msg/Imu` at `imu.rate_hz`, frame `imu.frame_id`: gyro and
  accelerometer (gravity included); orientation unknown (`orientation_covariance[0] = -1`).
- `/odom` `nav_msgs/msg/Odometry` at `sensors.odom_rate_hz`, `odom` → `base_link`: the wheel
  odometry (speed from the wheels, yaw rate from the gyro by default).
- `/joint_states` `sensor_msgs/msg/JointState` at `sensors.joint_state_rate_hz`: joints
  `left_wheel`, `right_wheel` (the side averages of the two wheels): position (rad), velocity
  (rad/s), effort (motor torque, N·m).
- `/cmd_vel` `geometry_msgs/msg/Twist` at `sensors.cmd_rate_hz`: the route follower's command.
- `/terrain/label_truth` `std_msgs/msg/String` at `sensors.label_rate_hz` and on every change:
  the class of the patch under the chassis ('' off the map), for evaluation only.
- `/clock` `rosgraph_msgs/msg/Clock` only with `record_clock` (players such as `ros2 bag play
  --clock` and `terrain-odt replay` make their own from the log times, and would repeat it).

The returned summary (also stored in the bag's metadata as `terrain_odt.sim`) has the drive's
sim and wall time, the odometry check and the lap start times (seconds from the bag's first
message, which is at drive time 0: what `terrain-odt evaluate --evaluate-from` counts).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .drive import CmdEvent, Drive, ImuEvent, JointEvent, LabelEvent, OdomEvent
from .world import World

__all__ = ["DEFAULT_BASE_EPOCH_S", "JOINT_NAMES", "TOPICS", "record_drive"]

DEFAULT_BASE_EPOCH_S = 1_700_000_000.0
JOINT_NAMES = ("left_wheel", "right_wheel")
TOPICS = {
    "/imu/data": "sensor_msgs/msg/Imu",
    "/odom": "nav_msgs/msg/Odometry",
    "/joint_states": "sensor_msgs/msg/JointState",
    "/cmd_vel": "geometry_msgs/msg/Twist",
    "/terrain/label_truth": "std_msgs/msg/String",
    "/clock": "rosgraph_msgs/msg/Clock",
}


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def record_drive(
    world: World,
    out: str | Path,
    *,
    duration_s: float | None = None,
    base_epoch_s: float = DEFAULT_BASE_EPOCH_S,
    record_clock: bool = False,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = _stderr,
    engine: Any = None,
) -> dict[str, Any]:
    """Simulate the world's route (or `duration_s` of it) and write the bag `out` (`.mcap`:
    one file; else a rosbag2 directory). Returns the summary."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
    from rosbags.typesys import Stores, get_typestore

    say = progress or (lambda _m: None)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass overwrite=True / --force)")
    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types
    Imu, Odometry, JointState = (
        T["sensor_msgs/msg/Imu"],
        T["nav_msgs/msg/Odometry"],
        T["sensor_msgs/msg/JointState"],
    )
    Twist, String, Clock = (
        T["geometry_msgs/msg/Twist"],
        T["std_msgs/msg/String"],
        T["rosgraph_msgs/msg/Clock"],
    )
    Header, Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]
    Vector3, Quaternion, Point = (
        T["geometry_msgs/msg/Vector3"],
        T["geometry_msgs/msg/Quaternion"],
        T["geometry_msgs/msg/Point"],
    )
    Pose, PoseCov = T["geometry_msgs/msg/Pose"], T["geometry_msgs/msg/PoseWithCovariance"]
    TwistCov = T["geometry_msgs/msg/TwistWithCovariance"]
    orient_cov = np.zeros(9)
    orient_cov[0] = -1.0
    zero9, zero36 = np.zeros(9), np.zeros(36)
    unknown_q = Quaternion(x=0.0, y=0.0, z=0.0, w=1.0)
    base_ns = round(base_epoch_s * 1e9)
    imu_frame = world.imu.frame_id

    if engine is None:
        from .mujoco_sim import MujocoSim

        engine = MujocoSim(world)
    drive = Drive(world, engine)

    def stamp(ns: int) -> Any:
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    counts = dict.fromkeys(TOPICS, 0)
    out.parent.mkdir(parents=True, exist_ok=True)
    t_wall = time.monotonic()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".sim-") as tmp:
        bag_dir = Path(tmp) / (out.stem if out.suffix == ".mcap" else out.name)
        writer = Writer(bag_dir, version=9, storage_plugin=StoragePlugin.MCAP)
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        writer.set_custom_data(
            "terrain_odt.source", f"terrain_odt.sim (MuJoCo), world {world.name}"
        )
        with writer:
            topics = {k: v for k, v in TOPICS.items() if record_clock or k != "/clock"}
            conns = {t: writer.add_connection(t, m, typestore=ts) for t, m in topics.items()}

            def put(topic: str, ns: int, msg: Any) -> None:
                writer.write(conns[topic], ns, bytes(ts.serialize_cdr(msg, TOPICS[topic])))
                counts[topic] += 1

            next_report = 30.0
            last_clock = -1
            for e in drive.events(duration_s):
                ns = base_ns + round(e.t * 1e9)
                if record_clock and ns // 10_000_000 != last_clock:  # at most 100 Hz
                    last_clock = ns // 10_000_000
                    put("/clock", ns, Clock(clock=stamp(ns)))
                if isinstance(e, ImuEvent):
                    put(
                        "/imu/data",
                        ns,
                        Imu(
                            header=Header(stamp=stamp(ns), frame_id=imu_frame),
                            orientation=unknown_q,
                            orientation_covariance=orient_cov,
                            angular_velocity=Vector3(x=e.gyro[0], y=e.gyro[1], z=e.gyro[2]),
                            angular_velocity_covariance=zero9,
                            linear_acceleration=Vector3(x=e.accel[0], y=e.accel[1], z=e.accel[2]),
                            linear_acceleration_covariance=zero9,
                        ),
                    )
                elif isinstance(e, JointEvent):
                    put(
                        "/joint_states",
                        ns,
                        JointState(
                            header=Header(stamp=stamp(ns), frame_id="base_link"),
                            name=list(JOINT_NAMES),
                            position=np.array(e.position),
                            velocity=np.array(e.velocity),
                            effort=np.array(e.effort),
                        ),
                    )
                elif isinstance(e, OdomEvent):
                    put(
                        "/odom",
                        ns,
                        Odometry(
                            header=Header(stamp=stamp(ns), frame_id="odom"),
                            child_frame_id="base_link",
                            pose=PoseCov(
                                pose=Pose(
                                    position=Point(x=e.x, y=e.y, z=0.0),
                                    orientation=Quaternion(
                                        x=0.0,
                                        y=0.0,
                                        z=math.sin(0.5 * e.yaw),
                                        w=math.cos(0.5 * e.yaw),
                                    ),
                                ),
                                covariance=zero36,
                            ),
                            twist=TwistCov(
                                twist=Twist(
                                    linear=Vector3(x=e.v, y=0.0, z=0.0),
                                    angular=Vector3(x=0.0, y=0.0, z=e.w),
                                ),
                                covariance=zero36,
                            ),
                        ),
                    )
                elif isinstance(e, CmdEvent):
                    put(
                        "/cmd_vel",
                        ns,
                        Twist(
                            linear=Vector3(x=e.v, y=0.0, z=0.0),
                            angular=Vector3(x=0.0, y=0.0, z=e.w),
                        ),
                    )
                elif isinstance(e, LabelEvent):
                    put("/terrain/label_truth", ns, String(data=e.name))
                if e.t >= next_report:
                    say(f"sim {e.t:.0f} s ({e.t / (time.monotonic() - t_wall):.1f}x real time)")
                    next_report += 30.0
            wall = time.monotonic() - t_wall
            st = drive.stats()
            summary: dict[str, Any] = {
                "engine": "mujoco",
                "engine_version": _mujoco_version(),
                "world": world.name,
                "bag": str(out),
                "sim_s": round(st.sim_s, 6),
                "wall_s": round(wall, 3),
                "sim_speed_x_realtime": round(st.sim_s / wall, 2) if wall > 0 else None,
                "odom_distance_m": round(st.odom_distance_m, 4),
                "truth_distance_m": round(st.truth_distance_m, 4),
                "odom_distance_error": (
                    round(st.distance_error, 6) if st.distance_error is not None else None
                ),
                "odom_final_position_error_m": round(st.final_position_error_m, 4),
                "lap_starts_s": [round(v, 6) for v in st.lap_starts_s],
                "route_done_s": st.route_done_s,
                "messages": {k: v for k, v in counts.items() if v},
                "world_description": world.source,
            }
            writer.set_custom_data("terrain_odt.sim", json.dumps(summary, sort_keys=True))
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        if out.suffix == ".mcap":
            shutil.move(str(bag_dir / f"{bag_dir.name}.mcap"), out)
        else:
            shutil.move(str(bag_dir), out)
    say(
        f"wrote {out}: {st.sim_s:.1f} s simulated in {wall:.1f} s "
        f"({summary['sim_speed_x_realtime']}x real time), odometry distance "
        f"{st.odom_distance_m:.2f} m vs true {st.truth_distance_m:.2f} m"
    )
    return summary


def _mujoco_version() -> str | None:
    try:
        import mujoco

        return str(mujoco.__version__)
    except ImportError:
        return None
