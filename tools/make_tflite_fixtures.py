#!/usr/bin/env python3
"""Small int8 `.tflite` models built without TensorFlow (for tests and for trying the importer).

`write_tflite` serialises a graph (tensors + operators) with the `tflite` package's flatbuffer
builders. `quantized_model` turns a float layer list into the graph the TFLite converter would
produce with full-integer quantization: activation ranges calibrated on sample inputs, per-channel
symmetric int8 weights, int32 biases in `s_x·s_w` units, softmax output `1/256, −128`.

    .venv/bin/python tools/make_tflite_fixtures.py OUT_DIR    # writes mlp/cnn/conv1d examples

Tests build the same models in memory (`test/test_tflite_import.py`); nothing here needs
TensorFlow.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_TYPES = {"float32": 0, "int32": 2, "int8": 9}
_ACT = {"none": 0, "relu": 1, "relu6": 3}
_PAD = {"SAME": 0, "VALID": 1}


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str  # "int8", "int32" or "float32"
    data: np.ndarray | None = None
    scale: Sequence[float] | None = None
    zero_point: Sequence[int] | None = None
    qdim: int = 0


@dataclass
class Op:
    op: str  # BuiltinOperator name
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]

    def add(self, t: Tensor) -> int:
        self.tensors.append(t)
        return len(self.tensors) - 1


# ---------------------------------------------------------------------------------------------
# Serialisation


def _aligned_bytes(b: Any, data: bytes, align: int = 16) -> int:
    b.StartVector(1, len(data), align)
    b.head = b.head - len(data)
    b.Bytes[b.head : b.head + len(data)] = data
    return b.EndVector()


def _offsets(b: Any, items: Sequence[int]) -> int:
    b.StartVector(4, len(items), 4)
    for off in reversed(items):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _options(b: Any, op: Op) -> tuple[int, int]:
    """(BuiltinOptions union type, table offset) of an operator (0, 0 when none)."""
    import tflite

    o = op.options
    act = _ACT[o.get("activation", "none")]
    if op.op == "FULLY_CONNECTED":
        tflite.FullyConnectedOptionsStart(b)
        tflite.FullyConnectedOptionsAddFusedActivationFunction(b, act)
        return tflite.BuiltinOptions.FullyConnectedOptions, tflite.FullyConnectedOptionsEnd(b)
    if op.op == "CONV_2D":
        tflite.Conv2DOptionsStart(b)
        tflite.Conv2DOptionsAddPadding(b, _PAD[o.get("padding", "VALID")])
        tflite.Conv2DOptionsAddStrideW(b, o.get("stride_w", 1))
        tflite.Conv2DOptionsAddStrideH(b, o.get("stride_h", 1))
        tflite.Conv2DOptionsAddFusedActivationFunction(b, act)
        tflite.Conv2DOptionsAddDilationWFactor(b, o.get("dilation", 1))
        tflite.Conv2DOptionsAddDilationHFactor(b, o.get("dilation", 1))
        return tflite.BuiltinOptions.Conv2DOptions, tflite.Conv2DOptionsEnd(b)
    if op.op == "DEPTHWISE_CONV_2D":
        tflite.DepthwiseConv2DOptionsStart(b)
        tflite.DepthwiseConv2DOptionsAddPadding(b, _PAD[o.get("padding", "VALID")])
        tflite.DepthwiseConv2DOptionsAddStrideW(b, 1)
        tflite.DepthwiseConv2DOptionsAddStrideH(b, 1)
        tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, 1)
        tflite.DepthwiseConv2DOptionsAddFusedActivationFunction(b, act)
        return tflite.BuiltinOptions.DepthwiseConv2DOptions, tflite.DepthwiseConv2DOptionsEnd(b)
    if op.op in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        tflite.Pool2DOptionsStart(b)
        tflite.Pool2DOptionsAddPadding(b, _PAD[o.get("padding", "VALID")])
        tflite.Pool2DOptionsAddStrideW(b, o["stride_w"])
        tflite.Pool2DOptionsAddStrideH(b, o["stride_h"])
        tflite.Pool2DOptionsAddFilterWidth(b, o["filter_w"])
        tflite.Pool2DOptionsAddFilterHeight(b, o["filter_h"])
        tflite.Pool2DOptionsAddFusedActivationFunction(b, act)
        return tflite.BuiltinOptions.Pool2DOptions, tflite.Pool2DOptionsEnd(b)
    if op.op == "SOFTMAX":
        tflite.SoftmaxOptionsStart(b)
        tflite.SoftmaxOptionsAddBeta(b, 1.0)
        return tflite.BuiltinOptions.SoftmaxOptions, tflite.SoftmaxOptionsEnd(b)
    if op.op == "RESHAPE":
        shape = np.asarray(o["new_shape"], dtype="<i4")
        vec = b.CreateNumpyVector(shape)
        tflite.ReshapeOptionsStart(b)
        tflite.ReshapeOptionsAddNewShape(b, vec)
        return tflite.BuiltinOptions.ReshapeOptions, tflite.ReshapeOptionsEnd(b)
    return 0, 0


def write_tflite(g: Graph, description: str = "terrain_odt test model") -> bytes:
    """Serialise `g` as a TFLite flatbuffer (schema version 3, one subgraph)."""
    import flatbuffers
    import tflite

    b = flatbuffers.Builder(1024)
    # buffers: 0 is the empty sentinel, then one per constant tensor
    buf_data: list[bytes] = [b""]
    buf_idx: list[int] = []
    for t in g.tensors:
        if t.data is None:
            buf_idx.append(0)
        else:
            dt = {"int8": "i1", "int32": "<i4", "float32": "<f4"}[t.dtype]
            buf_data.append(np.ascontiguousarray(t.data, dtype=dt).tobytes())
            buf_idx.append(len(buf_data) - 1)
    buffers = []
    for data in buf_data:
        vec = _aligned_bytes(b, data) if data else None
        tflite.BufferStart(b)
        if vec is not None:
            tflite.BufferAddData(b, vec)
        buffers.append(tflite.BufferEnd(b))

    tensors = []
    for t, bi in zip(g.tensors, buf_idx, strict=True):
        name = b.CreateString(t.name)
        shape = b.CreateNumpyVector(np.asarray(t.shape, dtype="<i4"))
        quant = None
        if t.scale is not None:
            sc = b.CreateNumpyVector(np.asarray(t.scale, dtype="<f4"))
            zp = b.CreateNumpyVector(np.asarray(t.zero_point, dtype="<i8"))
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, sc)
            tflite.QuantizationParametersAddZeroPoint(b, zp)
            tflite.QuantizationParametersAddQuantizedDimension(b, t.qdim)
            quant = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, _TYPES[t.dtype])
        tflite.TensorAddBuffer(b, bi)
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        tensors.append(tflite.TensorEnd(b))

    codes: list[str] = []
    ops = []
    for op in g.ops:
        if op.op not in codes:
            codes.append(op.op)
        ins = b.CreateNumpyVector(np.asarray(op.inputs, dtype="<i4"))
        outs = b.CreateNumpyVector(np.asarray(op.outputs, dtype="<i4"))
        otype, opts = _options(b, op)
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, codes.index(op.op))
        tflite.OperatorAddInputs(b, ins)
        tflite.OperatorAddOutputs(b, outs)
        if otype:
            tflite.OperatorAddBuiltinOptionsType(b, otype)
            tflite.OperatorAddBuiltinOptions(b, opts)
        ops.append(tflite.OperatorEnd(b))

    opcodes = []
    for name in codes:
        code = getattr(tflite.BuiltinOperator, name)
        tflite.OperatorCodeStart(b)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        tflite.OperatorCodeAddBuiltinCode(b, code)
        tflite.OperatorCodeAddVersion(b, 1)
        opcodes.append(tflite.OperatorCodeEnd(b))

    t_vec = _offsets(b, tensors)
    o_vec = _offsets(b, ops)
    in_vec = b.CreateNumpyVector(np.asarray(g.inputs, dtype="<i4"))
    out_vec = b.CreateNumpyVector(np.asarray(g.outputs, dtype="<i4"))
    sg_name = b.CreateString("main")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, t_vec)
    tflite.SubGraphAddInputs(b, in_vec)
    tflite.SubGraphAddOutputs(b, out_vec)
    tflite.SubGraphAddOperators(b, o_vec)
    tflite.SubGraphAddName(b, sg_name)
    subgraph = tflite.SubGraphEnd(b)

    sg_vec = _offsets(b, [subgraph])
    oc_vec = _offsets(b, opcodes)
    bf_vec = _offsets(b, buffers)
    desc = b.CreateString(description)
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, oc_vec)
    tflite.ModelAddSubgraphs(b, sg_vec)
    tflite.ModelAddDescription(b, desc)
    tflite.ModelAddBuffers(b, bf_vec)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


# ---------------------------------------------------------------------------------------------
# Float layer lists → quantized graphs


@dataclass
class Dense:
    w: np.ndarray  # [out, in]
    b: np.ndarray
    activation: str = "none"


@dataclass
class Conv2D:
    w: np.ndarray  # [cout, kh, kw, cin] (OHWI)
    b: np.ndarray
    stride: tuple[int, int] = (1, 1)
    padding: str = "VALID"
    activation: str = "none"


@dataclass
class Pool:
    kind: str  # "max" or "avg"
    size: tuple[int, int]


@dataclass
class Reshape:
    shape: tuple[int, ...]  # full output shape, batch first


def _pads(size: int, k: int, s: int, padding: str) -> tuple[int, int, int]:
    if padding == "VALID":
        return (size - k) // s + 1, 0, 0
    out = (size + s - 1) // s
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def float_conv2d(x: np.ndarray, layer: Conv2D) -> np.ndarray:
    """NHWC float convolution with TFLite's SAME/VALID padding."""
    n, h, w, _cin = x.shape
    cout, kh, kw, _ = layer.w.shape
    sh, sw = layer.stride
    oh, pt, pb = _pads(h, kh, sh, layer.padding)
    ow, pl, pr = _pads(w, kw, sw, layer.padding)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    y = np.zeros((n, oh, ow, cout))
    for oy in range(oh):
        for ox in range(ow):
            patch = xp[:, oy * sh : oy * sh + kh, ox * sw : ox * sw + kw, :]
            y[:, oy, ox, :] = np.einsum("nhwc,ohwc->no", patch, layer.w) + layer.b
    return y


def _act(y: np.ndarray, activation: str) -> np.ndarray:
    if activation == "relu":
        return np.maximum(y, 0.0)
    if activation == "relu6":
        return np.clip(y, 0.0, 6.0)
    return y


def float_forward(layers: Sequence[Any], x: np.ndarray) -> list[np.ndarray]:
    """Every activation of the float model (input first)."""
    acts = [np.asarray(x, dtype=np.float64)]
    for la in layers:
        a = acts[-1]
        if isinstance(la, Dense):
            y = _act(a.reshape(a.shape[0], -1) @ la.w.T + la.b, la.activation)
        elif isinstance(la, Conv2D):
            y = _act(float_conv2d(a, la), la.activation)
        elif isinstance(la, Pool):
            n, h, w, c = a.shape
            ph, pw = la.size
            v = a[:, : h // ph * ph, : w // pw * pw].reshape(n, h // ph, ph, w // pw, pw, c)
            y = v.max(axis=(2, 4)) if la.kind == "max" else v.mean(axis=(2, 4))
        elif isinstance(la, Reshape):
            y = a.reshape((a.shape[0], *la.shape[1:]))
        else:
            raise TypeError(la)
        acts.append(y)
    return acts


def act_qparams(lo: float, hi: float) -> tuple[float, int]:
    """TFLite-style asymmetric int8 parameters of a range (nudged to contain 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi == lo:
        hi = lo + 1e-3
    scale = float(np.float32((hi - lo) / 255.0))
    zp = int(min(max(round(-128 - lo / scale), -128), 127))
    return scale, zp


def quantized_model(
    layers: Sequence[Any],
    input_shape: tuple[int, ...],
    calib: np.ndarray,
    *,
    softmax: bool = True,
    float_io: bool = False,
) -> Graph:
    """The full-integer graph of `layers` (input `input_shape`, batch first), calibrated on
    `calib`. With `float_io` the graph takes float32 (QUANTIZE first) and returns float32
    (DEQUANTIZE last)."""
    acts = float_forward(layers, calib)
    g = Graph([], [], [], [])
    s_in, z_in = act_qparams(float(acts[0].min()), float(acts[0].max()))
    x = g.add(Tensor("input_q", input_shape, "int8", scale=[s_in], zero_point=[z_in]))
    if float_io:
        xf = g.add(Tensor("input", input_shape, "float32"))
        g.ops.append(Op("QUANTIZE", [xf], [x]))
        g.inputs = [xf]
    else:
        g.inputs = [x]
    cur_q = (s_in, z_in)
    for k, la in enumerate(layers):
        a = acts[k + 1]
        shape = (1, *a.shape[1:])
        if isinstance(la, Dense | Conv2D):
            w = np.asarray(la.w, dtype=np.float64)
            amax = np.maximum(np.abs(w.reshape(w.shape[0], -1)).max(axis=1), 1e-8)
            s_w = (amax / 127.0).astype(np.float32)
            wq = np.clip(np.round(w / s_w.reshape(-1, *([1] * (w.ndim - 1)))), -127, 127)
            bq = np.round(la.b / (np.float64(cur_q[0]) * s_w.astype(np.float64)))
            wi = g.add(
                Tensor(f"w{k}", w.shape, "int8", wq.astype(np.int8), s_w.tolist(), [0] * len(s_w))
            )
            bscale = [float(np.float32(cur_q[0] * float(s))) for s in s_w]
            bi = g.add(
                Tensor(f"b{k}", (w.shape[0],), "int32", bq.astype(np.int32), bscale, [0] * len(s_w))
            )
            q = act_qparams(float(a.min()), float(a.max()))
            y = g.add(Tensor(f"a{k}", shape, "int8", scale=[q[0]], zero_point=[q[1]]))
            if isinstance(la, Dense):
                opts: dict[str, Any] = {"activation": la.activation}
                g.ops.append(Op("FULLY_CONNECTED", [x, wi, bi], [y], opts))
            else:
                opts = {
                    "activation": la.activation,
                    "padding": la.padding,
                    "stride_h": la.stride[0],
                    "stride_w": la.stride[1],
                }
                g.ops.append(Op("CONV_2D", [x, wi, bi], [y], opts))
            cur_q = q
        elif isinstance(la, Pool):
            y = g.add(Tensor(f"a{k}", shape, "int8", scale=[cur_q[0]], zero_point=[cur_q[1]]))
            opts = {
                "filter_h": la.size[0],
                "filter_w": la.size[1],
                "stride_h": la.size[0],
                "stride_w": la.size[1],
            }
            name = "MAX_POOL_2D" if la.kind == "max" else "AVERAGE_POOL_2D"
            g.ops.append(Op(name, [x], [y], opts))
        elif isinstance(la, Reshape):
            y = g.add(Tensor(f"a{k}", shape, "int8", scale=[cur_q[0]], zero_point=[cur_q[1]]))
            sh = g.add(Tensor(f"shape{k}", (len(la.shape),), "int32", np.asarray(la.shape)))
            g.ops.append(Op("RESHAPE", [x, sh], [y], {"new_shape": list(la.shape)}))
        else:
            raise TypeError(la)
        x = y
    if softmax:
        y = g.add(Tensor("probs", g.tensors[x].shape, "int8", scale=[1 / 256], zero_point=[-128]))
        g.ops.append(Op("SOFTMAX", [x], [y]))
        x = y
    if float_io:
        y = g.add(Tensor("output", g.tensors[x].shape, "float32"))
        g.ops.append(Op("DEQUANTIZE", [x], [y]))
        x = y
    g.outputs = [x]
    return g


def he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)


def _centre_last(layers: list[Any], x: np.ndarray) -> list[Any]:
    """Set the last Dense layer's bias so that its logits are centred on `x` (random weights
    would otherwise often pick one class for every input)."""
    feats = float_forward(layers[:-1], x)[-1].reshape(len(x), -1)
    last = layers[-1]
    last.b = -(last.w @ feats.mean(axis=0))
    return layers


def example_models(seed: int = 0) -> dict[str, tuple[Graph, np.ndarray]]:
    """The example models (and their calibration inputs), by name."""
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[Graph, np.ndarray]] = {}
    x = rng.normal(0.0, 1.0, (256, 20))
    mlp = [
        Dense(he(rng, (16, 20), 20), rng.normal(0, 0.1, 16), "relu"),
        Dense(he(rng, (12, 16), 16), rng.normal(0, 0.1, 12), "relu"),
        Dense(he(rng, (4, 12), 12), rng.normal(0, 0.1, 4)),
    ]
    out["mlp"] = (quantized_model(_centre_last(mlp, x), (1, 20), x), x)
    x = rng.normal(0.0, 1.0, (64, 8, 8, 2))
    cnn = [
        Conv2D(he(rng, (4, 3, 3, 2), 18), rng.normal(0, 0.1, 4), padding="SAME", activation="relu"),
        Pool("max", (2, 2)),
        Conv2D(he(rng, (6, 2, 2, 4), 16), rng.normal(0, 0.1, 6), activation="relu"),
        Pool("avg", (3, 3)),
        Reshape((1, 6)),
        Dense(he(rng, (3, 6), 6) * 3, np.zeros(3)),
    ]
    out["cnn"] = (quantized_model(_centre_last(cnn, x), (1, 8, 8, 2), x), x)
    x = rng.normal(0.0, 1.0, (64, 1, 16, 3))
    c1 = [
        Conv2D(he(rng, (5, 1, 3, 3), 9), rng.normal(0, 0.1, 5), padding="SAME", activation="relu"),
        Pool("max", (1, 2)),
        Conv2D(he(rng, (4, 1, 3, 5), 15), rng.normal(0, 0.1, 4), stride=(1, 2), activation="relu"),
        Reshape((1, 12)),
        Dense(he(rng, (3, 12), 12), np.zeros(3)),
    ]
    out["conv1d"] = (quantized_model(_centre_last(c1, x), (1, 1, 16, 3), x), x)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, (g, _) in example_models(args.seed).items():
        path = args.out_dir / f"{name}_int8.tflite"
        path.write_bytes(write_tflite(g))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
