#!/usr/bin/env python3
"""ROS graph benchmark -> bench/results/ros.json (`make bench-ros`).

1. **Latency and CPU per node, live.** The three nodes run as separate processes, as
   `ros2 launch terrain_odt robot.launch.py` starts them (`python -m terrain_odt.nodes.<node>`
   with config/terrain_odt.yaml), the bridge talks to `odt-emu` paced as a 921600-baud UART,
   with the shipped model. This process publishes IMU in real time at 100 Hz and at 400 Hz
   (the demo bag's IMU, linearly interpolated to 400 Hz; `imu_features` then runs with
   `input_decimation` 4 so the model still sees 100 Hz), with the same drive's wheel joint
   states on `/joint_states` (the default model's wheel features), and subscribes to
   `/terrain/features` and `/terrain/prediction`.
   * latency: from publishing the IMU sample that ends a window (the first sample stamped at or
     after the window's end, which is the one that completes it) to receiving the window's
     prediction (inference over the emulated UART), matched by the window end stamp that
     `/terrain/prediction_window` carries (no labels are given, so every window is an
     inference request); with wheel features a window also waits for the wheel samples of
     its span (joint states at about 7 Hz here);
   * both IMU modes of `imu_features`: polling (`imu_poll_hz` 500, the default) and one
     callback per message (`imu_poll_hz` 0);
   * CPU share per node: user + system CPU time of each node process (from /proc) over the
     measured period divided by its wall time (1.0 = one core); also a no-op rclpy subscriber
     at the same rate, which is the floor rclpy + DDS put under any Python IMU node here.
2. **Replay speed.** `terrain-odt replay` of the demo bag (training on, no before pass) at 20x
   and 40x: achieved speed and IMU messages lost between the player and `imu_features`.

Numbers are wall-clock measurements on whatever machine runs this: the JSON records its
processor count and load average at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from terrain_odt.link.emulator import Emulator, find_emulator  # noqa: E402
from terrain_odt.signals.feature_msg import PREDICTION_WINDOW_TOPIC  # noqa: E402
from tools import provenance  # noqa: E402

OUT = ROOT / "bench" / "results" / "ros.json"
PARAMS = ROOT / "config" / "terrain_odt.yaml"
BAG = ROOT / "data" / "demo" / "borealtc_demo.mcap"
TICKS = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[bench_ros] {msg}", flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def demo_imu() -> np.ndarray:
    """(N, 6) IMU samples (wx wy wz ax ay az) of the demo bag's first segment."""
    from rosbags.highlevel import AnyReader

    rows = []
    with AnyReader([BAG]) as r:
        conns = [c for c in r.connections if c.topic == "/imu/data"]
        for c, _, raw in r.messages(connections=conns):
            m = r.deserialize(raw, c.msgtype)
            w, a = m.angular_velocity, m.linear_acceleration
            rows.append((w.x, w.y, w.z, a.x, a.y, a.z))
            if len(rows) >= 3400:
                break
    return np.asarray(rows)


def demo_joints(seconds: float) -> list[tuple[float, list[str], list[float], list[float]]]:
    """The demo bag's wheel joint states (`/joint_states`) of the same span as `demo_imu`:
    (seconds after the first IMU sample, names, velocities, efforts), in order."""
    from rosbags.highlevel import AnyReader

    out: list[tuple[float, list[str], list[float], list[float]]] = []
    t_imu0: int | None = None
    with AnyReader([BAG]) as r:
        conns = [c for c in r.connections if c.topic in ("/imu/data", "/joint_states")]
        for c, t_ns, raw in r.messages(connections=conns):
            if c.topic == "/imu/data":
                t_imu0 = t_ns if t_imu0 is None else t_imu0
                continue
            if t_imu0 is None:
                continue
            dt = (t_ns - t_imu0) * 1e-9
            if dt > seconds:
                break
            m = r.deserialize(raw, c.msgtype)
            out.append(
                (dt, list(m.name), [float(v) for v in m.velocity], [float(v) for v in m.effort])
            )
    return out


def upsample(x: np.ndarray, factor: int) -> np.ndarray:
    n = len(x)
    src = np.arange(n)
    dst = np.arange((n - 1) * factor + 1) / factor
    return np.stack([np.interp(dst, src, x[:, i]) for i in range(x.shape[1])], axis=1)


def start_node(name: str, params: dict[str, Any], env: dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", f"terrain_odt.nodes.{name}", "--ros-args"]
    cmd += ["--params-file", str(PARAMS)]
    for k, v in params.items():
        cmd += ["-p", f"{k}:={json.dumps(v)}"]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


NOOP_SUB = """
import sys, rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Imu
rclpy.init()
n = Node("noop_imu_subscriber")
qos = QoSProfile(history=qos_profile_sensor_data.history, depth=200,
                 reliability=qos_profile_sensor_data.reliability)
n.create_subscription(Imu, "/imu/data", lambda m: None, qos, raw=True)
ex = SingleThreadedExecutor(); ex.add_node(n)
try:
    ex.spin()
except BaseException:
    pass
"""


def live(
    rate_hz: int, seconds: float, emu_bin: Path, baud: int, poll_hz: float = 0.0
) -> dict[str, Any]:
    """Nodes as processes, IMU at `rate_hz` in real time; latency and CPU per node."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import Imu, JointState
    from std_msgs.msg import Float64MultiArray, String

    factor = rate_hz // 100
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["ROS_DOMAIN_ID"] = str(60 + factor)
    imu = upsample(demo_imu(), factor) if factor > 1 else demo_imu()
    procs: dict[str, subprocess.Popen] = {}
    with Emulator(emu_bin, baud=baud, model=ROOT / "models" / "borealtc_mlp.odtm") as emu:
        procs["imu_features"] = start_node(
            "imu_features", {"input_decimation": factor, "imu_poll_hz": poll_hz}, env
        )
        procs["terrain_labeler"] = start_node("terrain_labeler", {}, env)
        procs["odt_bridge"] = start_node(
            "odt_bridge", {"serial_port": emu.url, "baud_rate": baud}, env
        )
        procs["noop_subscriber"] = subprocess.Popen(
            [sys.executable, "-c", NOOP_SUB],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=60 + factor)
        node = Node("bench_ros", context=context)
        ex = SingleThreadedExecutor(context=context)
        ex.add_node(node)
        th = threading.Thread(target=ex.spin, daemon=True)
        th.start()
        qos = QoSProfile(
            history=qos_profile_sensor_data.history,
            depth=200,
            reliability=qos_profile_sensor_data.reliability,
        )
        pub = node.create_publisher(Imu, "/imu/data", qos)
        # The default model uses wheel features: the wheels' joint states of the same drive.
        jpub = node.create_publisher(JointState, "/joint_states", qos)
        joints = demo_joints(seconds + 1.0)
        feats: list[tuple[float, float]] = []  # (receipt wall, window end stamp)
        preds: list[float] = []
        # Window end stamp -> receipt of its answer (/terrain/prediction_window carries the
        # window of every answer, so a window without an answer cannot shift the pairing).
        answered: dict[float, float] = {}
        node.create_subscription(
            Float64MultiArray,
            "/terrain/features",
            lambda m: feats.append((time.monotonic(), float(m.data[1]))),
            100,
        )
        node.create_subscription(
            String, "/terrain/prediction", lambda m: preds.append(time.monotonic()), 100
        )
        node.create_subscription(
            Float64MultiArray,
            PREDICTION_WINDOW_TOPIC,
            lambda m: answered.setdefault(round(float(m.data[1]), 6), time.monotonic()),
            100,
        )
        try:
            deadline = time.monotonic() + 60
            while pub.get_subscription_count() < 2:  # imu_features + no-op subscriber
                if time.monotonic() > deadline:
                    raise RuntimeError("nodes did not subscribe to /imu/data")
                time.sleep(0.05)
            time.sleep(3.0)  # the bridge connects and configures
            n = min(len(imu), int(seconds * rate_hz))
            t0_ns = 1_700_000_000_000_000_000
            stamps = t0_ns + (np.arange(n) * 1_000_000_000) // rate_hz
            pub_wall = np.zeros(n)
            warm = int(5 * rate_hz)  # CPU measured after 5 s
            cpu0: dict[str, float] = {}
            wall_cpu0 = 0.0
            start = time.monotonic()
            j = 0
            for i in range(n):
                due = start + i / rate_hz
                d = due - time.monotonic()
                if d > 0:
                    time.sleep(d)
                if i == warm:
                    cpu0 = {k: cpu_seconds(p.pid) for k, p in procs.items()}
                    cpu0["odt-emu"] = cpu_seconds(emu.proc.pid)
                    wall_cpu0 = time.monotonic()
                m = Imu()
                m.header.stamp.sec = int(stamps[i] // 1_000_000_000)
                m.header.stamp.nanosec = int(stamps[i] % 1_000_000_000)
                m.header.frame_id = "imu_link"
                m.orientation_covariance[0] = -1.0
                w = imu[i]
                m.angular_velocity.x, m.angular_velocity.y, m.angular_velocity.z = map(float, w[:3])
                a = m.linear_acceleration
                a.x, a.y, a.z = map(float, w[3:])
                pub.publish(m)
                pub_wall[i] = time.monotonic()
                while j < len(joints) and joints[j][0] <= i / rate_hz:
                    dt, names, vel, eff = joints[j]
                    js = JointState()
                    t_js = t0_ns + round(dt * 1e9)
                    js.header.stamp.sec, js.header.stamp.nanosec = divmod(t_js, 1_000_000_000)
                    js.name, js.velocity, js.effort = names, vel, eff
                    jpub.publish(js)
                    j += 1
            cpu1 = {k: cpu_seconds(p.pid) for k, p in procs.items()}
            cpu1["odt-emu"] = cpu_seconds(emu.proc.pid)
            wall = time.monotonic() - wall_cpu0
            time.sleep(1.0)
        finally:
            ex.shutdown()
            node.destroy_node()
            rclpy.shutdown(context=context)
            for p in procs.values():
                p.send_signal(2)
            for p in procs.values():
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
    # Latency: window end stamp -> the IMU sample that completed it -> its publish time.
    lat_pred, lat_feat = [], []
    stamp_s = stamps / 1e9
    for t_recv, t_end in feats:
        idx = int(np.searchsorted(stamp_s, t_end - 1e-6))
        if idx >= n:
            continue
        lat_feat.append(t_recv - pub_wall[idx])
        t_ans = answered.get(round(t_end, 6))
        if t_ans is not None:
            lat_pred.append(t_ans - pub_wall[idx])
    lp = np.asarray(lat_pred) * 1e3
    lf = np.asarray(lat_feat) * 1e3
    share = {k: round((cpu1[k] - cpu0[k]) / wall, 4) for k in cpu1}
    return {
        "imu_rate_hz": rate_hz,
        "input_decimation": factor,
        "imu_poll_hz": poll_hz,
        "seconds": round(n / rate_hz, 1),
        "imu_published": n,
        "windows": len(feats),
        "predictions": len(preds),
        "latency_window_end_to_prediction_ms": {
            "p50": round(float(np.percentile(lp, 50)), 2) if lp.size else None,
            "p99": round(float(np.percentile(lp, 99)), 2) if lp.size else None,
            "max": round(float(lp.max()), 2) if lp.size else None,
            "n": int(lp.size),
        },
        "latency_window_end_to_features_ms": {
            "p50": round(float(np.percentile(lf, 50)), 2) if lf.size else None,
            "p99": round(float(np.percentile(lf, 99)), 2) if lf.size else None,
        },
        "cpu_share": share,
        "cpu_note": "CPU seconds per wall second of each process, 1.0 = one core; "
        "noop_subscriber is an rclpy node that only receives the same IMU stream",
    }


def replay_speed(rate: float) -> dict[str, Any]:
    from terrain_odt.evaluation.replay import ReplayConfig, replay

    cfg = ReplayConfig(
        bag=BAG,
        param_files=(PARAMS,),
        rate=rate,
        operator_until=180.0,
        compare_frozen=False,
        domain_id=70,
    )
    rep = replay(cfg, out_dir=None, log=log)
    p = rep["passes"]["after"]
    return {
        "requested_rate": rate,
        "replay_speed": p["replay_speed"],
        "imu_published": p["messages_published"].get("/imu/data"),
        "imu_lost": p["imu_lost"],
        "windows_rejected": {
            k: v for k, v in p["features"].items() if k.startswith("windows_rejected_")
        },
        "graph_cpu_s": p["graph_process"].get("cpu_s"),
        "wall_s": p["wall_s"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="live phase length per rate")
    ap.add_argument("--rates", type=int, nargs="+", default=[100, 400])
    ap.add_argument(
        "--polls",
        type=float,
        nargs="+",
        default=[500.0, 0.0],
        help="imu_features imu_poll_hz values to measure (500 = the default polling mode, "
        "0 = one callback per message)",
    )
    ap.add_argument("--replay-rates", type=float, nargs="+", default=[20.0, 40.0])
    ap.add_argument("--baud", type=int, default=921600)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--allow-dirty", action="store_true", help=provenance.ALLOW_DIRTY_HELP)
    args = ap.parse_args(argv)
    git = provenance.record(ROOT, [args.out], args.allow_dirty)
    emu_bin = find_emulator(build=True, log=log)
    if emu_bin is None:
        raise SystemExit("odt-emu not available (cargo missing?)")
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg(),
        },
        **git,
        "emulated_baud": args.baud,
        "live": [],
        "replay": [],
    }
    for rate in args.rates:
        for poll in args.polls:
            log(f"live graph, IMU at {rate} Hz for {args.seconds:g} s, imu_poll_hz {poll:g}")
            r = live(rate, args.seconds, emu_bin, args.baud, poll)
            log(
                f"  latency p50/p99 {r['latency_window_end_to_prediction_ms']['p50']}/"
                f"{r['latency_window_end_to_prediction_ms']['p99']} ms, cpu {r['cpu_share']}"
            )
            result["live"].append(r)
    for rate in args.replay_rates:
        log(f"replay of the demo bag at {rate:g}x")
        r = replay_speed(rate)
        log(f"  {r['replay_speed']}x, {r['imu_lost']} IMU messages lost")
        result["replay"].append(r)
    result["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
