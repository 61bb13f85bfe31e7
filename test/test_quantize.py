"""Host-side conversion: multipliers, mantissa/exponent pairs, activation and weight quantization,
and the quantized model against the float model it comes from."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from terrain_odt.model.blob import LayerDesc, decode_blob
from terrain_odt.model.quantize import (
    activation_qparams,
    calibrate_ranges,
    float_forward,
    lr_to_fixed,
    mant_exp16,
    multiplier_to_real,
    quantize_model,
    quantize_multiplier,
    quantize_weights,
    softmax_a,
)


@settings(max_examples=500, deadline=None)
@given(st.floats(min_value=2.0**-32, max_value=2.0**30 * (1 - 2.0**-30), allow_nan=False))
def test_multiplier_reproduces_real(real: float) -> None:
    m, s = quantize_multiplier(real)
    assert (1 << 30) <= m < (1 << 31)
    assert -31 <= s <= 30
    assert abs(multiplier_to_real(m, s) - real) <= real * 2.0**-30


@pytest.mark.parametrize(
    "real,expect",
    [
        (1.0, (1 << 30, 1)),
        (0.5, (1 << 30, 0)),
        (0.75, (3 << 29, 0)),
        (1.0 - 2.0**-40, (1 << 30, 1)),  # rounds up to 2^31: renormalised
        (2.0**-31, (1 << 30, -30)),
        (2.0**-32, (1 << 30, -31)),  # smallest
        (2.0**29 * 1.5, (3 << 29, 30)),
    ],
)
def test_multiplier_examples(real: float, expect: tuple[int, int]) -> None:
    assert quantize_multiplier(real) == expect


@pytest.mark.parametrize("real", [0.0, -1.0, math.inf, math.nan, 2.0**30, 2.0**-33])
def test_multiplier_out_of_range(real: float) -> None:
    with pytest.raises(ValueError):
        quantize_multiplier(real)


@settings(max_examples=500, deadline=None)
@given(st.floats(min_value=1e-30, max_value=1e30, allow_nan=False))
def test_mant_exp16(real: float) -> None:
    um, ue = mant_exp16(real)
    assert (1 << 14) <= um < (1 << 15)
    assert -128 <= ue <= 127
    assert abs(math.ldexp(um, ue) - real) <= real * 2.0**-15


def test_mant_exp16_range_errors() -> None:
    with pytest.raises(ValueError):
        mant_exp16(2.0**200)
    with pytest.raises(ValueError):
        mant_exp16(0.0)
    assert mant_exp16(1.0) == (1 << 14, -14)


def test_lr_to_fixed() -> None:
    for lr in (1e-4, 3e-3, 0.01, 0.5, 16.0):
        lr_m, lr_e = lr_to_fixed(lr)
        assert (1 << 14) <= lr_m < (1 << 15)
        assert abs(lr_m * 2.0**lr_e / lr - 1) < 2.0**-14
    assert lr_to_fixed(2.0**-6) == (1 << 14, -20)


def test_softmax_a() -> None:
    assert softmax_a(0.1) == round(0.1 * math.log2(math.e) * 65536) == 9455
    with pytest.raises(ValueError):
        softmax_a(1e-9)


@pytest.mark.parametrize(
    "lo,hi,zp",
    [(-2.0, 3.1, -28), (0.0, 1.0, -128), (-1.0, 0.0, 127), (-0.5, 1.5, -64), (-1.2, 0.8, 25)],
)
def test_activation_qparams(lo: float, hi: float, zp: int) -> None:
    q = activation_qparams(lo, hi)
    assert q.zero_point == zp == math.floor(-128 - lo / q.scale + 0.5)
    assert q.scale == pytest.approx((hi - lo) / 255, rel=1e-6)
    assert float(np.float32(q.scale)) == q.scale  # stored exactly as f32
    # the range's ends are representable within one step, and 0 exactly
    assert q.scale * (-128 - q.zero_point) <= lo + q.scale
    assert q.scale * (127 - q.zero_point) >= hi - q.scale


@pytest.mark.parametrize("lo,hi", [(0.1, 1.0), (-1.0, -0.1), (0.0, 0.0)])
def test_activation_qparams_needs_zero(lo: float, hi: float) -> None:
    with pytest.raises(ValueError):
        activation_qparams(lo, hi)


def test_quantize_weights_per_channel() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (5, 3, 4)) * np.array([1e-3, 0.1, 1, 10, 100])[:, None, None]
    q, s_w = quantize_weights(w)
    assert q.dtype == np.int8 and q.shape == w.shape
    assert (np.abs(q.reshape(5, -1)).max(axis=1) == 127).all()
    assert q.min() >= -127
    assert np.all(np.abs(q * s_w[:, None, None] - w) <= s_w[:, None, None] / 2 + 1e-12)
    q0, s0 = quantize_weights(np.zeros((2, 3)))
    assert not q0.any() and (s0 > 0).all()


def _model(arch: str, seed: int = 0):  # type: ignore[no-untyped-def]
    L = LayerDesc
    descs = {
        "mlp": [L.dense(20, 16, True), L.dense(16, 12, True), L.dense(12, 5)],
        "conv": [
            L.conv2d(8, 8, 2, 4, 3, 3, 1, 1, relu=True),
            L.maxpool2d(8, 8, 4, 2, 2),
            L.conv1d(16, 4, 6, 3, 2, 1, relu=True),  # the 4x4x4 map read as L=16, CIN=4
            L.avgpool2d(1, 8, 6, 1, 2),
            L.flatten(24),
            L.dense(24, 5),
        ],
    }[arch]
    rng = np.random.default_rng(seed)
    params = [
        (rng.normal(0, np.sqrt(2 / d.fan), d.weight_shape), rng.normal(0, 0.1, d.out_channels))
        for d in descs
        if d.has_params
    ]
    inq = activation_qparams(-1.0, 1.5)
    xq = rng.integers(-128, 128, (1000, descs[0].in_len))
    xr = inq.scale * (xq - inq.zero_point)
    ranges = calibrate_ranges(descs, params, xr)
    outq = [activation_qparams(*r) for r in ranges]
    return descs, params, inq, outq, xq, xr


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_quantized_model_tracks_float_model(arch: str) -> None:
    descs, params, inq, outq, xq, xr = _model(arch)
    model = quantize_model(descs, params, inq, outq, model_id=42)
    logits_q = model.predict_batch(xq).astype(np.float64)
    s_y, z_y = outq[-1].scale, outq[-1].zero_point
    deq = s_y * (logits_q - z_y)
    ref = float_forward(descs, params, xr)[-1]
    err = np.abs(deq - ref)
    assert np.median(err) < 0.05 * np.abs(ref).max()
    assert np.mean(deq.argmax(1) == ref.argmax(1)) > 0.85


def test_quantized_fields() -> None:
    descs, params, inq, outq, _, _ = _model("mlp", 3)
    model = quantize_model(descs, params, inq, outq, model_id=42)
    blob = decode_blob(model.to_blob())
    assert blob.model_id == 42
    assert blob.input_zp == inq.zero_point and blob.output_zp == outq[-1].zero_point
    assert blob.input_scale == pytest.approx(inq.scale) and blob.softmax_a == softmax_a(
        outq[-1].scale
    )
    s_logit = outq[-1].scale
    s_x = inq.scale
    for k, (sec, (w, b), oq) in enumerate(zip(blob.params, params, outq, strict=True)):
        assert sec is not None
        q, s_w = quantize_weights(w)
        assert (sec.weights == q).all()
        assert sec.z_x == (inq.zero_point if k == 0 else outq[k - 1].zero_point)
        assert sec.z_y == oq.zero_point
        np.testing.assert_array_equal(sec.bias, np.floor(b / (s_x * s_w) + 0.5))
        mult = sec.m * 2.0 ** (sec.s.astype(float) - 31)
        np.testing.assert_allclose(mult, s_x * s_w / oq.scale, rtol=2.0**-30)
        # update factors: u = S / s_w², ub = S / (s_x s_w)², S = the logit scale (docs §5)
        u = sec.um * 2.0 ** sec.ue.astype(float)
        ub = sec.ubm * 2.0 ** sec.ube.astype(float)
        np.testing.assert_allclose(u, s_logit / s_w**2, rtol=2.0**-14)
        np.testing.assert_allclose(ub, s_logit / (s_x * s_w) ** 2, rtol=2.0**-14)
        s_x = oq.scale


def test_quantize_model_checks_shapes() -> None:
    descs, params, inq, outq, _, _ = _model("mlp")
    with pytest.raises(ValueError):
        quantize_model(descs, params[:2], inq, outq)
    bad = [(params[0][0].T, params[0][1]), *params[1:]]
    with pytest.raises(ValueError):
        quantize_model(descs, bad, inq, outq)


def test_float_forward_conv_matches_direct_sum() -> None:
    """The float conv used for calibration: one output checked by hand, padding included."""
    rng = np.random.default_rng(5)
    d = LayerDesc.conv1d(6, 2, 3, 3, 2, 1)
    w = rng.normal(size=d.weight_shape)
    b = rng.normal(size=3)
    x = rng.normal(size=(1, 12))
    y = float_forward([d], [(w, b)], x)[-1].reshape(3, 3)  # LOUT = (6 + 2 - 3)//2 + 1 = 3
    xs = x.reshape(6, 2)
    for t in range(3):
        for c in range(3):
            acc = b[c]
            for k in range(3):
                i = 2 * t + k - 1
                if 0 <= i < 6:
                    acc += w[c, k] @ xs[i]
            assert y[t, c] == pytest.approx(acc)
