"""The three rclpy nodes, started by terrain_odt.ros.launcher.running_graph (real rclpy, real DDS on
localhost, see conftest.py), driven by a probe node with real publishers and subscribers in the
same context; odt_bridge talks to the co-processor emulator (firmware/odt-emu) over TCP.

Shown: imu_features windows a clean stream and survives bad input (NaN/inf values, out-of-order
stamps, clock jumps both ways, undecodable messages) with counted rejections and a logged
warning; terrain_labeler puts an operator label in force after settle_s and refuses unknown
names; odt_bridge publishes prediction, confidence and accuracy, answers its four services and
reports link and trainer health on /diagnostics; the whole graph runs with one executor per
node; wrong parameter values stop the launch with a LaunchError naming the parameter.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import Odometry
from polling import wait_for
from rcl_interfaces.msg import Log
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Imu
from std_msgs.msg import Float32, Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger

from terrain_odt.link.emulator import Emulator, free_port
from terrain_odt.ros.graph import IMU_FEATURES, NODES, ODT_BRIDGE, TERRAIN_LABELER, NodeSpec
from terrain_odt.ros.launcher import LaunchError, running_graph
from terrain_odt.signals.feature_msg import features_message
from terrain_odt.signals.features import FeatureConfig, WindowEvent, extract_windows

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "terrain_odt.yaml"
BLOB = ROOT / "models" / "borealtc_imu_mlp.odtm"
CLASSES = ("ASPHALT", "FLOORING", "ICE", "SANDY_LOAM", "SNOW")
LATCHED = QoSProfile(
    depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
ROSOUT = QoSProfile(
    depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
WARN = 30  # rcl_interfaces/Log level


@pytest.fixture
def emu(emu_bin: Path, tmp_path: Path) -> Iterator[Emulator]:
    with Emulator(emu_bin, model=BLOB, flash=tmp_path / "flash.bin", tcp_port=0) as e:
        yield e


class Probe(Node):
    """The test's node: records what arrives on subscribed topics and /rosout."""

    def __init__(self, context: Any) -> None:
        super().__init__("terrain_odt_test_probe", context=context)
        self._lock = threading.Lock()
        self._got: dict[str, list[tuple[float, Any]]] = {}
        self.listen("/rosout", Log, ROSOUT)

    def listen(self, topic: str, msg_type: Any, qos: Any = 50) -> Any:
        self._got.setdefault(topic, [])

        def cb(msg: Any) -> None:
            with self._lock:
                self._got[topic].append((time.monotonic(), msg))

        return self.create_subscription(msg_type, topic, cb, qos)

    def got(self, topic: str, since: float = -math.inf) -> list[Any]:
        with self._lock:
            return [m for t, m in self._got[topic] if t >= since]

    def got_timed(self, topic: str) -> list[tuple[float, Any]]:
        with self._lock:
            return list(self._got[topic])

    def logs(self, node: str, contains: str, level: int = WARN) -> list[str]:
        return [
            m.msg
            for m in self.got("/rosout")
            if m.name == node and m.level == level and contains in m.msg
        ]

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 20.0) -> Any:
        client = self.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
            fut = client.call_async(request)
            wait_for(fut.done, timeout, f"answer of {name}")
            return fut.result()
        finally:
            self.destroy_client(client)


DESCRIPTION = FeatureConfig().describe()

#: These tests run the IMU-only configuration and model (wheel features: test_wheel_node_*).
IMU_ONLY: dict[str, dict[str, Any]] = {
    "imu_features": {"wheel_joints_left": [], "wheel_joints_right": []},
    "odt_bridge": {
        "model_sidecar": str(ROOT / "models" / "borealtc_imu_mlp.json"),
        "model_blob": str(ROOT / "models" / "borealtc_imu_mlp.odtm"),
    },
}


@contextlib.contextmanager
def graph_and_probe(
    nodes: Sequence[NodeSpec],
    overrides: dict[str, dict[str, Any]] | None = None,
    executor: str = "per-node",
    imu_only: bool = True,
) -> Iterator[tuple[Any, Probe]]:
    merged: dict[str, dict[str, Any]] = (
        {k: dict(v) for k, v in IMU_ONLY.items()} if imu_only else {}
    )
    for k, v in (overrides or {}).items():
        merged.setdefault(k, {}).update(v)
    with running_graph(
        [CONFIG], merged, nodes=nodes, executor=executor, use_sim_time=False
    ) as graph:
        probe = Probe(graph.context)
        graph.add(probe)
        yield graph, probe


def matched(*pubs: Any) -> Callable[[], bool]:
    return lambda: all(p.get_subscription_count() >= 1 for p in pubs)


# ---------------------------------------------------------------------------------------------
# imu_features


def stamp(t: float) -> tuple[int, int]:
    sec = math.floor(t)
    nsec = round((t - sec) * 1e9)
    if nsec >= 1_000_000_000:
        sec, nsec = sec + 1, nsec - 1_000_000_000
    return sec, nsec


def decoded_time(t: float) -> float:
    """The time the node reads back from the header stamp of `imu_msg(t, ...)`."""
    sec, nsec = stamp(t)
    return sec + nsec * 1e-9


def imu_msg(t: float, x: Sequence[float]) -> Imu:
    m = Imu()
    m.header.stamp.sec, m.header.stamp.nanosec = stamp(t)
    m.header.frame_id = "imu_link"
    m.angular_velocity.x, m.angular_velocity.y, m.angular_velocity.z = (float(v) for v in x[:3])
    m.linear_acceleration.x, m.linear_acceleration.y, m.linear_acceleration.z = (
        float(v) for v in x[3:]
    )
    return m


def imu_signal(n: int, t0: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = t0 + np.arange(n) / 100.0
    x = rng.normal(size=(n, 6)) * [0.05, 0.05, 0.05, 0.5, 0.5, 0.5]
    x[:, 0] += 0.3 * np.sin(2 * np.pi * 7.0 * np.arange(n) / 100.0)
    x[:, 5] += 9.81
    return t, x


def send_imu(pub: Any, node: Any, t: np.ndarray, x: np.ndarray, chunk: int = 20) -> None:
    """Publish samples, in chunks the node is seen to have taken (no queue overflow)."""
    base = node.diagnostics()["samples"]
    for i in range(0, len(t), chunk):
        for ti, xi in zip(t[i : i + chunk], x[i : i + chunk], strict=True):
            pub.publish(imu_msg(float(ti), xi))
        n = base + min(i + chunk, len(t))
        wait_for(lambda n=n: node.diagnostics()["samples"] >= n, 10, f"{n} IMU samples taken")


def window_starts(msgs: list[Float64MultiArray]) -> list[float]:
    return [m.data[0] for m in msgs]


def assert_features_message(m: Float64MultiArray) -> None:
    assert m.layout.data_offset == 2
    assert [(d.label, d.size) for d in m.layout.dim] == [(f"features; {DESCRIPTION}", 102)]
    assert len(m.data) == 104
    assert m.data[1] - m.data[0] == pytest.approx(1.69)
    assert np.isfinite(m.data).all()


@pytest.mark.parametrize("executor", ["multi", "per-node"])
def test_imu_features_windows_a_clean_stream(executor: str):
    with graph_and_probe([IMU_FEATURES], executor=executor) as (graph, probe):
        node = graph.nodes["imu_features"]
        pub = probe.create_publisher(Imu, "/imu/data", qos_profile_sensor_data)
        probe.listen("/terrain/features", Float64MultiArray)
        wait_for(matched(pub, node.pub), what="IMU and features topics matched")
        t, x = imu_signal(420, 1000.0, seed=1)
        send_imu(pub, node, t, x)
        n = (420 - 170) // 50 + 1
        wait_for(lambda: len(probe.got("/terrain/features")) >= n, what=f"{n} windows")
        msgs = probe.got("/terrain/features")
        assert len(msgs) == n
        for m in msgs:
            assert_features_message(m)
        # The same windows and features as the offline extractor on the same samples.
        w = extract_windows([decoded_time(v) for v in t], x, FeatureConfig())
        np.testing.assert_array_equal(window_starts(msgs), w.t_start)
        np.testing.assert_array_equal([m.data[1] for m in msgs], w.t_end)
        got = np.array([m.data[2:] for m in msgs], dtype=np.float32)
        np.testing.assert_array_equal(got, w.features)
        d = node.diagnostics()
        assert d["samples"] == 420 and d["windows_published"] == n == d["windows_accepted"]
        assert not any(k.startswith(("windows_rejected_", "samples_dropped_")) for k in d)
        assert d["clock_resets"] == 0 and d["undecodable_messages"] == 0


def test_wheel_node_adds_wheel_features_from_joint_states():
    """/joint_states (the configured wheel joints, other joints ignored) make the 8 wheel
    features of each window, the same as the offline extractor on the same samples."""
    from sensor_msgs.msg import JointState

    overrides = {
        "imu_features": {"wheel_joints_left": ["fl", "rl"], "wheel_joints_right": ["fr", "rr"]}
    }
    with graph_and_probe([IMU_FEATURES], overrides, imu_only=False) as (graph, probe):
        node = graph.nodes["imu_features"]
        pub = probe.create_publisher(Imu, "/imu/data", qos_profile_sensor_data)
        jpub = probe.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
        probe.listen("/terrain/features", Float64MultiArray)
        wait_for(matched(pub, jpub, node.pub), what="topics matched")
        t, x = imu_signal(420, 1000.0, seed=4)
        tw = 1000.0 + np.arange(0.0, 4.2, 0.1)
        radius = 0.1651
        js = []
        for i, tj in enumerate(tw):
            m = JointState()
            m.header.stamp.sec, m.header.stamp.nanosec = stamp(float(tj))
            m.name = ["arm", "fl", "rl", "fr", "rr"]
            m.velocity = [9.0, 2.0 + 0.01 * i, 2.2, 1.8, 1.9]
            m.effort = [0.0, 5.0, 6.0, 7.0 + 0.1 * i, 8.0]
            js.append(m)
        # Interleaved by time, as a robot publishes them.
        for m in js[:20]:
            jpub.publish(m)
        send_imu(pub, node, t[:200], x[:200])
        for m in js[20:]:
            jpub.publish(m)
        send_imu(pub, node, t[200:], x[200:])
        n = (420 - 170) // 50 + 1
        wait_for(lambda: len(probe.got("/terrain/features")) >= n - 1, what="windows")
        msgs = probe.got("/terrain/features")
        cfg = FeatureConfig(wheels=True)
        assert all(m.layout.dim[0].label == f"features; {cfg.describe()}" for m in msgs)
        v = np.array([m.velocity for m in js])
        e = np.array([m.effort for m in js])
        w = np.column_stack(
            [(v[:, 1] + v[:, 2]) / 2 * radius, (v[:, 3] + v[:, 4]) / 2 * radius,
             (e[:, 1] + e[:, 2]) / 2, (e[:, 3] + e[:, 4]) / 2]
        )  # fmt: skip
        off = extract_windows(
            [decoded_time(v) for v in t], x, cfg, ([decoded_time(v) for v in tw], w)
        )
        got = np.array([m.data[2:] for m in msgs], dtype=np.float32)
        k = len(got)
        np.testing.assert_allclose(got, off.features[:k], rtol=1e-6, atol=1e-6)
        assert node.diagnostics()["wheel_samples"] == len(js)


def test_imu_features_survives_bad_input():
    """NaN/inf values, an out-of-order stamp, a clock jump back and one forward (boot time →
    epoch), an undecodable message: the node keeps running, counts each rejection in
    diagnostics(), logs warnings, and good data after each problem still gives windows."""
    with graph_and_probe([IMU_FEATURES]) as (graph, probe):
        node = graph.nodes["imu_features"]
        pub = probe.create_publisher(Imu, "/imu/data", qos_profile_sensor_data)
        probe.listen("/terrain/features", Float64MultiArray)
        probe.listen("/diagnostics", DiagnosticArray)
        wait_for(matched(pub, node.pub), what="IMU and features topics matched")

        # A: 8 s with NaN, ±inf and one sample 0.3 s out of order early on.
        ta, xa = imu_signal(800, 1000.0, seed=2)
        ta, xa = ta.copy(), xa.copy()
        xa[150, 0] = math.nan
        xa[200, 3] = math.inf
        xa[201, 5] = -math.inf
        ta[250] = ta[249] - 0.3
        send_imu(pub, node, ta, xa)
        # An undecodable message (another CDR encapsulation) on the raw subscription.
        pub.publish(b"\x00\x03\x00\x00" + bytes(300))
        wait_for(lambda: node.diagnostics()["undecodable_messages"] == 1, what="bad message")
        # B: the clock jumps back by 500 s (a bag restarted); C: forward to epoch time.
        tb, xb = imu_signal(300, 500.0, seed=3)
        send_imu(pub, node, tb, xb)
        tc, xc = imu_signal(300, 1.7e9, seed=4)
        send_imu(pub, node, tc, xc)

        wa = extract_windows([decoded_time(v) for v in ta], xa, FeatureConfig())
        n_b = n_c = (300 - 170) // 50 + 1
        n = len(wa.features) + n_b + n_c
        assert len(wa.features) >= 5 and wa.rejected
        wait_for(lambda: len(probe.got("/terrain/features")) >= n, what=f"{n} windows")
        msgs = probe.got("/terrain/features")
        assert len(msgs) == n
        for m in msgs:
            assert_features_message(m)  # never a NaN feature
        starts = window_starts(msgs)
        np.testing.assert_array_equal(starts[: len(wa.features)], wa.t_start)
        got = np.array([m.data[2:] for m in msgs[: len(wa.features)]], dtype=np.float32)
        np.testing.assert_array_equal(got, wa.features)
        assert all(500.0 <= s < 503.0 for s in starts[len(wa.features) : -n_c])
        assert all(1.7e9 <= s < 1.7e9 + 3 for s in starts[-n_c:])

        d = node.diagnostics()
        assert d["samples"] == 1400
        assert d["samples_dropped_nonfinite"] == 3
        assert d["samples_dropped_non_monotonic"] == 1
        assert d["windows_rejected_nonfinite"] == wa.rejected["nonfinite"] > 0
        assert d["windows_rejected_non_monotonic"] == wa.rejected["non_monotonic"] > 0
        assert d["clock_resets"] == 2
        assert d["undecodable_messages"] == 1
        assert d["windows_published"] == n

        wait_for(lambda: probe.logs("imu_features", "bad IMU input"), what="bad-input warning")
        wait_for(lambda: len(probe.logs("imu_features", "IMU clock jumped")) == 2, 5, "jumps")
        assert probe.logs("imu_features", "undecodable Imu message")

        def features_status() -> DiagnosticStatus | None:
            for arr in reversed(probe.got("/diagnostics")):
                for s in arr.status:
                    if s.name == "imu_features: features":
                        return s
            return None

        st = wait_for(features_status, 5, "imu_features diagnostics")
        assert st.level == DiagnosticStatus.WARN and "rejected" in st.message


# ---------------------------------------------------------------------------------------------
# terrain_labeler


def test_terrain_labeler_operator_label_and_bad_cues():
    settle = 0.5
    # odom_timeout_s generous: this test is about cues; on a loaded machine the probe's 20 Hz
    # odometry timer can stall for longer than the default 0.5 s, which would (correctly)
    # withdraw the label as stale.
    overrides = {"terrain_labeler": {"settle_s": settle, "odom_timeout_s": 3.0}}
    with graph_and_probe([TERRAIN_LABELER], overrides) as (
        graph,
        probe,
    ):
        node = graph.nodes["terrain_labeler"]
        op = probe.create_publisher(String, "/terrain/operator_label", 10)
        odom = probe.create_publisher(Odometry, "/odom", 20)
        probe.listen("/terrain/label", String, LATCHED)
        wait_for(matched(op, odom, node.pub), what="labeler topics matched")

        def odometry(speed: float) -> Odometry:
            m = Odometry()
            m.header.stamp = probe.get_clock().now().to_msg()
            m.twist.twist.linear.x = speed
            return m

        def drive() -> None:  # steady odometry at 20 Hz, like a robot cruising
            odom.publish(odometry(0.5))

        probe.create_timer(0.05, drive)

        def labels_since(t: float) -> list[tuple[float, str]]:
            return [(ts, m.data) for ts, m in probe.got_timed("/terrain/label") if ts >= t]

        t_cue = time.monotonic()
        op.publish(String(data="ICE"))
        wait_for(lambda: "ICE" in [d for _, d in labels_since(t_cue)], 10, "label ICE")
        seen = labels_since(t_cue)
        first_ice = next(ts for ts, d in seen if d == "ICE")
        assert first_ice - t_cue >= settle - 0.02  # not before settle_s
        assert all(d == "" for ts, d in seen if ts < first_ice)  # the transition is dropped
        d = node.diagnostics()
        assert (d["label"], d["reason"]) == ("ICE", "in_force")

        # An unknown class name: rejected and counted, warned about, the label stays.
        op.publish(String(data="GRAVEL"))
        wait_for(lambda: node.diagnostics()["unknown_labels"] == 1, 5, "GRAVEL rejected")
        t_bad = time.monotonic()
        wait_for(lambda: len(labels_since(t_bad)) >= 3, 5, "labels after GRAVEL")
        assert {d for _, d in labels_since(t_bad)} == {"ICE"}
        wait_for(lambda: probe.logs("terrain_labeler", "GRAVEL"), 5, "warning about GRAVEL")
        # Non-finite odometry: rejected and counted, gating unaffected.
        odom.publish(odometry(math.nan))
        wait_for(lambda: node.diagnostics()["nonfinite_inputs"] == 1, 5, "NaN odometry")
        assert node.diagnostics()["label"] == "ICE"
        wait_for(lambda: probe.logs("terrain_labeler", "odometry rejected"), 5, "odom warning")

        # The node keeps working: a new label (any case) is in force after settle_s again.
        t_snow = time.monotonic()
        op.publish(String(data="snow"))
        wait_for(lambda: "SNOW" in [d for _, d in labels_since(t_snow)], 10, "label SNOW")
        seen = labels_since(t_snow)
        first_snow = next(ts for ts, d in seen if d == "SNOW")
        assert first_snow - t_snow >= settle - 0.02
        assert {d for ts, d in seen if ts < first_snow} <= {"", "ICE"}
        assert "" in [d for ts, d in seen if ts < first_snow]  # dropped between two terrains


# ---------------------------------------------------------------------------------------------
# odt_bridge


class LabelSource:
    """Publishes a label at 20 Hz like terrain_labeler, remembering since when it holds."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.pub = probe.create_publisher(String, "/terrain/label", LATCHED)
        self.label = ""
        self.since = probe.now()
        probe.create_timer(0.05, lambda: self.pub.publish(String(data=self.label)))

    def set(self, label: str) -> float:
        self.label = label
        self.since = self.probe.now()
        self.pub.publish(String(data=label))
        return self.since


def bridge_overrides(url: str, **extra: Any) -> dict[str, dict[str, Any]]:
    return {
        "odt_bridge": {
            "serial_port": url,
            "baud_rate": 0,
            "connect_timeout_s": 2.0,
            "diagnostics_period_s": 0.2,
            "rehearsal_per_class": 0,
            **extra,
        }
    }


def test_odt_bridge_topics_services_diagnostics(emu: Emulator):
    with graph_and_probe([ODT_BRIDGE], bridge_overrides(emu.url)) as (graph, probe):
        node = graph.nodes["odt_bridge"]
        core = node.core
        feats = probe.create_publisher(Float64MultiArray, "/terrain/features", 50)
        for topic, typ in (
            ("/terrain/prediction", String),
            ("/terrain/confidence", Float32),
            ("/terrain/accuracy", Float32),
            ("/diagnostics", DiagnosticArray),
        ):
            probe.listen(topic, typ)
        labels = LabelSource(probe)
        wait_for(matched(feats, labels.pub, node.pub_pred, node.pub_conf, node.pub_acc))
        wait_for(lambda: core.configured, 15, "co-processor session")
        side = core.model.sidecar["input"]["standardization"]
        rng = np.random.default_rng(0)

        def window(t0: float) -> Float64MultiArray:
            x = np.asarray(side["mean"]) + np.asarray(side["scale"]) * rng.normal(size=102)
            return features_message(WindowEvent(t0, t0 + 0.3, x, None))

        # Labelled windows: inside a stretch where ICE was in force (the label published 0.3 s
        # before a window starts, a window published 0.3 s after it ends: delivery latencies).
        t_ice = labels.set("ICE")
        wait_for(lambda: probe.now() > t_ice + 1.2, 5)
        for k in range(4):
            feats.publish(window(t_ice + 0.3 + 0.2 * k))
        wait_for(lambda: len(probe.got("/terrain/accuracy")) >= 4, 15, "accuracy messages")
        # Unlabelled windows: after the label was cleared.
        t_none = labels.set("")
        wait_for(lambda: probe.now() > t_none + 1.0, 5)
        for k in range(2):
            feats.publish(window(t_none + 0.3 + 0.2 * k))
            wait_for(lambda k=k: len(probe.got("/terrain/confidence")) >= k + 1, 15, "inference")
        wait_for(lambda: len(probe.got("/terrain/prediction")) >= 6, 15, "predictions")
        # A malformed message is refused and logged; the node keeps running.
        bad = Float64MultiArray(data=[1.0, 2.0, 3.0])
        feats.publish(bad)
        wait_for(lambda: probe.logs("odt_bridge", "bad features message"), 5, "warning")

        c = core.counters()
        assert (c["labelled"], c["trained"], c["inferred"], c["windows"]) == (4, 4, 2, 6)
        preds = [m.data for m in probe.got("/terrain/prediction")]
        assert len(preds) == 6 and set(preds) <= set(CLASSES)
        confs = [m.data for m in probe.got("/terrain/confidence")]
        assert len(confs) == 2 and all(0.2 <= v <= 1.0 for v in confs)
        accs = [m.data for m in probe.got("/terrain/accuracy")]
        assert len(accs) == 4 and all(0.0 <= v <= 1.0 for v in accs)
        assert accs[-1] == pytest.approx(core.accuracy())

        # Services (std_srvs): each answers with success and a message.
        r = probe.call(SetBool, "/odt_bridge/set_training", SetBool.Request(data=False))
        assert (r.success, r.message) == (True, "training off")
        assert not core.training_enabled
        r = probe.call(SetBool, "/odt_bridge/set_training", SetBool.Request(data=True))
        assert (r.success, r.message) == (True, "training on")
        r = probe.call(Trigger, "/odt_bridge/restore_model", Trigger.Request())
        assert not r.success and "NO_SAVED_MODEL" in r.message  # nothing saved yet
        r = probe.call(Trigger, "/odt_bridge/save_model", Trigger.Request())
        assert (r.success, r.message) == (True, "model saved to co-processor flash")
        r = probe.call(Trigger, "/odt_bridge/reset_pretrained", Trigger.Request())
        assert (r.success, r.message) == (True, "pretrained model restored")
        r = probe.call(Trigger, "/odt_bridge/restore_model", Trigger.Request())
        assert (r.success, r.message) == (True, "last saved model restored")

        # /diagnostics: link and trainer health.
        def statuses() -> dict[str, DiagnosticStatus] | None:
            for arr in reversed(probe.got("/diagnostics")):
                by_name = {s.name: s for s in arr.status}
                if {"odt_bridge: link", "odt_bridge: trainer"} <= set(by_name):
                    values = {kv.key: kv.value for kv in by_name["odt_bridge: trainer"].values}
                    if values.get("samples_trained") == "4":
                        return by_name
            return None

        st = wait_for(statuses, 10, "diagnostics with the trained samples")
        link, trainer = st["odt_bridge: link"], st["odt_bridge: trainer"]
        assert link.level == DiagnosticStatus.OK and link.message == "connected"
        lv = {kv.key: kv.value for kv in link.values}
        assert lv["url"] == emu.url and lv["connected"] == "True"
        assert lv["model_id"] == "0x0d3e0004"  # models/borealtc_imu_mlp
        assert trainer.level == DiagnosticStatus.OK
        tv = {kv.key: kv.value for kv in trainer.values}
        assert tv["samples_labelled"] == "4" and tv["samples_dropped"] == "0"
        assert tv["training_enabled"] == "True"


def test_odt_bridge_without_coprocessor_reports_and_refuses_commands():
    """Nothing listening at serial_port: the node runs, /diagnostics says so (ERROR), the
    services answer with success=False instead of hanging."""
    url = f"socket://127.0.0.1:{free_port()}"
    with graph_and_probe([ODT_BRIDGE], bridge_overrides(url, connect_timeout_s=0.3)) as (
        graph,
        probe,
    ):
        probe.listen("/diagnostics", DiagnosticArray)

        def link_status() -> DiagnosticStatus | None:
            for arr in reversed(probe.got("/diagnostics")):
                for s in arr.status:
                    if s.name == "odt_bridge: link":
                        return s
            return None

        st = wait_for(link_status, 10, "link diagnostics")
        assert st.level == DiagnosticStatus.ERROR and "not connected" in st.message
        r = probe.call(Trigger, "/odt_bridge/save_model", Trigger.Request())
        assert not r.success and "not connected" in r.message
        r = probe.call(SetBool, "/odt_bridge/set_training", SetBool.Request(data=False))
        assert r.success and "applied when the co-processor connects" in r.message
        assert graph.nodes["odt_bridge"].core._thread.is_alive()


# ---------------------------------------------------------------------------------------------
# the whole graph, one executor per node


def test_whole_graph_per_node_executor(emu: Emulator):
    """IMU + operator label in, a trained labelled window and accuracy out, through all three
    nodes, each spun by its own executor."""
    overrides = bridge_overrides(emu.url)
    overrides["terrain_labeler"] = {"settle_s": 0.2, "require_motion": False}
    with graph_and_probe(NODES, overrides, executor="per-node") as (graph, probe):
        assert len(graph.executors) == 4  # three nodes + the probe
        feat_node, lab_node, bridge = (graph.nodes[n.name] for n in NODES)
        imu = probe.create_publisher(Imu, "/imu/data", qos_profile_sensor_data)
        op = probe.create_publisher(String, "/terrain/operator_label", 10)
        probe.listen("/terrain/accuracy", Float32)
        probe.listen("/terrain/label", String, LATCHED)
        wait_for(matched(imu, op, bridge.pub_acc, lab_node.pub, feat_node.pub), what="matched")
        wait_for(lambda: bridge.core.configured, 15, "co-processor session")
        op.publish(String(data="SANDY_LOAM"))
        wait_for(lambda: any(m.data == "SANDY_LOAM" for m in probe.got("/terrain/label")), 10)
        # IMU stamped with the node clock, published as time passes (the label must be in force
        # over each window's span when the bridge sees it): 2.8 s → 2 or 3 windows (the grid
        # starts at the first multiple of the hop). The first sample is 0.3 s after the label
        # reached the probe (the bridge may get it a little later).
        t0 = probe.now() + 0.3
        t, x = imu_signal(280, t0, seed=5)
        n_win = len(extract_windows(t, x).features)
        assert n_win >= 2
        i = 0
        while i < len(t):
            now = probe.now()
            j = int(np.searchsorted(t, now, side="right"))
            for k in range(i, j):
                imu.publish(imu_msg(float(t[k]), x[k]))
            i = j
            time.sleep(0.01)
        wait_for(lambda: len(probe.got("/terrain/accuracy")) >= n_win, 15, "accuracy")
        c = bridge.core.counters()
        assert c["labelled"] == c["trained"] == n_win and c["windows"] == n_win
        assert feat_node.diagnostics()["windows_published"] == n_win
        out = bridge.last_outcome
        assert out.kind == "train" and out.label_name == "SANDY_LOAM"


# ---------------------------------------------------------------------------------------------
# parameters


@pytest.mark.parametrize(
    ("node", "param", "value"),
    [
        ("odt_bridge", "learning_rate", -1),
        ("odt_bridge", "learning_rate", 2.0),
        ("odt_bridge", "batch_size", 1.5),
        ("odt_bridge", "serial_port", 5),
        ("imu_features", "stamp_source", "bogus"),
        ("imu_features", "window_s", "long"),
        ("imu_features", "input_decimation", 0),
        ("terrain_labeler", "regions", ["bad spec"]),
        ("terrain_labeler", "regions", ["ICE: 0,0; 1,0; 1"]),
        ("terrain_labeler", "joy_buttons", ["x:ICE"]),
        ("terrain_labeler", "require_motion", "yes"),
        ("terrain_labeler", "regions", [1, "a"]),  # not even one ROS type
    ],
)
def test_wrong_parameter_value_is_a_launch_error(node: str, param: str, value: Any):
    spec = {n.name: n for n in NODES}[node]
    with (
        pytest.raises(LaunchError) as exc,
        running_graph([CONFIG], {node: {param: value}}, nodes=[spec], spin=False),
    ):
        pass
    msg = str(exc.value)
    assert msg.startswith(f"{node}: ") and f"'{param}'" in msg, msg
    assert exc.value.__cause__ is None and exc.value.__suppress_context__  # no rclpy traceback
    assert "Traceback" not in msg


def test_wrong_value_in_a_parameter_file_is_a_launch_error(tmp_path: Path):
    f = tmp_path / "bad.yaml"
    f.write_text("imu_features:\n  ros__parameters:\n    stamp_source: bogus\n")
    with pytest.raises(LaunchError, match="stamp_source"), running_graph([CONFIG, f], spin=False):
        pass
    # A file rcl itself cannot parse (mixed-type list) is a LaunchError too.
    f.write_text("terrain_labeler:\n  ros__parameters:\n    regions: [1, 'a']\n")
    with pytest.raises(LaunchError, match=r"bad\.yaml"), running_graph([CONFIG, f], spin=False):
        pass


def test_integer_for_a_double_parameter_is_accepted(tmp_path: Path):
    f = tmp_path / "ints.yaml"
    f.write_text("terrain_labeler:\n  ros__parameters:\n    max_speed: 3\n")
    with running_graph(
        [CONFIG, f],
        {"terrain_labeler": {"min_speed": 1}, "imu_features": {"window_s": 2}},
        nodes=[IMU_FEATURES, TERRAIN_LABELER],
        spin=False,
    ) as graph:
        cfg = graph.nodes["terrain_labeler"].labeler.cfg
        assert cfg.min_speed == 1.0 and isinstance(cfg.min_speed, float)
        assert cfg.max_speed == 3.0 and isinstance(cfg.max_speed, float)
        fcfg = graph.nodes["imu_features"].stream.cfg.features
        assert fcfg.window_s == 2.0 and fcfg.window_samples == 200
