"""Codec of the co-processor link (terrain_odt.link): golden frames and properties."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import cobs_reference
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from terrain_odt import link
from terrain_odt.link import (
    MAX_ENCODED,
    MAX_FRAME,
    Download,
    DownloadData,
    ErrorReply,
    FragAck,
    Frame,
    FrameDecoder,
    FrameError,
    FrameErrorKind,
    FrameSplitter,
    GetStats,
    Hello,
    Infer,
    Info,
    Message,
    Ok,
    Prediction,
    ResetPretrained,
    Restore,
    Save,
    SetParams,
    Stats,
    Train,
    TrainAck,
    TrainFrag,
    UploadBegin,
    UploadChunk,
    UploadEnd,
    decode_frame,
    encode_frame,
    encode_packet,
)

GOLDEN = Path(__file__).resolve().parent.parent / "firmware/odt-proto/golden/frames.json"


def _golden() -> list[dict[str, Any]]:
    if not GOLDEN.exists():
        pytest.skip(f"{GOLDEN} not present (written by the Rust side)")
    return json.loads(GOLDEN.read_text())


def _i8(data: bytes) -> list[int]:
    return np.frombuffer(data, dtype=np.int8).astype(int).tolist()


def wire_fields(msg: Message) -> dict[str, Any]:
    """A message's fields named and shaped as in frames.json."""
    if isinstance(msg, Train):
        return {"label": msg.label, "features": _i8(msg.features)}
    if isinstance(msg, Infer):
        return {"features": _i8(msg.features)}
    if isinstance(msg, SetParams):
        return {
            "enabled": int(msg.enabled),
            "lr_m": msg.lr_m,
            "lr_e": msg.lr_e,
            "batch": msg.batch,
            "topk_min": msg.topk_min,
            "n_modes": len(msg.modes),
            "modes": list(msg.modes),
            "seed": msg.seed,
        }
    if isinstance(msg, UploadChunk):
        return {"offset": msg.offset, "data_hex": msg.data.hex()}
    if isinstance(msg, TrainFrag):
        return {
            "label": msg.label,
            "total": msg.total,
            "offset": msg.offset,
            "features": _i8(msg.data),
        }
    if isinstance(msg, FragAck):
        return {"offset": msg.offset, "held_hex": msg.held.hex()}
    if isinstance(msg, DownloadData):
        return {"total_len": msg.total_len, "offset": msg.offset, "data_hex": msg.data.hex()}
    if isinstance(msg, Prediction):
        return {
            "class": msg.predicted,
            "n": len(msg.scores_q15),
            "scores_q15": list(msg.scores_q15),
        }
    return {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Golden frames (firmware/odt-proto/golden/frames.json)


def test_golden_valid_frames_decode_and_reencode() -> None:
    cases = [c for c in _golden() if "error" not in c]
    assert len(cases) >= 20
    seen = set()
    for case in cases:
        frame = bytes.fromhex(case["frame_hex"])
        got = decode_frame(frame, direction=case["direction"])
        assert got.seq == case["seq"], case["name"]
        assert int(got.msg.TYPE) == case["type"], case["name"]
        assert got.msg.TYPE.name.removesuffix("_REPLY") == case["message"], case["name"]
        assert got.msg.payload() == bytes.fromhex(case["payload_hex"]), case["name"]
        assert wire_fields(got.msg) == case["fields"], case["name"]
        # Re-encoding is byte-identical (same COBS variant, same CRC).
        assert encode_frame(got.msg, got.seq) == frame, case["name"]
        seen.add(type(got.msg))
    # Every message type has at least one golden frame.
    assert seen == set(link.MESSAGE_TYPES.values())


def test_golden_invalid_frames_classified() -> None:
    cases = [c for c in _golden() if "error" in c]
    assert {c["error"].split("/")[0] for c in cases} >= {
        "BAD_FRAME",
        "BAD_VERSION",
        "UNKNOWN_TYPE",
        "BAD_LENGTH",
    }
    for case in cases:
        frame = bytes.fromhex(case["frame_hex"])
        with pytest.raises(FrameError) as info:
            decode_frame(frame, direction=case["direction"])
        seq, reply = info.value.error_reply()
        assert (seq, reply.code, reply.detail) == (
            case["error_seq"],
            case["error_code"],
            case["error_detail"],
        ), case["name"]
        # The same through the streaming decoder, after garbage and before a good frame.
        dec = FrameDecoder(direction=case["direction"])
        items = dec.feed(b"\x13\x37\x00" + frame + encode_frame(GetStats(), 9))
        assert isinstance(items[-1], Frame) and items[-1].seq == 9, case["name"]
        err = items[-2]
        assert isinstance(err, FrameError), case["name"]
        assert err.error_reply()[1].code == case["error_code"], case["name"]


def test_golden_stream_in_one_feed() -> None:
    """All golden frames back to back, fed in odd-sized pieces: same results in order."""
    cases = _golden()
    stream = b"".join(bytes.fromhex(c["frame_hex"]) for c in cases)
    dec = FrameDecoder()
    items: list[Frame | FrameError] = []
    for i in range(0, len(stream), 37):
        items += dec.feed(stream[i : i + 37])
    assert len(items) == len(cases)
    for case, item in zip(cases, items, strict=True):
        if "error" in case and case["error"] != "UNKNOWN_TYPE":
            assert isinstance(item, FrameError), case["name"]
        elif "error" not in case:
            assert isinstance(item, Frame) and item.seq == case["seq"], case["name"]


# ---------------------------------------------------------------------------------------------
# Hand-checked details


def test_train_frame_size_matches_doc() -> None:
    # protocol.md §1: 100 features -> 109-byte packet, 111 bytes on the wire.
    assert len(encode_packet(Train(1, bytes(100)), 5)) == 109
    assert len(encode_frame(Train(1, bytes(range(1, 101))), 5)) == 111
    # The default model, 102 inputs.
    assert len(encode_frame(Train(1, bytes(range(1, 103))), 5)) == 113


def test_max_sizes() -> None:
    assert link.MAX_PACKET == 1032 and MAX_ENCODED == 1037 and MAX_FRAME == 1038
    big = UploadChunk(0, bytes(range(1, 256)) * 2 + b"\x01\x02")
    assert len(big.data) == 512
    frame = encode_frame(Infer(bytes([7]) * 1024), 1)
    assert len(frame) == MAX_FRAME
    assert decode_frame(frame).msg == Infer(bytes([7]) * 1024)
    with pytest.raises(ValueError):
        encode_frame(Infer(bytes(1025)), 1)


@pytest.mark.parametrize("impl", ["package", "python"])
def test_cobs_full_block_variant(impl: str) -> None:
    """A final full 254-byte block gets no trailing 0x01; a decoder accepts one anyway."""
    enc, dec = _cobs_impl(impl)
    data = bytes(range(1, 255))
    assert enc(data) == b"\xff" + data
    assert dec(b"\xff" + data + b"\x01") == data
    assert enc(b"") == b"\x01" and dec(b"") == b"" and enc(b"\x00") == b"\x01\x01"
    assert enc(data + b"\x00") == b"\xff" + data + b"\x01\x01"
    for bad in (b"\x05ab", b"\x02a\x00", b"\x00"):
        with pytest.raises(link.CobsDecodeError):
            dec(bad)


def _cobs_impl(impl: str) -> tuple:
    if impl == "package":
        return link.cobs_encode, link.cobs_decode
    return cobs_reference.cobs_encode, cobs_reference.cobs_decode


@given(
    data=st.binary(max_size=1200)
    | st.lists(st.sampled_from([0, 1, 7, 255]), max_size=800).map(bytes)
)
def test_cobs_fallback_matches_package(data: bytes) -> None:
    """The pure-Python reference COBS (test/cobs_reference.py) is byte-identical."""
    enc = link.cobs_encode(data)
    assert cobs_reference.cobs_encode(data) == enc
    assert cobs_reference.cobs_decode(enc) == data == link.cobs_decode(enc)


@given(enc=st.binary(max_size=600))
def test_cobs_fallback_decode_errors_match(enc: bytes) -> None:
    try:
        want: bytes | None = link.cobs_decode(enc)
    except link.CobsDecodeError:
        want = None
    try:
        got: bytes | None = cobs_reference.cobs_decode(enc)
    except link.CobsDecodeError:
        got = None
    assert got == want


def test_train_input_len_checked_only_when_given() -> None:
    frame = encode_frame(Train(3, bytes(10)), 4)
    assert decode_frame(frame).msg == Train(3, bytes(10))
    with pytest.raises(FrameError) as info:
        decode_frame(frame, input_len=102)
    assert info.value.kind is FrameErrorKind.BAD_LENGTH
    assert info.value.error_reply() == (4, ErrorReply(4, 11))


def test_direction_filters_types() -> None:
    ok = encode_frame(Ok(), 3)
    assert decode_frame(ok, direction="response").msg == Ok()
    with pytest.raises(FrameError) as info:
        decode_frame(ok, direction="request")
    assert info.value.error_reply() == (3, ErrorReply(3, 0x85))
    with pytest.raises(FrameError):
        decode_frame(encode_frame(Hello(1), 3), direction="response")


def test_message_helpers() -> None:
    assert link.features_to_bytes(np.array([-1, 0, 127], dtype=np.int16)) == b"\xff\x00\x7f"
    assert link.features_to_bytes([-128, 5]) == b"\x80\x05"
    with pytest.raises(ValueError):
        link.features_to_bytes([200])
    with pytest.raises(TypeError):
        link.features_to_bytes(np.array([0.5]))
    ack = TrainAck(3, 100, TrainAck.FLAG_DUP | TrainAck.FLAG_APPLIED)
    assert ack.dup and ack.applied and not ack.disabled
    assert Prediction(1, (0, 32768)).scores.tolist() == [0.0, 1.0]
    info = Info(1, 0x010203, 7, 8, 102, 5, 1, 100, 0, 1, 0)
    assert info.firmware_version_str == "1.2.3"
    err = link.RemoteError(8, 5, "UPLOAD_END")
    assert "BAD_MODEL" in str(err) and "ARCH_MISMATCH" in str(err)


def test_splitter_oversized_resync() -> None:
    sp = FrameSplitter()
    good = encode_frame(GetStats(), 1)
    out = sp.feed(b"\x01" * 600)
    assert out == []
    out = sp.feed(b"\x01" * 600)  # 1200 bytes without a delimiter
    assert len(out) == 1 and isinstance(out[0], FrameError)
    assert out[0].kind is FrameErrorKind.OVERSIZED
    out = sp.feed(b"\x01" * 5000)  # still the same bad frame: reported once
    assert out == []
    out = sp.feed(b"\x00" + good)
    assert out == [good[:-1]]
    # Oversized within one feed.
    out = sp.feed(b"\x02" * 2000 + b"\x00" + good + b"\x00\x00")
    assert len(out) == 2 and isinstance(out[0], FrameError) and out[1] == good[:-1]
    assert sp.pending == 0


# ---------------------------------------------------------------------------------------------
# Properties

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
i8 = st.integers(-128, 127)
seqs = u16


def _feats(max_size: int = 200) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=max_size)


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, u16),
    st.builds(Train, u8, _feats()),
    st.builds(Infer, _feats()),
    st.just(GetStats()),
    st.builds(
        SetParams,
        st.booleans(),
        u16,
        i8,
        u8,
        u8,
        st.lists(st.integers(0, 2), max_size=12).map(tuple),
        u32,
    ),
    st.just(Save()),
    st.just(Restore()),
    st.just(ResetPretrained()),
    st.builds(UploadBegin, u32, u32),
    st.builds(UploadChunk, u32, st.binary(max_size=512)),
    st.just(UploadEnd()),
    st.builds(Download, u32, u16),
    st.builds(ErrorReply, u8, u16),
    st.builds(Info, u16, u32, u32, u32, u16, u8, u8, u32, u32, u32, u16),
    st.builds(TrainAck, u8, u16, u8),
    st.builds(Prediction, u8, st.lists(u16, max_size=255).map(tuple)),
    st.builds(Stats, *([u32] * 10), u8, u8),
    st.just(Ok()),
    st.builds(DownloadData, u32, u32, st.binary(max_size=512)),
    st.builds(FragAck, u16, st.binary(min_size=1, max_size=32)),
    st.tuples(u8, st.integers(1, 1023), st.integers(0, 63), st.integers(0, 8)).map(
        lambda t: _frag(*t)
    ),
)


def _frag(label: int, total: int, unit: int, n_units: int) -> TrainFrag:
    """A fragment of whole units within a sample of ``total`` features."""
    start = min(unit, link.frag_units(total) - 1) * link.FRAG_UNIT
    end = min(total, start + max(1, n_units) * link.FRAG_UNIT)
    return TrainFrag(label, total, start, bytes(range(end - start)))


@given(msg=messages, seq=seqs)
def test_round_trip(msg: Message, seq: int) -> None:
    frame = encode_frame(msg, seq)
    assert frame[-1] == 0 and 0 not in frame[:-1]
    assert len(frame) <= MAX_FRAME
    got = decode_frame(frame)
    assert got == Frame(seq, msg)
    assert encode_frame(got.msg, got.seq) == frame


@given(
    msgs=st.lists(st.tuples(messages, seqs), min_size=1, max_size=8),
    junk=st.binary(max_size=64),
    cuts=st.lists(st.integers(1, 64), max_size=40),
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_stream_round_trip_after_garbage(
    msgs: list[tuple[Message, int]], junk: bytes, cuts: list[int]
) -> None:
    """Garbage, a delimiter, then frames in arbitrary pieces: the frames come out intact."""
    stream = junk + b"\x00" + b"".join(encode_frame(m, s) for m, s in msgs)
    dec = FrameDecoder()
    items: list[Frame | FrameError] = []
    pos = 0
    for c in cuts:
        items += dec.feed(stream[pos : pos + c])
        pos += c
    items += dec.feed(stream[pos:])
    frames = [i for i in items if isinstance(i, Frame)]
    # The garbage can decode only with a 2^-32 CRC accident, which hypothesis will not find.
    assert frames[-len(msgs) :] == [Frame(s, m) for m, s in msgs]
    assert all(isinstance(i, FrameError) for i in items[: len(items) - len(msgs)])


@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(1, 400), max_size=20))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_decoder_total_on_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    """Arbitrary bytes never raise: they yield frames or documented FrameErrors only."""
    dec = FrameDecoder(input_len=102)
    pos = 0
    for c in [*cuts, len(data)]:
        for item in dec.feed(data[pos : pos + c]):
            assert isinstance(item, Frame | FrameError)
            if isinstance(item, FrameError):
                assert isinstance(item.kind, FrameErrorKind)
                seq, reply = item.error_reply()
                assert 0 <= seq <= 0xFFFF and 1 <= reply.code <= 4
        pos += c
    assert dec.splitter.pending <= MAX_ENCODED
    # Direct decoding of any slice either succeeds or raises FrameError.
    for part in data.split(b"\x00")[:5]:
        with contextlib.suppress(FrameError):
            decode_frame(part)


@given(msg=messages, seq=seqs, pos=st.integers(0, 10_000), val=u8)
def test_single_byte_corruption_detected(msg: Message, seq: int, pos: int, val: int) -> None:
    frame = bytearray(encode_frame(msg, seq))
    pos %= len(frame) - 1  # any byte but the delimiter
    assume(frame[pos] != val)
    frame[pos] = val
    items = FrameDecoder().feed(bytes(frame) + b"\x00")
    assert items, "a corrupted frame must be reported"
    assert all(isinstance(i, FrameError) for i in items)


@given(msg=messages, seq=seqs)
def test_crc_covers_header_and_payload(msg: Message, seq: int) -> None:
    packet = encode_packet(msg, seq)
    assert int.from_bytes(packet[-4:], "little") == zlib.crc32(packet[:-4])
    assert packet[0] == 1 and packet[1] == msg.TYPE
    assert int.from_bytes(packet[2:4], "little") == seq


def test_link_requires_the_cobs_package() -> None:
    """`cobs` is a hard dependency (setup.py): without it the link does not import, rather than
    falling back to a slower copy."""
    code = (
        "import sys; sys.modules['cobs'] = None\n"
        "try:\n"
        "    from terrain_odt import link\n"
        "except ImportError as exc:\n"
        "    print('cobs' in str(exc))\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True"
