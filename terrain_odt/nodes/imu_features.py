"""`imu_features`: /imu/data (sensor_msgs/Imu) → /terrain/features (`streaming.FeatureStream`)."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray

from ..data.cdr import CdrError, imu_sample
from ..pipeline.node_config import ConfigError, stream_config, wheel_joints
from ..ros.graph import IMU_FEATURES
from ..signals.feature_msg import FEATURES_TOPIC, features_message
from ..signals.features import WindowEvent
from ..signals.streaming import FeatureStream, joint_wheel_sample
from .common import OK, WARN, ParamError, counts, declare_params, run_node, status

#: Polling mode: longest sleep between drains (bounds the queue it needs), and how long before
#: the sample that completes the next window is expected to switch to one callback per sample.
POLL_MAX_PERIOD_S = 0.2
POLL_EVENT_LEAD_S = 0.02
POLL_EVENT_LEAD_SAMPLES = 8


class ImuFeaturesNode(Node):
    """Thin wrapper: Imu → `FeatureStream.push` → publish accepted windows."""

    #: Polling mode's reader node. A class default: `destroy_node` also runs (at context
    #: shutdown) for a node whose `__init__` failed on a bad parameter.
    _rx: Node | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(IMU_FEATURES.name, **kwargs)
        p = declare_params(self, IMU_FEATURES)
        try:
            cfg = stream_config(p)
        except ConfigError as exc:
            raise ParamError(str(exc)) from exc
        fcfg = cfg.features
        self.stream = FeatureStream(cfg)
        self._description = fcfg.describe()
        self._left, self._right = wheel_joints(p)
        self._radius = float(p["wheel_radius_m"])
        self.bad_joint_messages = 0
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
        # raw=True: the callback decodes the three fields it needs (terrain_odt.data.cdr), which is
        # much cheaper than a full Python message per sample.
        poll_hz = float(p["imu_poll_hz"])
        if poll_hz > 0:
            # rclpy's executor costs far more per wake-up than this node's work per sample.
            # Polling mode: the subscription lives on a helper node that is only spun (added to
            # the executor) just before a window completes; in between, a steady-clock timer
            # drains its queue a few times per window (see `_drain`).
            self._rx = Node(
                f"{self.get_name()}_imu_reader",
                context=self.context,
                start_parameter_services=False,
                enable_rosout=False,
            )
            # One mutually exclusive group for the timer and the subscription: with a
            # multi-threaded executor the two would otherwise take samples concurrently and
            # hand them to the stream out of order.
            group = MutuallyExclusiveCallbackGroup()
            self.sub = self._rx.create_subscription(
                Imu, "/imu/data", self._on_rx, qos, raw=True, callback_group=group
            )
            self._event_mode = False
            self._fs_in = fcfg.sample_rate_hz * cfg.decimation
            self._event_due: float | None = None
            self._min_period = 1.0 / poll_hz
            self._max_period = max(self._min_period, POLL_MAX_PERIOD_S)
            self._rate: float | None = None
            self._last_poll: tuple[float, float] | None = None
            self._poll_timer = self.create_timer(
                self._min_period,
                self._drain,
                clock=Clock(clock_type=ClockType.STEADY_TIME),
                callback_group=group,
            )
        else:
            self._rx = None
            self.sub = self.create_subscription(Imu, "/imu/data", self._on_imu, qos, raw=True)
        if fcfg.wheels:
            # Wheel samples are few (tens per second): a plain callback each. Same callback
            # group as the IMU side, so the stream sees both in order.
            self.joint_sub = self.create_subscription(
                JointState,
                "/joint_states",
                self._on_joints,
                qos,
                callback_group=group if poll_hz > 0 else None,
            )
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = float(p["diagnostics_period_s"])
        if period > 0:
            self.create_timer(period, self._publish_diagnostics)
        self.get_logger().info(
            f"windows of {fcfg.window_s} s every {fcfg.hop_s} s at {fcfg.sample_rate_hz} Hz "
            f"(decimation {cfg.decimation}), {fcfg.n_features} features"
        )

    def _drain(self) -> None:
        """Polling mode timer: take every queued IMU message, then plan the next wake-up.

        A wake-up of rclpy's executor costs more CPU than processing a few hundred samples, and
        a timer wakes a few milliseconds late, so: sleep (at most `POLL_MAX_PERIOD_S`) until
        shortly before the sample that completes the next window should arrive (from the
        IMU-time / arrival-time rate seen so far), then spin the IMU subscription itself
        (event mode) until that window is decided, for the latency of a plain callback.
        """
        handle = self.sub.handle
        newest: tuple[float, float] | None = None  # (IMU time, arrival time)
        while True:
            with handle:
                taken = handle.take_message(Imu, True)
            if taken is None:
                break
            t = self._on_imu(taken[0])
            received = taken[1].get("received_timestamp") if len(taken) > 1 else None
            if t is not None:
                newest = (t, received * 1e-9 if received else time.time())
        self._observe(newest)
        self._plan()

    def _observe(self, newest: tuple[float, float] | None) -> None:
        if newest is None:
            return
        last = self._last_poll
        if last is not None and newest[0] > last[0] and newest[1] > last[1] + 1e-3:
            rate = (newest[0] - last[0]) / (newest[1] - last[1])
            # IMU seconds per wall second (1 live, N in an N-times replay), smoothed.
            self._rate = rate if self._rate is None else 0.7 * self._rate + 0.3 * rate
        self._last_poll = newest

    def _plan(self) -> None:
        due = self.stream.next_window_end
        if self._event_mode and due != self._event_due:
            self._set_event_mode(False)
        period = self._max_period
        if due is not None and self._rate and self._last_poll is not None:
            t_last, arrived = self._last_poll
            # The middleware's receive stamps are system time.
            ahead = (due - t_last) / self._rate - (time.time() - arrived)
            # Switch at most POLL_EVENT_LEAD_SAMPLES input samples ahead: in a fast replay
            # 20 ms of wall time would be hundreds of samples, each its own wake-up.
            lead = min(POLL_EVENT_LEAD_S, POLL_EVENT_LEAD_SAMPLES / (self._rate * self._fs_in))
            if ahead <= lead:
                self._set_event_mode(True, due)
                return
            period = min(max(ahead - lead, self._min_period), self._max_period)
        self._poll_timer.timer_period_ns = int(period * 1e9)
        self._poll_timer.reset()

    def _set_event_mode(self, on: bool, due: float | None = None) -> None:
        ex = self.executor
        if ex is None or on == self._event_mode:
            return
        self._event_mode = on
        self._event_due = due
        if on:
            # Fallback wake-up in case the stream stops: leave event mode then.
            self._poll_timer.timer_period_ns = int(self._max_period * 1e9)
            self._poll_timer.reset()
            ex.add_node(self._rx)
        else:
            ex.remove_node(self._rx)

    def _on_rx(self, raw: bytes) -> None:
        """Event mode: one IMU message; back to polling once the awaited window is decided."""
        t = self._on_imu(raw)
        if t is not None:
            self._observe((t, time.time()))
        if self.stream.next_window_end != self._event_due:
            self._set_event_mode(False)
            self._plan()

    def destroy_node(self) -> None:
        if self._rx is not None:
            self._rx.destroy_node()
        super().destroy_node()

    def _on_imu(self, raw: bytes) -> float | None:
        """One serialized Imu; returns its time if finite (for the polling schedule)."""
        try:
            t, *sample = imu_sample(raw)
        except CdrError as exc:
            self.bad_messages += 1
            self.get_logger().warning(f"undecodable Imu message: {exc}", throttle_duration_sec=5.0)
            return None
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
        self._publish(events)
        return t if math.isfinite(t) else None

    def _publish(self, events: list[WindowEvent]) -> None:
        for ev in events:
            if ev.features is not None:
                self.pub.publish(features_message(ev, self._description))
                self.published += 1

    def _on_joints(self, msg: JointState) -> None:
        """One JointState: the wheel sample of the configured joints (others: ignored)."""
        t = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        if self._use_receipt:
            t = self.get_clock().now().nanoseconds * 1e-9
        try:
            w = joint_wheel_sample(
                msg.name, msg.velocity, msg.effort, self._left, self._right, self._radius
            )
        except ValueError as exc:
            self.bad_joint_messages += 1
            self.get_logger().warning(f"bad JointState: {exc}", throttle_duration_sec=5.0)
            return
        if w is None:
            return
        with self._lock:
            events = self.stream.push_wheels(t, w)
        self._publish(events)

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
                "pauses": s.buffer.pauses,
                "undecodable_messages": self.bad_messages,
                "wheel_samples": s.wheel_samples,
                "wheel_samples_dropped": s.wheel_dropped,
                "bad_joint_messages": self.bad_joint_messages,
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
