"""Blob format (firmware/FORMAT.md): round trips, the error vectors, and fuzzing."""

from __future__ import annotations

import contextlib
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from terrain_odt.model import blob as B
from terrain_odt.model.blob import (
    BlobArch,
    BlobError,
    LayerDesc,
    decode_blob,
    encode_blob,
    error_name,
    fix_crc,
)

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "firmware" / "odt-core" / "golden"
MLP_ARCH = BlobArch(
    12, 4, (LayerDesc.dense(12, 8, True), LayerDesc.dense(8, 6, True), LayerDesc.dense(6, 4))
)


def golden_blobs() -> list[bytes]:
    out = []
    for p in sorted(GOLDEN.glob("*.json")):
        if p.name in ("blob_errors.json", "capacity_errors.json"):
            continue
        case = json.loads(p.read_text())
        out += [bytes.fromhex(case["blob_hex"]), bytes.fromhex(case["final_blob_hex"])]
    return out


BLOBS = golden_blobs()
MLP = bytes.fromhex(json.loads((GOLDEN / "mlp_i8_all.json").read_text())["blob_hex"])
ERRORS = json.loads((GOLDEN / "blob_errors.json").read_text())


# --- layout ------------------------------------------------------------------------------------


def test_header_layout() -> None:
    b = decode_blob(MLP)
    assert MLP[:4] == b"ODTM"
    assert struct.unpack_from("<HH", MLP, 4) == (1, 3)
    assert struct.unpack_from("<I", MLP, 12)[0] == 12
    assert struct.unpack_from("<I", MLP, 16)[0] == 4
    assert struct.unpack_from("<I", MLP, 36)[0] == len(MLP)
    assert struct.unpack_from("<i", MLP, 32)[0] == b.softmax_a > 0
    assert struct.unpack_from("<I", MLP, len(MLP) - 4)[0] == zlib.crc32(MLP[:-4])
    assert len(MLP) % 4 == 0
    # descriptor 0: Dense 12 -> 8 with fused ReLU
    assert MLP[40:44] == bytes([1, 1, 0, 0])
    assert struct.unpack_from("<10H", MLP, 44) == (12, 8, 0, 0, 0, 0, 0, 0, 0, 0)
    # first parameter section right after the descriptors
    off = 40 + 24 * 3
    sec = b.params[0]
    assert sec is not None
    assert struct.unpack_from("<bb", MLP, off) == (sec.z_x, sec.z_y)
    assert struct.unpack_from("<8i", MLP, off + 4) == tuple(sec.m.tolist())
    w_off = off + 4 + 16 * 8
    assert MLP[w_off : w_off + 96] == sec.weights.tobytes()


def test_section_lengths_are_padded() -> None:
    d = LayerDesc.dense(3, 5)
    assert d.section_len() == (4 + 16 * 5 + 15 + 3) // 4 * 4 == 100
    assert LayerDesc.conv1d(16, 3, 4, 3, 1, 1).dims[:7] == (16, 3, 4, 3, 1, 1, 16)
    assert LayerDesc.conv1d(8, 4, 4, 3, 2, 0).dims[6] == 3
    assert LayerDesc.conv2d(8, 8, 1, 4, 3, 3, 1, 0).dims[8:] == (6, 6)
    assert LayerDesc.maxpool2d(1, 16, 4, 1, 2).section_len() == 0


@pytest.mark.parametrize("data", BLOBS, ids=range(len(BLOBS)))
def test_round_trip(data: bytes) -> None:
    b = decode_blob(data)
    assert encode_blob(b) == data
    assert encode_blob(decode_blob(data, b.arch)) == data
    assert decode_blob(data).layers == b.layers


def test_scales_are_f32_bits() -> None:
    b = decode_blob(MLP)
    assert b.input_scale > 0 and b.output_scale > 0
    assert B.f32_bits(b.input_scale) == b.input_scale_bits


# --- error vectors -------------------------------------------------------------------------------


def test_error_vectors_cover_every_error() -> None:
    kinds = {e["error"] for e in ERRORS}
    assert kinds == {
        "Truncated", "BadMagic", "UnsupportedVersion", "BadCrc", "ArchMismatch", "BadQuant",
        "TrailingBytes",
    }  # fmt: skip
    for e in ERRORS:
        assert set(e) == {"name", "blob_hex", "error", "layer"}
        assert (e["layer"] is not None) == (e["error"] in ("ArchMismatch", "BadQuant"))


@pytest.mark.parametrize("vec", ERRORS, ids=[e["name"] for e in ERRORS])
def test_error_vector(vec: dict) -> None:
    data = bytes.fromhex(vec["blob_hex"])
    with pytest.raises(BlobError) as info:
        decode_blob(data, MLP_ARCH)
    assert error_name(info.value) == vec["error"]
    assert getattr(info.value, "layer", None) == vec["layer"]


@pytest.mark.parametrize("vec", ERRORS, ids=[e["name"] for e in ERRORS])
def test_error_vector_without_expected_arch(vec: dict) -> None:
    """Structural validation agrees, except where only a compiled model can tell."""
    data = bytes.fromhex(vec["blob_hex"])
    if vec["name"] in ("arch_dense_12_9", "arch_relu_flag"):
        decode_blob(data)  # a consistent blob, just not the mlp
        return
    with pytest.raises(BlobError) as info:
        decode_blob(data)
    assert error_name(info.value) == vec["error"]
    assert getattr(info.value, "layer", None) == vec["layer"]


def test_check_order() -> None:
    """Truncated before BadMagic before UnsupportedVersion before BadCrc."""
    bad = bytearray(MLP)
    bad[0] = ord("X")
    struct.pack_into("<H", bad, 4, 9)
    bad[60] ^= 1
    with pytest.raises(B.Truncated):
        decode_blob(bytes(bad[:-1]))
    with pytest.raises(B.BadMagic):
        decode_blob(bytes(bad))
    bad[0] = ord("O")
    with pytest.raises(B.UnsupportedVersion):
        decode_blob(bytes(bad))
    struct.pack_into("<H", bad, 4, 1)
    with pytest.raises(B.BadCrc):
        decode_blob(bytes(bad))
    # a bad multiplier in layer 0 and a descriptor mismatch in layer 2: ArchMismatch first
    blob = decode_blob(MLP)
    assert blob.params[0] is not None
    blob.params[0].m = np.full(8, 5, dtype=np.int32)
    data = bytearray(encode_blob(blob))
    data[40 + 48 + 1] = 1
    with pytest.raises(B.ArchMismatch) as info:
        decode_blob(fix_crc(bytes(data)), MLP_ARCH)
    assert info.value.layer == 2


def test_reserved_fields_are_ignored() -> None:
    data = bytearray(MLP)
    data[22] = 0xAB  # header reserved
    data[40 + 2] = 0x01  # descriptor reserved
    data[40 + 72 + 2] = 0x7F  # section reserved
    b = decode_blob(fix_crc(bytes(data)), MLP_ARCH)
    assert encode_blob(b) == MLP


def test_bad_quant_layer_index_counts_all_layers() -> None:
    """`BadQuant { layer }` is the index in the layer list, pooling layers included."""
    data = bytes.fromhex(json.loads((GOLDEN / "conv1d_i8_all.json").read_text())["blob_hex"])
    blob = decode_blob(data)
    sec = blob.params[2]
    assert sec is not None
    sec.s = sec.s.copy()
    sec.s[1] = -32
    with pytest.raises(B.BadQuant) as info:
        decode_blob(encode_blob(blob), decode_blob(data).arch)
    assert info.value.layer == 2


# --- fuzzing -----------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_only_raise_blob_errors(data: bytes) -> None:
    for expect in (None, MLP_ARCH):
        with contextlib.suppress(BlobError):
            decode_blob(data, expect)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=4, max_size=400))
def test_arbitrary_body_with_valid_header_and_crc(body: bytes) -> None:
    """A valid header and CRC around random bytes reaches the deep checks; still only
    `BlobError`, or a blob whose canonical re-encoding decodes to the same model."""
    data = bytearray(MLP[:40]) + body
    struct.pack_into("<I", data, 36, len(data) + 4)
    data = fix_crc(bytes(data) + bytes(4))
    for expect in (None, MLP_ARCH):
        try:
            b = decode_blob(data, expect)
        except BlobError:
            continue
        again = decode_blob(encode_blob(b), expect)
        assert encode_blob(again) == encode_blob(b)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(MLP) - 1), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, len(MLP) - 1), st.just(0)),
    st.tuples(st.just("append"), st.integers(1, 16), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, len(MLP) - 1), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, len(MLP) - 1), st.just(0)),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, min_size=1, max_size=4))
def test_mutations_are_detected(muts: list[tuple[str, int, int]]) -> None:
    data = bytearray(MLP)
    for kind, a, b in muts:
        if kind == "flip":
            data[a % len(data)] ^= b
        elif kind == "truncate":
            del data[a % len(data) :]
        elif kind == "append":
            data += bytes([b]) * a
        elif kind == "insert":
            data.insert(a % (len(data) + 1), b)
        else:
            del data[a % len(data)]
        if not data:
            data = bytearray(b"\x00")
    if bytes(data) == MLP:
        return
    with pytest.raises(BlobError):
        decode_blob(bytes(data), MLP_ARCH)
    with pytest.raises(BlobError):
        decode_blob(bytes(data))


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 7),
    st.integers(0, 3),
    st.lists(st.integers(0, 65535), min_size=10, max_size=10),
)
def test_descriptor_pack_round_trip(kind: int, flags: int, dims: list[int]) -> None:
    d = LayerDesc(kind, flags, tuple(dims))
    raw = d.pack()
    assert len(raw) == 24
    assert LayerDesc.unpack(raw) == d
    try:
        d.check(0)
    except B.ArchMismatch as e:
        assert e.layer == 0
