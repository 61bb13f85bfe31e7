"""BorealTC → rosbag2 conversion: synthetic round trips, the committed demo bag, the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from terrain_odt import cli
from terrain_odt.data import bagconv, borealtc
from terrain_odt.data.bagconv import IMU_TOPIC, JOINT_TOPIC, LABEL_TOPIC, ODOM_TOPIC, Segment
from terrain_odt.signals.features import Reject, WindowBuffer, extract_windows

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo" / "borealtc_demo.mcap"
TS = get_typestore(Stores.ROS2_KILTED)
TYPES = {
    IMU_TOPIC: "sensor_msgs/msg/Imu",
    ODOM_TOPIC: "nav_msgs/msg/Odometry",
    LABEL_TOPIC: "std_msgs/msg/String",
    JOINT_TOPIC: "sensor_msgs/msg/JointState",
}
DEMO_ORDER = ["ASPHALT", "FLOORING", "ICE", "SANDY_LOAM", "SNOW"] * 2


def read_bag(path: Path) -> dict:
    """Everything the tests look at, decoded."""
    out: dict = {
        "log": {t: [] for t in TYPES},
        "imu": [],
        "imu_stamp": [],
        "odom": [],
        "labels": [],
        "joints": [],
        "frames": set(),
    }
    with Reader(path) as reader:
        out["types"] = {c.topic: c.msgtype for c in reader.connections}
        for conn, log_ns, raw in reader.messages():
            out["log"][conn.topic].append(log_ns)
            msg = TS.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == IMU_TOPIC:
                av, la = msg.angular_velocity, msg.linear_acceleration
                out["imu"].append((av.x, av.y, av.z, la.x, la.y, la.z))
                out["imu_stamp"].append(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)
                out["frames"].add(msg.header.frame_id)
                out["orient_cov0"] = msg.orientation_covariance[0]
            elif conn.topic == ODOM_TOPIC:
                p, q = msg.pose.pose.position, msg.pose.pose.orientation
                out["odom"].append(
                    (
                        p.x,
                        p.y,
                        2 * math.atan2(q.z, q.w),
                        msg.twist.twist.linear.x,
                        msg.twist.twist.angular.z,
                    )
                )
                out["frames"].add((msg.header.frame_id, msg.child_frame_id))
            elif conn.topic == JOINT_TOPIC:
                assert list(msg.name) == list(bagconv.WHEEL_JOINTS)
                out["joints"].append((*msg.velocity, *msg.effort))
            else:
                out["labels"].append(msg.data)
    out["imu"] = np.array(out["imu"])
    out["imu_stamp"] = np.array(out["imu_stamp"], dtype=np.int64)
    out["odom"] = np.array(out["odom"])
    out["joints"] = np.array(out["joints"])
    return out


def synthetic_run(terrain: str, number: int, seconds: float, vl: float, vr: float) -> borealtc.Run:
    t = np.arange(round(seconds * 100)) / 100.0 + 1000.0  # run clocks do not start at 0
    rng = np.random.default_rng(number)
    imu = np.column_stack([t, rng.normal(size=(t.size, 6))])
    tp = np.arange(0.0, seconds, 1 / 6.5) + 1000.0
    cur = np.column_stack([np.full(tp.size, 3.0), np.full(tp.size, 4.0)])
    pro = np.column_stack([tp, cur, np.full(tp.size, vl), np.full(tp.size, vr)])
    return borealtc.Run(terrain, number, imu, pro)


# ---------------------------------------------------------------------------------------------


def test_segment_parse():
    assert Segment.parse("SNOW/06:30-65") == Segment("SNOW", 6, 30.0, 65.0)
    assert Segment.parse("ICE/3") == Segment("ICE", 3)
    assert str(Segment.parse("ICE/3")) == "ICE/03"
    assert str(Segment.parse("SANDY_LOAM/13:10.5-45")) == "SANDY_LOAM/13:10.5-45"
    for bad in ("GRASS/01", "SNOW", "SNOW/06:65-30", "SNOW/06:1-", "snow/06"):
        with pytest.raises(ValueError):
            Segment.parse(bad)


@pytest.mark.parametrize("single_file", [True, False])
def test_synthetic_round_trip(tmp_path: Path, single_file: bool):
    runs = {
        ("ASPHALT", 1): synthetic_run("ASPHALT", 1, 10.0, 0.5, 0.5),  # straight at 0.5 m/s
        ("ICE", 2): synthetic_run("ICE", 2, 8.0, -0.2, 0.2),  # turning in place
    }
    out = tmp_path / ("drive.mcap" if single_file else "drive_bag")
    stats = bagconv.convert(
        ["ASPHALT/01:2-6", "ICE/02"], out, runs=runs, base_epoch_s=1e9, gap_s=1.5, progress=None
    )
    assert out.is_file() == single_file
    assert out.is_dir() != single_file and (single_file or (out / "metadata.yaml").is_file())
    assert not list(tmp_path.glob(".bagconv-*"))  # temporary directory cleaned up
    bag = read_bag(out)
    assert bag["types"] == TYPES
    n_imu = 401 + 800
    assert stats.counts[IMU_TOPIC] == len(bag["imu"]) == n_imu
    # IMU values are copied exactly, in order.
    a = runs[("ASPHALT", 1)].imu
    expected = np.vstack([a[200:601, 1:], runs[("ICE", 2)].imu[:, 1:]])
    np.testing.assert_array_equal(bag["imu"], expected)
    # Stamps: base epoch + drive time; the second segment starts gap_s after the first ends.
    stamps = bag["imu_stamp"]
    assert stamps[0] == 10**18
    np.testing.assert_array_equal(stamps, bag["log"][IMU_TOPIC])
    assert np.all(np.diff(stamps) > 0)
    seam = np.diff(stamps).argmax()
    assert seam == 400 and np.diff(stamps)[seam] == 1_500_000_000
    assert stats.segments[1][1] == pytest.approx(4.0 + 1.5)
    # Odometry: straight 4 s at 0.5 m/s, then a spin in place at 0.4 / 0.555 rad/s.
    od = bag["odom"]
    seg1_odom = od[od[:, 3] > 0.1]
    assert np.all(seg1_odom[:, 1:3] == 0)  # y and yaw
    span = (len(seg1_odom) - 1) / 6.5
    assert seg1_odom[-1, 0] == pytest.approx(0.5 * span, rel=1e-6)
    spin = od[od[:, 4] > 0]
    np.testing.assert_allclose(spin[:, 4], 0.4 / bagconv.TRACK_WIDTH_M)
    np.testing.assert_allclose(spin[:, 0], seg1_odom[-1, 0])  # position frozen while spinning
    yaw_total = (len(spin) - 1) / 6.5 * 0.4 / bagconv.TRACK_WIDTH_M
    assert math.remainder(spin[-1, 2] - yaw_total, math.tau) == pytest.approx(0, abs=1e-6)
    # Wheel joints: velocity = ground speed / radius, effort = the recorded current.
    j = bag["joints"]
    assert len(j) == len(od) == stats.counts[JOINT_TOPIC]
    np.testing.assert_allclose(j[:, :2] * bagconv.WHEEL_RADIUS_M, od_speeds(od, j), rtol=1e-12)
    assert np.all(j[:, 2] == 3.0) and np.all(j[:, 3] == 4.0)
    # Labels at 1 Hz per segment.
    assert bag["labels"] == ["ASPHALT"] * 5 + ["ICE"] * 8
    assert bag["frames"] == {bagconv.IMU_FRAME, (bagconv.ODOM_FRAME, bagconv.BASE_FRAME)}
    assert bag["orient_cov0"] == -1.0
    # Existing output is not overwritten unless asked.
    with pytest.raises(FileExistsError):
        bagconv.convert(["ICE/02"], out, runs=runs, progress=None)
    bagconv.convert(["ICE/02"], out, runs=runs, progress=None, overwrite=True)
    assert len(read_bag(out)["imu"]) == 800


def od_speeds(od: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Left/right ground speeds implied by the odometry's v and yaw rate."""
    v, w = od[:, 3], od[:, 4]
    half = 0.5 * w * bagconv.TRACK_WIDTH_M
    return np.column_stack([v - half, v + half])


def test_segment_outside_run(tmp_path: Path):
    runs = {("ICE", 2): synthetic_run("ICE", 2, 8.0, 0.1, 0.1)}
    with pytest.raises(ValueError, match="IMU samples"):
        bagconv.convert(["ICE/02:20-30"], tmp_path / "x.mcap", runs=runs, progress=None)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    root = tmp_path / "borealtc"
    (root / "SNOW").mkdir(parents=True)
    run = synthetic_run("SNOW", 4, 3.0, 0.3, 0.3)
    np.savetxt(
        root / "SNOW" / "imu_04.csv",
        run.imu,
        delimiter=",",
        comments="",
        header=",".join(borealtc.IMU_COLUMNS),
    )
    np.savetxt(
        root / "SNOW" / "pro_04.csv",
        run.pro,
        delimiter=",",
        comments="",
        header=",".join(borealtc.PRO_COLUMNS),
    )
    out = tmp_path / "cli.mcap"
    assert cli.main(["bag-from-borealtc", "--root", str(root), "-o", str(out), "SNOW/04:0-2"]) == 0
    err = capsys.readouterr().err
    assert "[1/1] SNOW/04:0-2" in err and "100%" in err and "wrote" in err
    assert len(read_bag(out)["imu"]) == 201
    assert cli.main(["bag-from-borealtc", "-o", str(out), "GRASS/01"]) == 2
    with pytest.raises(SystemExit):
        cli.main([])


# ---------------------------------------------------------------------------------------------
# The committed demo bag (must work on a fresh clone).


@pytest.fixture(scope="module")
def demo() -> dict:
    assert DEMO.is_file(), "data/demo/borealtc_demo.mcap is missing (make demo-bag)"
    return read_bag(DEMO)


def test_demo_bag_contents(demo: dict):
    assert DEMO.stat().st_size < 4_000_000
    assert demo["types"] == TYPES
    counts = {t: len(v) for t, v in demo["log"].items()}
    assert counts == {IMU_TOPIC: 35010, ODOM_TOPIC: 2280, LABEL_TOPIC: 360, JOINT_TOPIC: 2280}
    for topic, log in demo["log"].items():
        assert np.all(np.diff(log) > 0), topic
    np.testing.assert_array_equal(demo["imu_stamp"], demo["log"][IMU_TOPIC])
    assert demo["imu_stamp"][0] == int(bagconv.DEFAULT_BASE_EPOCH_S) * 10**9
    assert np.isfinite(demo["imu"]).all()
    # Gravity is on z (about 9.8 m/s² on average, the robot is level-ish).
    assert 9.0 < demo["imu"][:, 5].mean() < 10.5
    # Labels: 36 per segment, 10 segments, in drive order.
    labels = demo["labels"]
    assert [labels[i] for i in range(0, 360, 36)] == DEMO_ORDER
    assert all(labels[i : i + 36] == [labels[i]] * 36 for i in range(0, 360, 36))
    assert demo["frames"] == {"imu_link", ("odom", "base_link")}
    # The rosbag2 metadata (with custom_data) is embedded in the single MCAP file.
    blob = DEMO.read_bytes()
    assert b"terrain_odt.segments" in blob and b"ASPHALT/01:60-95" in blob


def test_demo_bag_features(demo: dict):
    t = (demo["imu_stamp"] - demo["imu_stamp"][0]) / 1e9
    w = extract_windows(t, demo["imu"])
    # 10 segments of 35 s: 67 windows each; 5 windows overlap each of the 9 one-second pauses.
    assert len(w.features) == 10 * 67
    assert w.rejected == {Reject.GAP: 9 * 5}
    assert np.isfinite(w.features).all()
    # Streaming over the first two segments gives the same windows.
    n = 2 * 3501
    events = WindowBuffer().push_many(t[:n], demo["imu"][:n])
    acc = np.stack([e.features for e in events if e.accepted])
    head = extract_windows(t[:n], demo["imu"][:n]).features
    np.testing.assert_allclose(acc, head, atol=1e-5)


@pytest.mark.skipif(not borealtc.available(), reason="BorealTC not found (../shared/data)")
def test_demo_bag_matches_source(tmp_path: Path, demo: dict):
    """The first demo segment is the source run's samples, unchanged."""
    run = borealtc.load_run("ASPHALT", 1)
    imu, _ = Segment.parse("ASPHALT/01:60-95").cut(run)
    np.testing.assert_array_equal(demo["imu"][: len(imu)], imu[:, 1:])
