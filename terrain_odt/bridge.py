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
  `labelled == trained + failed + dropped + pending`.
* Inference requests that cannot be served in time are skipped and counted (a stale
  prediction is worth nothing).
* Training parameters are sent at every new session (a co-processor that restarted forgets
  them), and the model is checked against the sidecar (id, input length, classes).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .blob import BlobError, decode_blob
from .labeling import LabelTimeline
from .link import TOPK_OFF, LinkError, LinkTimeout, OdtClient, SetParams, Stats, TrainResult
from .quantize import lr_to_fixed
from .toolbox import SIDECAR_FORMAT, quantize_with_sidecar

__all__ = [
    "BridgeConfig",
    "BridgeCore",
    "ModelFileError",
    "ModelFiles",
    "Outcome",
    "load_model_files",
]


class ModelFileError(ValueError):
    """A model sidecar or blob is missing, malformed or inconsistent (the message says which)."""


@dataclass(frozen=True)
class ModelFiles:
    """What the host needs to know about the co-processor's model (from its sidecar)."""

    sidecar: dict[str, Any]
    model_id: int
    input_len: int
    class_names: tuple[str, ...]
    param_layers: int
    blob: bytes | None = None

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Raw features (n, input_len) → int8 model input, as recorded in the sidecar."""
        return quantize_with_sidecar(np.atleast_2d(np.asarray(x, dtype=np.float64)), self.sidecar)

    def class_index(self, name: str) -> int | None:
        """Index of a class name (case-insensitive), `None` if unknown."""
        low = name.strip().lower()
        for i, n in enumerate(self.class_names):
            if n.lower() == low:
                return i
        return None


def load_model_files(sidecar_path: str | Path, blob_path: str | Path | None = None) -> ModelFiles:
    """Read and cross-check a sidecar (and optionally its blob); `ModelFileError` if bad."""
    sp = Path(sidecar_path)
    if not str(sidecar_path):
        raise ModelFileError("no model sidecar given (parameter model_sidecar)")
    try:
        side = json.loads(sp.read_text())
    except FileNotFoundError:
        raise ModelFileError(f"model sidecar {sp} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"model sidecar {sp} is not readable JSON: {exc}") from None
    if not isinstance(side, dict) or side.get("format") != SIDECAR_FORMAT:
        raise ModelFileError(f"{sp} is not a terrain_odt model sidecar (format tag missing)")
    try:
        model_id = int(side["model_id"])
        input_len = int(side["input_len"])
        names = tuple(str(n) for n in side["classes"]["names"])
        layers = side["layers"]
        param_layers = sum(1 for r in layers if "params" in r)
        inp = side["input"]
        float(inp["scale"])
        int(inp["zero_point"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"model sidecar {sp} lacks or garbles field {exc}") from None
    if len(names) != int(side.get("output_len", len(names))):
        raise ModelFileError(f"{sp}: {len(names)} class names for {side['output_len']} outputs")
    blob = None
    if blob_path:
        bp = Path(blob_path)
        try:
            blob = bp.read_bytes()
        except OSError as exc:
            raise ModelFileError(f"model blob {bp}: {exc}") from None
        try:
            b = decode_blob(blob)
        except BlobError as exc:
            raise ModelFileError(f"model blob {bp} is malformed: {exc}") from None
        if b.model_id != model_id or b.input_len != input_len:
            raise ModelFileError(
                f"model blob {bp} (id 0x{b.model_id:08x}, {b.input_len} inputs) does not match "
                f"sidecar {sp} (id 0x{model_id:08x}, {input_len} inputs)"
            )
        crc = side.get("blob_crc32")
        if crc is not None and int(str(crc), 16) != zlib.crc32(blob):
            raise ModelFileError(f"model blob {bp} is not the blob sidecar {sp} describes (CRC)")
    return ModelFiles(side, model_id, input_len, names, param_layers, blob)


@dataclass(frozen=True)
class BridgeConfig:
    """Settings of the bridge (the `odt_bridge` node parameters of the same names)."""

    url: str
    baud_rate: int = 921600
    training_enabled: bool = True
    learning_rate: float = 0.003
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
    rehearsal_per_class: int = 64
    rehearsal_ratio: float = 1.0

    def __post_init__(self) -> None:
        if not self.url:
            raise ValueError("no co-processor URL (parameter serial_port)")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if self.accuracy_window < 1 or self.max_pending_samples < 1 or self.infer_queue < 1:
            raise ValueError("accuracy_window, max_pending_samples and infer_queue must be >= 1")


@dataclass(frozen=True)
class Outcome:
    """The co-processor's answer for one window."""

    t_start: float
    t_end: float
    #: "train" (labelled window, prediction made before training on it) or "infer".
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
    #: A rehearsal copy of an earlier sample (not counted as a new labelled sample).
    replay: bool = False


class Rehearsal:
    """Class-balanced rehearsal: a reservoir of labelled windows per class, replayed between new
    samples.

    A robot labels terrain in long runs of one class (a whole field of snow), and SGD with batch
    1 on such a stream forgets everything but the current class within a few dozen steps. After
    each new sample, `ratio` stored samples of the *other* classes are trained again (on average;
    classes drawn uniformly, then a sample uniformly within the class). Each class keeps a
    uniform reservoir sample of `per_class` of its windows (int8, input_len bytes each, on the
    host). `per_class = 0` turns rehearsal off.
    """

    def __init__(self, n_classes: int, per_class: int, ratio: float, seed: int = 0) -> None:
        self.per_class = per_class
        self.ratio = ratio
        self.buf: list[list[_Sample]] = [[] for _ in range(n_classes)]
        self.seen = [0] * n_classes
        self._rng = np.random.default_rng(seed)
        self._credit = 0.0

    def add(self, s: _Sample) -> None:
        if self.per_class <= 0:
            return
        k = s.label
        self.seen[k] += 1
        stored = _Sample(s.t_start, s.t_end, s.q, s.label, replay=True)
        if len(self.buf[k]) < self.per_class:
            self.buf[k].append(stored)
        else:
            j = int(self._rng.integers(self.seen[k]))
            if j < self.per_class:
                self.buf[k][j] = stored

    def draw(self, exclude: int) -> list[_Sample]:
        """Replays to send after a new sample of class `exclude`."""
        if self.per_class <= 0 or self.ratio <= 0:
            return []
        self._credit += self.ratio
        n = int(self._credit)
        self._credit -= n
        classes = [k for k, b in enumerate(self.buf) if b and k != exclude]
        if not classes:
            return []
        out = []
        for _ in range(n):
            b = self.buf[classes[int(self._rng.integers(len(classes)))]]
            out.append(b[int(self._rng.integers(len(b)))])
        return out

    @property
    def stored(self) -> int:
        return sum(len(b) for b in self.buf)


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
    ) -> None:
        self.cfg = cfg
        self.model = model
        self._emit = emit
        self.log: _Log = log or logging.getLogger("terrain_odt.bridge")
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
        self.rehearsal = Rehearsal(
            len(model.class_names), cfg.rehearsal_per_class, cfg.rehearsal_ratio
        )
        self._infer: deque[tuple[float, float, np.ndarray]] = deque()
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
        """Start the worker thread (connects, then serves the queues)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="odt-bridge", daemon=True)
            self._thread.start()

    def close(self, save: bool = False, timeout: float = 10.0) -> None:
        """Flush what can be flushed (and save, if asked and anything trained), then stop."""
        client = self._client
        if client is not None and client.connected and self._model_ok:
            try:
                self._drain_backlog(client)
                client.flush(timeout=timeout)
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

    def on_features(self, t_start: float, t_end: float, features: Sequence[float]) -> None:
        """One window. `ValueError` if it is malformed (wrong length, non-finite)."""
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
                if len(self._backlog) >= self.cfg.max_pending_samples:
                    # Full: first shed rehearsal copies (they can be drawn again), then drop.
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
                else:
                    s = _Sample(t_start, t_end, q, idx)
                    self._backlog.append(s)
                    if self._training:
                        self._backlog.extend(self.rehearsal.draw(idx))
                        self.rehearsal.add(s)
            else:
                if len(self._infer) >= self.cfg.infer_queue:
                    self._infer.popleft()
                    self._c["infer_skipped"] += 1
                self._infer.append((t_start, t_end, q))
            self._cond.notify_all()

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
            return "last saved model restored"

        return self._command(job, timeout)

    def reset_pretrained(self, timeout: float = 30.0) -> tuple[bool, str]:
        def job(c: OdtClient) -> str:
            c.reset_pretrained()
            return "pretrained model restored"

        return self._command(job, timeout)

    def _command(self, job: Callable[[OdtClient], str], timeout: float) -> tuple[bool, str]:
        if self._client is None or not self._client.connected:
            return False, f"co-processor not connected ({self._last_connect_error or 'no link'})"
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
            c["rehearsal_stored"] = self.rehearsal.stored
        for k in ("windows", "labelled", "sent", "trained", "failed", "dropped", "inferred"):
            c.setdefault(k, 0)
        return c

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
                if client.connected and client.session != self._configured_session:
                    self._configure(client)
                if self._model_ok:
                    self._drain_backlog(client)
                if self._serve_one(client):
                    continue
                self._periodic(client)
            except LinkError as exc:
                self._throttle(self.log.warning, "link", f"co-processor link: {exc}")
                self._stop.wait(0.05)
                continue
            with self._cond:
                if not (self._jobs or self._infer or (self._backlog and self._model_ok)):
                    self._cond.wait(0.05)

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
        n = self.model.param_layers
        k = n if self.cfg.train_layers < 0 else min(self.cfg.train_layers, n)
        modes = (0,) * (n - k) + (2,) * k
        lr_m, lr_e = lr_to_fixed(self.cfg.learning_rate)
        topk = TOPK_OFF if self.cfg.partial_update_topk < 0 else self.cfg.partial_update_topk
        client.set_params(
            SetParams(
                enabled=self._training,
                lr_m=lr_m,
                lr_e=lr_e,
                batch=self.cfg.batch_size,
                topk_min=topk,
                modes=modes,
            )
        )
        self._model_ok = True
        self._model_problem = ""
        self._configured_session = client.session
        return "parameters sent"

    def _drain_backlog(self, client: OdtClient) -> None:
        while True:
            with self._lock:
                if not self._backlog:
                    return
                s = self._backlog[0]
            try:
                fut = client.train(s.q, s.label, timeout=0.0)
            except LinkTimeout:
                return  # the client's queue is full: keep the sample here
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
                t0, t1, q = self._infer.popleft()
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
                    "infer",
                    pred,
                    names[pred] if pred is not None else None,
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
        period = self.cfg.autosave_period_s
        if period > 0 and now - self._last_save >= period:
            self._last_save = now
            if self._c["trained"] > self._applied_at_save:
                client.save()
                self._applied_at_save = self._c["trained"]
                self.log.info("autosave: model saved to co-processor flash")
