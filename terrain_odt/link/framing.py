"""Bytes on the wire (``docs/protocol.md`` §1): ``COBS(version | type | seq | payload | crc32)
0x00``, and a stream splitter that resynchronises on ``0x00``.

Kept apart from the messages so a framing change (or a fuzzer) touches only this. COBS is the
``cobs`` package (a hard dependency); its variant gives a final full block no trailing 0x01.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Iterator

from cobs import cobs as _cobs

from .protocol import (
    CRC_LEN,
    HEADER_LEN,
    MAX_ENCODED,
    MAX_PACKET,
    MAX_PAYLOAD,
    MESSAGE_TYPES,
    MIN_PACKET,
    NO_SEQ,
    PROTOCOL_VERSION,
    REQUEST_TYPES,
    RESPONSE_TYPES,
    SEQ_MOD,
    BadLength,
    ErrorCode,
    ErrorReply,
    Frame,
    LinkError,
    Message,
)

_HEADER = struct.Struct("<BBH")
_U32 = struct.Struct("<I")


class FrameErrorKind(enum.Enum):
    """Why a frame was rejected, with the ``ERROR`` (code, detail) the co-processor answers."""

    COBS = "cobs"
    CRC = "crc"
    TRUNCATED = "truncated"
    OVERSIZED = "oversized"
    BAD_VERSION = "bad_version"
    UNKNOWN_TYPE = "unknown_type"
    BAD_LENGTH = "bad_length"

    @property
    def code(self) -> ErrorCode:
        """``ERROR.code`` for this kind."""
        return _KIND_CODE[self]


_KIND_CODE = {
    FrameErrorKind.COBS: ErrorCode.BAD_FRAME,
    FrameErrorKind.CRC: ErrorCode.BAD_FRAME,
    FrameErrorKind.TRUNCATED: ErrorCode.BAD_FRAME,
    FrameErrorKind.OVERSIZED: ErrorCode.BAD_FRAME,
    FrameErrorKind.BAD_VERSION: ErrorCode.BAD_VERSION,
    FrameErrorKind.UNKNOWN_TYPE: ErrorCode.UNKNOWN_TYPE,
    FrameErrorKind.BAD_LENGTH: ErrorCode.BAD_LENGTH,
}
_BAD_FRAME_DETAIL = {
    FrameErrorKind.COBS: 1,
    FrameErrorKind.CRC: 2,
    FrameErrorKind.TRUNCATED: 3,
    FrameErrorKind.OVERSIZED: 4,
}


class FrameError(LinkError):
    """A frame that does not decode. ``seq`` is known only if the header survived the CRC."""

    def __init__(self, kind: FrameErrorKind, detail: int = 0, seq: int | None = None) -> None:
        self.kind = kind
        self.detail = detail
        self.seq = seq
        at = f" (seq {seq})" if seq is not None else ""
        super().__init__(f"bad frame: {kind.value}, detail {detail}{at}")

    def error_reply(self) -> tuple[int, ErrorReply]:
        """The ``(seq, ERROR)`` a co-processor answers this frame with (§1, §3.9)."""
        detail = _BAD_FRAME_DETAIL.get(self.kind, self.detail)
        seq = self.seq if self.seq is not None else NO_SEQ
        return seq, ErrorReply(int(self.kind.code), detail)


# ---------------------------------------------------------------------------------------------
# COBS


class CobsDecodeError(ValueError):
    """Not a COBS encoding (a block code runs past the end, or a zero byte)."""


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (no delimiter)."""
    return bytes(_cobs.encode(data))


def cobs_decode(enc: bytes) -> bytes:
    """Decode a COBS encoding (no delimiter); raises :class:`CobsDecodeError`."""
    try:
        return bytes(_cobs.decode(enc))
    except _cobs.DecodeError as exc:
        raise CobsDecodeError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# Packet and frame codec


def encode_packet(msg: Message, seq: int) -> bytes:
    """``version | type | seq | payload | crc32`` (before COBS)."""
    payload = msg.payload()
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    head = _HEADER.pack(PROTOCOL_VERSION, msg.TYPE, seq % SEQ_MOD) + payload
    return head + _U32.pack(zlib.crc32(head))


def encode_frame(msg: Message, seq: int) -> bytes:
    """The wire frame ``COBS(packet) 0x00``."""
    return cobs_encode(encode_packet(msg, seq)) + b"\x00"


def decode_packet(
    packet: bytes, *, input_len: int | None = None, direction: str | None = None
) -> Frame:
    """Decode a packet (COBS already removed). Raises :class:`FrameError`.

    Checks, in order: size (oversized, truncated), CRC, version, type, payload length (TRAIN and
    INFER lengths only when ``input_len`` is given). ``direction`` ``"request"`` accepts only
    host → co-processor types (the co-processor's view), ``"response"`` only the others (the
    host's); ``None`` accepts both.
    """
    n = len(packet)
    if n > MAX_PACKET:
        raise FrameError(FrameErrorKind.OVERSIZED, n)
    if n < MIN_PACKET:
        raise FrameError(FrameErrorKind.TRUNCATED, n)
    (crc,) = _U32.unpack_from(packet, n - CRC_LEN)
    if zlib.crc32(memoryview(packet)[: n - CRC_LEN]) != crc:
        raise FrameError(FrameErrorKind.CRC, 0)
    version, mtype, seq = _HEADER.unpack_from(packet)
    if version != PROTOCOL_VERSION:
        raise FrameError(FrameErrorKind.BAD_VERSION, version, seq)
    cls = MESSAGE_TYPES.get(mtype)
    if direction is not None:
        allowed = REQUEST_TYPES if direction == "request" else RESPONSE_TYPES
        if mtype not in allowed:
            cls = None
    if cls is None:
        raise FrameError(FrameErrorKind.UNKNOWN_TYPE, mtype, seq)
    payload = bytes(packet[HEADER_LEN : n - CRC_LEN])
    try:
        msg = cls.from_payload(payload, input_len)
    except BadLength:
        raise FrameError(FrameErrorKind.BAD_LENGTH, len(payload), seq) from None
    return Frame(seq, msg)


def decode_frame(
    encoded: bytes, *, input_len: int | None = None, direction: str | None = None
) -> Frame:
    """Decode one frame without its ``0x00`` delimiter (a trailing one is tolerated).

    Raises :class:`FrameError` (oversized, COBS, truncated, CRC, version, type, length).
    """
    if encoded[-1:] == b"\x00":
        encoded = encoded[:-1]
    if len(encoded) > MAX_ENCODED:
        raise FrameError(FrameErrorKind.OVERSIZED, len(encoded))
    try:
        packet = cobs_decode(encoded)
    except CobsDecodeError:
        raise FrameError(FrameErrorKind.COBS, 0) from None
    return decode_packet(packet, input_len=input_len, direction=direction)


class FrameSplitter:
    """Splits a byte stream at ``0x00`` into encoded frames (delimiter removed).

    Empty frames (``0x00 0x00``) are skipped. Bytes beyond :data:`MAX_ENCODED` without a delimiter
    yield one ``FrameError(OVERSIZED)`` and are discarded up to the next ``0x00``, where the
    splitter resynchronises.
    """

    def __init__(self, max_encoded: int = MAX_ENCODED) -> None:
        self.max_encoded = max_encoded
        self._buf = bytearray()
        self._discarding = False

    def reset(self) -> None:
        """Forget any partial frame."""
        self._buf.clear()
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes of a partial frame held."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | FrameError]:
        """Feed bytes; return the complete frames (and oversize errors) they finish."""
        out: list[bytes | FrameError] = []
        if not data:
            return out
        self._buf += data
        if b"\x00" in data:
            parts = bytes(self._buf).split(b"\x00")
            tail = parts.pop()
            for part in parts:
                if self._discarding:
                    self._discarding = False  # the end of an already reported oversized frame
                elif len(part) > self.max_encoded:
                    out.append(FrameError(FrameErrorKind.OVERSIZED, len(part)))
                elif part:
                    out.append(part)
            self._buf = bytearray(tail)
        if len(self._buf) > self.max_encoded:
            if not self._discarding:
                out.append(FrameError(FrameErrorKind.OVERSIZED, len(self._buf)))
                self._discarding = True
            self._buf.clear()
        return out


class FrameDecoder:
    """:class:`FrameSplitter` plus :func:`decode_frame`: bytes in, frames or errors out."""

    def __init__(self, input_len: int | None = None, direction: str | None = None) -> None:
        self.splitter = FrameSplitter()
        self.input_len = input_len
        self.direction = direction

    def reset(self) -> None:
        """Forget any partial frame."""
        self.splitter.reset()

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        """Feed bytes; return decoded frames and :class:`FrameError` values, in stream order."""
        out: list[Frame | FrameError] = []
        for item in self.splitter.feed(data):
            if isinstance(item, FrameError):
                out.append(item)
                continue
            try:
                out.append(decode_frame(item, input_len=self.input_len, direction=self.direction))
            except FrameError as exc:
                out.append(exc)
        return out


def iter_frames(data: bytes, input_len: int | None = None) -> Iterator[Frame | FrameError]:
    """Decode every complete frame in ``data`` (a trailing partial frame is ignored)."""
    yield from FrameDecoder(input_len).feed(data)
