"""Host-side conversion of a float model to the integer model of `docs/integer_training.md`.

The converter is the only place where real numbers meet the integer arithmetic: it turns scales
into requantization multipliers `(m, s)`, update factors `(um, ue)`, the learning rate
`(lr_m, lr_e)` and the softmax constant `softmax_a`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from terrain_odt.model.blob import Kind, LayerDesc, ParamSection, f32_bits
from terrain_odt.model.qnn import ModelMeta, QModel, Storage

LOG2_E = 1.0 / math.log(2.0)


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """`M = m · 2^(s − 31)` with `m ∈ [2^30, 2^31)`, `s ∈ [−31, 30]` (§1.2).

    Raises `ValueError` when `real` is not positive or out of the representable range.
    """
    if not (real > 0.0 and math.isfinite(real)):
        raise ValueError(f"multiplier must be positive and finite, got {real}")
    frac, exp = math.frexp(real)  # real = frac · 2^exp, frac ∈ [0.5, 1)
    m = _round_half_up(frac * (1 << 31))
    if m == 1 << 31:
        m, exp = 1 << 30, exp + 1
    if not -31 <= exp <= 30:
        raise ValueError(f"multiplier {real} out of range (exponent {exp})")
    return m, exp


def mant_exp16(real: float) -> tuple[int, int]:
    """`real = um · 2^ue` with `um ∈ [2^14, 2^15)` and `ue` an `i8` (§5)."""
    if not (real > 0.0 and math.isfinite(real)):
        raise ValueError(f"value must be positive and finite, got {real}")
    frac, exp = math.frexp(real)
    um = _round_half_up(frac * (1 << 15))
    if um == 1 << 15:
        um, exp = 1 << 14, exp + 1
    ue = exp - 15
    if not -128 <= ue <= 127:
        raise ValueError(f"{real} out of range (exponent {ue})")
    return um, ue


def section_from_factors(
    z_x: int,
    z_y: int,
    mult: Sequence[tuple[int, int]],
    upd: Sequence[tuple[int, int]],
    bupd: Sequence[tuple[int, int]],
    bias: np.ndarray,
    weights: np.ndarray,
) -> ParamSection:
    """The blob section of one parameter layer from its per-channel factors: requantization
    multipliers `(m, s)` (§1.2), weight and bias update factors `(um, ue)` and `(ubm, ube)` (§5),
    as `quantize_multiplier` and `mant_exp16` return them. Shared by `quantize_model` and the
    TFLite importer."""
    return ParamSection(
        z_x=z_x,
        z_y=z_y,
        m=[m for m, _ in mult],
        s=[s for _, s in mult],
        ue=[e for _, e in upd],
        ube=[e for _, e in bupd],
        um=[m for m, _ in upd],
        ubm=[m for m, _ in bupd],
        bias=bias,
        weights=weights,
    )


def lr_to_fixed(lr: float) -> tuple[int, int]:
    """Learning rate `η = lr_m · 2^lr_e`, `lr_m ∈ [2^14, 2^15)`."""
    return mant_exp16(lr)


def fixed_to_real(mant: int, exp: int) -> float:
    return math.ldexp(mant, exp)


def multiplier_to_real(m: int, s: int) -> float:
    return math.ldexp(m, s - 31)


def softmax_a(s_y: float) -> int:
    """`round(s_y · log2(e) · 2^16)` (§3), the logit-scale constant of the softmax."""
    a = _round_half_up(s_y * LOG2_E * 65536.0)
    if not 1 <= a < (1 << 31):
        raise ValueError(f"logit scale {s_y} gives softmax_a {a} out of range")
    return a


@dataclass(frozen=True)
class QParams:
    """Affine int8 quantization of an activation tensor: real = scale · (q − zero_point)."""

    scale: float
    zero_point: int


def activation_qparams(lo: float, hi: float) -> QParams:
    """Asymmetric int8 parameters covering `[lo, hi]`, which must contain 0 and be non-empty.

    The scale is rounded to `f32` (the blob stores it that way); the zero point is
    `round(−128 − lo/scale)` clamped to `[−128, 127]`.
    """
    if not (lo <= 0.0 <= hi and hi > lo):
        raise ValueError(f"range [{lo}, {hi}] must contain 0 and be non-empty")
    scale = float(np.float32((hi - lo) / 255.0))
    zp = min(max(_round_half_up(-128.0 - lo / scale), -128), 127)
    return QParams(scale, zp)


def quantize_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 weights in `[−127, 127]`: returns `(q, s_w)`.

    `w` has the output channel first; an all-zero channel gets the scale of a 1e-6 maximum.
    """
    w = np.asarray(w, dtype=np.float64)
    flat = w.reshape(w.shape[0], -1)
    amax = np.maximum(np.abs(flat).max(axis=1), 1e-6)
    s_w = amax / 127.0
    q = np.clip(np.floor(flat / s_w[:, None] + 0.5), -127, 127).astype(np.int8)
    return q.reshape(w.shape), s_w


def _act_layers(descs: Sequence[LayerDesc]) -> list[int]:
    return [i for i, d in enumerate(descs) if d.kind in (Kind.DENSE, Kind.CONV1D, Kind.CONV2D)]


def float_forward(
    descs: Sequence[LayerDesc],
    params: Sequence[tuple[np.ndarray, np.ndarray]],
    x: np.ndarray,
) -> list[np.ndarray]:
    """Float forward of a batch `x` (N, input_len); returns every activation (input first).

    `params` holds `(w, b)` for each parameter layer in order, `w` in the blob's layout
    (`[OUT][IN]`, `[COUT][K][CIN]`, `[COUT][KH][KW][CIN]`).
    """
    acts = [np.asarray(x, dtype=np.float64)]
    it = iter(params)
    for d in descs:
        a = acts[-1]
        n = a.shape[0]
        k = d.kind
        if k in (Kind.DENSE, Kind.CONV1D, Kind.CONV2D):
            w, b = next(it)
            if k == Kind.DENSE:
                y = a @ np.asarray(w).T + b
            else:
                if k == Kind.CONV1D:
                    length, cin, cout, kk, stride, pad, lout = d.dims[:7]
                    h, wd, kh, kw, ph, pw, oh, ow = 1, length, 1, kk, 0, pad, 1, lout
                else:
                    h, wd, cin, cout, kh, kw, stride, pad, oh, ow = d.dims
                    ph = pw = pad
                xi = np.zeros((n, h + 2 * ph, wd + 2 * pw, cin))
                xi[:, ph : ph + h, pw : pw + wd, :] = a.reshape(n, h, wd, cin)
                wk = np.asarray(w).reshape(cout, kh, kw, cin)
                y = np.zeros((n, oh, ow, cout))
                for oy in range(oh):
                    for ox in range(ow):
                        patch = xi[
                            :, oy * stride : oy * stride + kh, ox * stride : ox * stride + kw
                        ]
                        y[:, oy, ox, :] = np.einsum("nhwc,ohwc->no", patch, wk) + b
                y = y.reshape(n, -1)
            if d.relu:
                y = np.maximum(y, 0.0)
        elif k in (Kind.MAXPOOL2D, Kind.AVGPOOL2D):
            h, wd, c, ph_, pw_ = d.dims[:5]
            oh, ow = h // ph_, wd // pw_
            v = a.reshape(n, h, wd, c)[:, : oh * ph_, : ow * pw_]
            v = v.reshape(n, oh, ph_, ow, pw_, c)
            y = (v.max(axis=(2, 4)) if k == Kind.MAXPOOL2D else v.mean(axis=(2, 4))).reshape(n, -1)
        elif k == Kind.RELU:
            y = np.maximum(a, 0.0)
        else:
            y = a
        acts.append(y)
    return acts


def calibrate_ranges(
    descs: Sequence[LayerDesc],
    params: Sequence[tuple[np.ndarray, np.ndarray]],
    x: np.ndarray,
) -> list[tuple[float, float]]:
    """Observed `(min, max)` of each parameter layer's output (widened to contain 0)."""
    acts = float_forward(descs, params, x)
    return [
        (min(float(acts[i + 1].min()), 0.0), max(float(acts[i + 1].max()), 0.0))
        for i in _act_layers(descs)
    ]


def quantize_model(
    descs: Sequence[LayerDesc],
    params: Sequence[tuple[np.ndarray, np.ndarray]],
    input_q: QParams,
    output_q: Sequence[QParams],
    model_id: int = 0,
    storage: Storage = "i8",
) -> QModel:
    """Build the integer model from float weights and activation quantization.

    `params` has `(w, b)` per parameter layer (blob layout), `output_q` the output quantization
    of each parameter layer. Pooling, ReLU and Flatten keep their input's quantization. Per
    output channel: int8 weights `q = round(w/s_w)` in [−127, 127], bias
    `round(b / (s_x·s_w))`, multiplier `s_x·s_w/s_y`, update factors `u = S/s_w²` and
    `ub = S/(s_x·s_w)²` where `S` is the logit scale (the model-wide constant of §4/§5).
    """
    idx = _act_layers(descs)
    if len(params) != len(idx) or len(output_q) != len(idx):
        raise ValueError("need one (w, b) and one output QParams per parameter layer")
    s_logit = output_q[-1].scale
    sections: list[ParamSection | None] = []
    cur = input_q
    j = 0
    for d in descs:
        if not d.has_params:
            sections.append(None)
            continue
        w, b = params[j]
        out_q = output_q[j]
        j += 1
        w = np.asarray(w, dtype=np.float64)
        if w.shape != d.weight_shape:
            raise ValueError(f"layer weights {w.shape}, expected {d.weight_shape}")
        q, s_w = quantize_weights(w)
        s_x, s_y = cur.scale, out_q.scale
        acc_scale = s_x * s_w
        bias = np.clip(
            np.floor(np.asarray(b, dtype=np.float64) / acc_scale + 0.5), -(2**31), 2**31 - 1
        )
        mult = [quantize_multiplier(float(v)) for v in acc_scale / s_y]
        upd = [mant_exp16(float(s_logit / sw**2)) for sw in s_w]
        bupd = [mant_exp16(float(s_logit / v**2)) for v in acc_scale]
        sections.append(
            section_from_factors(
                cur.zero_point, out_q.zero_point, mult, upd, bupd, bias.astype(np.int64), q
            )
        )
        cur = out_q
    meta = ModelMeta(
        model_id=model_id,
        input_zp=input_q.zero_point,
        output_zp=cur.zero_point,
        input_scale_bits=f32_bits(input_q.scale),
        output_scale_bits=f32_bits(cur.scale),
        softmax_a=softmax_a(cur.scale),
    )
    return QModel.from_parts(descs, sections, meta, storage)
