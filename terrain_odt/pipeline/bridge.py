"""Logic of the `odt_bridge` node (no ROS here): feature windows + labels → co-processor.

A window whose whole time span had one label in force becomes a training sample (the
co-processor predicts it first, then trains: the prediction is prequential); any other window
becomes an inference request. Results come back as `Outcome`s through a callback, from the
link's threads.

Robustness, as a robot needs it:

* The link (`terrain_odt.link.OdtClient`) is opened by a worker thread that retries with
  back-off, so the node starts and keeps running with the co-processor unplugged. Once open, the
  client itself reconnects after unplugging or a co-processor reset and resends what was not
  acknowledged.
* No labelled sample is lost silently: it is trained (acknowledged), failed (the co-processor
  rejected it or the link was closed), dropped (the hold queue was full, or the co-processor runs
  a different model) or still pending; `counters()` always satisfies
  `labelled == trained + held_out + failed + dropped + pending` (held-out windows are
  validation windows, predicted and never trained on, see `terrain_odt.pipeline.finetune`).
* Inference requests that cannot be served in time are skipped and counted (a stale
  prediction is worth nothing).
* Training parameters are sent at every new session (a co-processor that restarted forgets
  them), and the model is checked against the sidecar (id, input length, classes).

What trains, and the accept/rollback check that keeps fine-tuning from making things worse, is
`terrain_odt.pipeline.finetune` (mixed replay of this robot's and the model's source windows,
held-out
validation blocks, rollback to the last accepted model). With `synchronous=True` nothing runs in
a thread of its own: every call that queues work also does it, in order, before it returns (the
deterministic evaluation, `terrain_odt.evaluation.evaluate`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..link import TOPK_OFF, LinkError, LinkTimeout, OdtClient, SetParams, Stats, TrainResult
from ..model.quantize import lr_to_fixed
from ..model.sidecar import ModelFileError, ModelFiles, load_model_files
from .finetune import Guard, Holdout, ReplayPlanner, Stored, score
from .labeling import LabelTimeline

__all__ = [
    "BridgeConfig",
    "BridgeCore",
    "ModelFileError",
    "ModelFiles",
    "Outcome",
    "load_model_files",
]


@dataclass(frozen=True)
class BridgeConfig:
    """Settings of the bridge (the `odt_bridge` node parameters of the same names)."""

    url: str
    baud_rate: int = 921600
    training_enabled: bool = True
    learning_rate: float = 0.001
    batch_size: int = 1
    train_layers: int = -1
    partial_update_topk: int = -1
    accuracy_window: int = 100
    max_pending_samples: int = 4096
    connect_timeout_s: float = 5.0
    link_window: int = 8
    upload_model: bool = False
    autosave_period_s: float = 0.0
    stats_period_s: float = 1.0
    infer_queue: int = 2
    #: This robot's labelled windows kept per class for replay (`finetune.ReplayPlanner`).
    rehearsal_per_class: int = 256
    #: Replayed windows trained per new labelled window.
    rehearsal_ratio: float = 3.0
    #: Share of replays taken from this robot's windows (the rest: the model's source windows).
    replay_robot_share: float = 1.0
    #: Replay the source windows shipped with the model (if it has them).
    source_replay: bool = True
    #: > 0: a class's robot share scales with its prequential error, full at this error rate.
    replay_error_share: float = 0.1
    #: Share of labelled windows held back (in blocks of `validation_block`) to judge updates.
    validation_share: float = 0.2
    validation_block: int = 8
    #: New training windows between accept/rollback checks (0: no checks).
    checkpoint_every: int = 20
    rollback_tolerance: float = 0.01
    validation_source_weight: float = 0.8
    #: Seed of the replay draws (and, offset, of the co-processor's rounding).
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.url:
            raise ValueError("no co-processor URL (parameter serial_port)")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if self.accuracy_window < 1 or self.max_pending_samples < 1 or self.infer_queue < 1:
            raise ValueError("accuracy_window, max_pending_samples and infer_queue must be >= 1")
        if not 0.0 <= self.replay_robot_share <= 1.0:
            raise ValueError(f"replay_robot_share must be in [0, 1], got {self.replay_robot_share}")
        if not 0.0 <= self.validation_share < 1.0:
            raise ValueError(f"validation_share must be in [0, 1), got {self.validation_share}")
        if self.validation_block < 1 or self.checkpoint_every < 0:
            raise ValueError("validation_block must be >= 1 and checkpoint_every >= 0")
        if not 0.0 <= self.validation_source_weight <= 1.0:
            raise ValueError("validation_source_weight must be in [0, 1]")
        if not 0.0 <= self.rollback_tolerance <= 1.0:
            raise ValueError("rollback_tolerance must be in [0, 1]")


@dataclass(frozen=True)
class Outcome:
    """The co-processor's answer for one window."""

    t_start: float
    t_end: float
    #: "train" (labelled window, prediction made before training on it), "infer", or
    #: "heldout" (labelled window held back for validation: predicted, never trained on).
    kind: str
    predicted: int | None
    predicted_name: str | None
    label: int | None = None
    label_name: str | None = None
    #: Softmax probability of the predicted class (inference only).
    confidence: float | None = None
    loss: float | None = None

    @property
    def correct(self) -> bool | None:
        if self.label is None or self.predicted is None:
            return None
        return self.predicted == self.label


class _Log(Protocol):
    def info(self, msg: str) -> Any: ...
    def warning(self, msg: str) -> Any: ...
    def error(self, msg: str) -> Any: ...


class _Throttle:
    """Log a recurring message at most once per `period` seconds (with a repeat count)."""

    def __init__(self, period: float = 5.0) -> None:
        self.period = period
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def __call__(self, fn: Callable[[str], Any], key: str, msg: str) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) >= self.period:
            n = self._suppressed.pop(key, 0)
            fn(msg + (f" ({n} more since the last report)" if n else ""))
            self._last[key] = now
        else:
            self._suppressed[key] += 1


@dataclass
class _Sample:
    t_start: float
    t_end: float
    q: np.ndarray
    label: int
    #: A replay of a stored window (not counted as a new labelled sample, never emitted).
    replay: bool = False


ClientFactory = Callable[..., OdtClient]


class BridgeCore:
    """Feature windows and labels in, `Outcome`s out (see the module doc)."""

    def __init__(
        self,
        cfg: BridgeConfig,
        model: ModelFiles,
        emit: Callable[[Outcome], None],
        log: _Log | None = None,
        client_factory: ClientFactory = OdtClient,
        synchronous: bool = False,
    ) -> None:
        self.cfg = cfg
        self.synchronous = synchronous
        self.model = model
        self._emit = emit
        self.log: _Log = log or logging.getLogger("terrain_odt.pipeline.bridge")
        self._factory = client_factory
        self._throttle = _Throttle()
        # The labeler re-publishes at least every 0.1 s (publish_rate_hz): a label not heard of
        # for 1 s is no longer in force (a dead labeler must not keep labelling).
        self.timeline = LabelTimeline(max_hold_s=1.0)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: OdtClient | None = None
        self._configured_session = -1
        self._model_ok = False
        self._model_problem = "not connected yet"
        self._training = cfg.training_enabled
        self._backlog: deque[_Sample] = deque()
        self._inflight_new = 0
        n_classes = len(model.class_names)
        source = model.source if cfg.source_replay else None
        self.planner = ReplayPlanner(
            n_classes,
            cfg.rehearsal_per_class,
            cfg.rehearsal_ratio,
            cfg.replay_robot_share,
            source,
            seed=cfg.seed,
            error_share=cfg.replay_error_share,
        )
        self.holdout = Holdout(n_classes, cfg.validation_share, cfg.validation_block, seed=cfg.seed)
        self.guard = Guard(
            cfg.checkpoint_every, cfg.rollback_tolerance, cfg.validation_source_weight
        )
        self._source_val = (
            [Stored(q, int(y)) for q, y in zip(source.val_x, source.val_y, strict=True)]
            if source is not None
            else []
        )
        #: Predictions of the accepted model per validation window (keyed by `Stored.uid`).
        self._best_preds: dict[int, int] = {}
        self._guard_ready = False
        self._check_requested = False
        self._sync_trained: list[tuple[_Sample, Future[TrainResult]]] = []
        #: (t_start, t_end, input, label of a held-out window or None)
        self._infer: deque[tuple[float, float, np.ndarray, int | None]] = deque()
        self._jobs: deque[tuple[Callable[[OdtClient], str], Future[str]]] = deque()
        self._c: Counter[str] = Counter()
        self._recent: deque[bool] = deque(maxlen=cfg.accuracy_window)
        n = len(model.class_names)
        self.confusion = np.zeros((n, n), dtype=np.int64)
        self._stats: Stats | None = None
        self._last_stats = 0.0
        self._last_save = time.monotonic()
        self._applied_at_save = 0
        self._connected_once = False
        self._last_connect_error = ""

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread (connects, then serves the queues). Synchronous: connect now
        (`LinkError` if the co-processor cannot be reached) and configure."""
        if self.synchronous:
            if self._client is None and not self._connect():
                raise LinkError(
                    f"co-processor not reachable at {self.cfg.url}: {self._last_connect_error}"
                )
            self._work()
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="odt-bridge", daemon=True)
            self._thread.start()

    def close(self, save: bool = False, timeout: float = 10.0) -> None:
        """Flush what can be flushed, judge what trained since the last check (accept or roll
        back), save if asked and anything trained, then stop."""
        client = self._client
        if self._thread is not None and self._thread.is_alive():
            self._stop.set()  # the worker must not talk to the link while we do
            with self._cond:
                self._cond.notify_all()
            self._thread.join(timeout=timeout)
        if client is not None and client.connected and self._model_ok:
            try:
                self._drain_backlog(client)
                client.flush(timeout=timeout)
                if self._guard_active() and self._guard_ready and self.guard.since_check > 0:
                    self._check(client)
                if save and self._c["trained"] > self._applied_at_save:
                    client.save()
                    self.log.info("model saved to co-processor flash")
            except (LinkError, ValueError) as exc:
                self.log.warning(f"on shutdown: {exc}")
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        if client is not None:
            client.close()
        with self._lock:
            n = sum(not s.replay for s in self._backlog)
            if n:
                self.log.warning(
                    f"{n} labelled samples never reached the co-processor: counted as dropped"
                )
            self._c["dropped"] += n
            self._backlog.clear()

    # ---- inputs ----------------------------------------------------------------------------

    def on_label(self, t: float, name: str | None) -> str | None:
        """The label in force from time `t` (`None`/"" = none). Returns an error text for an
        unknown class name (which then counts as no label)."""
        name = (name or "").strip()
        err = None
        if name and self.model.class_index(name) is None:
            with self._lock:
                self._c["unknown_labels"] += 1
            err = (
                f"unknown label '{name}' (the model knows {', '.join(self.model.class_names)}): "
                "treated as no label"
            )
            name = ""
        self.timeline.record(t, name or None)
        return err

    def on_features(
        self,
        t_start: float,
        t_end: float,
        features: Sequence[float],
        description: str | None = None,
    ) -> None:
        """One window. `ValueError` if it is malformed (wrong length, non-finite) or, with
        `description` (what the feature node says the features are), not what the model was
        trained on (its sidecar's `features`)."""
        want = self.model.feature_description
        if description is not None and want is not None and description != want:
            with self._lock:
                self._c["windows_feature_mismatch"] += 1
            raise ValueError(
                f"imu_features computes [{description}], the model was trained on [{want}] "
                "(sidecar 'features'): set the imu_features parameters to match, or use a "
                "model trained with these"
            )
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 1 or x.shape[0] != self.model.input_len:
            with self._lock:
                self._c["windows_wrong_length"] += 1
            raise ValueError(f"{x.size} features, the model takes {self.model.input_len}")
        if not np.isfinite(x).all() or not (math.isfinite(t_start) and math.isfinite(t_end)):
            with self._lock:
                self._c["windows_nonfinite"] += 1
            raise ValueError("features or stamps are not finite")
        q = self.model.quantize(x)[0]
        name = self.timeline.label_over(t_start, t_end)
        idx = self.model.class_index(name) if name else None
        with self._cond:
            self._c["windows"] += 1
            if idx is not None:
                self._c["labelled"] += 1
                if self._training and self.holdout.take(q, idx):
                    # Held back to judge updates: predicted (an inference), never trained on.
                    self._c["held_out"] += 1
                    self._queue_infer(t_start, t_end, q, idx)
                else:
                    self._queue_train(_Sample(t_start, t_end, q, idx))
            else:
                if self.guard.since_check > 0 and self._guard_active():
                    # Labelled driving just ended: judge what it trained now.
                    self._check_requested = True
                self._queue_infer(t_start, t_end, q, None)
            self._cond.notify_all()
        if self.synchronous:
            self._work()

    def _queue_train(self, s: _Sample) -> None:
        """A new labelled window (and, training on, the replays after it); lock held."""
        if len(self._backlog) >= self.cfg.max_pending_samples:
            # Full: first shed replay copies (they can be drawn again), then drop.
            kept = deque(x for x in self._backlog if not x.replay)
            self._c["replays_shed"] += len(self._backlog) - len(kept)
            self._backlog = kept
        if len(self._backlog) >= self.cfg.max_pending_samples:
            self._c["dropped"] += 1
            self._throttle(
                self.log.warning,
                "drop",
                f"labelled sample dropped: {len(self._backlog)} samples already wait for "
                "the co-processor (max_pending_samples)",
            )
            return
        self._backlog.append(s)
        if self._training:
            self.planner.add(s.q, s.label)
            self._backlog.extend(
                _Sample(s.t_start, s.t_end, r.q, r.label, replay=True) for r in self.planner.draw()
            )
            self.guard.since_check += 1

    def _queue_infer(self, t0: float, t1: float, q: np.ndarray, held: int | None) -> None:
        if len(self._infer) >= self.cfg.infer_queue and not self.synchronous:
            _, _, _, old = self._infer.popleft()
            self._c["heldout_skipped" if old is not None else "infer_skipped"] += 1
        self._infer.append((t0, t1, q, held))

    # ---- commands (blocking, from service callbacks) ---------------------------------------

    def set_training(self, enabled: bool, timeout: float = 30.0) -> tuple[bool, str]:
        """Switch on-device training; applied from the next sample on."""
        self._training = enabled
        self._configured_session = -1  # re-send the parameters
        state = "on" if enabled else "off"
        if self._client is None or not self._client.connected:
            return True, f"training {state} (applied when the co-processor connects)"

        def job(c: OdtClient) -> str:
            problem = self._configure(c)
            return f"training {state}" + ("" if self._model_ok else f" (not sent: {problem})")

        return self._command(job, timeout)

    def save(self, timeout: float = 30.0) -> tuple[bool, str]:
        def job(c: OdtClient) -> str:
            c.save()
            self._applied_at_save = self._c["trained"]
            self._last_save = time.monotonic()
            return "model saved to co-processor flash"

        return self._command(job, timeout)

    def restore(self, timeout: float = 30.0) -> tuple[bool, str]:
        def job(c: OdtClient) -> str:
            c.restore()
            self._guard_ready = False  # the saved model is the new reference
            return "last saved model restored"

        return self._command(job, timeout)

    def reset_pretrained(self, timeout: float = 30.0) -> tuple[bool, str]:
        def job(c: OdtClient) -> str:
            c.reset_pretrained()
            self._guard_ready = False
            return "pretrained model restored"

        return self._command(job, timeout)

    def _command(self, job: Callable[[OdtClient], str], timeout: float) -> tuple[bool, str]:
        if self._client is None or not self._client.connected:
            return False, f"co-processor not connected ({self._last_connect_error or 'no link'})"
        if self.synchronous:
            try:
                self._work()
                return True, job(self._client)
            except (LinkError, ValueError) as exc:
                return False, str(exc)
        fut: Future[str] = Future()
        with self._cond:
            self._jobs.append((job, fut))
            self._cond.notify_all()
        try:
            return True, fut.result(timeout=timeout)
        except TimeoutError:
            return False, f"no answer within {timeout} s"
        except (LinkError, ValueError) as exc:
            return False, str(exc)

    # ---- state -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        c = self._client
        return c is not None and c.connected

    @property
    def configured(self) -> bool:
        """Connected, model checked and training parameters sent for the current session."""
        c = self._client
        return (
            c is not None
            and c.connected
            and self._model_ok
            and self._configured_session == c.session
        )

    @property
    def training_enabled(self) -> bool:
        return self._training

    def accuracy(self) -> float:
        """Prequential accuracy over the last `accuracy_window` labelled samples (NaN: none)."""
        with self._lock:
            return sum(self._recent) / len(self._recent) if self._recent else math.nan

    def counters(self) -> dict[str, int]:
        """Sample accounting (see the module doc) and event counters."""
        with self._lock:
            c = dict(self._c)
            c["pending"] = sum(not s.replay for s in self._backlog) + self._inflight_new
            c["rehearsal_stored"] = self.planner.stored
            c["validation_windows"] = self.holdout.held
        for k in (
            "windows",
            "labelled",
            "held_out",
            "sent",
            "trained",
            "failed",
            "dropped",
            "inferred",
        ):
            c.setdefault(k, 0)
        # Sorted: the order keys first appeared in depends on thread timing (link callbacks).
        return dict(sorted(c.items()))

    def snapshot(self) -> dict[str, Any]:
        """Everything the diagnostics show."""
        client = self._client
        out: dict[str, Any] = {
            "url": self.cfg.url,
            "class_names": list(self.model.class_names),
            "connected": self.connected,
            "model_ok": self._model_ok,
            "model_problem": "" if self._model_ok else self._model_problem,
            "training_enabled": self._training,
            "accuracy_recent": self.accuracy(),
            "counters": self.counters(),
        }
        with self._lock:
            total = int(self.confusion.sum())
            out["accuracy_total"] = float(np.trace(self.confusion)) / total if total else math.nan
        if client is not None:
            out["link"] = client.link_stats().as_dict()
            info = client.info
            if info is not None:
                out["coprocessor"] = {
                    "firmware": info.firmware_version_str,
                    "model_id": f"0x{info.model_id:08x}",
                    "model_ram": info.model_ram,
                    "boot_count": info.boot_count,
                    "session": client.session,
                }
        st = self._stats
        if st is not None:
            out["trainer"] = {
                "train_steps": st.train_steps,
                "updates": st.updates,
                "preq_accuracy": st.preq_accuracy,
                "loss_ema": st.loss_ema_q15 / 32768.0,
                "forward_saturations": st.forward_saturations,
                "update_clips": st.update_clips,
                "weight_saturations": st.weight_saturations,
                "zero_grad_steps": st.zero_grad_steps,
                "frame_errors": st.frame_errors,
                "diverged": bool(st.diverged),
            }
        g = self.guard
        out["finetune"] = {
            "checks": g.checks,
            "accepted": g.accepted,
            "rollbacks": g.rollbacks,
            "validation_score": g.last_score,
            "accepted_score": g.best_score,
            "validation_windows": self.holdout.held,
            "source_validation_windows": len(self._source_val),
            "source_replay_windows": self.planner.source_windows,
            "since_check": g.since_check,
            "last_check_rolled_back": g.last_rolled_back,
        }
        return out

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no sample or request is queued or in flight (for replays and tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                busy = bool(self._backlog or self._infer or self._jobs or self._busy)
            client = self._client
            if not busy and (client is None or client.pending_samples == 0):
                return True
            time.sleep(0.01)
        return False

    # ---- worker ----------------------------------------------------------------------------

    _busy = False

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            if self._client is None:
                if not self._connect():
                    self._stop.wait(backoff)
                    backoff = min(2 * backoff, 5.0)
                    continue
                backoff = 0.5
            client = self._client
            assert client is not None
            try:
                if self._step(client):
                    continue
                self._periodic(client)
            except LinkError as exc:
                self._throttle(self.log.warning, "link", f"co-processor link: {exc}")
                self._stop.wait(0.05)
                continue
            with self._cond:
                if not (self._jobs or self._infer or (self._backlog and self._model_ok)):
                    self._cond.wait(0.05)

    def _step(self, client: OdtClient) -> bool:
        """One round of the worker: configure, send training frames, judge updates when due,
        serve one request. True if a request was served (more may be waiting)."""
        if client.connected and client.session != self._configured_session:
            self._configure(client)
        if self._model_ok:
            self._drain_backlog(client)
            if self._guard_active():
                if not self._guard_ready:
                    self._guard_start(client)
                if self.guard.due() or self._check_requested:
                    self._check(client)
        return self._serve_one(client)

    def _work(self) -> None:
        """Synchronous mode: do everything queued, in order, and wait for its answers."""
        client = self._client
        if client is None:
            return
        while True:
            self._step(client)
            client.flush()
            self._finish_trained()
            with self._lock:
                idle = not (self._backlog or self._infer or self._jobs) or not self._model_ok
            if idle and not (self._guard_active() and self.guard.due()):
                break

    def _finish_trained(self) -> None:
        """Synchronous mode: the outcomes of the training frames sent, in order."""
        done, self._sync_trained = self._sync_trained, []
        for s, fut in done:
            fut.exception()  # waits until answered (flush() returned: it is)
            self._on_trained(s, fut)

    def _connect(self) -> bool:
        cfg = self.cfg
        try:
            client = self._factory(
                cfg.url,
                baudrate=cfg.baud_rate,
                window=cfg.link_window,
                connect_timeout=cfg.connect_timeout_s,
                max_queue=cfg.max_pending_samples,
                open=False,
            )
            client.open()
        except (LinkError, OSError, ValueError) as exc:
            msg = str(exc)
            if msg != self._last_connect_error:
                self.log.error(f"co-processor not reachable at {cfg.url}: {msg}; retrying")
            self._last_connect_error = msg
            return False
        self._last_connect_error = ""
        self._client = client
        info = client.info
        if info is not None:
            self.log.info(
                f"co-processor at {cfg.url}: firmware {info.firmware_version_str}, model "
                f"0x{info.model_id:08x}, {info.input_len} inputs, {info.classes} classes, "
                f"{info.train_steps} training steps, boot {info.boot_count}"
            )
        return True

    def _check_model(self, client: OdtClient) -> bool:
        info = client.info
        m = self.model
        if info is None:
            return False
        if info.model_id == m.model_id and info.input_len == m.input_len:
            if info.classes != len(m.class_names):
                self._model_problem = (
                    f"co-processor model has {info.classes} classes, sidecar {len(m.class_names)}"
                )
                return False
            return True
        if self.cfg.upload_model and m.blob is not None:
            self.log.info(
                f"co-processor runs model 0x{info.model_id:08x}; uploading 0x{m.model_id:08x}"
            )
            client.upload_model(m.blob)
            return self._check_model(client)
        self._model_problem = (
            f"co-processor runs model 0x{info.model_id:08x} ({info.input_len} inputs), the "
            f"sidecar describes 0x{m.model_id:08x} ({m.input_len} inputs): set upload_model "
            "and model_blob, or point model_sidecar at the model the co-processor runs"
        )
        return False

    def _configure(self, client: OdtClient) -> str:
        """At each new session: check the model and send the training parameters."""
        session = client.session
        ok = self._check_model(client)
        if not ok:
            if self._model_ok or session != self._configured_session:
                self.log.error(f"not using the co-processor: {self._model_problem}")
            self._model_ok = False
            self._configured_session = session
            return self._model_problem
        self._send_params(client)
        self._model_ok = True
        self._model_problem = ""
        self._configured_session = client.session
        return "parameters sent"

    def _send_params(self, client: OdtClient) -> None:
        n = self.model.param_layers
        k = n if self.cfg.train_layers < 0 else min(self.cfg.train_layers, n)
        modes = (0,) * (n - k) + (2,) * k
        lr_m, lr_e = lr_to_fixed(self.cfg.learning_rate)
        topk = TOPK_OFF if self.cfg.partial_update_topk < 0 else self.cfg.partial_update_topk
        # A new rounding seed after each rollback: the reloaded model must not repeat the
        # draws that led to the rejected one.
        seed = (0x2545_F491 + 7919 * (self.cfg.seed + self.guard.rollbacks)) & 0xFFFF_FFFF
        client.set_params(
            SetParams(
                enabled=self._training,
                lr_m=lr_m,
                lr_e=lr_e,
                batch=self.cfg.batch_size,
                topk_min=topk,
                modes=modes,
                seed=seed,
            )
        )

    # ---- accept / roll back (terrain_odt.pipeline.finetune)
    # -------------------------------------------

    def _guard_active(self) -> bool:
        return self._training and self.guard.every > 0

    def _predict_all(self, client: OdtClient, windows: list[Stored]) -> list[int]:
        return [int(client.infer(w.q).predicted) for w in windows]

    def _score(
        self, client: OdtClient, robot: list[Stored], cache: dict[int, int] | None
    ) -> float | None:
        """Score of the co-processor's model on `robot` + the source validation windows; with
        `cache`, predictions found there are used and the new ones added."""
        windows = robot + self._source_val
        preds = []
        for w in windows:
            key = w.uid
            if cache is not None and key in cache:
                preds.append(cache[key])
                continue
            p = int(client.infer(w.q).predicted)
            if cache is not None:
                cache[key] = p
            preds.append(p)
        n = len(robot)
        return score(
            preds[:n],
            [w.label for w in robot],
            preds[n:],
            [w.label for w in self._source_val],
            self.guard.source_weight,
        )

    def _guard_start(self, client: OdtClient) -> None:
        """The model the co-processor runs now is the accepted reference."""
        client.flush()
        self._finish_trained()
        g = self.guard
        g.best_blob = client.download_model()
        g.frozen = self.holdout.snapshot()
        self._best_preds = {}
        g.best_score = self._score(client, g.frozen, self._best_preds)
        g.since_check = 0
        self._check_requested = False
        self._guard_ready = True

    def _check(self, client: OdtClient) -> None:
        """Judge the training since the last check on the windows frozen then: keep the model,
        or upload the last accepted one again (rollback)."""
        client.flush()
        self._finish_trained()
        g = self.guard
        self._check_requested = False
        cur_preds: dict[int, int] = {}
        current = self._score(client, g.frozen, cur_preds)
        if g.judge(current):
            g.accepted += 1
            g.best_blob = client.download_model()
            self._best_preds = cur_preds
        else:
            g.rollbacks += 1
            assert g.best_blob is not None
            self.log.warning(
                f"fine-tuning rolled back: validation score {current:.3f} < accepted "
                f"{g.best_score:.3f} - {g.tolerance} (rollback {g.rollbacks})"
            )
            client.upload_model(g.best_blob)
            self._send_params(client)
            self._configured_session = client.session
        g.frozen = self.holdout.snapshot()
        g.best_score = self._score(client, g.frozen, self._best_preds)
        self._maybe_autosave(client, after_check=True)

    # ---- training frames and requests ------------------------------------------------------

    def _drain_backlog(self, client: OdtClient) -> None:
        while True:
            with self._lock:
                if not self._backlog:
                    return
                s = self._backlog[0]
            try:
                fut = client.train(s.q, s.label, timeout=0.0)
            except LinkTimeout:
                if not self.synchronous:
                    return  # the client's queue is full: keep the sample here
                client.flush()
                continue
            except ValueError as exc:
                with self._lock:
                    self._backlog.popleft()
                    self._c["replays_failed" if s.replay else "failed"] += 1
                self._throttle(self.log.error, "reject", f"training sample rejected: {exc}")
                continue
            with self._lock:
                self._backlog.popleft()
                if s.replay:
                    self._c["replays_sent"] += 1
                else:
                    self._c["sent"] += 1
                    self._inflight_new += 1
            if self.synchronous:
                # Handled in this thread, in order, once answered (`_work`): no callback
                # races the caller (the last outcome and counters are final on return).
                self._sync_trained.append((s, fut))
            else:
                fut.add_done_callback(lambda f, s=s: self._on_trained(s, f))

    def _on_trained(self, s: _Sample, fut: Future[TrainResult]) -> None:
        exc = fut.exception()
        r = fut.result() if exc is None else None
        with self._lock:
            if not s.replay:
                self._inflight_new -= 1
            if r is not None and r.updated:
                self._c["updates"] += 1
            if s.replay:
                self._c["replays_trained" if r is not None else "replays_failed"] += 1
                return
            if r is None:
                self._c["failed"] += 1
            else:
                self._c["trained"] += 1  # with the pending decrement: the sum never dips
        if r is None:
            self._throttle(self.log.warning, "failed", f"training sample not applied: {exc}")
            return
        names = self.model.class_names
        pred = r.pred if r.pred is not None and r.pred < len(names) else None
        with self._lock:
            if pred is not None:
                self._recent.append(pred == s.label)
                self.confusion[s.label, pred] += 1
                self.planner.record(s.label, pred == s.label)
        self._emit(
            Outcome(
                s.t_start,
                s.t_end,
                "train",
                pred,
                names[pred] if pred is not None else None,
                s.label,
                names[s.label],
                None,
                r.loss,
            )
        )

    def _serve_one(self, client: OdtClient) -> bool:
        with self._lock:
            if self._jobs:
                job, fut = self._jobs.popleft()
                self._busy = True
            elif self._infer and self._model_ok:
                job, fut = None, None
                t0, t1, q, held = self._infer.popleft()
                self._busy = True
            else:
                return False
        try:
            if job is not None and fut is not None:
                try:
                    fut.set_result(job(client))
                except (LinkError, ValueError) as exc:
                    fut.set_exception(exc)
                return True
            try:
                p = client.infer(q)
            except LinkError as exc:
                with self._lock:
                    self._c["infer_failed"] += 1
                self._throttle(self.log.warning, "infer", f"inference failed: {exc}")
                return True
            names = self.model.class_names
            pred = p.predicted if p.predicted < len(names) else None
            conf = float(p.scores[p.predicted]) if pred is not None and p.scores.size else None
            with self._lock:
                self._c["inferred"] += 1
            self._emit(
                Outcome(
                    t0,
                    t1,
                    "heldout" if held is not None else "infer",
                    pred,
                    names[pred] if pred is not None else None,
                    held,
                    names[held] if held is not None else None,
                    confidence=conf,
                )
            )
            return True
        finally:
            self._busy = False

    def _periodic(self, client: OdtClient) -> None:
        now = time.monotonic()
        if not client.connected:
            return
        if now - self._last_stats >= self.cfg.stats_period_s:
            self._last_stats = now
            self._stats = client.stats()
        self._maybe_autosave(client)

    def _maybe_autosave(self, client: OdtClient, after_check: bool = False) -> None:
        """Autosave when due. With accept/rollback checks only right after a check, so only an
        accepted model ever reaches flash."""
        period = self.cfg.autosave_period_s
        if period <= 0 or self.synchronous:
            return
        if self._guard_active() and not after_check:
            return
        now = time.monotonic()
        if now - self._last_save >= period and self._c["trained"] > self._applied_at_save:
            self._last_save = now
            client.save()
            self._applied_at_save = self._c["trained"]
            self.log.info("autosave: model saved to co-processor flash")

    def finish(self) -> None:
        """Synchronous mode, end of a run: judge what trained since the last check."""
        client = self._client
        if client is not None and client.connected and self._model_ok:
            self._work()
            if self._guard_active() and self._guard_ready and self.guard.since_check > 0:
                self._check(client)

    def refresh_stats(self) -> None:
        """Fetch the co-processor's training statistics now (synchronous mode, end of a run)."""
        client = self._client
        if client is not None and client.connected:
            client.flush()
            self._finish_trained()
            self._stats = client.stats()
