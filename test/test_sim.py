"""terrain_odt.sim: the world description, the MuJoCo engine, the bag, the Gazebo export, and a
small closed loop (`make sim` on a small world, in-process co-processor)."""

from __future__ import annotations

import ast
import json
import math
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml

from terrain_odt.sim.drive import Drive, LabelEvent, OdomEvent
from terrain_odt.sim.mujoco_sim import MujocoSim, build_mjcf
from terrain_odt.sim.world import WorldError, load_world

pytest.importorskip("mujoco")  # the `sim` extra (make setup installs it)

ROOT = Path(__file__).resolve().parent.parent

# Five 4 m patches, a stadium 16 m long: one lap is about 41 m.
SMALL = """
name: small
seed: 3
terrains:
  ASPHALT: {friction: 0.9, rolling_friction: 0.002, contact_time_s: 0.01,
            roughness: {rms_m: 0.0003, wavelength_m: [0.1, 0.5]}}
  GRAVEL: {friction: 0.7, rolling_friction: 0.006, contact_time_s: 0.01,
           roughness: {rms_m: 0.0025, wavelength_m: [0.08, 0.2]}}
  GRASS: {friction: 0.6, rolling_friction: 0.012, contact_time_s: 0.02,
          roughness: {rms_m: 0.006, wavelength_m: [0.3, 2.0]}}
  SAND: {friction: 0.5, rolling_friction: 0.03, contact_time_s: 0.03,
         roughness: {rms_m: 0.003, wavelength_m: [0.15, 0.8]}}
  ICE: {friction: 0.12, rolling_friction: 0.001, contact_time_s: 0.01,
        roughness: {rms_m: 0.0003, wavelength_m: [0.2, 1.5]}}
patches:
  - {terrain: ASPHALT, x: [-2, 4], y: [-3, 3]}
  - {terrain: GRAVEL, x: [4, 8], y: [-3, 3]}
  - {terrain: GRASS, x: [8, 12], y: [-3, 3]}
  - {terrain: SAND, x: [12, 16], y: [-3, 3]}
  - {terrain: ICE, x: [16, 22], y: [-3, 3]}
robot: {start: [2.0, -1.5, 0.0], wheel_kv: 60.0}
route: {stadium: {x: [2.0, 18.0], y: [-1.5, 1.5]}, speed_mps: 1.0, laps: 2}
physics: {timestep_s: 0.0025, hfield_cell_m: 0.04}
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("world") / "small.yaml"
    p.write_text(SMALL)
    return p


def test_shipped_world_loads_and_gives_regions() -> None:
    w = load_world()
    assert sorted(w.class_names) == ["ASPHALT", "GRASS", "GRAVEL", "ICE", "SAND"]
    assert w.terrain_at(15.0, 0.0) == "GRAVEL" and w.terrain_at(100.0, 0.0) == ""
    params = w.node_params(wheels=False, model="m")
    lab = params["terrain_labeler"]["ros__parameters"]
    # Regions are in the odom frame: the start pose (2, -2) is the origin.
    assert lab["regions"][1] == "GRAVEL: 8,-2; 18,-2; 18,6; 8,6"
    assert params["imu_features"]["ros__parameters"]["input_decimation"] == 2
    from terrain_odt.pipeline.labeling import parse_regions

    assert len(parse_regions(lab["regions"], lab["class_names"])) == 5


@pytest.mark.parametrize(
    ("override", "match"),
    [
        (
            "patches=[{terrain: ICE, x: [0, 2], y: [0, 2]}, {terrain: ICE, x: [1, 3], y: [0, 2]}]",
            "overlap",
        ),
        ("patches=[{terrain: MUD, x: [0, 2], y: [0, 2]}]", "not one of the terrains"),
        ("terrains.ICE.friction=-1", "terrains.ICE.friction"),
        ("physics.timestep_s=0.003", "whole number of physics steps"),
        ("route.laps=0", "route.laps"),
        ("robot.wheel_count=6", "unknown key"),
    ],
)
def test_bad_world_is_refused(override: str, match: str) -> None:
    with pytest.raises(WorldError, match=match):
        load_world(overrides=[override])


def test_model_builds_and_runs_faster_than_real_time(small: Path) -> None:
    w = load_world(small)
    xml, heights = build_mjcf(w)
    ET.fromstring(xml)  # well-formed MJCF
    assert len(heights) == 5 and heights[1].std() > heights[0].std()
    sim = MujocoSim(w)
    assert sim.substeps == 2  # 200 Hz IMU on a 2.5 ms physics step
    rest = sim.step(0.0, 0.0)
    assert rest.accel[2] == pytest.approx(9.81, abs=0.3)  # gravity in the accelerometer
    n = 800  # 4 s
    t = time.perf_counter()
    for _ in range(n):
        tick = sim.step(6.0, 6.0)
    wall = time.perf_counter() - t
    assert n * sim.dt / wall > 2.0, f"{n * sim.dt / wall:.1f}x real time"
    assert tick.x > w.robot.start[0] + 2.0  # it drove forward
    assert abs(tick.wheel_vel[0] - 6.0) < 0.5 and tick.wheel_effort[0] > 0


def test_route_and_odometry_within_5_percent(small: Path) -> None:
    w = load_world(small, ["route.laps=1"])
    d = Drive(w, MujocoSim(w))
    labels, last = [], None
    for e in d.events():
        if isinstance(e, LabelEvent) and e.name != last:
            labels.append(e.name)
            last = e.name
        elif isinstance(e, OdomEvent):
            pass
    st = d.stats()
    assert st.route_done_s is not None  # the lap was completed
    assert st.truth_distance_m > 35
    assert st.distance_error is not None and st.distance_error < 0.05
    assert st.final_position_error_m < 2.0
    # Out and back over every patch.
    assert labels == ["ASPHALT", "GRAVEL", "GRASS", "SAND", "ICE", "SAND", "GRASS", "GRAVEL",
                      "ASPHALT"]  # fmt: skip


def test_external_cmd_vel_drives_the_robot(small: Path) -> None:
    w = load_world(small)
    d = Drive(w, MujocoSim(w), follow_route=False)
    yaw = 0.0
    for e in d.events(duration_s=2.0):
        d.set_cmd_vel(0.0, 0.5)
        if isinstance(e, OdomEvent):
            yaw = e.yaw
    assert yaw > 0.3  # turned left in place


def test_bag_has_the_topics(small: Path, tmp_path: Path) -> None:
    from rosbags.highlevel import AnyReader

    from terrain_odt import cli

    bag = tmp_path / "d.mcap"
    assert cli.main(["sim", "--world", str(small), "--bag", str(bag), "--duration", "6",
                     "--record-clock", "-q"]) == 0  # fmt: skip
    summary = json.loads(bag.with_suffix(".sim.json").read_text())
    assert summary["engine"] == "mujoco" and summary["sim_s"] == pytest.approx(6.0)
    with AnyReader([bag]) as r:
        types = {c.topic: c.msgtype for c in r.connections}
        counts: dict[str, int] = {}
        joint = imu = None
        for conn, _, raw in r.messages():
            counts[conn.topic] = counts.get(conn.topic, 0) + 1
            if conn.topic == "/joint_states" and joint is None:
                joint = r.deserialize(raw, conn.msgtype)
            if conn.topic == "/imu/data" and imu is None:
                imu = r.deserialize(raw, conn.msgtype)
    assert types == {
        "/imu/data": "sensor_msgs/msg/Imu",
        "/odom": "nav_msgs/msg/Odometry",
        "/joint_states": "sensor_msgs/msg/JointState",
        "/cmd_vel": "geometry_msgs/msg/Twist",
        "/terrain/label_truth": "std_msgs/msg/String",
        "/clock": "rosgraph_msgs/msg/Clock",
    }
    assert counts["/imu/data"] == 1200  # 200 Hz
    assert counts["/odom"] == counts["/joint_states"] == 300  # 50 Hz
    assert 6 <= counts["/terrain/label_truth"] <= 8  # 1 Hz + changes
    assert joint is not None and list(joint.name) == ["left_wheel", "right_wheel"]
    assert len(joint.velocity) == len(joint.effort) == 2
    assert imu is not None and imu.header.frame_id == "imu_link"


def test_gazebo_export_parses(small: Path, tmp_path: Path) -> None:
    from terrain_odt import cli

    out = tmp_path / "gz"
    assert cli.main(["sim", "--world", str(small), "--export-gazebo", str(out), "-q"]) == 0
    world = ET.parse(out / "world.sdf").getroot()
    assert world.tag == "sdf" and world.get("version") == "1.9"
    w = world.find("world")
    assert w is not None and w.get("name") == "small"
    plugins = {p.get("filename") for p in w.iter("plugin")}
    assert {"gz-sim-physics-system", "gz-sim-sensors-system", "gz-sim-imu-system"} <= plugins
    assert {i.findtext("uri") for i in w.iter("include")} == {
        "model://terrain_patches",
        "model://terrain_rover",
    }
    rover = ET.parse(out / "terrain_rover" / "model.sdf").getroot().find("model")
    assert rover is not None
    imu = next(s for s in rover.iter("sensor") if s.get("type") == "imu")
    assert float(imu.findtext("update_rate") or 0) == 200.0 and imu.findtext("topic") == "/imu"
    joints = {j.get("name") for j in rover.iter("joint") if j.get("type") == "revolute"}
    assert joints == {"front_left_wheel", "rear_left_wheel", "front_right_wheel",
                      "rear_right_wheel"}  # fmt: skip
    dd = next(p for p in rover.iter("plugin") if p.get("filename") == "gz-sim-diff-drive-system")
    assert [e.text for e in dd.iter("left_joint")] == ["front_left_wheel", "rear_left_wheel"]
    assert float(dd.findtext("wheel_radius") or 0) == pytest.approx(0.165)
    patches = ET.parse(out / "terrain_patches" / "model.sdf").getroot()
    links = list(patches.iter("link"))
    assert [lk.get("name") for lk in links][1] == "patch1_GRAVEL"
    mu = [float(lk.findtext("collision/surface/friction/ode/mu") or 0) for lk in links]
    assert mu == [0.9, 0.7, 0.6, 0.5, 0.12]
    obj = (out / "terrain_patches" / "meshes" / "patch1.obj").read_text().splitlines()
    assert sum(line.startswith("v ") for line in obj) == 101 * 151  # 4 m x 6 m at 4 cm
    bridge = yaml.safe_load((out / "bridge.yaml").read_text())
    by_ros = {b["ros_topic_name"]: b for b in bridge}
    assert set(by_ros) == {"/clock", "/imu/data", "/odom", "/tf", "/joint_states", "/cmd_vel"}
    assert by_ros["/cmd_vel"]["direction"] == "ROS_TO_GZ"
    assert by_ros["/imu/data"] == {
        "ros_topic_name": "/imu/data",
        "gz_topic_name": "/imu",
        "ros_type_name": "sensor_msgs/msg/Imu",
        "gz_type_name": "gz.msgs.IMU",
        "direction": "GZ_TO_ROS",
    }
    assert (
        by_ros["/joint_states"]["gz_topic_name"] == "/world/small/model/terrain_rover/joint_state"
    )
    params = yaml.safe_load((out / "terrain_odt_sim.yaml").read_text())
    feats = params["imu_features"]["ros__parameters"]
    assert feats["wheel_joints_left"] == ["front_left_wheel", "rear_left_wheel"]
    # The launch file: valid Python that exports with the same function.
    src = (ROOT / "launch" / "sim.launch.py").read_text()
    ast.parse(src)
    assert "export_gazebo" in src and "parameter_bridge" in src


def test_closed_loop_smoke(small: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import sim_closed_loop
    finally:
        sys.path.pop(0)
    res = sim_closed_loop.closed_loop(
        tmp_path,
        world=str(small),
        pretrain_set=(
            "seed=4",
            "route.speed_mps=1.5",
            "route.laps=1",
            "imu.mount_rpy_deg=[0,0,90]",
        ),
        coprocessor="qnn",
        wheels_variant=False,
    )
    for key in ("engine", "acc_before", "acc_after", "samples_trained", "sim_speed_x_realtime",
                "odom_distance_error"):  # fmt: skip
        assert res[key] is not None, key
    assert res["engine"] == "mujoco" and res["samples_trained"] > 10
    assert res["sim_speed_x_realtime"] > 2.0
    assert res["odom_distance_error"] < 0.05
    assert res["model"]["shape"] == [102, 64, 32, 5]
    assert 0.0 <= res["acc_before"] <= 1.0 and 0.0 <= res["acc_after"] <= 1.0
    assert math.isfinite(res["lap2_starts_s"]) and res["evaluated_windows"] > 10
    assert np.isclose(res["drive_sim_s"], res["lap2_starts_s"] * 2, rtol=0.2)


def test_live_node_publishes_and_follows_cmd_vel(small: Path) -> None:
    """`terrain-odt sim` (live): /clock, /imu/data, /odom, /joint_states arrive; /cmd_vel turns
    the robot."""
    import subprocess

    rclpy = pytest.importorskip("rclpy")
    from geometry_msgs.msg import Twist
    from nav_msgs.msg import Odometry
    from rclpy.qos import qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Imu, JointState

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("sim_probe", context=ctx)
    got: dict[str, list[object]] = {"clock": [], "imu": [], "odom": [], "joints": []}
    node.create_subscription(Clock, "/clock", got["clock"].append, 10)
    node.create_subscription(Imu, "/imu/data", got["imu"].append, qos_profile_sensor_data)
    node.create_subscription(Odometry, "/odom", got["odom"].append, 10)
    node.create_subscription(JointState, "/joint_states", got["joints"].append,
                             qos_profile_sensor_data)  # fmt: skip
    pub = node.create_publisher(Twist, "/cmd_vel", 10)
    ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    cmd = [sys.executable, "-m", "terrain_odt.cli", "sim", "--world", str(small),
           "--drive", "cmd_vel", "--duration", "6", "--rate", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t_end = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < t_end:
            ex.spin_once(timeout_sec=0.02)
            tw = Twist()
            tw.angular.z = 0.5
            pub.publish(tw)
        out = proc.communicate(timeout=10)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    assert proc.returncode == 0, out
    assert all(got.values()), {k: len(v) for k, v in got.items()}
    js = got["joints"][-1]
    assert list(js.name) == ["left_wheel", "right_wheel"]  # type: ignore[attr-defined]
    odom = got["odom"][-1]
    assert odom.twist.twist.angular.z > 0.2  # type: ignore[attr-defined]
