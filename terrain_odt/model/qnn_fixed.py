"""Fixed-point helpers of `docs/integer_training.md`: rounding shifts, saturation, requantisation,
block-floating-point renormalisation (§1, §4), the fixed-point softmax cross-entropy (§3) and the
stochastic-rounding generator (§5.2). Part of the bit-exact numpy reference
(`terrain_odt.model.qnn`).

Every quantity is an integer held in `int64` arrays (or an exact Python int). Python's `>>` on numpy
`int64` is an arithmetic (floor) shift, as the document requires; `/` is never applied to integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DELTA_BITS = 12
ERR_BITS = 24
R_MAX = 1 << 20
V_MAX = 8 << 16
I32_MIN = -(1 << 31)
I32_MAX = (1 << 31) - 1
LCG_A = 1664525
LCG_C = 1013904223
_MASK32 = np.uint64(0xFFFFFFFF)

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


__all__ = [
    "DELTA_BITS",
    "ERR_BITS",
    "I32_MAX",
    "I32_MIN",
    "LCG_A",
    "LCG_C",
    "R_MAX",
    "V_MAX",
    "IntArray",
    "Lcg",
    "ShiftPlan",
    "SoftmaxOut",
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
