"""Import an int8 TensorFlow Lite model (what MicroFlow / TFLite Micro users have) as a `QModel`.

The flatbuffer is read with the `tflite` package (the generated schema bindings over
`flatbuffers`); TensorFlow is not needed. Only sequential graphs of these operators import:

| TFLite operator | becomes |
|---|---|
| `FULLY_CONNECTED` (int8 weights per tensor or channel, int32 bias, NONE/RELU) | `Dense` |
| `CONV_2D` (int8 OHWI weights, dilation 1, equal strides, symmetric padding) | `Conv2d` |
| `CONV_2D` on an `H = 1` (or `W = 1`) input with a `1×K` (or `K×1`) kernel | `Conv1d` |
| `MAX_POOL_2D`, `AVERAGE_POOL_2D` (window = stride, no padding) | `MaxPool2d`, `AvgPool2d` |
| `RELU` without requantization | `ReLU` |
| `RESHAPE`, `SQUEEZE`, `EXPAND_DIMS` | `Flatten` when they flatten to rank 2, else nothing |
| `SOFTMAX` as the last operator | dropped: odt-core's loss includes the softmax |
| `QUANTIZE` (float32 → int8) first, `DEQUANTIZE` last | dropped: the blob's I/O is int8 |

Arithmetic: TFLite computes `acc = bias + Σ w·(x − z_x)` and requantizes it with a multiplier
`q · 2^(shift − 31)` obtained from the real `s_x·s_w[c]/s_y` (in double, from the stored `f32`
scales) exactly as `quantize.quantize_multiplier` does, so the blob's `(m, s)` are TFLite's
`(q, shift)`. odt-core requantizes with one rounding step (docs §1.2), which is TFLite's
`TFLITE_SINGLE_ROUNDING` mode: outputs are bit-identical to it. The default TFLite build rounds
twice and its average pooling rounds half away from zero (odt-core: half up), so on ties a value
can differ by one step from what TFLite (Micro) computes by default.

Update factors (docs §5): `u[c] = s_logit / s_w[c]²` and `ub[c] = s_logit / (s_x·s_w[c])²` with
`s_logit` the scale of the tensor that fed the softmax (the model's logits).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from terrain_odt.model.blob import BlobError, LayerDesc, ParamSection, decode_blob, f32_bits
from terrain_odt.model.qnn import ModelMeta, QModel, Storage
from terrain_odt.model.quantize import (
    mant_exp16,
    quantize_multiplier,
    section_from_factors,
    softmax_a,
)

SUPPORTED_OPS: tuple[str, ...] = (
    "FULLY_CONNECTED",
    "CONV_2D",
    "MAX_POOL_2D",
    "AVERAGE_POOL_2D",
    "RELU",
    "RESHAPE",
    "SQUEEZE",
    "EXPAND_DIMS",
    "SOFTMAX",
    "QUANTIZE",
    "DEQUANTIZE",
)

# TensorType values of the schema
_FLOAT32, _INT32, _INT8 = 0, 2, 9
_TYPE_NAMES = {
    0: "FLOAT32",
    1: "FLOAT16",
    2: "INT32",
    3: "UINT8",
    4: "INT64",
    7: "INT16",
    9: "INT8",
}
# ActivationFunctionType and Padding values
_ACT_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_SAME, _VALID = 0, 1
_MAX_DIM = 65535  # descriptor dimensions are u16


class TFLiteImportError(ValueError):
    """The file is not a TFLite model, or the model cannot be expressed as an odt-core blob."""


class UnsupportedLayer(TFLiteImportError):
    """An operator (or an option of it) that odt-core has no layer for.

    `index` is the operator's position in the subgraph, `op` its builtin name.
    """

    def __init__(self, index: int, op: str, detail: str | None = None) -> None:
        self.index = index
        self.op = op
        if detail is None:
            msg = f"operator {index} is {op}; supported: {', '.join(SUPPORTED_OPS)}"
        else:
            msg = f"operator {index} is {op} with {detail}; odt-core cannot represent it"
        super().__init__(msg)


@dataclass
class _Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: int
    scale: np.ndarray  # float32 values as float64 (exact); empty when unquantized
    zero_point: np.ndarray  # int64; empty when unquantized
    qdim: int
    data: bytes | None  # constant buffer contents

    @property
    def type_name(self) -> str:
        return _TYPE_NAMES.get(self.dtype, f"type {self.dtype}")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape[1:])) if len(self.shape) > 1 else 1

    def qparams(self) -> tuple[float, int]:
        if self.scale.size != 1 or self.zero_point.size != 1:
            raise TFLiteImportError(
                f"tensor {self.index} ({self.name!r}) needs one scale and zero point, "
                f"has {self.scale.size} and {self.zero_point.size}"
            )
        return float(self.scale[0]), int(self.zero_point[0])

    def array(self, dtype: str) -> np.ndarray:
        if self.data is None:
            raise TFLiteImportError(f"tensor {self.index} ({self.name!r}) is not a constant")
        arr = np.frombuffer(self.data, dtype=dtype)
        if arr.size != int(np.prod(self.shape)):
            raise TFLiteImportError(
                f"tensor {self.index} ({self.name!r}): {arr.size} values for shape {self.shape}"
            )
        return arr.reshape(self.shape)


@dataclass
class _Param:
    """One Dense/Conv layer before the model-wide logit scale is known."""

    layer: int  # index in the descriptor list
    op_index: int
    z_x: int
    z_y: int
    s_x: float
    s_w: np.ndarray
    s_y: float
    bias: np.ndarray
    weights: np.ndarray


@dataclass
class TFLiteModel:
    """An imported model and what the import did (for the sidecar and `inspect`)."""

    qmodel: QModel
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    float_input: bool  # the file takes float32 and quantizes it (a dropped QUANTIZE)
    ops: list[dict[str, Any]] = field(default_factory=list)  # per operator: name, what it became
    notes: list[str] = field(default_factory=list)


def _op_names() -> dict[int, str]:
    import tflite

    return {
        int(v): k
        for k, v in vars(tflite.BuiltinOperator).items()
        if not k.startswith("_") and isinstance(v, int)
    }


def _options(op: Any, cls_name: str) -> Any | None:
    import tflite

    table = op.BuiltinOptions()
    if table is None:
        return None
    opts = getattr(tflite, cls_name)()
    opts.Init(table.Bytes, table.Pos)
    return opts


def _read_tensors(model: Any, graph: Any) -> list[_Tensor]:
    out = []
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        shape = tuple(int(v) for v in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        q = t.Quantization()
        scale = np.zeros(0)
        zp = np.zeros(0, dtype=np.int64)
        qdim = 0
        if q is not None:
            if q.ScaleLength():
                scale = np.asarray(q.ScaleAsNumpy(), dtype=np.float32).astype(np.float64)
            if q.ZeroPointLength():
                zp = np.asarray(q.ZeroPointAsNumpy(), dtype=np.int64)
            qdim = int(q.QuantizedDimension())
        data = None
        if 0 <= t.Buffer() < model.BuffersLength():
            buf = model.Buffers(t.Buffer())
            if buf.DataLength():
                data = buf.DataAsNumpy().tobytes()
            elif buf.Offset() > 1:
                raise TFLiteImportError(
                    "models with buffers outside the flatbuffer (> 2 GB) are not supported"
                )
        name = t.Name().decode("utf-8", "replace") if t.Name() else f"t{i}"
        out.append(_Tensor(i, name, shape, int(t.Type()), scale, zp, qdim, data))
    return out


def _same_pads(size: int, k: int, stride: int, padding: int) -> tuple[int, int, int]:
    """TFLite's output size and (before, after) padding of one spatial dimension."""
    if padding == _VALID:
        return (size - k) // stride + 1, 0, 0
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + k - size, 0)
    return out, total // 2, total - total // 2


def _hwc(t: _Tensor, i: int, op: str) -> tuple[int, int, int]:
    if len(t.shape) != 4 or t.shape[0] != 1:
        raise UnsupportedLayer(i, op, f"input shape {list(t.shape)} (need [1, H, W, C])")
    return t.shape[1], t.shape[2], t.shape[3]


def read_tflite(
    path: str | Path | bytes,
    *,
    model_id: int | None = None,
    storage: Storage = "i8",
) -> TFLiteModel:
    """Parse a `.tflite` file (or its bytes) and build the integer model (see the module doc).

    `model_id` defaults to the CRC-32 of the file. Raises `UnsupportedLayer` for an operator
    odt-core cannot run (naming it and its index), `TFLiteImportError` for anything else.
    """
    if isinstance(path, bytes | bytearray):
        data = bytes(path)
    else:
        p = Path(path)
        if not p.is_file():
            raise TFLiteImportError(f"{p}: no such file")
        data = p.read_bytes()
    try:
        import tflite
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise TFLiteImportError("the `tflite` package is needed: pip install tflite") from exc
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise TFLiteImportError("not a TFLite flatbuffer (file identifier is not 'TFL3')")
    try:
        model = tflite.Model.GetRootAs(data, 0)
        return _convert(model, data, model_id, storage)
    except TFLiteImportError:
        raise
    except Exception as exc:  # a corrupt flatbuffer fails anywhere inside the bindings
        raise TFLiteImportError(
            f"malformed TFLite flatbuffer: {type(exc).__name__}: {exc}"
        ) from exc


def import_tflite(
    path: str | Path | bytes, *, model_id: int | None = None, storage: Storage = "i8"
) -> QModel:
    """The `QModel` of an int8 `.tflite` file (see `read_tflite`)."""
    return read_tflite(path, model_id=model_id, storage=storage).qmodel


def _convert(model: Any, data: bytes, model_id: int | None, storage: Storage) -> TFLiteModel:
    names = _op_names()
    if model.SubgraphsLength() < 1:
        raise TFLiteImportError("the model has no subgraph")
    graph = model.Subgraphs(0)
    tensors = _read_tensors(model, graph)
    if graph.InputsLength() != 1 or graph.OutputsLength() != 1:
        raise TFLiteImportError(
            f"need exactly one input and one output, have {graph.InputsLength()} and "
            f"{graph.OutputsLength()}"
        )
    n_ops = graph.OperatorsLength()
    cur = tensors[int(graph.Inputs(0))]
    descs: list[LayerDesc] = []
    params: list[_Param] = []
    ops_info: list[dict[str, Any]] = []
    notes: list[str] = []
    float_input = False
    in_q: tuple[float, int] | None = None
    logits: _Tensor | None = None  # set once a SOFTMAX / DEQUANTIZE ends the int8 part
    spatial = False  # the current activation is a feature map (not yet flattened)

    def need_int8(t: _Tensor, i: int, op: str) -> None:
        if t.dtype != _INT8:
            raise UnsupportedLayer(i, op, f"{t.type_name} tensor {t.index} (only int8 runs)")

    def need_same_q(a: _Tensor, b: _Tensor, i: int, op: str) -> None:
        if a.qparams() != b.qparams():
            raise UnsupportedLayer(
                i, op, f"requantization (input {a.qparams()}, output {b.qparams()})"
            )

    for i in range(n_ops):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        bcode = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        name = names.get(bcode, f"BUILTIN_{bcode}")
        if name == "CUSTOM":
            cc = code.CustomCode()
            name = f"CUSTOM({cc.decode('utf-8', 'replace') if cc else '?'})"
        if name not in SUPPORTED_OPS:
            raise UnsupportedLayer(i, name)
        ins = [int(v) for v in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [int(v) for v in op.OutputsAsNumpy()] if op.OutputsLength() else []
        if not ins or not outs:
            raise TFLiteImportError(f"operator {i} ({name}) has no input or output")
        if ins[0] != cur.index:
            raise TFLiteImportError(
                f"operator {i} ({name}) reads tensor {ins[0]}, not the output of the operator "
                "before it: only sequential models import"
            )
        if logits is not None and name != "DEQUANTIZE":
            raise UnsupportedLayer(i, name, "a position after the softmax (must be last)")
        out = tensors[outs[0]]
        info: dict[str, Any] = {"index": i, "op": name, "layer": None}

        if name == "QUANTIZE":
            if descs or cur.dtype != _FLOAT32 or out.dtype != _INT8:
                raise UnsupportedLayer(
                    i, name, "a requantization (only float32 → int8 at the input is dropped)"
                )
            float_input = True
            info["layer"] = "dropped (float input is quantized by the host)"
        elif name == "DEQUANTIZE":
            if i != n_ops - 1:
                raise UnsupportedLayer(i, name, "a position other than last")
            need_int8(cur, i, name)
            logits = logits or cur
            info["layer"] = "dropped (int8 logits)"
        elif name == "SOFTMAX":
            need_int8(cur, i, name)
            logits = cur
            info["layer"] = "dropped (odt-core's loss includes the softmax)"
        else:
            need_int8(cur, i, name)
            need_int8(out, i, name)
            if in_q is None:
                in_q = cur.qparams()
            if name == "FULLY_CONNECTED":
                desc, prm = _dense(i, name, op, ins, cur, out, tensors)
                prm.layer = len(descs)
                params.append(prm)
                descs.append(desc)
                spatial = False
            elif name == "CONV_2D":
                desc, prm = _conv(i, name, op, ins, cur, out, tensors)
                prm.layer = len(descs)
                params.append(prm)
                descs.append(desc)
                spatial = True
            elif name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
                need_same_q(cur, out, i, name)
                descs.extend(_pool(i, name, op, cur, out))
                spatial = True
            elif name == "RELU":
                need_same_q(cur, out, i, name)
                descs.append(LayerDesc.relu_layer(cur.size))
            else:  # RESHAPE, SQUEEZE, EXPAND_DIMS: the flat buffer is unchanged
                need_same_q(cur, out, i, name)
                if out.size != cur.size:
                    raise TFLiteImportError(f"operator {i} ({name}) changes the element count")
                if spatial and len(out.shape) == 2 and descs:
                    descs.append(LayerDesc.flatten(cur.size))
                    spatial = False
                else:
                    info["layer"] = "elided (no data movement)"
            if info["layer"] is None:
                info["layer"] = len(descs) - 1
        ops_info.append(info)
        cur = out

    if cur.index != int(graph.Outputs(0)):
        raise TFLiteImportError("the last operator's output is not the model's output")
    if not params:
        raise TFLiteImportError("no FULLY_CONNECTED or CONV_2D operator: nothing to train")
    if len(descs) > 32:
        raise TFLiteImportError(f"{len(descs)} layers; a blob holds at most 32")
    if not all(0 <= d <= _MAX_DIM for desc in descs for d in desc.dims):
        raise TFLiteImportError("a layer dimension exceeds 65535 (descriptor fields are u16)")
    if logits is None:
        logits = cur
    notes.append(
        "requantization rounds once (TFLite's TFLITE_SINGLE_ROUNDING, bit-exact with it); "
        "the default TFLite Micro build rounds twice and can differ by one step on ties"
    )
    if any(o["op"] == "AVERAGE_POOL_2D" for o in ops_info):
        notes.append(
            "AVERAGE_POOL_2D rounds half up in odt-core, half away from zero in TFLite: "
            "a negative tie differs by one step"
        )
    assert in_q is not None
    s_logit, z_logit = logits.qparams()
    sections: list[ParamSection | None] = [None] * len(descs)
    for prm in params:
        sections[prm.layer] = _section(prm, s_logit)
    meta = ModelMeta(
        model_id=zlib.crc32(data) if model_id is None else int(model_id) & 0xFFFFFFFF,
        input_zp=in_q[1],
        output_zp=z_logit,
        input_scale_bits=f32_bits(in_q[0]),
        output_scale_bits=f32_bits(s_logit),
        softmax_a=_checked(softmax_a, s_logit, params[-1].op_index, "logit scale"),
    )
    qmodel = QModel.from_parts(descs, sections, meta, storage)
    try:  # the same consistency checks the firmware's loader runs
        decode_blob(qmodel.to_blob())
    except (BlobError, ValueError, OverflowError) as exc:
        raise TFLiteImportError(f"the imported model is not a valid blob: {exc}") from exc
    return TFLiteModel(
        qmodel=qmodel,
        input_scale=in_q[0],
        input_zero_point=in_q[1],
        output_scale=s_logit,
        output_zero_point=z_logit,
        float_input=float_input,
        ops=ops_info,
        notes=notes,
    )


def _checked(fn: Any, value: float, op_index: int, what: str) -> Any:
    try:
        return fn(value)
    except ValueError as exc:
        raise TFLiteImportError(f"operator {op_index}: {what} {value}: {exc}") from exc


def _fused(i: int, op: str, code: int) -> bool:
    if code not in (0, 1):
        raise UnsupportedLayer(i, op, f"fused activation {_ACT_NAMES.get(code, code)}")
    return code == 1


def _weights(
    i: int, op: str, ins: Sequence[int], tensors: list[_Tensor], cout: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int8 weights, per-channel scales (length cout) and int32 bias of a Dense/Conv operator."""
    if len(ins) < 2 or ins[1] < 0:
        raise TFLiteImportError(f"operator {i} ({op}) has no weights")
    wt = tensors[ins[1]]
    if wt.dtype != _INT8:
        raise UnsupportedLayer(i, op, f"{wt.type_name} weights (need int8)")
    w = wt.array("i1")
    if w.shape[0] != cout:
        raise TFLiteImportError(f"operator {i} ({op}): weights {w.shape}, {cout} output channels")
    if wt.scale.size not in (1, cout) or (wt.scale.size == cout and cout > 1 and wt.qdim != 0):
        raise UnsupportedLayer(i, op, "weights not quantized per output channel or per tensor")
    if np.any(wt.zero_point != 0):
        raise UnsupportedLayer(i, op, "asymmetric weights (non-zero weight zero point)")
    if np.any(wt.scale <= 0):
        raise TFLiteImportError(f"operator {i} ({op}): non-positive weight scale")
    s_w = np.broadcast_to(wt.scale, (cout,)).astype(np.float64)
    if len(ins) > 2 and ins[2] >= 0:
        bt = tensors[ins[2]]
        if bt.dtype != _INT32:
            raise UnsupportedLayer(i, op, f"{bt.type_name} bias (need int32)")
        bias = bt.array("<i4").reshape(-1).astype(np.int64)
        if bias.size != cout:
            raise TFLiteImportError(f"operator {i} ({op}): {bias.size} biases for {cout} channels")
    else:
        bias = np.zeros(cout, dtype=np.int64)
    return w, s_w, bias


def _dense(
    i: int, op: str, opr: Any, ins: Sequence[int], x: _Tensor, y: _Tensor, tensors: list[_Tensor]
) -> tuple[LayerDesc, _Param]:
    opts = _options(opr, "FullyConnectedOptions")
    relu = _fused(i, op, opts.FusedActivationFunction() if opts else 0)
    if opts is not None and opts.WeightsFormat() != 0:
        raise UnsupportedLayer(i, op, "shuffled weights format")
    wt = tensors[ins[1]] if len(ins) > 1 and ins[1] >= 0 else None
    if wt is None or len(wt.shape) != 2:
        raise TFLiteImportError(f"operator {i} ({op}) needs 2-D constant weights")
    n_out, n_in = wt.shape
    if x.size != n_in:
        raise UnsupportedLayer(
            i, op, f"an input of {x.size} values for {n_in} weights per row (applied per position)"
        )
    if y.size != n_out:
        raise TFLiteImportError(f"operator {i} ({op}): output size {y.size}, expected {n_out}")
    w, s_w, bias = _weights(i, op, ins, tensors, n_out)
    s_x, z_x = x.qparams()
    s_y, z_y = y.qparams()
    desc = LayerDesc.dense(n_in, n_out, relu)
    return desc, _Param(0, i, z_x, z_y, s_x, s_w, s_y, bias, w)


def _conv(
    i: int, op: str, opr: Any, ins: Sequence[int], x: _Tensor, y: _Tensor, tensors: list[_Tensor]
) -> tuple[LayerDesc, _Param]:
    opts = _options(opr, "Conv2DOptions")
    if opts is None:
        raise TFLiteImportError(f"operator {i} ({op}) has no Conv2DOptions")
    relu = _fused(i, op, opts.FusedActivationFunction())
    if opts.DilationHFactor() not in (0, 1) or opts.DilationWFactor() not in (0, 1):
        raise UnsupportedLayer(i, op, f"dilation {opts.DilationHFactor()}×{opts.DilationWFactor()}")
    h, w_, cin = _hwc(x, i, op)
    wt = tensors[ins[1]] if len(ins) > 1 and ins[1] >= 0 else None
    if wt is None or len(wt.shape) != 4:
        raise TFLiteImportError(f"operator {i} ({op}) needs 4-D constant weights")
    cout, kh, kw, wcin = wt.shape
    if wcin != cin:
        raise UnsupportedLayer(
            i, op, f"grouped convolution ({cin} input channels, {wcin} per group)"
        )
    sh, sw, pad = int(opts.StrideH()), int(opts.StrideW()), int(opts.Padding())
    if sh < 1 or sw < 1:
        raise TFLiteImportError(f"operator {i} ({op}): stride {sh}×{sw}")
    oh, ph0, ph1 = _same_pads(h, kh, sh, pad)
    ow, pw0, pw1 = _same_pads(w_, kw, sw, pad)
    if y.shape[1:] != (oh, ow, cout):
        raise TFLiteImportError(
            f"operator {i} ({op}): output shape {list(y.shape)}, expected {[1, oh, ow, cout]}"
        )
    w, s_w, bias = _weights(i, op, ins, tensors, cout)
    s_x, z_x = x.qparams()
    s_y, z_y = y.qparams()
    if h == 1 and kh == 1:  # 1-D convolution along W
        if pw0 != pw1:
            raise UnsupportedLayer(i, op, f"asymmetric padding ({pw0} left, {pw1} right)")
        desc = LayerDesc.conv1d(w_, cin, cout, kw, sw, pw0, relu)
        wq = w.reshape(cout, kw, cin)
    elif w_ == 1 and kw == 1:  # 1-D convolution along H: [H][1][C] is [L][C] in memory
        if ph0 != ph1:
            raise UnsupportedLayer(i, op, f"asymmetric padding ({ph0} top, {ph1} bottom)")
        desc = LayerDesc.conv1d(h, cin, cout, kh, sh, ph0, relu)
        wq = w.reshape(cout, kh, cin)
    else:
        if sh != sw:
            raise UnsupportedLayer(i, op, f"unequal strides {sh}×{sw}")
        if len({ph0, ph1, pw0, pw1}) != 1:
            raise UnsupportedLayer(
                i, op, f"asymmetric padding (top {ph0}, bottom {ph1}, left {pw0}, right {pw1})"
            )
        desc = LayerDesc.conv2d(h, w_, cin, cout, kh, kw, sh, ph0, relu)
        wq = w
    return desc, _Param(0, i, z_x, z_y, s_x, s_w, s_y, bias, wq)


def _pool(i: int, op: str, opr: Any, x: _Tensor, y: _Tensor) -> list[LayerDesc]:
    opts = _options(opr, "Pool2DOptions")
    if opts is None:
        raise TFLiteImportError(f"operator {i} ({op}) has no Pool2DOptions")
    relu = _fused(i, op, opts.FusedActivationFunction())
    h, w, c = _hwc(x, i, op)
    ph, pw = int(opts.FilterHeight()), int(opts.FilterWidth())
    if (int(opts.StrideH()), int(opts.StrideW())) != (ph, pw):
        raise UnsupportedLayer(
            i, op, f"stride {opts.StrideH()}×{opts.StrideW()} ≠ window {ph}×{pw}"
        )
    if ph < 1 or pw < 1 or ph > h or pw > w:
        raise UnsupportedLayer(i, op, f"window {ph}×{pw} on a {h}×{w} input")
    if opts.Padding() == _SAME and (h % ph or w % pw):
        raise UnsupportedLayer(i, op, f"SAME padding of a {h}×{w} input by a {ph}×{pw} window")
    if y.shape[1:] != (h // ph, w // pw, c):
        raise TFLiteImportError(f"operator {i} ({op}): unexpected output shape {list(y.shape)}")
    make = LayerDesc.maxpool2d if op == "MAX_POOL_2D" else LayerDesc.avgpool2d
    out = [make(h, w, c, ph, pw)]
    if relu:
        out.append(LayerDesc.relu_layer(out[0].out_len))
    return out


def _section(p: _Param, s_logit: float) -> ParamSection:
    """Blob section of one layer: TFLite's multipliers, §5 update factors."""
    try:
        mult = [quantize_multiplier(p.s_x * float(sw) / p.s_y) for sw in p.s_w]
        upd = [mant_exp16(s_logit / float(sw) ** 2) for sw in p.s_w]
        bupd = [mant_exp16(s_logit / (p.s_x * float(sw)) ** 2) for sw in p.s_w]
    except ValueError as exc:
        raise TFLiteImportError(
            f"operator {p.op_index}: a scale odt-core cannot represent ({exc})"
        ) from exc
    if not (-128 <= p.z_x <= 127 and -128 <= p.z_y <= 127):
        raise TFLiteImportError(f"operator {p.op_index}: zero point outside int8")
    if np.any(p.bias < -(2**31)) or np.any(p.bias >= 2**31):
        raise TFLiteImportError(f"operator {p.op_index}: bias outside int32")
    return section_from_factors(p.z_x, p.z_y, mult, upd, bupd, p.bias, p.weights)


__all__ = [
    "SUPPORTED_OPS",
    "TFLiteImportError",
    "TFLiteModel",
    "UnsupportedLayer",
    "import_tflite",
    "read_tflite",
]
