"""Bit-exact numpy reference of `docs/integer_training.md` (forward, softmax CE, backward, update).

Every quantity is an integer held in `int64` arrays. Matrix products are taken in `float64`
where every partial sum is an integer below 2^53 (so the result is exact whatever the summation
order); the bounds are noted at each use. Python's `>>` on numpy `int64` is an arithmetic (floor)
shift, as the document requires; `/` is never applied to integers.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from terrain_odt.blob import (
    Blob,
    BlobArch,
    Kind,
    LayerDesc,
    ParamSection,
    decode_blob,
    encode_blob,
)

DELTA_BITS = 12
ERR_BITS = 24
R_MAX = 1 << 20
V_MAX = 8 << 16
I32_MIN = -(1 << 31)
I32_MAX = (1 << 31) - 1
LCG_A = 1664525
LCG_C = 1013904223
_MASK32 = np.uint64(0xFFFFFFFF)

Storage = Literal["i8", "i16"]
Mode = Literal["frozen", "bias", "all"]
MODES: tuple[str, ...] = ("frozen", "bias", "all")

IntArray = np.ndarray


# ---------------------------------------------------------------------------------------------
# §1.1 helpers (scalar, exact Python ints) and their vectorised forms


def shr_round(x: int, r: int) -> int:
    """Round-half-up shift right by `r` (left shift if `r < 0`); 0 for `r >= 63` (§1.1)."""
    if r >= 63:
        return 0
    if r > 0:
        return (x + (1 << (r - 1))) >> r
    if r == 0:
        return x
    return x << (-r)


def sat_i32(x: int) -> int:
    """Saturate to the `i32` range."""
    return min(max(x, I32_MIN), I32_MAX)


def clip(x: IntArray, lo: int | IntArray, hi: int | IntArray) -> IntArray:
    """`np.clip` without its per-call overhead."""
    return np.minimum(np.maximum(x, lo), hi)


def shr_round_arr(x: IntArray, r: IntArray | int) -> IntArray:
    """Element-wise `shr_round` on `int64` arrays; `r` broadcasts against `x`."""
    x = np.asarray(x, dtype=np.int64)
    if np.ndim(r) == 0:
        return shr_round_scalar_shift(x, int(r))
    r = np.asarray(r, dtype=np.int64)
    if r.size and r.min() >= 0 and r.max() <= 62:
        # (1 << r) >> 1 is 2^(r-1) for r >= 1 and 0 for r == 0
        return (x + ((np.int64(1) << r) >> 1)) >> r
    rr = clip(r, 0, 62)
    right = (x + ((np.int64(1) << rr) >> 1)) >> rr
    left = x << clip(-r, 0, 62)
    out = np.where(r >= 0, right, left)
    return np.where(r >= 63, np.int64(0), out)


def shr_round_scalar_shift(x: IntArray, r: int) -> IntArray:
    """`shr_round` of an array by one shift amount."""
    if r >= 63:
        return np.zeros_like(x)
    if r > 0:
        return (x + np.int64(1 << (r - 1))) >> np.int64(r)
    if r == 0:
        return x.copy()
    return x << np.int64(-r)


def requant_arr(acc: IntArray, m: IntArray, s: IntArray) -> IntArray:
    """`requant` of §1.2 on `acc` (already in the i32 range), per channel along the last axis."""
    t = 31 - s  # in [1, 62]
    out = (acc * m + (np.int64(1) << (t - 1))) >> t  # |acc·m| < 2^62
    return clip(out, I32_MIN, I32_MAX)


ShiftPlan = tuple[IntArray, IntArray, IntArray, IntArray, IntArray]


def shift_plan(k: IntArray, lo: int, hi: int) -> ShiftPlan:
    """The `k`-only part of `scale_sat_arr` (cacheable): left shift, right shift, rounding half,
    and the bounds that keep `x << k` inside `i64`."""
    k = np.asarray(k, dtype=np.int64)
    sl = clip(k, 0, 62)
    sr = clip(-k, 0, 63)  # a right shift of 63 gives 0 for every |x| < 2^62, as §1.1 requires
    bnd = np.where(k >= 0, (np.int64(max(hi, -lo)) >> sl) + 1, np.int64(1 << 62))
    half = (np.int64(1) << clip(sr - 1, 0, 62)) * (sr > 0)
    return sl, sr, half, -bnd, bnd


def scale_sat_planned(x: IntArray, plan: ShiftPlan, lo: int, hi: int) -> tuple[IntArray, IntArray]:
    sl, sr, half, nbnd, bnd = plan
    val = ((clip(x, nbnd, bnd) << sl) + half) >> sr
    out = clip(val, lo, hi)
    return out, out != val


def scale_sat_arr(x: IntArray, k: IntArray, lo: int, hi: int) -> tuple[IntArray, IntArray]:
    """`clamp(x·2^k, lo, hi)` exactly for `k >= 0`, `clamp(shr_round(x, -k), lo, hi)` for
    `k < 0` (§5.1, §5.3); `lo <= 0 <= hi`, `|x| < 2^62`. Returns the values and a bool mask of
    the clamped elements. `k` broadcasts against `x` (pass it unbroadcast: it is cheaper).

    One branch-free path: for `k >= 0`, `x` is first limited to `±((max(hi, −lo) >> k) + 1)`,
    which changes only values that clamp anyway and keeps `x << k` inside `i64`."""
    return scale_sat_planned(np.asarray(x, dtype=np.int64), shift_plan(k, lo, hi), lo, hi)


def normalize(t: IntArray, e: int, bits: int) -> tuple[IntArray, int, bool]:
    """Block-floating-point renormalisation of §4. Returns `(mantissas, E', all_zero)`."""
    mx = int(np.max(np.abs(t))) if t.size else 0
    if mx == 0:
        return np.zeros_like(t), e, True
    r = mx.bit_length() - bits
    return shr_round_scalar_shift(t, r), e + r, False


# ---------------------------------------------------------------------------------------------
# §3 softmax cross-entropy


def exp2_frac(f: int) -> int:
    """`2^(-f/65536)` in Q16 for `f` in [0, 65536)."""
    p = (2648 * f) >> 16
    p = ((15212 - p) * f) >> 16
    p = ((45340 - p) * f) >> 16
    return 65536 - p


def log2_q16(x: int) -> int:
    """`log2(x)` in Q16 for `x >= 1`."""
    k = x.bit_length() - 1
    m = (x << 16) >> k
    fr = m - 65536
    return (k << 16) + fr + ((22610 * fr * (65536 - fr)) >> 32)


@dataclass(frozen=True)
class SoftmaxOut:
    p_q15: list[int]
    g_q15: list[int]
    loss_q15: int
    ce_q16: int
    pred: int


def softmax_ce(logits: Sequence[int], label: int, softmax_a: int) -> SoftmaxOut:
    """Fixed-point softmax, its Q15 gradient and the loss figures of §3 (exact Python ints)."""
    ys = [int(v) for v in logits]
    ymax = max(ys)
    vs = [softmax_a * (y - ymax) for y in ys]
    es = []
    for v in vs:
        n, f = (-v) >> 16, (-v) & 0xFFFF
        es.append(exp2_frac(f) >> n if n < 32 else 0)
    total = sum(es)
    half = total // 2
    p = [(e * 32768 + half) // total for e in es]
    g = [pi - (32768 if i == label else 0) for i, pi in enumerate(p)]
    ce = ((log2_q16(total) - (16 << 16) - vs[label]) * 45426) >> 16
    pred = ys.index(ymax)
    return SoftmaxOut(p, g, 32768 - p[label], sat_i32(max(ce, 0)), pred)


# ---------------------------------------------------------------------------------------------
# §5.2 the stochastic-rounding generator


class Lcg:
    """`state = state·1664525 + 1013904223 mod 2^32`, advanced before use; `rnd = state >> 16`.

    `draws(n)` returns the next `n` values at once using the jump-ahead
    `state_k = A_k·s0 + C_k` with `A_k = a^k`, `C_k = c·(1 + a + ... + a^(k-1))` (mod 2^32).
    """

    _a: np.ndarray = np.zeros(0, dtype=np.uint64)
    _c: np.ndarray = np.zeros(0, dtype=np.uint64)

    def __init__(self, seed: int) -> None:
        self.state = int(seed) & 0xFFFFFFFF

    def next16(self) -> int:
        self.state = (self.state * LCG_A + LCG_C) & 0xFFFFFFFF
        return self.state >> 16

    @classmethod
    def _tables(cls, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(cls._a) < n:
            size = max(n, 2 * len(cls._a), 1024)
            with np.errstate(over="ignore"):
                a = np.cumprod(np.full(size, LCG_A, dtype=np.uint64))  # wraps mod 2^64
                geo = np.cumsum(np.concatenate([np.ones(1, np.uint64), a[:-1]]))
                c = geo * np.uint64(LCG_C)
            cls._a = a & _MASK32
            cls._c = c & _MASK32
        return cls._a, cls._c

    def draws(self, n: int) -> IntArray:
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        a, c = self._tables(n)
        states = (a[:n] * np.uint64(self.state) + c[:n]) & _MASK32  # < 2^64, no wrap
        self.state = int(states[-1])
        return (states >> np.uint64(16)).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Layers. Activations are flat `int64` buffers of shape (N, len) in HWC order.


class Layer:
    """Base class: a layer of the model, built from its descriptor."""

    desc: LayerDesc

    @property
    def in_len(self) -> int:
        return self.desc.in_len

    @property
    def out_len(self) -> int:
        return self.desc.out_len

    def forward(self, x: IntArray) -> tuple[IntArray, int]:
        raise NotImplementedError

    def backward(self, e: IntArray, exp: int, x: IntArray, y: IntArray) -> tuple[IntArray, int]:
        """Error at the output (flat mantissas, exponent) → error at the input (§4.2)."""
        raise NotImplementedError


class ParamLayer(Layer):
    """Dense, Conv1d and Conv2d: int8 weights (or an i16 master), per-channel quantization."""

    def __init__(self, desc: LayerDesc, sec: ParamSection, storage: Storage) -> None:
        self.desc = desc
        self.relu = desc.relu
        self.storage: Storage = storage
        self.cout = desc.out_channels
        self.fan = desc.fan
        self.z_x = int(sec.z_x)
        self.z_y = int(sec.z_y)
        self.m = sec.m.astype(np.int64)
        self.s = sec.s.astype(np.int64)
        self.ue = sec.ue.astype(np.int64)
        self.ube = sec.ube.astype(np.int64)
        self.um = sec.um.astype(np.int64)
        self.ubm = sec.ubm.astype(np.int64)
        self.bias = sec.bias.astype(np.int64)
        self.w8 = sec.weights.reshape(self.cout, self.fan).astype(np.int64)
        self.w16: IntArray | None = self.w8 * 256 + 128 if storage == "i16" else None
        self.s_max = int(self.s.max())
        self._dshift = self.s_max - self.s  # in [0, 61]
        self._dround = (np.int64(1) << self._dshift) >> 1
        self._t = 31 - self.s  # requant shift, in [1, 62]
        self._tround = np.int64(1) << (self._t - 1)
        self._in_len = desc.in_len
        self._out_len = desc.out_len
        self.n_pos = self._out_len // self.cout
        self._plans: dict[tuple[bool, int], ShiftPlan] = {}  # (bias?, E) → plan; per config
        self._sync()
        self._geometry()

    def _geometry(self) -> None:
        raise NotImplementedError

    def _sync(self, rows: IntArray | None = None) -> None:
        """Refresh the derived copies of the forward weights after a change (of `rows` only,
        when given; the bias copy always)."""
        if rows is None:
            if self.w16 is not None:
                self.w8 = self.w16 >> 8
            self.w_f = self.w8.astype(np.float64)
        elif rows.size:
            if self.w16 is not None:
                self.w8[rows] = self.w16[rows] >> 8
            self.w_f[rows] = self.w8[rows]
        self.bias_f = self.bias.astype(np.float64)

    def section(self) -> ParamSection:
        w = self.w8 if self.w16 is None else self.w16 >> 8
        return ParamSection(
            self.z_x,
            self.z_y,
            self.m,
            self.s,
            self.ue,
            self.ube,
            self.um,
            self.ubm,
            self.bias,
            w.reshape(self.desc.weight_shape),
        )

    def cols(self, x: IntArray) -> IntArray:
        """`xc = x − z_x` gathered per output position: float64 (N·n_pos, FAN), zero padding."""
        raise NotImplementedError

    def forward_cols(self, cols: np.ndarray, n: int) -> tuple[IntArray, int]:
        # |acc| <= 2^31 + FAN·128·255 < 2^53: the float64 product is exact.
        acc = (cols @ self.w_f.T + self.bias_f).astype(np.int64)
        acc = clip(acc, I32_MIN, I32_MAX)
        # requant (§1.2): |acc·m| < 2^62
        v = self.z_y + clip((acc * self.m + self._tround) >> self._t, I32_MIN, I32_MAX)
        if self.relu:  # values below z_y are the ReLU's clamp, not a saturation
            nsat = int(np.count_nonzero(v > 127))
            y = clip(v, self.z_y, 127)
        else:
            nsat = int(np.count_nonzero((v < -128) | (v > 127)))
            y = clip(v, -128, 127)
        return y.reshape(n, self._out_len), nsat

    def forward(self, x: IntArray) -> tuple[IntArray, int]:
        return self.forward_cols(self.cols(x), x.shape[0])

    def to_delta(self, e: IntArray, exp: int, y: IntArray) -> tuple[IntArray, int, bool]:
        """§4.1: error at the int8 output → δ (n_pos, OUT) with its exponent."""
        e = e.reshape(self.n_pos, self.cout)
        if self.relu:
            e = np.where(y.reshape(self.n_pos, self.cout) == self.z_y, np.int64(0), e)
        t = (e * self.m + self._dround) >> self._dshift  # shr_round by S − s[c] ∈ [0, 61]
        return normalize(t, exp + self.s_max - 31, DELTA_BITS)

    def input_error(self, delta: IntArray) -> IntArray:
        """§4.2: δ (n_pos, OUT) → error at the input (flat, same exponent)."""
        raise NotImplementedError


class Dense(ParamLayer):
    def _geometry(self) -> None:
        pass

    def cols(self, x: IntArray) -> np.ndarray:
        return (x - self.z_x).astype(np.float64)

    def input_error(self, delta: IntArray) -> IntArray:
        # |δ| <= 2^12, |w| <= 128: sums far below 2^53
        return (delta.astype(np.float64) @ self.w_f).astype(np.int64).reshape(self._in_len)


class _Conv(ParamLayer):
    """Shared im2col machinery; Conv1d is the H = 1 case."""

    h: int
    w: int
    cin: int
    kh: int
    kw: int
    stride: int
    pad_h: int
    pad_w: int
    oh: int
    ow: int

    def _setup(self) -> None:
        hp, wp = self.h + 2 * self.pad_h, self.w + 2 * self.pad_w
        self.hp, self.wp = hp, wp
        oy = np.arange(self.oh)[:, None, None, None, None] * self.stride
        ox = np.arange(self.ow)[None, :, None, None, None] * self.stride
        ky = np.arange(self.kh)[None, None, :, None, None]
        kx = np.arange(self.kw)[None, None, None, :, None]
        ci = np.arange(self.cin)[None, None, None, None, :]
        idx = ((oy + ky) * wp + (ox + kx)) * self.cin + ci
        self.gidx = idx.reshape(self.oh * self.ow, self.fan)  # into the padded flat input
        self.gidx_flat = self.gidx.ravel()
        self.padded_len = hp * wp * self.cin

    def _pad(self, xc: IntArray) -> IntArray:
        n = xc.shape[0]
        if self.pad_h == 0 and self.pad_w == 0:
            return xc
        buf = np.zeros((n, self.hp, self.wp, self.cin), dtype=xc.dtype)
        buf[:, self.pad_h : self.pad_h + self.h, self.pad_w : self.pad_w + self.w, :] = xc.reshape(
            n, self.h, self.w, self.cin
        )
        return buf.reshape(n, self.padded_len)

    def cols(self, x: IntArray) -> np.ndarray:
        xc = self._pad((x - self.z_x).astype(np.float64))
        return xc[:, self.gidx].reshape(-1, self.fan)

    def input_error(self, delta: IntArray) -> IntArray:
        g = delta.astype(np.float64) @ self.w_f  # (n_pos, FAN), exact
        acc = np.bincount(self.gidx_flat, weights=g.ravel(), minlength=self.padded_len)
        acc = acc.reshape(self.hp, self.wp, self.cin)[
            self.pad_h : self.pad_h + self.h, self.pad_w : self.pad_w + self.w, :
        ]
        return acc.astype(np.int64).reshape(self.in_len)


class Conv1d(_Conv):
    def _geometry(self) -> None:
        length, cin, _cout, k, stride, pad, lout = self.desc.dims[:7]
        self.h, self.w, self.cin = 1, length, cin
        self.kh, self.kw, self.stride = 1, k, stride
        self.pad_h, self.pad_w, self.oh, self.ow = 0, pad, 1, lout
        self._setup()


class Conv2d(_Conv):
    def _geometry(self) -> None:
        h, w, cin, _cout, kh, kw, stride, pad, oh, ow = self.desc.dims
        self.h, self.w, self.cin = h, w, cin
        self.kh, self.kw, self.stride = kh, kw, stride
        self.pad_h = self.pad_w = pad
        self.oh, self.ow = oh, ow
        self._setup()


class _Pool(Layer):
    def __init__(self, desc: LayerDesc) -> None:
        self.desc = desc
        self.h, self.w, self.c, self.ph, self.pw = desc.dims[:5]
        self.oh, self.ow = self.h // self.ph, self.w // self.pw
        self.n = self.ph * self.pw

    def windows(self, x: IntArray) -> IntArray:
        """(N, OH, OW, PH·PW, C), window elements in row-major scan order."""
        n = x.shape[0]
        v = x.reshape(n, self.h, self.w, self.c)[:, : self.oh * self.ph, : self.ow * self.pw, :]
        v = v.reshape(n, self.oh, self.ph, self.ow, self.pw, self.c).transpose(0, 1, 3, 2, 4, 5)
        return v.reshape(n, self.oh, self.ow, self.n, self.c)

    def scatter(self, ew: IntArray) -> IntArray:
        """Inverse of `windows` for one sample: (OH, OW, PH·PW, C) → flat input, 0 elsewhere."""
        v = ew.reshape(self.oh, self.ow, self.ph, self.pw, self.c).transpose(0, 2, 1, 3, 4)
        out = np.zeros((self.h, self.w, self.c), dtype=np.int64)
        out[: self.oh * self.ph, : self.ow * self.pw, :] = v.reshape(
            self.oh * self.ph, self.ow * self.pw, self.c
        )
        return out.reshape(self.in_len)


class MaxPool2d(_Pool):
    def forward(self, x: IntArray) -> tuple[IntArray, int]:
        return self.windows(x).max(axis=3).reshape(x.shape[0], self.out_len), 0

    def backward(self, e: IntArray, exp: int, x: IntArray, y: IntArray) -> tuple[IntArray, int]:
        win = self.windows(x.reshape(1, -1))[0]
        first = np.argmax(win, axis=2)  # first maximal element in scan order
        ew = np.zeros_like(win)
        np.put_along_axis(ew, first[:, :, None, :], e.reshape(self.oh, self.ow, 1, self.c), axis=2)
        return self.scatter(ew), exp


class AvgPool2d(_Pool):
    def forward(self, x: IntArray) -> tuple[IntArray, int]:
        s = self.windows(x).sum(axis=3)
        y = (2 * s + self.n) // (2 * self.n)  # div_floor, round half up
        return y.reshape(x.shape[0], self.out_len), 0

    def backward(self, e: IntArray, exp: int, x: IntArray, y: IntArray) -> tuple[IntArray, int]:
        qn = (65536 + self.n // 2) // self.n
        t = e.reshape(self.oh, self.ow, 1, self.c) * qn
        ew = np.broadcast_to(t, (self.oh, self.ow, self.n, self.c))
        out, exp2, _ = normalize(self.scatter(ew), exp - 16, ERR_BITS)
        return out, exp2


class ReLU(Layer):
    def __init__(self, desc: LayerDesc, z: int) -> None:
        self.desc = desc
        self.z = z

    def forward(self, x: IntArray) -> tuple[IntArray, int]:
        return np.maximum(x, self.z), 0

    def backward(self, e: IntArray, exp: int, x: IntArray, y: IntArray) -> tuple[IntArray, int]:
        return np.where(x.reshape(-1) > self.z, e, np.int64(0)), exp


class Flatten(Layer):
    def __init__(self, desc: LayerDesc) -> None:
        self.desc = desc

    def forward(self, x: IntArray) -> tuple[IntArray, int]:
        return x, 0

    def backward(self, e: IntArray, exp: int, x: IntArray, y: IntArray) -> tuple[IntArray, int]:
        return e, exp


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


__all__ = [
    "AvgPool2d",
    "Conv1d",
    "Conv2d",
    "Counters",
    "Dense",
    "Flatten",
    "Lcg",
    "MaxPool2d",
    "ModelMeta",
    "QModel",
    "ReLU",
    "StepResult",
    "TrainConfig",
]
