"""`imu_features`: /imu/data (sensor_msgs/Imu) → /terrain/features (`streaming.FeatureStream`)."""

from __future__ import annotations

import threading
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Imu
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from ..cdr import CdrError, imu_sample
from ..features import FeatureConfig, WindowEvent
from ..graph import IMU_FEATURES
from ..streaming import FeatureStream, StreamConfig
from .common import OK, WARN, ParamError, counts, declare_params, run_node, status

FEATURES_TOPIC = "/terrain/features"
#: Leading elements of a features message: window start and end time (s).
STAMP_ELEMENTS = 2


def features_message(ev: WindowEvent) -> Float64MultiArray:
    """A window as published on /terrain/features (see `graph.IMU_FEATURES`)."""
    assert ev.features is not None
    msg = Float64MultiArray()
    n = int(ev.features.shape[0])
    msg.layout.data_offset = STAMP_ELEMENTS
    msg.layout.dim = [MultiArrayDimension(label="features", size=n, stride=n)]
    msg.data = [ev.t_start, ev.t_end, *ev.features.tolist()]
    return msg


def parse_features_message(msg: Float64MultiArray) -> tuple[float, float, list[float]]:
    """(t_start, t_end, features) of a /terrain/features message; `ValueError` if malformed."""
    off = int(msg.layout.data_offset)
    data = msg.data
    if off != STAMP_ELEMENTS or len(data) <= off:
        raise ValueError(
            f"features message with data_offset {off} and {len(data)} values "
            f"(expected offset {STAMP_ELEMENTS} and at least one feature)"
        )
    return float(data[0]), float(data[1]), list(data[off:])


class ImuFeaturesNode(Node):
    """Thin wrapper: Imu → `FeatureStream.push` → publish accepted windows."""

    #: Polling mode's reader node. A class default: `destroy_node` also runs (at context
    #: shutdown) for a node whose `__init__` failed on a bad parameter.
    _rx: Node | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(IMU_FEATURES.name, **kwargs)
        p = declare_params(self, IMU_FEATURES)
        try:
            fcfg = FeatureConfig(
                sample_rate_hz=float(p["sample_rate_hz"]),
                window_s=float(p["window_s"]),
                hop_s=float(p["hop_s"]),
                max_gap_samples=int(p["max_gap_samples"]),
                rate_tolerance=float(p["rate_tolerance"]),
            )
            cfg = StreamConfig(fcfg, int(p["input_decimation"]), float(p["time_jump_reset_s"]))
        except ValueError as exc:
            raise ParamError(
                f"imu_features: parameters sample_rate_hz / window_s / hop_s / "
                f"input_decimation: {exc}"
            ) from exc
        self.stream = FeatureStream(cfg)
        self._use_receipt = p["stamp_source"] == "receipt"
        self._lock = threading.Lock()
        self._resets_logged = 0
        self._bad_seen = 0
        self.published = 0
        self.bad_messages = 0
        qos = QoSProfile(
            history=qos_profile_sensor_data.history,
            depth=int(p["qos_depth"]),
            reliability=qos_profile_sensor_data.reliability,
            durability=qos_profile_sensor_data.durability,
        )
        self.pub = self.create_publisher(Float64MultiArray, FEATURES_TOPIC, 10)
        # raw=True: the callback decodes the three fields it needs (terrain_odt.cdr), which is
        # much cheaper than a full Python message per sample.
        poll_hz = float(p["imu_poll_hz"])
        if poll_hz > 0:
            # rclpy's executor costs far more per wake-up than this node's work per sample.
            # Polling mode: the subscription lives on a helper node that no executor spins, and
            # a steady-clock timer drains its queue: one wake-up per poll instead of per sample
            # (at most 1/poll_hz of added latency).
            self._rx = Node(
                f"{self.get_name()}_imu_reader",
                context=self.context,
                start_parameter_services=False,
                enable_rosout=False,
            )
            self.sub = self._rx.create_subscription(
                Imu, "/imu/data", lambda _m: None, qos, raw=True
            )
            self.create_timer(
                1.0 / poll_hz, self._drain, clock=Clock(clock_type=ClockType.STEADY_TIME)
            )
        else:
            self._rx = None
            self.sub = self.create_subscription(Imu, "/imu/data", self._on_imu, qos, raw=True)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = float(p["diagnostics_period_s"])
        if period > 0:
            self.create_timer(period, self._publish_diagnostics)
        self.get_logger().info(
            f"windows of {fcfg.window_s} s every {fcfg.hop_s} s at {fcfg.sample_rate_hz} Hz "
            f"(decimation {cfg.decimation}), {fcfg.n_features} features"
        )

    def _drain(self) -> None:
        handle = self.sub.handle
        while True:
            with handle:
                taken = handle.take_message(Imu, True)
            if taken is None:
                return
            self._on_imu(taken[0])

    def destroy_node(self) -> None:
        if self._rx is not None:
            self._rx.destroy_node()
        super().destroy_node()

    def _on_imu(self, raw: bytes) -> None:
        try:
            t, *sample = imu_sample(raw)
        except CdrError as exc:
            self.bad_messages += 1
            self.get_logger().warning(f"undecodable Imu message: {exc}", throttle_duration_sec=5.0)
            return
        if self._use_receipt:
            t = self.get_clock().now().nanoseconds * 1e-9
        with self._lock:  # callbacks may run on several executor threads
            events = self.stream.push(t, sample)
            resets = self.stream.time_resets
            bad = sum(self.stream.dropped_samples.values()) + sum(self.stream.rejected.values())
        if bad != self._bad_seen:
            self._bad_seen = bad
            with self._lock:
                dropped = dict(self.stream.dropped_samples)
                rejected = dict(self.stream.rejected)
            self.get_logger().warning(
                "bad IMU input: samples dropped "
                f"{ {k.value: v for k, v in dropped.items()} }, windows rejected "
                f"{ {k.value: v for k, v in rejected.items()} } (totals)",
                throttle_duration_sec=5.0,
            )
        if resets != self._resets_logged:
            self._resets_logged = resets
            self.get_logger().warning(
                f"IMU clock jumped (sample at {t:.3f} s): window buffer restarted"
            )
        for ev in events:
            if ev.features is not None:
                self.pub.publish(features_message(ev))
                self.published += 1

    def diagnostics(self) -> dict[str, Any]:
        with self._lock:
            s = self.stream
            return {
                "samples": s.samples,
                "windows_published": self.published,
                "windows_accepted": s.accepted,
                **counts("windows_rejected_", s.rejected.items()),
                **counts("samples_dropped_", s.dropped_samples.items()),
                "clock_resets": s.time_resets,
                "undecodable_messages": self.bad_messages,
            }

    def _publish_diagnostics(self) -> None:
        d = self.diagnostics()
        rejected = sum(v for k, v in d.items() if k.startswith("windows_rejected_"))
        dropped = sum(v for k, v in d.items() if k.startswith("samples_dropped_"))
        if d["samples"] == 0:
            level, text = WARN, "no IMU samples yet"
        elif rejected or dropped:
            level = WARN
            text = f"{d['windows_accepted']} windows, {rejected} rejected, {dropped} bad samples"
        else:
            level, text = OK, f"{d['windows_accepted']} windows"
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [status(self, "features", level, text, d)]
        self.diag_pub.publish(arr)


def main(args: list[str] | None = None) -> int:
    return run_node(ImuFeaturesNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
