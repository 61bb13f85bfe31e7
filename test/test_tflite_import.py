"""TFLite int8 import: small models built without TensorFlow (`tools/make_tflite_fixtures.py`),
checked against a plain int8 reference of TFLite's reference kernels written here."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from terrain_odt.model.blob import Kind, decode_blob
from terrain_odt.model.qnn import QModel, TrainConfig
from terrain_odt.model.tflite_import import (
    SUPPORTED_OPS,
    TFLiteImportError,
    UnsupportedLayer,
    import_tflite,
    read_tflite,
)

ROOT = Path(__file__).resolve().parent.parent


def _fixtures() -> ModuleType:
    name = "make_tflite_fixtures"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


fx = _fixtures()

# ---------------------------------------------------------------------------------------------
# Reference: TFLite's int8 reference kernels (tensorflow/lite/kernels/internal/reference/...)


def quantize_multiplier_tfl(real: float) -> tuple[int, int]:
    """tflite::QuantizeMultiplier."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    qf = math.floor(q * (1 << 31) + 0.5)  # TfLiteRound: half away from zero (q > 0)
    if qf == 1 << 31:
        qf //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return int(qf), shift


def _trunc_shift31(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * (np.abs(v) >> 31)  # C++ integer division by 2^31 (towards zero)


def mbqm(acc: np.ndarray, q: np.ndarray, shift: np.ndarray, single: bool) -> np.ndarray:
    """tflite::MultiplyByQuantizedMultiplier, default (double) or TFLITE_SINGLE_ROUNDING."""
    acc = acc.astype(np.int64)
    q = np.asarray(q, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if single:
        t = 31 - shift
        return (acc * q + (np.int64(1) << (t - 1))) >> t
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    a = acc * (np.int64(1) << left)
    ab = a * q
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    x = _trunc_shift31(ab + nudge)  # SaturatingRoundingDoublingHighMul
    mask = (np.int64(1) << right) - 1  # RoundingDivideByPOT
    rem = x & mask
    thr = (mask >> 1) + (x < 0)
    return (x >> right) + (rem > thr)


def _f32(v: Any) -> float:
    return float(np.float32(v))


def tfl_quantize(x: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """QUANTIZE float32 → int8: round(x / scale) half away from zero, in float32."""
    v = np.asarray(x, dtype=np.float32) / np.float32(scale)
    return np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + zp, -128, 127).astype(np.int64)


def _clamp_act(v: np.ndarray, act: str, zp: int) -> np.ndarray:
    lo = zp if act == "relu" else -128
    return np.clip(v, lo, 127)


def tflite_reference(
    g: Any, x: np.ndarray, *, single: bool = False, avg_half_up: bool = False
) -> np.ndarray:
    """Run the graph on int8 (or, with a QUANTIZE first, float) inputs (N, ...). Returns the
    int8 tensor that feeds SOFTMAX / DEQUANTIZE (the logits). `avg_half_up` replaces TFLite's
    average-pool rounding (half away from zero) with odt-core's (half up)."""
    t = g.tensors
    cur = np.asarray(x)
    for op in g.ops:
        xin, out = t[op.inputs[0]], t[op.outputs[0]]
        o = op.options
        act = o.get("activation", "none")
        if op.op == "QUANTIZE":
            if cur.dtype.kind == "f":  # int8 inputs start after it
                cur = tfl_quantize(cur, _f32(out.scale[0]), int(out.zero_point[0]))
            continue
        if op.op in ("SOFTMAX", "DEQUANTIZE"):
            break
        n = cur.shape[0]
        zx = int(xin.zero_point[0])
        if op.op in ("FULLY_CONNECTED", "CONV_2D"):
            w, b = t[op.inputs[1]], t[op.inputs[2]]
            sx, sy, zy = _f32(xin.scale[0]), _f32(out.scale[0]), int(out.zero_point[0])
            qs = [quantize_multiplier_tfl(sx * _f32(sw) / sy) for sw in w.scale]
            qm = np.array([a for a, _ in qs])
            sh = np.array([c for _, c in qs])
            wd = w.data.astype(np.int64)
            bd = b.data.astype(np.int64)
            if op.op == "FULLY_CONNECTED":
                acc = (cur.reshape(n, -1) - zx) @ wd.T + bd
            else:
                _, h, wdt, _ = cur.shape
                cout, kh, kw, _ = wd.shape
                s_h, s_w = o.get("stride_h", 1), o.get("stride_w", 1)
                oh, pt, _ = fx._pads(h, kh, s_h, o.get("padding", "VALID"))
                ow, pl, _ = fx._pads(wdt, kw, s_w, o.get("padding", "VALID"))
                acc = np.zeros((n, oh, ow, cout), dtype=np.int64)
                xc = cur - zx
                for oy in range(oh):
                    for ox in range(ow):
                        for ky in range(kh):
                            for kx in range(kw):
                                iy, ix = oy * s_h + ky - pt, ox * s_w + kx - pl
                                if 0 <= iy < h and 0 <= ix < wdt:  # padded taps are skipped
                                    acc[:, oy, ox, :] += xc[:, iy, ix, :] @ wd[:, ky, kx, :].T
                acc = acc + bd
            v = mbqm(acc, qm, sh, single) + zy
            cur = _clamp_act(v, act, zy)
        elif op.op in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            _, h, wdt, c = cur.shape
            ph, pw = o["filter_h"], o["filter_w"]
            v = cur[:, : h // ph * ph, : wdt // pw * pw]
            v = v.reshape(n, h // ph, ph, wdt // pw, pw, c)
            if op.op == "MAX_POOL_2D":
                r = v.max(axis=(2, 4))
            else:
                s = v.sum(axis=(2, 4))
                cnt = ph * pw
                if avg_half_up:
                    r = (2 * s + cnt) // (2 * cnt)
                else:  # (acc ± count/2) / count, C++ division
                    num = np.where(s > 0, s + cnt // 2, s - cnt // 2)
                    r = np.sign(num) * (np.abs(num) // cnt)
            cur = _clamp_act(r, act, int(out.zero_point[0]))
        elif op.op == "RESHAPE":
            cur = cur.reshape((n, *out.shape[1:]))
        else:
            raise NotImplementedError(op.op)
    return cur.reshape(cur.shape[0], -1).astype(np.int64)


def int8_inputs(g: Any, x: np.ndarray) -> np.ndarray:
    """Float inputs quantized with the graph's int8 input parameters (as QUANTIZE does)."""
    q = g.tensors[g.ops[0].outputs[0] if g.ops[0].op == "QUANTIZE" else g.inputs[0]]
    return tfl_quantize(x, _f32(q.scale[0]), int(q.zero_point[0]))


# ---------------------------------------------------------------------------------------------
# Models


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[Any, np.ndarray]]:
    return fx.example_models(seed=0)


@pytest.mark.parametrize("name", ["mlp", "cnn", "conv1d"])
def test_import_matches_tflite_reference(name: str, models: dict[str, Any]) -> None:
    g, x = models[name]
    qm = import_tflite(fx.write_tflite(g))
    xq = int8_inputs(g, x)
    got = qm.predict_batch(xq.reshape(len(xq), -1)).astype(np.int64)
    # bit-exact against TFLite with single rounding (and odt's avg-pool tie rule)
    want = tflite_reference(g, xq, single=True, avg_half_up=True)
    np.testing.assert_array_equal(got, want)
    # the default TFLite build rounds twice (and avg-pool ties away from zero): a tie rounds the
    # other way now and then (one step per layer, amplified by the layers above it)
    dflt = tflite_reference(g, xq)
    assert np.mean(got == dflt) >= 0.9
    assert np.abs(got - dflt).mean() < 0.2
    assert np.mean(got.argmax(1) == dflt.argmax(1)) >= 0.95
    # the model's own output is not degenerate
    assert len(np.unique(got.argmax(1))) > 1


def test_blob_structure(models: dict[str, Any]) -> None:
    g, _ = models["cnn"]
    r = read_tflite(fx.write_tflite(g), model_id=0xC0FFEE)
    blob = decode_blob(r.qmodel.to_blob())
    assert blob.model_id == 0xC0FFEE
    assert [d.kind for d in blob.layers] == [
        Kind.CONV2D,
        Kind.MAXPOOL2D,
        Kind.CONV2D,
        Kind.AVGPOOL2D,
        Kind.FLATTEN,
        Kind.DENSE,
    ]
    assert blob.layers[0].dims[:10] == (8, 8, 2, 4, 3, 3, 1, 1, 8, 8)  # SAME 3×3 → pad 1
    assert [d.relu for d in blob.layers] == [True, False, True, False, False, False]
    # scales and zero points of the graph's input and of the logits (SOFTMAX's input)
    t_in = g.tensors[g.inputs[0]]
    t_logit = g.tensors[g.ops[-1].inputs[0]]
    assert blob.input_scale == pytest.approx(_f32(t_in.scale[0]), rel=0)
    assert blob.input_zp == t_in.zero_point[0]
    assert blob.output_scale == pytest.approx(_f32(t_logit.scale[0]), rel=0)
    assert blob.output_zp == t_logit.zero_point[0]
    assert blob.softmax_a == round(_f32(t_logit.scale[0]) * 65536 / math.log(2))
    # multipliers are TFLite's, update factors follow docs §5 with the logit scale
    conv = g.ops[0]
    sx = _f32(g.tensors[conv.inputs[0]].scale[0])
    sy = _f32(g.tensors[conv.outputs[0]].scale[0])
    s_w = [_f32(v) for v in g.tensors[conv.inputs[1]].scale]
    sec = blob.params[0]
    assert sec is not None
    for c, sw in enumerate(s_w):
        assert (int(sec.m[c]), int(sec.s[c])) == quantize_multiplier_tfl(sx * sw / sy)
        u = int(sec.um[c]) * 2.0 ** int(sec.ue[c])
        ub = int(sec.ubm[c]) * 2.0 ** int(sec.ube[c])
        s_logit = _f32(t_logit.scale[0])
        assert u == pytest.approx(s_logit / sw**2, rel=2**-14)
        assert ub == pytest.approx(s_logit / (sx * sw) ** 2, rel=2**-14)
    np.testing.assert_array_equal(sec.weights, g.tensors[conv.inputs[1]].data)
    np.testing.assert_array_equal(sec.bias, g.tensors[conv.inputs[2]].data)
    assert [o["op"] for o in r.ops][-1] == "SOFTMAX"


def test_float_io_model_drops_quantize_and_dequantize() -> None:
    rng = np.random.default_rng(3)
    layers = [
        fx.Dense(rng.normal(0, 0.5, (6, 5)), rng.normal(0, 0.1, 6), "relu"),
        fx.Dense(rng.normal(0, 0.5, (3, 6)), rng.normal(0, 0.1, 3)),
    ]
    x = rng.normal(0, 1, (200, 5))
    g = fx.quantized_model(layers, (1, 5), x, float_io=True)
    assert [o.op for o in g.ops] == [
        "QUANTIZE",
        "FULLY_CONNECTED",
        "FULLY_CONNECTED",
        "SOFTMAX",
        "DEQUANTIZE",
    ]
    r = read_tflite(fx.write_tflite(g))
    assert r.float_input
    assert len(r.qmodel.layers) == 2
    want = tflite_reference(g, x.astype(np.float32), single=True)  # float in, QUANTIZE runs
    xq = int8_inputs(g, x)
    assert (r.input_scale, r.input_zero_point) == (
        _f32(g.tensors[g.ops[0].outputs[0]].scale[0]),
        g.tensors[g.ops[0].outputs[0]].zero_point[0],
    )
    np.testing.assert_array_equal(r.qmodel.predict_batch(xq), want)


def test_imported_model_trains_and_round_trips(models: dict[str, Any]) -> None:
    g, x = models["conv1d"]
    qm = import_tflite(fx.write_tflite(g))
    xq = int8_inputs(g, x).reshape(len(x), -1)
    qm.set_config(TrainConfig(1 << 14, -20, ("all",) * len(qm.param_layers)))
    for i in range(8):
        qm.train_step(xq[i], i % 3)
    again = QModel.from_blob(qm.to_blob())
    np.testing.assert_array_equal(again.predict_batch(xq), qm.predict_batch(xq))


# ---------------------------------------------------------------------------------------------
# What does not import


def _tiny_graph(op: str, **options: Any) -> Any:
    """input [1,4,4,2] → CONV_2D(2×2, VALID, relu) → <op> → RESHAPE → FC → SOFTMAX."""
    rng = np.random.default_rng(0)
    g = fx.Graph([], [], [], [])
    q = {"scale": [0.05], "zero_point": [-3]}
    x = g.add(fx.Tensor("x", (1, 4, 4, 2), "int8", **q))
    w = g.add(
        fx.Tensor(
            "w", (3, 2, 2, 2), "int8", rng.integers(-127, 128, (3, 2, 2, 2)), [0.01] * 3, [0] * 3
        )
    )
    b = g.add(fx.Tensor("b", (3,), "int32", np.zeros(3), [5e-4] * 3, [0] * 3))
    a = g.add(fx.Tensor("a", (1, 3, 3, 3), "int8", scale=[0.1], zero_point=[-128]))
    g.ops.append(fx.Op("CONV_2D", [x, w, b], [a], {"activation": "relu"}))
    cur = a
    if op == "DEPTHWISE_CONV_2D":
        dw = g.add(
            fx.Tensor("dw", (1, 1, 1, 3), "int8", np.ones((1, 1, 1, 3)), [0.01] * 3, [0] * 3)
        )
        db = g.add(fx.Tensor("db", (3,), "int32", np.zeros(3), [1e-3] * 3, [0] * 3))
        d = g.add(fx.Tensor("d", (1, 3, 3, 3), "int8", scale=[0.1], zero_point=[-128]))
        g.ops.append(fx.Op("DEPTHWISE_CONV_2D", [cur, dw, db], [d], options))
        cur = d
    elif op == "CONV_2D":
        cw = g.add(
            fx.Tensor("cw", (3, 2, 2, 3), "int8", np.ones((3, 2, 2, 3)), [0.01] * 3, [0] * 3)
        )
        cb = g.add(fx.Tensor("cb", (3,), "int32", np.zeros(3), [1e-3] * 3, [0] * 3))
        oh = 3 if options.get("padding") == "SAME" else 2
        d = g.add(fx.Tensor("d", (1, oh, oh, 3), "int8", scale=[0.1], zero_point=[-128]))
        g.ops.append(fx.Op("CONV_2D", [cur, cw, cb], [d], options))
        cur = d
    n = int(np.prod(g.tensors[cur].shape))
    f = g.add(fx.Tensor("f", (1, n), "int8", scale=[0.1], zero_point=[-128]))
    shp = g.add(fx.Tensor("shape", (2,), "int32", np.array([1, n])))
    g.ops.append(fx.Op("RESHAPE", [cur, shp], [f], {"new_shape": [1, n]}))
    fw = g.add(fx.Tensor("fw", (2, n), "int8", np.ones((2, n)), [0.01] * 2, [0] * 2))
    fb = g.add(fx.Tensor("fb", (2,), "int32", np.zeros(2), [1e-3] * 2, [0] * 2))
    y = g.add(fx.Tensor("y", (1, 2), "int8", scale=[0.2], zero_point=[0]))
    g.ops.append(fx.Op("FULLY_CONNECTED", [f, fw, fb], [y]))
    p = g.add(fx.Tensor("p", (1, 2), "int8", scale=[1 / 256], zero_point=[-128]))
    g.ops.append(fx.Op("SOFTMAX", [y], [p]))
    g.inputs, g.outputs = [x], [p]
    return g


def test_tiny_graph_imports() -> None:
    qm = import_tflite(fx.write_tflite(_tiny_graph("none")))
    assert [la.desc.kind for la in qm.layers] == [Kind.CONV2D, Kind.FLATTEN, Kind.DENSE]


def test_unsupported_operator_is_named() -> None:
    data = fx.write_tflite(_tiny_graph("DEPTHWISE_CONV_2D"))
    with pytest.raises(UnsupportedLayer) as err:
        import_tflite(data)
    assert err.value.index == 1
    assert err.value.op == "DEPTHWISE_CONV_2D"
    msg = str(err.value)
    assert msg.startswith("operator 1 is DEPTHWISE_CONV_2D; supported: ")
    assert all(op in msg for op in SUPPORTED_OPS)


@pytest.mark.parametrize(
    "options,detail",
    [
        ({"dilation": 2}, "dilation 2×2"),
        ({"activation": "relu6"}, "fused activation RELU6"),
        ({"stride_h": 1, "stride_w": 2}, "unequal strides"),
        ({"padding": "SAME"}, "asymmetric padding"),  # 2×2 SAME pads 0 before, 1 after
    ],
)
def test_unsupported_options_are_named(options: dict[str, Any], detail: str) -> None:
    g = _tiny_graph("CONV_2D", **options)
    if "stride_w" in options:  # fix the output shape for the stride
        g.tensors[g.ops[1].outputs[0]].shape = (1, 2, 1, 3)
        n = 6
        g.tensors[g.ops[2].outputs[0]].shape = (1, n)
        g.tensors[g.ops[2].inputs[1]].data = np.array([1, n])
        g.tensors[g.ops[3].inputs[1]].shape = (2, n)
        g.tensors[g.ops[3].inputs[1]].data = np.ones((2, n))
    with pytest.raises(UnsupportedLayer, match=rf"^operator 1 is CONV_2D with {detail}"):
        import_tflite(fx.write_tflite(g))


def test_not_a_tflite_file(tmp_path: Path) -> None:
    with pytest.raises(TFLiteImportError, match="not a TFLite flatbuffer"):
        import_tflite(b"\x00" * 64)
    with pytest.raises(TFLiteImportError, match="no such file"):
        import_tflite(tmp_path / "missing.tflite")
    data = bytearray(fx.write_tflite(_tiny_graph("none")))
    with pytest.raises(TFLiteImportError):
        import_tflite(bytes(data[: len(data) // 3]))


def test_non_sequential_graph_rejected() -> None:
    g = _tiny_graph("none")
    g.ops[1].inputs[0] = g.inputs[0]  # RESHAPE reads the model input, not the conv output
    with pytest.raises(TFLiteImportError, match="only sequential models"):
        import_tflite(fx.write_tflite(g))


# ---------------------------------------------------------------------------------------------
# Optional: against the real interpreter (ai-edge-litert, not a dependency). Its x86 wheel
# (2.3.0) requantizes with single rounding: the imported model matches it bit for bit.


@pytest.mark.parametrize("name", ["mlp", "cnn", "conv1d"])
def test_reference_matches_litert(name: str, models: dict[str, Any]) -> None:
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    g, x = models[name]
    interp = litert.Interpreter(
        model_content=fx.write_tflite(g), experimental_preserve_all_tensors=True
    )
    interp.allocate_tensors()
    xq = int8_inputs(g, x)
    logit_t = g.ops[-1].inputs[0]
    got = []
    for row in xq:
        interp.set_tensor(g.inputs[0], row.reshape(g.tensors[g.inputs[0]].shape).astype(np.int8))
        interp.invoke()
        got.append(interp.get_tensor(logit_t).reshape(-1))
    got_a = np.array(got, dtype=np.int64)
    np.testing.assert_array_equal(got_a, tflite_reference(g, xq, single=True))
    qm = import_tflite(fx.write_tflite(g))
    np.testing.assert_array_equal(got_a, qm.predict_batch(xq.reshape(len(xq), -1)))
