"""The co-processor in-process, on the bit-exact reference: for experiments that must run the
product's fine-tuning path (`bridge.BridgeCore`) many times, fast.

`QnnCoprocessor` answers the calls `BridgeCore` makes on `terrain_odt.link.OdtClient` (session,
`SET_PARAMS`, `TRAIN` with its prequential prediction, `INFER`, `STATS`, model download and
upload, save / restore / reset) the way `firmware/odt-app` does, computing with
`terrain_odt.model.qnn.QModel` (bit-exact with `firmware/odt-core`, golden vectors). There is no
link
and no timing: every answer is immediate. `test/test_qnn_coprocessor.py` checks that the
deterministic evaluation gives the same report with it as with `odt-emu`; the measurements the
project reports (`terrain-odt evaluate`, `make eval-laps`, the demo) use the emulator.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from ..link import TOPK_OFF, Info, LinkStats, Prediction, SetParams, Stats, TrainResult
from .qnn import QModel, TrainConfig, softmax_ce

__all__ = ["QnnCoprocessor", "factory"]

#: Firmware version reported (odt-app's `FIRMWARE_VERSION` is the emulator's).
FIRMWARE_VERSION = 0x000100
_MODES = {0: "frozen", 1: "bias", 2: "all"}
#: odt-app: divergence when the loss EMA exceeds 0.9 after 64 samples.
_DIVERGENCE_Q15, _DIVERGENCE_MIN = 29491, 64


class QnnCoprocessor:
    """One co-processor with a pretrained blob (see the module doc)."""

    def __init__(self, blob: bytes, *, batch_capacity: int = 32, **_link_options: Any) -> None:
        self._pretrained = bytes(blob)
        self._saved: bytes | None = None
        self.batch_capacity = batch_capacity
        self._load(self._pretrained)
        self._cfg: TrainConfig | None = None
        self._enabled = True
        self._seq = 0
        self.boot_count = 1
        self._replaced()

    # ---- what BridgeCore uses of OdtClient ----------------------------------------------------

    def open(self) -> Info:
        return self.info

    def close(self) -> None:
        pass

    @property
    def connected(self) -> bool:
        return True

    @property
    def session(self) -> int:
        return 1

    @property
    def pending_samples(self) -> int:
        return 0

    @property
    def info(self) -> Info:
        qm = self.qm
        return Info(
            protocol_version=1,
            firmware_version=FIRMWARE_VERSION,
            model_id=qm.meta.model_id,
            model_hash=zlib.crc32(qm.to_blob()),
            input_len=qm.input_len,
            classes=qm.output_len,
            batch_capacity=self.batch_capacity,
            model_ram=0,
            train_steps=self.qm.counters.steps,
            boot_count=self.boot_count,
            next_train_seq=self._seq,
        )

    def hello(self) -> Info:
        return self.info

    def link_stats(self) -> LinkStats:
        return LinkStats()

    def set_params(self, params: SetParams | None = None, **kwargs: Any) -> None:
        p = params if params is not None else SetParams(**kwargs)
        modes = tuple(_MODES[m] for m in p.modes)
        n = len(self.qm.param_layers)
        modes = (modes + ("frozen",) * n)[:n]
        cfg = TrainConfig(
            p.lr_m,
            p.lr_e,
            modes,
            p.batch,
            None if p.topk_min == TOPK_OFF else p.topk_min,
            p.seed,
        )
        if not 1 <= cfg.batch <= self.batch_capacity:
            raise ValueError(f"batch {cfg.batch} exceeds the capacity {self.batch_capacity}")
        self._cfg = cfg
        self.qm.set_config(cfg)
        self._enabled = bool(p.enabled)

    def train(
        self, features: Any, label: int, *, timeout: float | None = None
    ) -> Future[TrainResult]:
        x = np.asarray(features, dtype=np.int64).reshape(-1)
        if x.size != self.qm.input_len:
            raise ValueError(f"{x.size} features, the model takes {self.qm.input_len}")
        if not 0 <= label < self.qm.output_len:
            raise ValueError(f"label {label} out of range")
        self._ensure_config()
        seq = self._seq
        self._seq = (self._seq + 1) % 65536
        updated = False
        if self._enabled:
            before = self.qm.counters.updates
            r = self.qm.train_step(x, label)
            pred, loss = r.pred, r.loss_q15
            updated = self.qm.counters.updates != before
        else:
            logits = self._logits(x)
            sm = softmax_ce(logits, label, self.qm.meta.softmax_a)
            pred, loss = sm.pred, 32768 - sm.p_q15[label]
        loss = max(0, min(int(loss), 65535))
        self._record(label, pred, loss)
        fut: Future[TrainResult] = Future()
        fut.set_result(
            TrainResult(seq, int(pred), loss, updated, not self._enabled, False, 1, 1, 1)
        )
        return fut

    def flush(self, timeout: float | None = None) -> None:
        pass

    def infer(self, features: Any) -> Prediction:
        x = np.asarray(features, dtype=np.int64).reshape(-1)
        if x.size != self.qm.input_len:
            raise ValueError(f"{x.size} features, the model takes {self.qm.input_len}")
        sm = softmax_ce(self._logits(x), 0, self.qm.meta.softmax_a)
        return Prediction(sm.pred, tuple(sm.p_q15))

    def stats(self) -> Stats:
        c = self.qm.counters
        return Stats(
            train_steps=c.steps,
            updates=c.updates,
            preq_correct=self._preq_correct,
            preq_samples=self._preq_samples,
            loss_ema_q15=self._loss_ema,
            forward_saturations=c.forward_saturations,
            update_clips=c.update_clips,
            weight_saturations=c.weight_saturations,
            zero_grad_steps=c.zero_grad_steps,
            frame_errors=0,
            training_enabled=int(self._enabled),
            diverged=int(self._diverged),
        )

    def download_model(self) -> bytes:
        return self.qm.to_blob()

    def upload_model(self, blob: bytes, *, attempts: int = 3) -> Info:
        self._replace(blob)
        return self.info

    def save(self) -> None:
        self._saved = self.qm.to_blob()

    def restore(self) -> None:
        if self._saved is None:
            raise ValueError("no saved model")
        self._replace(self._saved)

    def reset_pretrained(self) -> None:
        self._replace(self._pretrained)

    # ---- internals -----------------------------------------------------------------------

    def _load(self, blob: bytes) -> None:
        steps = self.qm.counters if hasattr(self, "qm") else None
        self.qm = QModel.from_blob(blob)
        if steps is not None:  # odt-app counts steps over model replacements
            self.qm.counters = steps

    def _replace(self, blob: bytes) -> None:
        """odt-app's model replacement: load, re-apply the active configuration (re-seeding
        the rounding generator), start the prequential figures over."""
        self._load(blob)
        self._ensure_config(force=True)
        self._replaced()

    def _ensure_config(self, force: bool = False) -> None:
        if self._cfg is None:
            n = len(self.qm.param_layers)
            self._cfg = TrainConfig(1 << 14, -20, ("all",) * n, 1, None, 0x2545_F491)
            force = True
        if force:
            self.qm.set_config(self._cfg)

    def _replaced(self) -> None:
        self._preq_correct = 0
        self._preq_samples = 0
        self._loss_ema = 0
        self._diverged = False

    def _record(self, label: int, pred: int, loss: int) -> None:
        d = loss - self._loss_ema
        step = abs(d) // 16 * (1 if d >= 0 else -1)  # Rust's i32 division truncates
        self._loss_ema = loss if self._preq_samples == 0 else self._loss_ema + step
        self._preq_samples += 1
        self._preq_correct += int(pred == label)
        if self._preq_samples >= _DIVERGENCE_MIN and self._loss_ema > _DIVERGENCE_Q15:
            self._diverged = True

    def _logits(self, x: np.ndarray) -> list[int]:
        logits, _ = self.qm.forward(x.reshape(1, -1))  # counts saturations, as odt-core
        return [int(v) for v in np.asarray(logits).reshape(-1)]


def factory(blob: bytes) -> Callable[..., QnnCoprocessor]:
    """A `BridgeCore(client_factory=...)` that makes one in-process co-processor."""
    made: list[QnnCoprocessor] = []

    def make(url: str, **kw: Any) -> QnnCoprocessor:
        if not made:
            made.append(QnnCoprocessor(blob, **kw))
        return made[0]

    return make
