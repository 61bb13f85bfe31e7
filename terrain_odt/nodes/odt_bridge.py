"""`odt_bridge`: /terrain/features + /terrain/label → co-processor (via `bridge.BridgeCore`);
publishes prediction, confidence, prequential accuracy and /diagnostics; std_srvs services."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future as RclpyFuture
from std_msgs.msg import Float32, Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger

from ..paths import resolve
from ..pipeline.bridge import BridgeCore, ModelFileError, Outcome, load_model_files
from ..pipeline.node_config import ConfigError, bridge_config
from ..ros.graph import ODT_BRIDGE
from ..signals.feature_msg import (
    FEATURES_TOPIC,
    PREDICTION_WINDOW_TOPIC,
    features_description,
    parse_features_message,
    prediction_window_message,
)
from .common import ERROR, OK, WARN, ParamError, declare_params, run_node, status

LABEL_QOS = QoSProfile(
    depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


class OdtBridgeNode(Node):
    """Thin wrapper around `BridgeCore`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(ODT_BRIDGE.name, **kwargs)
        p = declare_params(self, ODT_BRIDGE)
        try:
            model = load_model_files(
                resolve(str(p["model_sidecar"])) if p["model_sidecar"] else "",
                resolve(str(p["model_blob"])) if p["model_blob"] else None,
            )
        except ModelFileError as exc:
            raise ParamError(f"odt_bridge: parameter model_sidecar / model_blob: {exc}") from exc
        try:
            cfg = bridge_config(p)
        except ConfigError as exc:
            raise ParamError(str(exc)) from exc
        if cfg.upload_model and model.blob is None:
            raise ParamError("odt_bridge: upload_model is set but model_blob is empty")
        self.save_on_shutdown = bool(p["save_on_shutdown"])
        self.pub_pred = self.create_publisher(String, "/terrain/prediction", 10)
        self.pub_conf = self.create_publisher(Float32, "/terrain/confidence", 10)
        self.pub_acc = self.create_publisher(Float32, "/terrain/accuracy", 10)
        self.pub_window = self.create_publisher(Float64MultiArray, PREDICTION_WINDOW_TOPIC, 50)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.core = BridgeCore(cfg, model, self._on_outcome, log=self.get_logger())
        self.create_subscription(String, "/terrain/label", self._on_label, LABEL_QOS)
        self.create_subscription(Float64MultiArray, FEATURES_TOPIC, self._on_features, 50)
        # Services block on the link: their own group, so topics keep flowing meanwhile.
        srv = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "~/save_model", self._srv(self.core.save), callback_group=srv)
        self.create_service(
            Trigger, "~/restore_model", self._srv(self.core.restore), callback_group=srv
        )
        self.create_service(
            Trigger, "~/reset_pretrained", self._srv(self.core.reset_pretrained), callback_group=srv
        )
        self.create_service(SetBool, "~/set_training", self._on_set_training, callback_group=srv)
        self.create_timer(float(p["diagnostics_period_s"]), self._publish_diagnostics)
        self.get_logger().info(
            f"model 0x{model.model_id:08x}: {model.input_len} inputs, classes "
            f"{', '.join(model.class_names)}; co-processor {cfg.url} at {cfg.baud_rate} baud; "
            f"training {'on' if cfg.training_enabled else 'off'}"
        )
        self.core.start()

    # ---- callbacks -------------------------------------------------------------------------

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_label(self, msg: String) -> None:
        err = self.core.on_label(self._now(), msg.data)
        if err:
            self.get_logger().warning(err, throttle_duration_sec=5.0)

    def _on_features(self, msg: Float64MultiArray) -> None:
        try:
            t0, t1, feats = parse_features_message(msg)
            self.core.on_features(t0, t1, feats, description=features_description(msg))
        except ValueError as exc:
            self.get_logger().warning(f"bad features message: {exc}", throttle_duration_sec=5.0)

    def _on_outcome(self, o: Outcome) -> None:
        # Runs on the link's threads; rclpy publishers are thread-safe.
        if o.predicted_name is not None:
            self.pub_pred.publish(String(data=o.predicted_name))
            self.pub_window.publish(prediction_window_message(o))
        if o.confidence is not None:
            self.pub_conf.publish(Float32(data=float(o.confidence)))
        if o.kind == "train":
            acc = self.core.accuracy()
            if not math.isnan(acc):
                self.pub_acc.publish(Float32(data=float(acc)))
        self.last_outcome = o

    def _off_executor(self, fn: Callable[[], tuple[bool, str]]) -> RclpyFuture:
        """Run a call that waits on the co-processor in a thread; an awaitable for its result.

        Service callbacks are coroutines awaiting this, so they never hold up the node's
        executor (topics keep flowing with a single-threaded executor too).
        """
        fut: RclpyFuture = RclpyFuture(executor=self.executor)
        fut.add_done_callback(lambda _f: None)  # completion wakes the executor

        def work() -> None:
            try:
                fut.set_result(fn())
            except Exception as exc:  # the caller gets the error as its answer
                fut.set_result((False, f"{type(exc).__name__}: {exc}"))

        threading.Thread(target=work, name="odt-bridge-service", daemon=True).start()
        return fut

    def _srv(self, fn: Callable[[], tuple[bool, str]]) -> Any:
        async def handler(_req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
            resp.success, resp.message = await self._off_executor(fn)
            # One call site per severity: rclpy refuses a severity change at a call site
            # (ValueError, and the service would never answer).
            if resp.success:
                self.get_logger().info(resp.message)
            else:
                self.get_logger().error(resp.message)
            return resp

        return handler

    async def _on_set_training(
        self, req: SetBool.Request, resp: SetBool.Response
    ) -> SetBool.Response:
        enabled = bool(req.data)
        resp.success, resp.message = await self._off_executor(
            lambda: self.core.set_training(enabled)
        )
        self.get_logger().info(resp.message)
        return resp

    # ---- diagnostics -----------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        snap = self.core.snapshot()
        c = snap["counters"]
        link = snap.get("link", {})
        cop = snap.get("coprocessor", {})
        if not snap["connected"]:
            lvl, text = ERROR, f"co-processor not connected at {snap['url']}"
        elif not snap["model_ok"]:
            lvl, text = ERROR, snap["model_problem"]
        elif link.get("frame_errors", 0) or link.get("coprocessor_resets", 0):
            lvl, text = WARN, "connected; frame errors or co-processor resets seen"
        else:
            lvl, text = OK, "connected"
        link_values = {"url": snap["url"], "connected": snap["connected"], **cop}
        for k in (
            "frames_sent",
            "frames_received",
            "crc_errors",
            "frame_errors",
            "retries",
            "retransmitted_frames",
            "timeouts",
            "reconnects",
            "coprocessor_resets",
            "rtt_p50_ms",
            "rtt_p99_ms",
            "train_rtt_p99_ms",
        ):
            if k in link:
                link_values[k] = link[k]
        tr = snap.get("trainer", {})
        ft = snap.get("finetune", {})
        if tr.get("diverged"):
            tlvl, ttext = ERROR, "trainer diverged (rolled back)"
        elif c.get("dropped", 0) or c.get("failed", 0):
            tlvl = WARN
            ttext = f"{c['dropped']} labelled samples dropped, {c['failed']} failed"
        elif ft.get("last_check_rolled_back"):
            tlvl = WARN
            ttext = (
                f"fine-tuning rolled back: validation score {ft.get('validation_score'):.3f} "
                f"below the accepted model's {ft.get('accepted_score'):.3f} "
                f"({ft.get('rollbacks')} rollbacks in {ft.get('checks')} checks)"
            )
        else:
            tlvl = OK
            ttext = (
                f"training {'on' if snap['training_enabled'] else 'off'}, {c['trained']} trained, "
                f"{ft.get('rollbacks', 0)} rollbacks in {ft.get('checks', 0)} checks"
            )
        trainer_values = {
            "training_enabled": snap["training_enabled"],
            "accuracy_recent": snap["accuracy_recent"],
            "accuracy_total": snap["accuracy_total"],
            **{f"samples_{k}": v for k, v in c.items()},
            **tr,
            **{f"finetune_{k}": v for k, v in ft.items()},
        }
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [
            status(self, "link", lvl, text, link_values),
            status(self, "trainer", tlvl, ttext, trainer_values),
        ]
        self.pub_diag.publish(arr)

    def diagnostics(self) -> dict[str, Any]:
        """Final counters for `terrain-odt launch --stats-out` (and tests)."""
        snap = self.core.snapshot()
        snap["confusion_prequential"] = self.core.confusion.tolist()
        return snap

    def close(self) -> None:
        """Flush, optionally save, stop the link (called on shutdown)."""
        self.core.close(save=self.save_on_shutdown)


def main(args: list[str] | None = None) -> int:
    # Service calls wait on the co-processor off the executor (see _off_executor), so a
    # single-threaded executor serves this node.
    return run_node(OdtBridgeNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
