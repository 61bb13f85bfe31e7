"""Bit-exact numpy reference of `docs/integer_training.md` (forward, softmax CE, backward, update).

Every quantity is an integer held in `int64` arrays. Matrix products are taken in `float64`
where every partial sum is an integer below 2^53 (so the result is exact whatever the summation
order); the bounds are noted at each use. Python's `>>` on numpy `int64` is an arithmetic (floor)
shift, as the document requires; `/` is never applied to integers.

The reference is in three modules: `terrain_odt.model.qnn_fixed` (fixed-point helpers, softmax,
LCG),
`terrain_odt.model.qnn_layers` (the layers) and this one (training configuration, counters and the
model, `QModel`). Every public name of the other two is importable from here as well.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from terrain_odt.model.blob import (
    Blob,
    BlobArch,
    Kind,
    LayerDesc,
    ParamSection,
    decode_blob,
    encode_blob,
)
from terrain_odt.model.qnn_fixed import (
    DELTA_BITS,
    ERR_BITS,
    I32_MAX,
    I32_MIN,
    LCG_A,
    LCG_C,
    R_MAX,
    V_MAX,
    IntArray,
    Lcg,
    ShiftPlan,
    SoftmaxOut,
    clip,
    exp2_frac,
    log2_q16,
    normalize,
    requant_arr,
    sat_i32,
    scale_sat_arr,
    scale_sat_planned,
    shift_plan,
    shr_round,
    shr_round_arr,
    shr_round_scalar_shift,
    softmax_ce,
)
from terrain_odt.model.qnn_layers import (
    AvgPool2d,
    Conv1d,
    Conv2d,
    Dense,
    Flatten,
    Layer,
    MaxPool2d,
    ParamLayer,
    ReLU,
    Storage,
)

Mode = Literal["frozen", "bias", "all"]
MODES: tuple[str, ...] = ("frozen", "bias", "all")


# ---------------------------------------------------------------------------------------------
# Training configuration, counters, results


@dataclass(frozen=True)
class TrainConfig:
    """Runtime training configuration (§5). `modes` has one entry per parameter layer."""

    lr_m: int
    lr_e: int
    modes: tuple[str, ...]
    batch: int = 1
    topk_min: int | None = None
    seed: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "modes", tuple(self.modes))
        if not (1 << 14) <= self.lr_m < (1 << 15):
            raise ValueError("lr_m must be in [2^14, 2^15)")
        if any(m not in MODES for m in self.modes):
            raise ValueError(f"modes must be among {MODES}")
        if self.batch < 1:
            raise ValueError("batch must be >= 1")
        if self.topk_min is not None and self.topk_min < 0:
            raise ValueError("topk_min must be >= 0")
        if not 0 <= self.seed < (1 << 32):
            raise ValueError("seed must be a u32")


@dataclass
class Counters:
    """§6 counters."""

    forward_saturations: int = 0
    update_clips: int = 0
    weight_saturations: int = 0
    zero_grad_steps: int = 0
    steps: int = 0
    updates: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "forward_saturations": self.forward_saturations,
            "update_clips": self.update_clips,
            "weight_saturations": self.weight_saturations,
            "zero_grad_steps": self.zero_grad_steps,
            "steps": self.steps,
            "updates": self.updates,
        }


@dataclass(frozen=True)
class StepResult:
    """Outputs of one `train_step` (computed with the weights before the pending update)."""

    logits: IntArray  # int8
    p_q15: list[int]
    loss_q15: int
    ce_q16: int
    pred: int


@dataclass
class _Slot:
    """What one sample of the batch stores for one trainable layer (§5.7)."""

    cols: np.ndarray  # (n_pos, FAN) float64: xc gathered per output position
    delta: IntArray  # (n_pos, OUT) int64 mantissas
    exp: int
    zero: bool


# ---------------------------------------------------------------------------------------------
# The model


@dataclass
class ModelMeta:
    """Header metadata a `QModel` carries (FORMAT.md header fields)."""

    model_id: int
    input_zp: int
    output_zp: int
    input_scale_bits: int
    output_scale_bits: int
    softmax_a: int


class QModel:
    """A quantized model: forward, batched prediction and integer training."""

    def __init__(
        self,
        layers: Sequence[Layer],
        meta: ModelMeta,
        storage: Storage = "i8",
    ) -> None:
        self.layers = list(layers)
        self.meta = meta
        self.storage: Storage = storage
        self.param_idx = [i for i, la in enumerate(self.layers) if isinstance(la, ParamLayer)]
        self.counters = Counters()
        self.config: TrainConfig | None = None
        self.lcg = Lcg(0)
        self._slots: list[dict[int, _Slot]] = []
        self._losses: list[int] = []

    # construction --------------------------------------------------------------------------
    @classmethod
    def from_parts(
        cls,
        descs: Sequence[LayerDesc],
        sections: Sequence[ParamSection | None],
        meta: ModelMeta,
        storage: Storage = "i8",
    ) -> QModel:
        if storage not in ("i8", "i16"):
            raise ValueError("storage must be 'i8' or 'i16'")
        layers: list[Layer] = []
        z = meta.input_zp
        for desc, sec in zip(descs, sections, strict=True):
            kind = desc.kind
            if kind in (Kind.DENSE, Kind.CONV1D, Kind.CONV2D):
                assert sec is not None
                klass = {Kind.DENSE: Dense, Kind.CONV1D: Conv1d, Kind.CONV2D: Conv2d}[Kind(kind)]
                layer: Layer = klass(desc, sec, storage)
                z = int(sec.z_y)
            elif kind == Kind.MAXPOOL2D:
                layer = MaxPool2d(desc)
            elif kind == Kind.AVGPOOL2D:
                layer = AvgPool2d(desc)
            elif kind == Kind.RELU:
                layer = ReLU(desc, z)
            elif kind == Kind.FLATTEN:
                layer = Flatten(desc)
            else:
                raise ValueError(f"unknown layer kind {kind}")
            layers.append(layer)
        return cls(layers, meta, storage)

    @classmethod
    def from_blob(
        cls, data: bytes, storage: Storage = "i8", expect: BlobArch | None = None
    ) -> QModel:
        blob = decode_blob(data, expect)
        meta = ModelMeta(
            blob.model_id,
            blob.input_zp,
            blob.output_zp,
            blob.input_scale_bits,
            blob.output_scale_bits,
            blob.softmax_a,
        )
        return cls.from_parts(blob.layers, blob.params, meta, storage)

    def to_blob_obj(self) -> Blob:
        return Blob(
            model_id=self.meta.model_id,
            input_len=self.layers[0].in_len,
            output_len=self.layers[-1].out_len,
            input_zp=self.meta.input_zp,
            output_zp=self.meta.output_zp,
            input_scale_bits=self.meta.input_scale_bits,
            output_scale_bits=self.meta.output_scale_bits,
            softmax_a=self.meta.softmax_a,
            layers=[la.desc for la in self.layers],
            params=[la.section() if isinstance(la, ParamLayer) else None for la in self.layers],
        )

    def to_blob(self) -> bytes:
        """The blob of the current weights (the i16 master is saved as `w16 >> 8`)."""
        return encode_blob(self.to_blob_obj())

    def copy(self) -> QModel:
        return copy.deepcopy(self)

    @property
    def input_len(self) -> int:
        return self.layers[0].in_len

    @property
    def output_len(self) -> int:
        return self.layers[-1].out_len

    @property
    def param_layers(self) -> list[ParamLayer]:
        return [self.layers[i] for i in self.param_idx]  # type: ignore[misc]

    # inference ------------------------------------------------------------------------------
    def _as_batch(self, x: np.ndarray) -> IntArray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.input_len:
            raise ValueError(f"expected shape (N, {self.input_len}), got {x.shape}")
        if x.size and (x.min() < -128 or x.max() > 127):
            raise ValueError("inputs must be int8 values")
        return x.astype(np.int64)

    def forward(self, x: np.ndarray, count: bool = True) -> tuple[np.ndarray, list[np.ndarray]]:
        """One sample: returns the int8 logits and every activation (input first, each int8).

        Forward saturations are added to the counters when `count`.
        """
        acts, nsat, _ = self._forward(self._as_batch(np.asarray(x).reshape(1, -1)), keep=False)
        if count:
            self.counters.forward_saturations += nsat
        return acts[-1][0].astype(np.int8), [a[0].astype(np.int8) for a in acts]

    def _forward(
        self, x: IntArray, keep: bool
    ) -> tuple[list[IntArray], int, dict[int, np.ndarray]]:
        acts = [x]
        nsat = 0
        cols: dict[int, np.ndarray] = {}
        for i, layer in enumerate(self.layers):
            if isinstance(layer, ParamLayer):
                c = layer.cols(acts[-1])
                if keep:
                    cols[i] = c
                y, k = layer.forward_cols(c, acts[-1].shape[0])
            else:
                y, k = layer.forward(acts[-1])
            nsat += k
            acts.append(y)
        return acts, nsat, cols

    def predict_batch(self, x: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Logits (N, OUT) int8 of N samples at once; identical to `forward` per sample.

        Counters are not touched.
        """
        xb = self._as_batch(x)
        out = np.empty((xb.shape[0], self.output_len), dtype=np.int8)
        # keep the largest im2col buffer of a chunk around 8 M elements
        per_sample = max(la.n_pos * la.fan for la in self.param_layers)
        chunk = max(1, min(chunk, (8 << 20) // per_sample))
        for lo in range(0, xb.shape[0], chunk):
            acts, _, _ = self._forward(xb[lo : lo + chunk], keep=False)
            out[lo : lo + chunk] = acts[-1]
        return out

    # training --------------------------------------------------------------------------------
    def set_config(self, config: TrainConfig) -> None:
        """Install a training configuration: seeds the LCG, drops a partially filled batch."""
        if len(config.modes) != len(self.param_idx):
            raise ValueError(f"need {len(self.param_idx)} modes, got {len(config.modes)}")
        self.config = config
        self.lcg = Lcg(config.seed)
        for layer in self.param_layers:
            layer._plans.clear()
        self._slots = []
        self._losses = []

    def _modes(self) -> dict[int, str]:
        assert self.config is not None
        return dict(zip(self.param_idx, self.config.modes, strict=True))

    def train_step(self, x: np.ndarray, label: int) -> StepResult:
        """Forward, loss and backward of one sample; applies the update when the batch is full."""
        if self.config is None:
            raise RuntimeError("set_config first")
        if not 0 <= label < self.output_len:
            raise ValueError("label out of range")
        modes = self._modes()
        trainable = [i for i in self.param_idx if modes[i] != "frozen"]
        acts, nsat, cols = self._forward(
            self._as_batch(np.asarray(x).reshape(1, -1)), keep=bool(trainable)
        )
        self.counters.forward_saturations += nsat
        logits = acts[-1][0]
        sm = softmax_ce(logits.tolist(), label, self.meta.softmax_a)

        self.counters.steps += 1
        result = StepResult(logits.astype(np.int8), sm.p_q15, sm.loss_q15, sm.ce_q16, sm.pred)
        if not trainable:
            return result
        slots: dict[int, _Slot] = {}
        low = trainable[0]
        e = np.asarray(sm.g_q15, dtype=np.int64)
        exp = -15
        for i in range(len(self.layers) - 1, low - 1, -1):
            layer = self.layers[i]
            if isinstance(layer, ParamLayer):
                delta, dexp, zero = layer.to_delta(e, exp, acts[i + 1][0])
                self.counters.zero_grad_steps += zero  # per layer whose δ is all zero
                if modes[i] != "frozen":
                    slots[i] = _Slot(cols[i], delta, dexp, zero)
                if i > low:
                    e, exp = layer.input_error(delta), dexp
            else:
                e, exp = layer.backward(e, exp, acts[i][0], acts[i + 1][0])
        self._slots.append(slots)
        self._losses.append(sm.loss_q15)
        if len(self._slots) >= self.config.batch:
            self._apply_update()
            self.counters.updates += 1
            self._slots = []
            self._losses = []
        return result

    def _select_rows(self, layer: ParamLayer, slots: list[_Slot]) -> np.ndarray:
        """§5.6: rows to update (bool mask over OUT)."""
        assert self.config is not None
        out = layer.cout
        if self.config.topk_min is None:
            return np.ones(out, dtype=bool)
        e_max = max(s.exp for s in slots)  # over every slot, all-zero ones included
        imp = np.zeros(out, dtype=np.int64)
        for s in slots:
            imp += np.abs(s.delta).sum(axis=0) >> np.int64(min(e_max - s.exp, 63))
        imp = np.minimum(imp, (1 << 32) - 1)  # I saturates at 2^32 − 1
        kmin = min(self.config.topk_min, out)
        loss_avg = sum(self._losses) // len(self._losses)
        k = kmin + (((out - kmin) * loss_avg) >> 15)
        order = np.argsort(-imp, kind="stable")[:k]
        sel = np.zeros(out, dtype=bool)
        sel[order] = True
        return sel & (imp > 0)

    def _plan(self, layer: ParamLayer, bias: bool, exp: int) -> ShiftPlan:
        """Cached `shift_plan` of §5.1 (`bias` False) or §5.3 (True) for one slot exponent."""
        plan = layer._plans.get((bias, exp))
        if plan is None:
            assert self.config is not None
            if bias:
                plan = shift_plan(self.config.lr_e + layer.ube + exp, I32_MIN, I32_MAX)
            else:
                plan = shift_plan(self.config.lr_e + 16 + layer.ue + exp, -R_MAX, R_MAX)
            if len(layer._plans) > 256:
                layer._plans.clear()
            layer._plans[(bias, exp)] = plan
        return plan

    def _apply_update(self) -> None:
        assert self.config is not None
        cfg = self.config
        modes = self._modes()
        cnt = self.counters
        for i in self.param_idx:
            mode = modes[i]
            if mode == "frozen":
                continue
            layer: ParamLayer = self.layers[i]  # type: ignore[assignment]
            slots = [s[i] for s in self._slots]
            sel = None if cfg.topk_min is None else self._select_rows(layer, slots)
            single = len(slots) == 1
            if single:
                deltas = slots[0].delta[None]  # (B, n_pos, OUT)
                exps = np.array([slots[0].exp], dtype=np.int64)
            else:
                deltas = np.stack([s.delta for s in slots])
                exps = np.array([s.exp for s in slots], dtype=np.int64)
            changed: IntArray | None = np.zeros(0, dtype=np.int64)  # None: every row
            if mode == "all":
                big_r = (cfg.lr_m * layer.um) * deltas  # |R| < 2^42
                if single:
                    plan = self._plan(layer, False, slots[0].exp)
                    r, clipped = scale_sat_planned(big_r, plan, -R_MAX, R_MAX)
                else:
                    xk = (cfg.lr_e + 16 + layer.ue)[None, None, :] + exps[:, None, None]
                    r, clipped = scale_sat_arr(big_r, xk, -R_MAX, R_MAX)
                if sel is not None:
                    r[:, :, ~sel] = 0
                    clipped[:, :, ~sel] = False
                cnt.update_clips += int(np.count_nonzero(clipped))
                rows = np.flatnonzero((r != 0).any(axis=(0, 1)))
                if rows.size:
                    b, npos, _ = r.shape
                    allrows = rows.size == layer.cout
                    idx: slice | IntArray = slice(None) if allrows else rows
                    changed = None if allrows else rows
                    rr = r[:, :, idx].reshape(b * npos, rows.size)
                    if b * npos == 1:
                        v = np.multiply.outer(rr[0], slots[0].cols[0].astype(np.int64))
                    else:
                        cc = np.concatenate([s.cols for s in slots])
                        # |r·xc| <= 2^28 per term, B·n_pos terms: exact below 2^53
                        v = (rr.T.astype(np.float64) @ cc).astype(np.int64)
                    if np.abs(v).max() > V_MAX:
                        vc = clip(v, -V_MAX, V_MAX)
                        cnt.update_clips += int(np.count_nonzero(v != vc))
                        v = vc
                    if layer.w16 is None:
                        rnd = self.lcg.draws(rows.size * layer.fan).reshape(rows.size, layer.fan)
                        nw = layer.w8[idx] - ((v + rnd) >> 16)
                        lo, hi, target = -128, 127, layer.w8
                    else:
                        nw = layer.w16[idx] - ((v + 128) >> 8)
                        lo, hi, target = -32768, 32767, layer.w16
                    if nw.min() < lo or nw.max() > hi:
                        cw = clip(nw, lo, hi)
                        # one count per row with any clamped weight (docs §5.2)
                        cnt.weight_saturations += int(np.count_nonzero((cw != nw).any(axis=1)))
                        nw = cw
                    target[idx] = nw
            # biases (modes "bias" and "all"): every selected row
            dtot = deltas.sum(axis=1)  # (B, OUT)
            t = (cfg.lr_m * layer.ubm) * dtot
            if single:
                plan = self._plan(layer, True, slots[0].exp)
                d, clipped = scale_sat_planned(t, plan, I32_MIN, I32_MAX)
            else:
                xb = (cfg.lr_e + layer.ube)[None, :] + exps[:, None]
                d, clipped = scale_sat_arr(t, xb, I32_MIN, I32_MAX)
            if sel is not None:
                d[:, ~sel] = 0
                clipped[:, ~sel] = False
            cnt.update_clips += int(np.count_nonzero(clipped))
            layer.bias = clip(layer.bias - d.sum(axis=0), I32_MIN, I32_MAX)  # not counted
            layer._sync(changed)

    # state -----------------------------------------------------------------------------------
    def state_crc32(self) -> int:
        """CRC-32 over each parameter layer: stored weights (i8 or i16 LE), then biases (i32 LE)."""
        crc = 0
        for layer in self.param_layers:
            if layer.w16 is None:
                crc = zlib.crc32(layer.w8.astype(np.int8).tobytes(), crc)
            else:
                crc = zlib.crc32(layer.w16.astype("<i2").tobytes(), crc)
            crc = zlib.crc32(layer.bias.astype("<i4").tobytes(), crc)
        return crc


# The names of this module and the public names of terrain_odt.model.qnn_layers and
# terrain_odt.model.qnn_fixed.
__all__ = [
    "DELTA_BITS",
    "ERR_BITS",
    "I32_MAX",
    "I32_MIN",
    "LCG_A",
    "LCG_C",
    "MODES",
    "R_MAX",
    "V_MAX",
    "AvgPool2d",
    "Conv1d",
    "Conv2d",
    "Counters",
    "Dense",
    "Flatten",
    "IntArray",
    "Layer",
    "Lcg",
    "MaxPool2d",
    "Mode",
    "ModelMeta",
    "ParamLayer",
    "QModel",
    "ReLU",
    "ShiftPlan",
    "SoftmaxOut",
    "StepResult",
    "Storage",
    "TrainConfig",
    "clip",
    "exp2_frac",
    "log2_q16",
    "normalize",
    "requant_arr",
    "sat_i32",
    "scale_sat_arr",
    "scale_sat_planned",
    "shift_plan",
    "shr_round",
    "shr_round_arr",
    "shr_round_scalar_shift",
    "softmax_ce",
]
