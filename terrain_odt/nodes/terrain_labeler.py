"""`terrain_labeler`: operator / joystick / map-region / odometry cues → /terrain/label,
via `labeling.Labeler`."""

from __future__ import annotations

import threading
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Joy
from std_msgs.msg import String

from ..pipeline.labeling import Labeler, UnknownLabel
from ..pipeline.node_config import ConfigError, labeler_config
from ..ros.graph import TERRAIN_LABELER
from .common import OK, WARN, ParamError, counts, declare_params, run_node, status

LABEL_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


class TerrainLabelerNode(Node):
    """Thin wrapper: messages → `Labeler` calls; publishes the label in force on change and at
    `publish_rate_hz`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(TERRAIN_LABELER.name, **kwargs)
        p = declare_params(self, TERRAIN_LABELER)
        try:
            cfg = labeler_config(p)
        except ConfigError as exc:
            raise ParamError(str(exc)) from exc
        self.labeler = Labeler(cfg)
        self._lock = threading.Lock()
        self._last: str | None = None
        self._reason = "no_cue"
        self.pub = self.create_publisher(String, "/terrain/label", LABEL_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(String, "/terrain/operator_label", self._on_operator, 10)
        self.create_subscription(Joy, "/joy", self._on_joy, 10)
        self.create_subscription(Odometry, "/odom", self._on_odom, 20)
        self.create_subscription(Twist, "/cmd_vel", self._on_cmd, 10)
        self.create_timer(1.0 / float(p["publish_rate_hz"]), lambda: self._update(force=True))
        period = float(p["diagnostics_period_s"])
        if period > 0:
            self.create_timer(period, self._publish_diagnostics)
        self.get_logger().info(
            f"classes {', '.join(cfg.class_names)}; {len(cfg.regions)} map regions, "
            f"{len(cfg.joy_mapping)} joystick buttons; motion gating "
            f"{'on' if cfg.require_motion else 'off'}"
        )

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _update(self, force: bool = False) -> None:
        with self._lock:
            st = self.labeler.state(self._now())
            changed = st.data != self._last
            self._last = st.data
            self._reason = st.reason
        if changed or force:
            self.pub.publish(String(data=st.data))
        if changed:
            self.get_logger().info(
                f"label in force: {st.label} (from {st.source})"
                if st.label
                else f"no label in force ({st.reason})"
            )

    def _on_operator(self, msg: String) -> None:
        try:
            with self._lock:
                self.labeler.operator(self._now(), msg.data)
        except UnknownLabel as exc:
            self.get_logger().warning(f"operator cue rejected: {exc}", throttle_duration_sec=2.0)
            return
        self._update()

    def _on_joy(self, msg: Joy) -> None:
        with self._lock:
            self.labeler.joy(self._now(), list(msg.buttons))
        self._update()

    def _on_odom(self, msg: Odometry) -> None:
        pos, tw = msg.pose.pose.position, msg.twist.twist
        with self._lock:
            ok = self.labeler.odom(self._now(), pos.x, pos.y, tw.linear.x, tw.angular.z)
        if not ok:
            self.get_logger().warning("odometry rejected (not finite)", throttle_duration_sec=5.0)
        self._update()

    def _on_cmd(self, msg: Twist) -> None:
        with self._lock:
            ok = self.labeler.cmd_vel(self._now(), msg.linear.x, msg.angular.z)
        if not ok:
            self.get_logger().warning("cmd_vel rejected (not finite)", throttle_duration_sec=5.0)
        self._update()

    def diagnostics(self) -> dict[str, Any]:
        with self._lock:
            return {"label": self._last or "", "reason": self._reason, **self.labeler.counters}

    def _publish_diagnostics(self) -> None:
        with self._lock:
            label, reason = self._last, self._reason
            c = dict(self.labeler.counters)
        bad = sum(c.values()) - c.get("time_resets", 0)
        lvl = WARN if bad else OK
        text = f"label {label}" if label else f"no label ({reason})"
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [
            status(
                self,
                "labels",
                lvl,
                text,
                {"label": label or "", "reason": reason, **counts("", c.items())},
            )
        ]
        self.diag_pub.publish(arr)


def main(args: list[str] | None = None) -> int:
    return run_node(TerrainLabelerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
