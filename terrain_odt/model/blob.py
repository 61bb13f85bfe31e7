"""Reader and writer of the model blob format (`firmware/FORMAT.md`, version 1).

`decode_blob` runs the checks in the documented order and raises a `BlobError` subclass; it never
raises anything else, whatever the input. `encode_blob` writes the canonical form (reserved fields
and padding 0, `total_len` and CRC filled in).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

MAGIC = b"ODTM"
VERSION = 1
HEADER_LEN = 40
DESC_LEN = 24
MIN_LEN = HEADER_LEN + 4
MAX_LAYERS = 32
HEADER_LAYER = 255  # layer index reported for header-level errors

_HEADER = struct.Struct("<4sHHIIIbbHIIiI")
assert _HEADER.size == HEADER_LEN


class Kind(IntEnum):
    """Layer kinds of a descriptor."""

    DENSE = 1
    CONV1D = 2
    CONV2D = 3
    MAXPOOL2D = 4
    AVGPOOL2D = 5
    RELU = 6
    FLATTEN = 7


PARAM_KINDS = frozenset({Kind.DENSE, Kind.CONV1D, Kind.CONV2D})
_N_DIMS = {
    Kind.DENSE: 2,
    Kind.CONV1D: 7,
    Kind.CONV2D: 10,
    Kind.MAXPOOL2D: 5,
    Kind.AVGPOOL2D: 5,
    Kind.RELU: 1,
    Kind.FLATTEN: 1,
}


# ---------------------------------------------------------------------------------------------
# Errors


class BlobError(Exception):
    """Base class of every error `decode_blob` raises."""


class Truncated(BlobError):
    """Fewer bytes than the header, `total_len` or a section needs."""


class BadMagic(BlobError):
    """The magic is not `ODTM`."""


class UnsupportedVersion(BlobError):
    """The format version is not 1."""


class BadCrc(BlobError):
    """CRC-32 mismatch."""


class ArchMismatch(BlobError):
    """Header or descriptor differs from the expected architecture (or is inconsistent)."""

    def __init__(self, layer: int, msg: str = "") -> None:
        super().__init__(f"architecture mismatch at layer {layer}" + (f": {msg}" if msg else ""))
        self.layer = layer


class BadQuant(BlobError):
    """A multiplier or exponent outside its range."""

    def __init__(self, layer: int, msg: str = "") -> None:
        super().__init__(f"bad quantization at layer {layer}" + (f": {msg}" if msg else ""))
        self.layer = layer


class TrailingBytes(BlobError):
    """The buffer is longer than `total_len`, or bytes lie between the last section and the CRC."""


class UnsupportedLayer(BlobError):
    """A layer kind a firmware whose model shape comes from the blob cannot run (not Dense)."""

    def __init__(self, layer: int, kind: int) -> None:
        name = KIND_NAMES.get(kind, "unknown")
        super().__init__(
            f"layer {layer} is {name} (kind {kind}); this firmware runs MLPs only "
            "(Dense layers, fused ReLU)"
        )
        self.layer = layer
        self.kind = kind


#: Layer kind names as the firmware prints them.
KIND_NAMES = {
    1: "Dense",
    2: "Conv1d",
    3: "Conv2d",
    4: "MaxPool2d",
    5: "AvgPool2d",
    6: "ReLU",
    7: "Flatten",
}

#: `OverCapacity.limit` values and the noun of each in messages (the Rust `Limit`).
CAPACITY_NOUNS = {
    "Inputs": "inputs",
    "Width": "units in a hidden layer",
    "Classes": "classes",
    "Depth": "Dense layers",
    "Weights": "weights",
}


class OverCapacity(BlobError):
    """A well-formed MLP blob larger than the firmware's compile-time capacity."""

    def __init__(self, limit: str, got: int, max_: int) -> None:
        super().__init__(f"{got} {CAPACITY_NOUNS[limit]} > capacity {max_}")
        self.limit = limit
        self.got = got
        self.max = max_


# ---------------------------------------------------------------------------------------------
# Descriptors


@dataclass(frozen=True)
class LayerDesc:
    """One 24-byte layer descriptor: kind, fused-ReLU flag and up to 10 dimensions.

    `flags` and `reserved` are kept raw so that any descriptor round-trips; a valid one has
    `flags in (0, 1)` (1 only for Dense/Conv). `decode_blob` drops `reserved` (ignored on load).
    """

    kind: int
    flags: int = 0
    dims: tuple[int, ...] = ()
    reserved: int = 0

    def __post_init__(self) -> None:
        if len(self.dims) > 10:
            raise ValueError("at most 10 dimensions")
        object.__setattr__(
            self, "dims", tuple(int(d) for d in self.dims) + (0,) * (10 - len(self.dims))
        )

    # constructors ---------------------------------------------------------------------------
    @staticmethod
    def dense(n_in: int, n_out: int, relu: bool = False) -> LayerDesc:
        return LayerDesc(Kind.DENSE, int(relu), (n_in, n_out))

    @staticmethod
    def conv1d(
        length: int, cin: int, cout: int, k: int, stride: int, pad: int, relu: bool = False
    ) -> LayerDesc:
        lout = (length + 2 * pad - k) // stride + 1
        return LayerDesc(Kind.CONV1D, int(relu), (length, cin, cout, k, stride, pad, lout))

    @staticmethod
    def conv2d(
        h: int,
        w: int,
        cin: int,
        cout: int,
        kh: int,
        kw: int,
        stride: int,
        pad: int,
        relu: bool = False,
    ) -> LayerDesc:
        oh = (h + 2 * pad - kh) // stride + 1
        ow = (w + 2 * pad - kw) // stride + 1
        return LayerDesc(Kind.CONV2D, int(relu), (h, w, cin, cout, kh, kw, stride, pad, oh, ow))

    @staticmethod
    def maxpool2d(h: int, w: int, c: int, ph: int, pw: int) -> LayerDesc:
        return LayerDesc(Kind.MAXPOOL2D, 0, (h, w, c, ph, pw))

    @staticmethod
    def avgpool2d(h: int, w: int, c: int, ph: int, pw: int) -> LayerDesc:
        return LayerDesc(Kind.AVGPOOL2D, 0, (h, w, c, ph, pw))

    @staticmethod
    def relu_layer(length: int) -> LayerDesc:
        return LayerDesc(Kind.RELU, 0, (length,))

    @staticmethod
    def flatten(length: int) -> LayerDesc:
        return LayerDesc(Kind.FLATTEN, 0, (length,))

    # properties ----------------------------------------------------------------------------
    @property
    def relu(self) -> bool:
        return bool(self.flags & 1)

    @property
    def has_params(self) -> bool:
        return self.kind in PARAM_KINDS

    @property
    def in_len(self) -> int:
        d = self.dims
        if self.kind == Kind.DENSE:
            return d[0]
        if self.kind == Kind.CONV1D:
            return d[0] * d[1]
        if self.kind == Kind.CONV2D:
            return d[0] * d[1] * d[2]
        if self.kind in (Kind.MAXPOOL2D, Kind.AVGPOOL2D):
            return d[0] * d[1] * d[2]
        return d[0]

    @property
    def out_len(self) -> int:
        d = self.dims
        if self.kind == Kind.DENSE:
            return d[1]
        if self.kind == Kind.CONV1D:
            return d[6] * d[2]
        if self.kind == Kind.CONV2D:
            return d[8] * d[9] * d[3]
        if self.kind in (Kind.MAXPOOL2D, Kind.AVGPOOL2D):
            return (d[0] // d[3]) * (d[1] // d[4]) * d[2] if d[3] and d[4] else 0
        return d[0]

    @property
    def out_channels(self) -> int:
        """`OUT` of a parameter layer (0 otherwise)."""
        d = self.dims
        return {Kind.DENSE: d[1], Kind.CONV1D: d[2], Kind.CONV2D: d[3]}.get(self.kind, 0)

    @property
    def fan(self) -> int:
        """Weights per output channel (`IN`, `K*CIN`, `KH*KW*CIN`; 0 for other kinds)."""
        d = self.dims
        return {Kind.DENSE: d[0], Kind.CONV1D: d[3] * d[1], Kind.CONV2D: d[4] * d[5] * d[2]}.get(
            self.kind, 0
        )

    @property
    def weight_shape(self) -> tuple[int, ...]:
        d = self.dims
        if self.kind == Kind.DENSE:
            return (d[1], d[0])
        if self.kind == Kind.CONV1D:
            return (d[2], d[3], d[1])
        if self.kind == Kind.CONV2D:
            return (d[3], d[4], d[5], d[2])
        return ()

    def section_len(self) -> int:
        """Bytes of the parameter section including padding (0 for parameter-free kinds)."""
        if not self.has_params:
            return 0
        n = 4 + 16 * self.out_channels + self.out_channels * self.fan
        return (n + 3) & ~3

    def pack(self) -> bytes:
        return struct.pack("<BBH10H", self.kind, self.flags, self.reserved, *self.dims)

    @staticmethod
    def unpack(raw: bytes) -> LayerDesc:
        kind, flags, reserved, *dims = struct.unpack("<BBH10H", raw)
        return LayerDesc(kind, flags, tuple(dims), reserved)

    def check(self, index: int) -> None:
        """Raise `ArchMismatch(index)` unless the descriptor is internally consistent."""

        def bad(msg: str) -> ArchMismatch:
            return ArchMismatch(index, msg)

        if self.kind not in _N_DIMS:
            raise bad(f"unknown kind {self.kind}")
        if self.flags not in ((0, 1) if self.has_params else (0,)):
            raise bad(f"bad flags {self.flags:#x}")
        n = _N_DIMS[Kind(self.kind)]
        d = self.dims
        if any(d[n:]):
            raise bad("unused dimensions not 0")
        k = self.kind
        if k == Kind.CONV1D:
            length, _cin, _cout, kk, stride, pad, lout = d[:7]
            if stride == 0 or kk == 0 or length + 2 * pad < kk:
                raise bad("bad conv1d geometry")
            if lout != (length + 2 * pad - kk) // stride + 1:
                raise bad("LOUT inconsistent")
        elif k == Kind.CONV2D:
            h, w, _cin, _cout, kh, kw, stride, pad, oh, ow = d
            if stride == 0 or kh == 0 or kw == 0 or h + 2 * pad < kh or w + 2 * pad < kw:
                raise bad("bad conv2d geometry")
            if oh != (h + 2 * pad - kh) // stride + 1 or ow != (w + 2 * pad - kw) // stride + 1:
                raise bad("OH/OW inconsistent")
        elif k in (Kind.MAXPOOL2D, Kind.AVGPOOL2D):
            h, w, _c, ph, pw = d[:5]
            if ph == 0 or pw == 0 or h < ph or w < pw:
                raise bad("bad pooling geometry")
        if self.in_len == 0 or self.out_len == 0:
            raise bad("empty layer")


@dataclass(frozen=True)
class Capacity:
    """The capacity of a firmware model whose shape comes from the blob (`odt_core::DynMlp`):
    MLPs of Dense layers (fused ReLU allowed on any) with at most `max_inputs` inputs,
    `max_width` units per hidden layer, `max_classes` classes, `max_dense` layers and
    `max_weights` weights in all."""

    max_inputs: int
    max_width: int
    max_classes: int
    max_dense: int
    max_weights: int


#: The co-processor firmware's model (`odt_core::models::FirmwareMlp`, odt-app, odt-emu).
FIRMWARE_CAPACITY = Capacity(
    max_inputs=256, max_width=64, max_classes=16, max_dense=4, max_weights=16384
)


@dataclass(frozen=True)
class BlobArch:
    """What a loader compiled for a fixed architecture compares a blob against."""

    input_len: int
    output_len: int
    layers: tuple[LayerDesc, ...]


# ---------------------------------------------------------------------------------------------
# Parameter sections and the whole blob


@dataclass
class ParamSection:
    """Quantization parameters and weights of one Dense/Conv layer (numpy arrays, length OUT)."""

    z_x: int
    z_y: int
    m: np.ndarray  # int32, requant multiplier mantissa in [2^30, 2^31)
    s: np.ndarray  # int8, requant exponent in [-31, 30]
    ue: np.ndarray  # int8, weight-update exponent
    ube: np.ndarray  # int8, bias-update exponent
    um: np.ndarray  # int16, weight-update mantissa in [2^14, 2^15)
    ubm: np.ndarray  # int16, bias-update mantissa in [2^14, 2^15)
    bias: np.ndarray  # int32
    weights: np.ndarray  # int8, shape LayerDesc.weight_shape

    def __post_init__(self) -> None:
        self.m = np.asarray(self.m, dtype=np.int32)
        self.s = np.asarray(self.s, dtype=np.int8)
        self.ue = np.asarray(self.ue, dtype=np.int8)
        self.ube = np.asarray(self.ube, dtype=np.int8)
        self.um = np.asarray(self.um, dtype=np.int16)
        self.ubm = np.asarray(self.ubm, dtype=np.int16)
        self.bias = np.asarray(self.bias, dtype=np.int32)
        self.weights = np.asarray(self.weights, dtype=np.int8)

    def pack(self, desc: LayerDesc) -> bytes:
        out = desc.out_channels
        for name in ("m", "s", "ue", "ube", "um", "ubm", "bias"):
            if getattr(self, name).shape != (out,):
                raise ValueError(f"{name} must have shape ({out},)")
        if self.weights.shape != desc.weight_shape:
            raise ValueError(f"weights must have shape {desc.weight_shape}")
        parts = [
            struct.pack("<bbH", self.z_x, self.z_y, 0),
            self.m.astype("<i4").tobytes(),
            self.s.tobytes(),
            self.ue.tobytes(),
            self.ube.tobytes(),
            bytes(out),
            self.um.astype("<i2").tobytes(),
            self.ubm.astype("<i2").tobytes(),
            self.bias.astype("<i4").tobytes(),
            self.weights.tobytes(),
        ]
        raw = b"".join(parts)
        return raw + bytes(desc.section_len() - len(raw))


@dataclass
class Blob:
    """A decoded model blob. Scales are kept as raw `f32` bit patterns (host metadata)."""

    model_id: int
    input_len: int
    output_len: int
    input_zp: int
    output_zp: int
    input_scale_bits: int
    output_scale_bits: int
    softmax_a: int
    layers: list[LayerDesc]
    params: list[ParamSection | None] = field(default_factory=list)
    version: int = VERSION

    @property
    def input_scale(self) -> float:
        return float(struct.unpack("<f", struct.pack("<I", self.input_scale_bits))[0])

    @property
    def output_scale(self) -> float:
        return float(struct.unpack("<f", struct.pack("<I", self.output_scale_bits))[0])

    @property
    def arch(self) -> BlobArch:
        return BlobArch(self.input_len, self.output_len, tuple(self.layers))


def f32_bits(x: float) -> int:
    """IEEE-754 single-precision bit pattern of `x`."""
    return int(struct.unpack("<I", struct.pack("<f", x))[0])


def encode_blob(blob: Blob) -> bytes:
    """Serialize `blob` (canonical form: reserved fields and padding zero)."""
    if len(blob.params) != len(blob.layers):
        raise ValueError("one params entry (or None) per layer")
    body = [desc.pack() for desc in blob.layers]
    for desc, sec in zip(blob.layers, blob.params, strict=True):
        if desc.has_params:
            if sec is None:
                raise ValueError("parameter layer without a parameter section")
            body.append(sec.pack(desc))
        elif sec is not None:
            raise ValueError("parameter section on a parameter-free layer")
    payload = b"".join(body)
    total_len = HEADER_LEN + len(payload) + 4
    header = _HEADER.pack(
        MAGIC,
        blob.version,
        len(blob.layers),
        blob.model_id,
        blob.input_len,
        blob.output_len,
        blob.input_zp,
        blob.output_zp,
        0,
        blob.input_scale_bits,
        blob.output_scale_bits,
        blob.softmax_a,
        total_len,
    )
    data = header + payload
    return data + struct.pack("<I", zlib.crc32(data))


def fix_crc(data: bytes) -> bytes:
    """Recompute the CRC of a blob whose `total_len` equals `len(data)` (for test vectors)."""
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


class _Reader:
    """Sequential little-endian reads bounded by `end` (= `total_len − 4`); a read past it
    raises `Truncated`, exactly where the firmware's reader stops."""

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data = data
        self.pos = pos
        self.end = min(end, len(data))

    def array(
        self,
        dtype: str,
        count: int,
        check: Callable[[np.ndarray], np.ndarray] | None,
        fail: BlobError | None = None,
    ) -> np.ndarray:
        """Read `count` values one after the other; with `check` (a predicate marking bad
        values) the first bad value raises `fail`, unless the reads are cut short before it."""
        size = np.dtype(dtype).itemsize
        avail = max(0, min(count, (self.end - self.pos) // size))
        arr = np.frombuffer(self.data, dtype=dtype, count=avail, offset=self.pos)
        if check is not None and avail and np.any(check(arr)):
            assert fail is not None
            raise fail
        if avail < count:
            raise Truncated("a parameter section runs past total_len - 4")
        self.pos += size * count
        return arr.astype(dtype.lstrip("<"))

    def skip(self, n: int) -> None:
        if self.pos + n > self.end:
            raise Truncated("a parameter section runs past total_len - 4")
        self.pos += n

    def align4(self) -> None:
        self.skip(-self.pos % 4)


def _read_section(r: _Reader, desc: LayerDesc, index: int) -> ParamSection:
    """One parameter section, field by field, checking each value as it is read."""
    out = desc.out_channels
    r.align4()
    z = r.array("i1", 2, None)
    r.skip(2)
    bad = BadQuant(index)
    m = r.array("<i4", out, lambda v: v < (1 << 30), bad)
    s = r.array("i1", out, lambda v: (v < -31) | (v > 30), bad)
    ue = r.array("i1", out, None)
    ube = r.array("i1", out, None)
    r.skip(out)
    um = r.array("<i2", out, lambda v: v < (1 << 14), bad)
    ubm = r.array("<i2", out, lambda v: v < (1 << 14), bad)
    bias = r.array("<i4", out, None)
    weights = r.array("i1", out * desc.fan, None).reshape(desc.weight_shape)
    r.align4()
    return ParamSection(int(z[0]), int(z[1]), m, s, ue, ube, um, ubm, bias, weights)


def _check_capacity(
    descs: Sequence[LayerDesc], input_len: int, output_len: int, cap: Capacity
) -> None:
    """Step 5 of a firmware whose model shape comes from the blob (FORMAT.md, "Models whose
    shape comes from the blob"), in the order `odt_core::DynMlp` checks."""
    n = len(descs)
    if not 1 <= n <= MAX_LAYERS:
        raise ArchMismatch(HEADER_LAYER, f"n_layers {n}")
    for i, d in enumerate(descs):
        if d.kind != Kind.DENSE:
            raise UnsupportedLayer(i, d.kind)
    prev = input_len
    for i, d in enumerate(descs):
        if d.flags > 1 or any(d.dims[2:]) or d.dims[0] == 0 or d.dims[1] == 0:
            raise ArchMismatch(i, "bad Dense descriptor")
        if d.dims[0] != prev:
            raise ArchMismatch(HEADER_LAYER if i == 0 else i, f"input length {d.dims[0]}")
        prev = d.dims[1]
    if prev != output_len:
        raise ArchMismatch(HEADER_LAYER, f"output_len {output_len}, last layer {prev}")
    if n > cap.max_dense:
        raise OverCapacity("Depth", n, cap.max_dense)
    if input_len > cap.max_inputs:
        raise OverCapacity("Inputs", input_len, cap.max_inputs)
    for d in descs[:-1]:
        if d.dims[1] > cap.max_width:
            raise OverCapacity("Width", d.dims[1], cap.max_width)
    if output_len > cap.max_classes:
        raise OverCapacity("Classes", output_len, cap.max_classes)
    weights = sum(d.dims[0] * d.dims[1] for d in descs)
    if weights > cap.max_weights:
        raise OverCapacity("Weights", weights, cap.max_weights)


def decode_blob(
    data: bytes | bytearray | memoryview,
    expect: BlobArch | None = None,
    capacity: Capacity | None = None,
) -> Blob:
    """Parse and validate a blob, reporting the first failure in the order of FORMAT.md.

    With `expect`, header and descriptors are compared against it (what the firmware does with
    its compiled model); with `capacity`, the blob must be an MLP within it (what a firmware
    whose model shape comes from the blob does: `UnsupportedLayer`, `OverCapacity`); with
    neither, the descriptors are checked for consistency instead (known kind, valid flags,
    geometry, unused dimensions 0, chained lengths matching the header).
    """
    if expect is not None and capacity is not None:
        raise ValueError("give expect or capacity, not both")
    data = bytes(data)
    n = len(data)
    # 1. Truncated: lengths, then the descriptor table and the sections the blob's own
    #    descriptors imply, against total_len − 4
    if n < MIN_LEN:
        raise Truncated(f"{n} bytes, need at least {MIN_LEN}")
    (magic, version, n_layers, model_id, input_len, output_len, input_zp, output_zp, _res,
     in_bits, out_bits, softmax_a, total_len) = _HEADER.unpack_from(data, 0)  # fmt: skip
    if total_len < MIN_LEN or n < total_len:
        raise Truncated(f"{n} bytes, total_len {total_len}")
    end = total_len - 4
    pos = HEADER_LEN + DESC_LEN * n_layers
    if pos > end:
        raise Truncated("the descriptor table runs past total_len - 4")
    descs: list[LayerDesc] = []
    for i in range(n_layers):
        off = HEADER_LEN + DESC_LEN * i
        raw = LayerDesc.unpack(data[off : off + DESC_LEN])
        descs.append(LayerDesc(raw.kind, raw.flags, raw.dims))  # the reserved field is ignored
        pos += descs[-1].section_len()
        if pos > end:
            raise Truncated(f"the section of layer {i} runs past total_len - 4")
    # 2.-4. magic, version, CRC
    if magic != MAGIC:
        raise BadMagic(repr(magic))
    if version != VERSION:
        raise UnsupportedVersion(str(version))
    (crc,) = struct.unpack_from("<I", data, end)
    if zlib.crc32(data[:end]) != crc:
        raise BadCrc(f"stored {crc:#010x}, computed {zlib.crc32(data[:end]):#010x}")
    # 5. ArchMismatch: the header, then the descriptors in order
    if expect is not None:
        if (n_layers, input_len, output_len) != (
            len(expect.layers),
            expect.input_len,
            expect.output_len,
        ):
            raise ArchMismatch(HEADER_LAYER, "n_layers, input_len or output_len")
        for i, (got, want) in enumerate(zip(descs, expect.layers, strict=True)):
            if (got.kind, got.flags, got.dims) != (want.kind, want.flags, want.dims):
                raise ArchMismatch(i, f"{got} != {want}")
    elif capacity is not None:
        _check_capacity(descs, input_len, output_len, capacity)
    else:
        if not 1 <= n_layers <= MAX_LAYERS:
            raise ArchMismatch(HEADER_LAYER, f"n_layers {n_layers}")
        prev = input_len
        for i, desc in enumerate(descs):
            desc.check(i)
            if desc.in_len != prev:
                layer = HEADER_LAYER if i == 0 else i
                raise ArchMismatch(layer, f"input length {desc.in_len}, previous output {prev}")
            prev = desc.out_len
        if prev != output_len:
            raise ArchMismatch(HEADER_LAYER, f"output_len {output_len}, last layer {prev}")
    # 6. BadQuant: softmax_a, then each section's fields in the order they are read
    if softmax_a <= 0:
        raise BadQuant(HEADER_LAYER, "softmax_a <= 0")
    r = _Reader(data, HEADER_LEN + DESC_LEN * n_layers, end)
    params: list[ParamSection | None] = []
    for i, desc in enumerate(descs):
        params.append(_read_section(r, desc, i) if desc.has_params else None)
    # 7. TrailingBytes: unused bytes before the CRC, or after total_len
    if r.pos != end:
        raise TrailingBytes(f"{end - r.pos} unused bytes before the CRC")
    if n > total_len:
        raise TrailingBytes(f"{n - total_len} bytes after total_len")
    return Blob(
        model_id=model_id,
        input_len=input_len,
        output_len=output_len,
        input_zp=input_zp,
        output_zp=output_zp,
        input_scale_bits=in_bits,
        output_scale_bits=out_bits,
        softmax_a=softmax_a,
        layers=descs,
        params=params,
        version=version,
    )


def error_name(exc: BlobError) -> str:
    """The FORMAT.md name of an error (`"ArchMismatch"`, ...)."""
    return type(exc).__name__


def arch_of(layers: Sequence[LayerDesc], input_len: int | None = None) -> BlobArch:
    """A `BlobArch` for a layer list (input/output lengths taken from the first/last layer)."""
    return BlobArch(
        layers[0].in_len if input_len is None else input_len, layers[-1].out_len, tuple(layers)
    )
