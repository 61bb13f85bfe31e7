"""Host side of the co-processor link: codec and client (``docs/protocol.md``, version 1).

Two layers, both free of ROS:

* **Codec.** :func:`encode_frame` / :func:`decode_frame` turn the typed messages below (one frozen
  dataclass per message type) into wire frames, ``COBS(packet) 0x00``, and back;
  :class:`FrameDecoder` splits a byte stream into frames, resynchronising on ``0x00``. Everything
  that does not decode raises (or yields) a :class:`FrameError` whose :class:`FrameErrorKind` maps
  onto the ``ERROR`` the co-processor answers such a frame with.
* **Client.** :class:`OdtClient` talks to a co-processor (ESP32 or the ``odt-emu`` emulator) over
  anything :func:`serial.serial_for_url` opens: ``/dev/ttyUSB0``, ``/dev/pts/N``,
  ``socket://host:port``. A reader thread owns the receive side; training samples are pipelined
  (go-back-N, exactly once and in order), every other request is stop-and-wait with timeouts and
  retries, and the link survives unplugging and co-processor resets.

Delivery: every sample given to :meth:`OdtClient.train` is applied by the co-processor exactly once
and in order, or its future fails (link closed, label or length rejected). Samples acknowledged by a
co-processor that then restarts without ``SAVE`` are lost with its RAM (``TrainResult.boot`` and
``LinkStats.coprocessor_resets`` tell); samples not yet acknowledged are resent to the new boot.
Futures complete on the reader thread outside the client's locks: a callback may call the client,
but must not block there waiting for another answer from the link.

Example::

    with OdtClient("/dev/ttyUSB0", baudrate=921600) as odt:
        futures = odt.train_many(features, labels)   # int8 features, one row per sample
        odt.flush()
        preds = [f.result().pred for f in futures]    # prequential predictions
        odt.save()
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import select
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

import numpy as np
import serial

__all__ = [
    "MAX_CHUNK",
    "MAX_ENCODED",
    "MAX_FRAME",
    "MAX_PACKET",
    "MAX_PAYLOAD",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "BlobErrorCode",
    "CobsDecodeError",
    "Download",
    "DownloadData",
    "ErrorCode",
    "ErrorReply",
    "FlashErrorCode",
    "FragAck",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "FrameErrorKind",
    "FrameSplitter",
    "GetStats",
    "Hello",
    "Infer",
    "Info",
    "LinkError",
    "LinkStats",
    "LinkTimeout",
    "Message",
    "MsgType",
    "OdtClient",
    "Ok",
    "Prediction",
    "RemoteError",
    "ResetPretrained",
    "Restore",
    "Save",
    "SetParams",
    "Stats",
    "Train",
    "TrainAck",
    "TrainFrag",
    "TrainResult",
    "UploadBegin",
    "UploadChunk",
    "UploadEnd",
    "cobs_decode",
    "cobs_encode",
    "decode_frame",
    "decode_packet",
    "encode_frame",
    "encode_packet",
    "features_to_bytes",
    "frag_bitmap_len",
    "frag_geometry_ok",
    "iter_frames",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Constants (protocol.md §1, §2, §3)

PROTOCOL_VERSION = 1
HEADER_LEN = 4
CRC_LEN = 4
MIN_PACKET = HEADER_LEN + CRC_LEN
MAX_PAYLOAD = 1024
MAX_PACKET = MAX_PAYLOAD + MIN_PACKET  # 1032
#: Longest COBS encoding of a packet, delimiter excluded (1037).
MAX_ENCODED = MAX_PACKET + math.ceil(MAX_PACKET / 254)
#: Longest frame on the wire, delimiter included (1038).
MAX_FRAME = MAX_ENCODED + 1
#: Largest ``UPLOAD_CHUNK`` / ``DOWNLOAD`` data block.
MAX_CHUNK = 512
SEQ_MOD = 1 << 16
#: ``ERROR.seq`` when the offending frame's header did not survive.
NO_SEQ = 0xFFFF
#: ``TRAIN_ACK.pred`` of a duplicate whose outcome the co-processor no longer holds.
PRED_UNKNOWN = 0xFF
#: ``SET_PARAMS.topk_min`` meaning "partial updates off".
TOPK_OFF = 0xFF
#: Outcomes of the last applied samples the co-processor keeps for duplicate acks (§2).
DUP_HISTORY = 16
#: Features per unit of a fragmented training sample (§2.1): fragments cover whole units.
FRAG_UNIT = 16
#: Largest ``FRAG_ACK`` bitmap (256 units).
MAX_FRAG_BITMAP = 32

_HEADER = struct.Struct("<BBH")
_U32 = struct.Struct("<I")


class MsgType(enum.IntEnum):
    """Message type byte (§3). Requests have the high bit clear, responses set it."""

    HELLO = 0x01
    TRAIN = 0x02
    INFER = 0x03
    STATS = 0x04
    SET_PARAMS = 0x05
    SAVE = 0x06
    RESTORE = 0x07
    RESET_PRETRAINED = 0x08
    UPLOAD_BEGIN = 0x09
    UPLOAD_CHUNK = 0x0A
    UPLOAD_END = 0x0B
    DOWNLOAD = 0x0C
    TRAIN_FRAG = 0x0D
    ERROR = 0x7F
    INFO = 0x81
    TRAIN_ACK = 0x82
    PREDICTION = 0x83
    STATS_REPLY = 0x84
    OK = 0x85
    DOWNLOAD_DATA = 0x8C
    FRAG_ACK = 0x8D


class ErrorCode(enum.IntEnum):
    """``ERROR.code`` (§3.9)."""

    BAD_FRAME = 1
    BAD_VERSION = 2
    UNKNOWN_TYPE = 3
    BAD_LENGTH = 4
    NO_SESSION = 5
    OUT_OF_ORDER = 6
    BAD_PARAMS = 7
    BAD_MODEL = 8
    TOO_LARGE = 9
    FLASH = 10
    BAD_LABEL = 11


class BlobErrorCode(enum.IntEnum):
    """``ERROR(BAD_MODEL).detail``: the firmware loader's error (FORMAT.md), or the upload CRC."""

    TRUNCATED = 1
    BAD_MAGIC = 2
    UNSUPPORTED_VERSION = 3
    BAD_CRC = 4
    ARCH_MISMATCH = 5
    BAD_QUANT = 6
    TRAILING_BYTES = 7
    BUFFER_TOO_SMALL = 8
    UPLOAD_CRC = 9
    NO_MODEL = 0
    # a firmware whose model shape comes from the blob (odt_core::DynMlp) refuses the blob:
    UNSUPPORTED_LAYER = 10  # a layer other than Dense (the firmware runs MLPs)
    TOO_MANY_INPUTS = 11
    TOO_WIDE = 12  # a hidden layer wider than the capacity
    TOO_MANY_CLASSES = 13
    TOO_DEEP = 14  # more Dense layers than the capacity
    TOO_MANY_WEIGHTS = 15


class FlashErrorCode(enum.IntEnum):
    """``ERROR(FLASH).detail``."""

    ERASE = 1
    WRITE = 2
    READ = 3
    READ_BACK = 4
    NO_SAVED_MODEL = 5
    DOES_NOT_FIT = 6


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

# ---------------------------------------------------------------------------------------------
# Exceptions


class LinkError(Exception):
    """The link failed: closed, unusable device, or a protocol violation."""


class LinkTimeout(LinkError, TimeoutError):
    """No (valid) answer within the timeout, after all retries."""


class RemoteError(LinkError):
    """The co-processor answered ``ERROR(code, detail)``."""

    def __init__(self, code: int, detail: int, request: str = "") -> None:
        self.code = code
        self.detail = detail
        self.request = request
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = f"code {code}"
        what = f"{request}: " if request else ""
        extra = ""
        if code in (ErrorCode.BAD_MODEL, ErrorCode.FLASH):
            names = BlobErrorCode if code == ErrorCode.BAD_MODEL else FlashErrorCode
            with contextlib.suppress(ValueError):
                extra = f" ({names(detail).name})"
        super().__init__(f"{what}co-processor error {name}, detail {detail}{extra}")


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


class _BadLength(Exception):
    """Raised by a payload decoder; turned into ``FrameError(BAD_LENGTH)`` with the header."""


# ---------------------------------------------------------------------------------------------
# Messages

M = TypeVar("M", bound="Message")


def features_to_bytes(
    features: bytes | bytearray | memoryview | np.ndarray | Sequence[int],
) -> bytes:
    """``int8`` features as raw bytes: accepts raw bytes, an integer array or a sequence of ints.

    Values must lie in ``[-128, 127]`` (raw bytes are taken as two's-complement ``int8``).
    """
    if isinstance(features, bytes | bytearray | memoryview):
        return bytes(features)
    arr = np.asarray(features)
    if arr.ndim != 1:
        raise ValueError(f"features must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == np.int8:
        return arr.tobytes()
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"features must be integers (int8), got {arr.dtype}")
    if arr.size and (arr.min() < -128 or arr.max() > 127):
        raise ValueError("features out of int8 range")
    return arr.astype(np.int8).tobytes()


class Message:
    """Base of all messages. ``TYPE`` is the wire type; ``payload()`` / ``from_payload()``."""

    TYPE: ClassVar[MsgType]
    FIXED: ClassVar[struct.Struct | None] = None

    def payload(self) -> bytes:
        """The packet payload."""
        fixed = type(self).FIXED
        assert fixed is not None
        return fixed.pack(*(getattr(self, f.name) for f in fields(self)))  # type: ignore[arg-type]

    @classmethod
    def from_payload(cls: type[M], payload: bytes, input_len: int | None = None) -> M:
        """Decode a payload; raises ``_BadLength`` on a wrong length."""
        fixed = cls.FIXED
        assert fixed is not None
        if len(payload) != fixed.size:
            raise _BadLength
        return cls(*fixed.unpack(payload))


@dataclass(frozen=True, slots=True)
class _Empty(Message):
    FIXED: ClassVar[struct.Struct | None] = struct.Struct("<")


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """``HELLO``: start a session; the co-processor then expects ``next_train_seq``."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO
    FIXED: ClassVar[struct.Struct | None] = struct.Struct("<H")
    next_train_seq: int


@dataclass(frozen=True, slots=True)
class Train(Message):
    """``TRAIN``: one labelled sample; ``features`` are raw ``int8`` bytes."""

    TYPE: ClassVar[MsgType] = MsgType.TRAIN
    label: int
    features: bytes

    def payload(self) -> bytes:
        return bytes((self.label,)) + self.features

    @classmethod
    def from_payload(cls, payload: bytes, input_len: int | None = None) -> Train:
        if len(payload) < 1 or (input_len is not None and len(payload) != 1 + input_len):
            raise _BadLength
        return cls(payload[0], bytes(payload[1:]))

    @property
    def features_i8(self) -> np.ndarray:
        """The features as an ``int8`` array."""
        return np.frombuffer(self.features, dtype=np.int8)


@dataclass(frozen=True, slots=True)
class Infer(Message):
    """``INFER``: predict one sample."""

    TYPE: ClassVar[MsgType] = MsgType.INFER
    features: bytes

    def payload(self) -> bytes:
        return self.features

    @classmethod
    def from_payload(cls, payload: bytes, input_len: int | None = None) -> Infer:
        if input_len is not None and len(payload) != input_len:
            raise _BadLength
        return cls(bytes(payload))

    @property
    def features_i8(self) -> np.ndarray:
        """The features as an ``int8`` array."""
        return np.frombuffer(self.features, dtype=np.int8)


@dataclass(frozen=True, slots=True)
class GetStats(_Empty):
    """``STATS`` request."""

    TYPE: ClassVar[MsgType] = MsgType.STATS


@dataclass(frozen=True, slots=True)
class SetParams(Message):
    """``SET_PARAMS`` (§3.5). ``topk_min`` 0xFF = off; ``modes`` 0 frozen, 1 bias only, 2 all."""

    TYPE: ClassVar[MsgType] = MsgType.SET_PARAMS
    enabled: bool = True
    lr_m: int = 1 << 14
    lr_e: int = -20
    batch: int = 1
    topk_min: int = TOPK_OFF
    modes: tuple[int, ...] = ()
    seed: int = 0x2545_F491

    _HEAD: ClassVar[struct.Struct] = struct.Struct("<BHbBBB")

    def payload(self) -> bytes:
        head = self._HEAD.pack(
            int(self.enabled), self.lr_m, self.lr_e, self.batch, self.topk_min, len(self.modes)
        )
        return head + bytes(self.modes) + _U32.pack(self.seed)

    @classmethod
    def from_payload(cls, payload: bytes, input_len: int | None = None) -> SetParams:
        if len(payload) < cls._HEAD.size + 4:
            raise _BadLength
        enabled, lr_m, lr_e, batch, topk, n = cls._HEAD.unpack_from(payload)
        if len(payload) != cls._HEAD.size + n + 4:
            raise _BadLength
        modes = tuple(payload[cls._HEAD.size : cls._HEAD.size + n])
        (seed,) = _U32.unpack_from(payload, cls._HEAD.size + n)
        return cls(bool(enabled), lr_m, lr_e, batch, topk, modes, seed)


@dataclass(frozen=True, slots=True)
class Save(_Empty):
    """``SAVE``: write the model to flash."""

    TYPE: ClassVar[MsgType] = MsgType.SAVE


@dataclass(frozen=True, slots=True)
class Restore(_Empty):
    """``RESTORE``: reload the last saved model."""

    TYPE: ClassVar[MsgType] = MsgType.RESTORE


@dataclass(frozen=True, slots=True)
class ResetPretrained(_Empty):
    """``RESET_PRETRAINED``: reload the pretrained model."""

    TYPE: ClassVar[MsgType] = MsgType.RESET_PRETRAINED


@dataclass(frozen=True, slots=True)
class UploadBegin(Message):
    """``UPLOAD_BEGIN``: announce a blob of ``total_len`` bytes with CRC-32 ``crc32``."""

    TYPE: ClassVar[MsgType] = MsgType.UPLOAD_BEGIN
    FIXED: ClassVar[struct.Struct | None] = struct.Struct("<II")
    total_len: int
    crc32: int


@dataclass(frozen=True, slots=True)
class UploadChunk(Message):
    """``UPLOAD_CHUNK``: ``data`` (at most 512 bytes) at ``offset``."""

    TYPE: ClassVar[MsgType] = MsgType.UPLOAD_CHUNK
    offset: int
    data: bytes

    def payload(self) -> bytes:
        return _U32.pack(self.offset) + self.data

    @classmethod
    def from_payload(cls, payload: bytes, input_len: int | None = None) -> UploadChunk:
        if not 4 <= len(payload) <= 4 + MAX_CHUNK:
            raise _BadLength
        return cls(_U32.unpack_from(payload)[0], bytes(payload[4:]))


@dataclass(frozen=True, slots=True)
class UploadEnd(_Empty):
    """``UPLOAD_END``: check and load the uploaded blob."""

    TYPE: ClassVar[MsgType] = MsgType.UPLOAD_END


@dataclass(frozen=True, slots=True)
class Download(Message):
    """``DOWNLOAD``: up to ``max_len`` (≤ 512) bytes of the current model blob from ``offset``."""

    TYPE: ClassVar[MsgType] = MsgType.DOWNLOAD
    FIXED: ClassVar[struct.Struct | None] = struct.Struct("<IH")
    offset: int
    max_len: int = MAX_CHUNK


def frag_units(total: int) -> int:
    """Units of :data:`FRAG_UNIT` features of a sample of ``total`` features."""
    return -(-total // FRAG_UNIT)


def frag_bitmap_len(total: int) -> int:
    """Bytes of the ``FRAG_ACK`` bitmap of a sample of ``total`` features (at least 1)."""
    return max(1, -(-frag_units(total) // 8))


def frag_geometry_ok(total: int, offset: int, length: int) -> bool:
    """Whether a fragment covers whole units of a sample (§2.1): ``offset`` a multiple of
    :data:`FRAG_UNIT`, at least one feature, within ``total``, ``length`` a multiple of the unit
    unless the fragment ends the sample, and a bitmap of at most :data:`MAX_FRAG_BITMAP` bytes."""
    end = offset + length
    return (
        length >= 1
        and offset % FRAG_UNIT == 0
        and end <= total
        and (length % FRAG_UNIT == 0 or end == total)
        and frag_bitmap_len(total) <= MAX_FRAG_BITMAP
    )


@dataclass(frozen=True, slots=True)
class TrainFrag(Message):
    """``TRAIN_FRAG`` (§2.1): features ``offset .. offset + len(data)`` of training sample
    ``seq`` (the packet's sequence number) with ``label`` and ``total`` features."""

    TYPE: ClassVar[MsgType] = MsgType.TRAIN_FRAG
    label: int
    total: int
    offset: int
    data: bytes

    _HEAD: ClassVar[struct.Struct] = struct.Struct("<BHH")

    def payload(self) -> bytes:
        return self._HEAD.pack(self.label, self.total, self.offset) + self.data

    @classmethod
    def from_payload(cls, payload: bytes, input_len: int | None = None) -> TrainFrag:
        if len(payload) < cls._HEAD.size + 1:
            raise _BadLength
        label, total, offset = cls._HEAD.unpack_from(payload)
        data = bytes(payload[cls._HEAD.size :])
        if not frag_geometry_ok(total, offset, len(data)):
            raise _BadLength
        return cls(label, total, offset, data)


@dataclass(frozen=True, slots=True)
class FragAck(Message):
    """``FRAG_ACK`` (§2.1): the ``TRAIN_FRAG`` at ``offset`` was taken; ``held`` is the bitmap of
    the sample's units held (bit ``u % 8`` of byte ``u // 8`` = unit ``u``)."""

    TYPE: ClassVar[MsgType] = MsgType.FRAG_ACK
    offset: int
    held: bytes

    def payload(self) -> bytes:
        return struct.pack("<H", self.offset) + self.held

    @classmethod
    def from_payload(cls, payload: bytes, input_len: int | None = None) -> FragAck:
        if not 3 <= len(payload) <= 2 + MAX_FRAG_BITMAP:
            raise _BadLength
        return cls(struct.unpack_from("<H", payload)[0], bytes(payload[2:]))

    def units(self) -> int:
        """The bitmap as an integer: bit ``u`` = unit ``u`` held."""
        return int.from_bytes(self.held, "little")


@dataclass(frozen=True, slots=True)
class ErrorReply(Message):
    """``ERROR(code, detail)`` from the co-processor."""

    TYPE: ClassVar[MsgType] = MsgType.ERROR
    FIXED: ClassVar[struct.Struct | None] = struct.Struct("<BH")
    code: int
    detail: int = 0

    @property
    def name(self) -> str:
        """The code's name, or ``code N``."""
        try:
            return ErrorCode(self.code).name
        except ValueError:
            return f"code {self.code}"


@dataclass(frozen=True, slots=True)
class Info(Message):
    """``INFO`` (§3.1), the answer to ``HELLO``."""

    TYPE: ClassVar[MsgType] = MsgType.INFO
    FIXED: ClassVar[struct.Struct | None] = struct.Struct("<HIIIHBBIIIH")
    protocol_version: int
    firmware_version: int
    model_id: int
    model_hash: int
    input_len: int
    classes: int
    batch_capacity: int
    model_ram: int
    train_steps: int
    boot_count: int
    next_train_seq: int

    @property
    def firmware_version_str(self) -> str:
        """``major.minor.patch``."""
        v = self.firmware_version
        return f"{v >> 16}.{(v >> 8) & 0xFF}.{v & 0xFF}"


@dataclass(frozen=True, slots=True)
class TrainAck(Message):
    """``TRAIN_ACK`` (§3.2): the prequential prediction and loss of one sample."""

    TYPE: ClassVar[MsgType] = MsgType.TRAIN_ACK
    FIXED: ClassVar[struct.Struct | None] = struct.Struct("<BHB")
    pred: int
    loss_q15: int
    flags: int = 0

    FLAG_DUP: ClassVar[int] = 1
    FLAG_APPLIED: ClassVar[int] = 2
    FLAG_DISABLED: ClassVar[int] = 4

    @property
    def dup(self) -> bool:
        """A duplicate: acknowledged again, not applied."""
        return bool(self.flags & self.FLAG_DUP)

    @property
    def applied(self) -> bool:
        """The sample completed a batch and the weights changed."""
        return bool(self.flags & self.FLAG_APPLIED)

    @property
    def disabled(self) -> bool:
        """Training is off: only the prediction was made."""
        return bool(self.flags & self.FLAG_DISABLED)


@dataclass(frozen=True, slots=True)
class Prediction(Message):
    """``PREDICTION`` (§3.3): predicted class and softmax scores in Q15."""

    TYPE: ClassVar[MsgType] = MsgType.PREDICTION
    predicted: int
    scores_q15: tuple[int, ...] = ()

    def payload(self) -> bytes:
        n = len(self.scores_q15)
        return struct.pack(f"<BB{n}H", self.predicted, n, *self.scores_q15)

    @classmethod
    def from_payload(cls, payload: bytes, input_len: int | None = None) -> Prediction:
        if len(payload) < 2 or len(payload) != 2 + 2 * payload[1]:
            raise _BadLength
        n = payload[1]
        return cls(payload[0], struct.unpack_from(f"<{n}H", payload, 2))

    @property
    def scores(self) -> np.ndarray:
        """Scores as probabilities (``float64``)."""
        return np.asarray(self.scores_q15, dtype=np.float64) / 32768.0


@dataclass(frozen=True, slots=True)
class Stats(Message):
    """``STATS`` reply (§3.4)."""

    TYPE: ClassVar[MsgType] = MsgType.STATS_REPLY
    FIXED: ClassVar[struct.Struct | None] = struct.Struct("<10IBB")
    train_steps: int
    updates: int
    preq_correct: int
    preq_samples: int
    loss_ema_q15: int
    forward_saturations: int
    update_clips: int
    weight_saturations: int
    zero_grad_steps: int
    frame_errors: int
    training_enabled: int
    diverged: int

    @property
    def preq_accuracy(self) -> float:
        """Prequential accuracy (NaN before any sample)."""
        return self.preq_correct / self.preq_samples if self.preq_samples else math.nan


@dataclass(frozen=True, slots=True)
class Ok(_Empty):
    """``OK``."""

    TYPE: ClassVar[MsgType] = MsgType.OK


@dataclass(frozen=True, slots=True)
class DownloadData(Message):
    """``DOWNLOAD_DATA``: ``data`` of the ``total_len``-byte model blob at ``offset``."""

    TYPE: ClassVar[MsgType] = MsgType.DOWNLOAD_DATA
    total_len: int
    offset: int
    data: bytes

    def payload(self) -> bytes:
        return struct.pack("<II", self.total_len, self.offset) + self.data

    @classmethod
    def from_payload(cls, payload: bytes, input_len: int | None = None) -> DownloadData:
        if not 8 <= len(payload) <= 8 + MAX_CHUNK:
            raise _BadLength
        total, offset = struct.unpack_from("<II", payload)
        return cls(total, offset, bytes(payload[8:]))


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Train,
        Infer,
        GetStats,
        SetParams,
        Save,
        Restore,
        ResetPretrained,
        UploadBegin,
        UploadChunk,
        UploadEnd,
        Download,
        TrainFrag,
        ErrorReply,
        Info,
        TrainAck,
        Prediction,
        Stats,
        Ok,
        DownloadData,
        FragAck,
    )
}


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: sequence number and message."""

    seq: int
    msg: Message


# ---------------------------------------------------------------------------------------------
# COBS: the `cobs` package (C extension) when installed, else the equivalent below (also for
# ROS installs from Debian packages, where `cobs` has none). Same variant: a final full block
# gets no trailing 0x01 code.


class CobsDecodeError(ValueError):
    """Not a COBS encoding (a block code runs past the end, or a zero byte)."""


def _cobs_encode_py(data: bytes) -> bytes:
    out = bytearray()
    blocks = bytes(data).split(b"\x00")
    last = len(blocks) - 1
    for i, block in enumerate(blocks):
        while len(block) >= 254:
            out += b"\xff"
            out += block[:254]
            block = block[254:]
            if not block and i == last:
                return bytes(out)
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def _cobs_decode_py(enc: bytes) -> bytes:
    enc = bytes(enc)
    if 0 in enc:
        raise CobsDecodeError("zero byte in input")
    out = bytearray()
    i, n = 0, len(enc)
    while i < n:
        code = enc[i]
        j = i + code
        if j > n:
            raise CobsDecodeError("not enough input bytes for length code")
        out += enc[i + 1 : j]
        if code != 0xFF and j < n:
            out.append(0)
        i = j
    return bytes(out)


try:
    from cobs import cobs as _cobs_pkg
except ImportError:  # pragma: no cover - exercised by the tests through the _py functions
    cobs_encode = _cobs_encode_py
    cobs_decode = _cobs_decode_py
else:

    def cobs_encode(data: bytes) -> bytes:
        """COBS-encode ``data`` (no delimiter)."""
        return bytes(_cobs_pkg.encode(data))

    def cobs_decode(enc: bytes) -> bytes:
        """Decode a COBS encoding (no delimiter); raises :class:`CobsDecodeError`."""
        try:
            return bytes(_cobs_pkg.decode(enc))
        except _cobs_pkg.DecodeError as exc:
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


REQUEST_TYPES = frozenset(t for t in MESSAGE_TYPES if t < 0x7F)
RESPONSE_TYPES = frozenset(t for t in MESSAGE_TYPES if t >= 0x7F)


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
    except _BadLength:
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


# ---------------------------------------------------------------------------------------------
# Link statistics


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


@dataclass(frozen=True)
class LinkStats:
    """A snapshot of the client's counters (see :meth:`OdtClient.link_stats`)."""

    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    requests: int = 0
    #: Stop-and-wait requests sent again (timeout, corrupted frame, link loss).
    retries: int = 0
    #: Training frames sent more than once (go-back-N and lost-ack re-asks; a fragment counts
    #: when units it carries were sent before).
    retransmitted_frames: int = 0
    #: Training frames sent, ``TRAIN`` and ``TRAIN_FRAG``, and their bytes on the wire.
    train_frames_sent: int = 0
    train_bytes_sent: int = 0
    #: ``TRAIN_FRAG`` frames sent and ``FRAG_ACK`` received (§2.1).
    frags_sent: int = 0
    frag_acks: int = 0
    #: Switches of the training stream between whole ``TRAIN`` frames and fragments.
    mode_switches: int = 0
    go_backs: int = 0
    timeouts: int = 0
    crc_errors: int = 0
    cobs_errors: int = 0
    truncated_frames: int = 0
    oversized_frames: int = 0
    #: Frames with a good CRC but a bad version, type or length.
    bad_packets: int = 0
    #: ``ERROR(BAD_FRAME)`` answers: the co-processor received a corrupted frame.
    remote_frame_errors: int = 0
    out_of_order: int = 0
    no_session: int = 0
    duplicate_acks: int = 0
    stale_responses: int = 0
    reconnects: int = 0
    handshakes: int = 0
    #: ``boot_count`` changes seen in ``INFO``: the co-processor restarted.
    coprocessor_resets: int = 0
    samples_queued: int = 0
    samples_acked: int = 0
    samples_failed: int = 0
    rtt_count: int = 0
    #: Stop-and-wait round trips (first attempts only), milliseconds.
    rtt_p50_ms: float = math.nan
    rtt_p99_ms: float = math.nan
    #: Training frame send → acknowledgement (first transmissions only), milliseconds.
    train_rtt_p50_ms: float = math.nan
    train_rtt_p99_ms: float = math.nan

    @property
    def frame_errors(self) -> int:
        """Received frames that did not decode."""
        return (
            self.crc_errors
            + self.cobs_errors
            + self.truncated_frames
            + self.oversized_frames
            + self.bad_packets
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-friendly; NaN percentiles become ``None``)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = None if isinstance(v, float) and math.isnan(v) else v
        out["frame_errors"] = self.frame_errors
        return out


_COUNTERS = tuple(f.name for f in fields(LinkStats) if f.type in ("int", int))


class _Counters:
    def __init__(self, rtt_keep: int = 20000) -> None:
        self.c: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self.rtt: deque[float] = deque(maxlen=rtt_keep)
        self.train_rtt: deque[float] = deque(maxlen=rtt_keep)

    def inc(self, name: str, n: int = 1) -> None:
        self.c[name] += n

    def snapshot(self) -> LinkStats:
        c = dict(self.c)
        c["rtt_count"] = len(self.rtt)
        rtt = list(self.rtt)
        trtt = list(self.train_rtt)
        return LinkStats(
            **c,
            rtt_p50_ms=_percentile(rtt, 50) * 1e3,
            rtt_p99_ms=_percentile(rtt, 99) * 1e3,
            train_rtt_p50_ms=_percentile(trtt, 50) * 1e3,
            train_rtt_p99_ms=_percentile(trtt, 99) * 1e3,
        )


_FRAME_ERROR_COUNTER = {
    FrameErrorKind.COBS: "cobs_errors",
    FrameErrorKind.CRC: "crc_errors",
    FrameErrorKind.TRUNCATED: "truncated_frames",
    FrameErrorKind.OVERSIZED: "oversized_frames",
    FrameErrorKind.BAD_VERSION: "bad_packets",
    FrameErrorKind.UNKNOWN_TYPE: "bad_packets",
    FrameErrorKind.BAD_LENGTH: "bad_packets",
}

# ---------------------------------------------------------------------------------------------
# Client


@dataclass(frozen=True, slots=True)
class TrainResult:
    """Outcome of one training sample, applied exactly once by the co-processor."""

    seq: int
    #: Prequential prediction (before this sample trained); ``None`` if the co-processor no longer
    #: held it when the acknowledgement had to be re-sent.
    pred: int | None
    loss_q15: int
    #: This sample completed a batch and the weights changed.
    updated: bool
    #: Training was disabled: only the prediction was made.
    disabled: bool
    #: The first acknowledgement was lost; this one was re-sent for a duplicate.
    duplicate_ack: bool
    #: Times the frame was sent.
    sends: int
    #: Session (HELLO/INFO handshakes so far) in which it was acknowledged. A later session
    #: than an earlier sample's means a HELLO came in between, e.g. because the co-processor
    #: restarted and lost what it had not saved (``OdtClient.info.boot_count`` tells).
    session: int = 0
    #: ``boot_count`` of the co-processor that applied it (-1 unknown).
    boot: int = -1

    @property
    def loss(self) -> float:
        """Cross-entropy loss as a float (``loss_q15 / 2^15``)."""
        return self.loss_q15 / 32768.0


class _Entry:
    """A training sample in the pipeline."""

    __slots__ = (
        "acked",
        "features",
        "frag",
        "frame",
        "future",
        "known_applied",
        "label",
        "last_sent",
        "last_tx",
        "need_send",
        "rejected",
        "sends",
        "seq",
    )

    def __init__(self, label: int, features: bytes) -> None:
        self.label = label
        self.features = features
        self.future: Future[TrainResult] = Future()
        self.seq = -1
        self.frame: bytes | None = None
        self.sends = 0
        self.last_sent = 0.0
        self.last_tx = -1
        self.acked = False
        self.rejected = False
        self.need_send = False
        #: Fragments in flight and units held, while sent as fragments (§2.1).
        self.frag: _FragState | None = None
        #: A later sample was acknowledged, so this one was applied: one fragment (or frame)
        #: fetches its duplicate acknowledgement.
        self.known_applied = False


class _FragTx:
    """One ``TRAIN_FRAG`` in flight: units ``first .. first + n``."""

    __slots__ = ("doubtful", "first", "n", "resend", "sent_at", "tx_id")

    def __init__(self, first: int, n: int, tx_id: int, sent_at: float, resend: bool) -> None:
        self.first = first
        self.n = n
        self.tx_id = tx_id
        self.sent_at = sent_at
        #: Units of it were sent before: its answer may be an earlier one's (no RTT sample).
        self.resend = resend
        #: Its answer arrived corrupted: it may be held; a later answer's bitmap tells.
        self.doubtful = False

    @property
    def mask(self) -> int:
        return ((1 << self.n) - 1) << self.first


class _FragState:
    """A training sample sent as fragments: the units the co-processor holds (the bitmap of the
    latest ``FRAG_ACK``) and the fragments in flight, by first unit."""

    __slots__ = ("held", "inflight", "sent", "units")

    def __init__(self, units: int) -> None:
        self.units = units
        self.held = 0
        self.sent = 0  # units sent at least once
        self.inflight: dict[int, _FragTx] = {}

    @property
    def busy(self) -> int:
        """Units held or in flight."""
        m = self.held
        for f in self.inflight.values():
            m |= f.mask
        return m


class _Pending:
    """A stop-and-wait request waiting for its response."""

    __slots__ = ("event", "hello", "name", "response", "retry_now", "sent_at", "seq", "tx_id")

    def __init__(self, seq: int, name: str, hello: bool = False) -> None:
        self.seq = seq
        self.name = name
        self.hello = hello
        self.event = threading.Event()
        self.response: Message | None = None
        self.retry_now = False
        self.tx_id = -1
        self.sent_at = 0.0


class _Tx:
    """One transmission, for attributing responses and errors (responses come in order)."""

    __slots__ = ("entry", "kind", "offset", "pending", "sent_at", "seq", "tx_id")

    def __init__(
        self,
        tx_id: int,
        kind: str,
        seq: int,
        entry: _Entry | None = None,
        pending: _Pending | None = None,
    ) -> None:
        self.tx_id = tx_id
        self.kind = kind  # "train", "frag", "req" or "sync"
        self.seq = seq
        self.entry = entry
        self.pending = pending
        self.offset = -1  # of a "frag"
        self.sent_at = time.monotonic()


_TRAIN_CODES = frozenset({ErrorCode.NO_SESSION, ErrorCode.OUT_OF_ORDER, ErrorCode.BAD_LABEL})
_REQ_CODES = frozenset(
    {ErrorCode.BAD_PARAMS, ErrorCode.BAD_MODEL, ErrorCode.TOO_LARGE, ErrorCode.FLASH}
)
# Smallest congestion window: with two frames outstanding, a frame whose delimiter is corrupted
# is ended by the next one (an immediate error) instead of stalling until the timeout.
_MIN_CWND = 2.0
# A transmission unanswered for this long (and three smoothed round trips) lost its answer.
_MIN_STALE_AGE = 0.005
# What a pyserial port raises when the device goes away (a port closed under a concurrent call
# can also raise TypeError/AttributeError/ValueError from inside pyserial).
_PORT_ERRORS = (serial.SerialException, OSError, TypeError, ValueError, AttributeError)
_SLOW = frozenset({MsgType.SAVE, MsgType.RESTORE, MsgType.RESET_PRETRAINED, MsgType.UPLOAD_END})
# Largest response frame per request type (for the timeout's frame-time term).
_RESPONSE_BYTES = {MsgType.DOWNLOAD: MAX_FRAME, MsgType.HELLO: 48, MsgType.STATS: 56}


#: Round trips of a request type measured before its timeout follows them.
RTO_MIN_SAMPLES = 8

#: Training frames lost (over the recent outcomes) above which a stream switches to fragments.
FRAG_ON_LOSS = 0.30
#: Predicted loss of whole ``TRAIN`` frames below which a fragmented stream switches back.
FRAG_OFF_LOSS = 0.15
#: Outcomes of training transmissions kept, and needed in a mode before switching again.
_LOSS_WINDOW = 64
_LOSS_MIN = 16
#: Bytes of a ``TRAIN_FRAG`` frame besides its features (header 4, fields 5, CRC 4, COBS 1,
#: delimiter 1) and of a ``TRAIN_ACK`` / ``FRAG_ACK`` frame (about).
_FRAG_OVERHEAD = 15
_ACK_BYTES = 13
_TRAIN_ACK_TYPES = frozenset({"train", "frag"})
#: Floor of a fragment's timeout: a spurious one costs a short frame, not a window.
_FRAG_MIN_RTO = 0.001


class _Chunker:
    """Adaptive block size for model transfer: halves after failures, doubles after successes.

    A noisy line corrupts long frames far more often than short ones (1 % byte errors lose 99 % of
    512-byte frames but 30 % of 32-byte ones); the transfer finds the size that gets through. At
    the smallest size a block is retried for as long as the transfer as a whole keeps moving: it
    fails only when no block got through for `stall_s` (as a training stream only fails when no
    sample is acknowledged for its stall time), so a bulk transfer gets through wherever
    training does, only more slowly.
    """

    MIN = 16

    def __init__(self, retries: int, stall_s: float = math.inf) -> None:
        self.size = MAX_CHUNK
        self.total_retries = retries
        self.stall_s = stall_s
        self._progress = time.monotonic()

    @property
    def retries(self) -> int:
        """Retries per attempt: few while the block can still shrink, all at the smallest."""
        return 1 if self.size > self.MIN else self.total_retries

    def call(self, request: Callable[..., Message], msg: Message, expect: type) -> Message | None:
        """Run one block transfer; ``None`` if it failed (the size shrank, or the smallest
        block is tried again): call again with a block of the new size."""
        try:
            resp = request(msg, expect, retries=self.retries)
        except LinkTimeout:
            if self.size > self.MIN:
                self.size //= 2
                return None
            if time.monotonic() - self._progress < self.stall_s:
                return None
            raise
        self._progress = time.monotonic()
        if self.size < MAX_CHUNK:
            self.size *= 2
        return resp


class OdtClient:
    """Thread-safe client for the co-processor link.

    Args:
        url: device or URL for :func:`serial.serial_for_url` (``/dev/ttyUSB0``, ``/dev/pts/3``,
            ``socket://127.0.0.1:5555``), or a callable returning it, evaluated at every
            (re)connection.
        baudrate: UART speed; also sizes the timeouts (0 = unthrottled, e.g. a pty or socket).
        window: training frames in flight at most (go-back-N window, 1 to 16). After a loss
            the client sends fewer (a congestion window, halved per loss down to 2, grown back
            by one per window of acknowledgements), so a noisy line is not flooded with
            retransmissions.
        retries: retransmissions of a request (and of the oldest training frame) before the link
            is declared failed.
        min_timeout: floor of a response timeout (§2: 50 ms) until round trips are measured.
        min_rto: floor of a response timeout once `RTO_MIN_SAMPLES` round trips of that request
            type were measured (then `srtt + 4 rttvar`, as TCP does).
        work_time: co-processor work added to every timeout; ``slow_work_time`` for SAVE,
            RESTORE, RESET_PRETRAINED, UPLOAD_END and HELLO.
        connect_timeout: how long :meth:`open` and requests wait for a session.
        backoff: (first, max) reconnect back-off, seconds.
        max_queue: training samples queued before :meth:`train` blocks.
        open: connect in the constructor (raises :class:`LinkError` on failure).
        serial_kwargs: extra arguments for :func:`serial.serial_for_url`.
        fragments: how training samples are sent: ``None`` (default) whole ``TRAIN`` frames
            while few are lost, fragments (``TRAIN_FRAG``, §2.1) when more than
            `FRAG_ON_LOSS` of the recent training frames were lost, and back when the loss
            measured on fragments predicts fewer than `FRAG_OFF_LOSS` lost whole frames;
            ``True`` always fragments, ``False`` never. The fragment size (a multiple of 16
            features) follows the measured loss. A co-processor without fragments
            (``ERROR(UNKNOWN_TYPE)``) gets whole frames only.
    """

    def __init__(
        self,
        url: str | Callable[[], str],
        *,
        baudrate: int = 115200,
        window: int = 8,
        retries: int = 5,
        min_timeout: float = 0.05,
        min_rto: float = 0.005,
        work_time: float = 0.02,
        slow_work_time: float = 2.0,
        connect_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.05, 2.0),
        max_queue: int = 4096,
        poll_interval: float = 0.01,
        open: bool = True,
        serial_kwargs: dict[str, Any] | None = None,
        fragments: bool | None = None,
    ) -> None:
        if not 1 <= window <= DUP_HISTORY:
            raise ValueError(f"window must be 1..{DUP_HISTORY}")
        self._url = url
        self.baudrate = baudrate
        self.window = window
        self.retries = retries
        self.min_timeout = min_timeout
        self.min_rto = min_rto
        self.work_time = work_time
        self.slow_work_time = slow_work_time
        self.connect_timeout = connect_timeout
        self.backoff = backoff
        self.max_queue = max_queue
        self.poll_interval = poll_interval
        self._serial_kwargs = dict(serial_kwargs or {})

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._req_lock = threading.Lock()
        self._port: Any = None
        self._decoder = FrameDecoder(direction="response")
        self._thread: threading.Thread | None = None
        self._closing = False
        self._closed = False
        self._broken = True  # no port yet
        self._ever_connected = False
        self._session_ok = False
        self._handshaking = False
        self._need_handshake = False
        self._hold = 0
        self._info: Info | None = None
        self._session = 0
        self._srtt: float | None = None
        #: Per request type: (smoothed RTT, RTT variation, samples), Jacobson/Karels.
        self._req_rtt: dict[MsgType, tuple[float, float, int]] = {}
        self._last_progress = 0.0
        self._last_error: BaseException | None = None
        self._crash: BaseException | None = None
        self._counters = _Counters()

        self._req_seq = 0
        self._requests: dict[int, _Pending] = {}
        self._tx_id = 0
        self._tx_log: deque[_Tx] = deque()
        self._train_next_seq = 0
        self._queue: deque[_Entry] = deque()
        self._inflight: deque[_Entry] = deque()
        self._train_timeouts = 0
        self._cwnd = float(window)
        self._completions: list[tuple[Future[TrainResult], TrainResult | BaseException]] = []
        self.fragments = fragments
        self._frag_supported = True
        self._frag_mode = fragments is True
        self._frag_size = 2 * FRAG_UNIT
        #: Recent training transmissions: (lost, bytes on the wire of the round trip).
        self._loss: deque[tuple[bool, int]] = deque(maxlen=_LOSS_WINDOW)
        self._mode_outcomes = 0
        self._chosen_at = 0
        self._frag_progress = 0.0
        self._stall_since = 0.0
        self._line_free_at = 0.0
        #: 2 after a fragment timeout, 1 after an answer: a timeout that was only a slow answer
        #: (a peer slower than its round trips so far) does not repeat at once.
        self._frag_backoff = 1

        self._train_frame_len = len(encode_frame(Train(0, bytes(102)), 0))
        if open:
            self.open()

    # ---- lifecycle -------------------------------------------------------------------------

    def open(self) -> Info:
        """Start the reader thread and wait for the first session (``HELLO``/``INFO``)."""
        with self._lock:
            if self._closed:
                raise LinkError("client is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="odt-link", daemon=True)
                self._thread.start()
        try:
            self._wait_session(self.connect_timeout)
        except LinkError:
            self.close()
            raise
        info = self._info
        assert info is not None
        return info

    def close(self) -> None:
        """Stop the reader thread, close the device and fail everything still pending."""
        with self._lock:
            if self._closed:
                return
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        with self._lock:
            self._closed = True
            self._close_port_locked()
            err = LinkError("link closed")
            for e in list(self._inflight) + list(self._queue):
                if not e.acked and not e.future.done():
                    self._completions.append((e.future, err))
            self._inflight.clear()
            self._queue.clear()
            for p in self._requests.values():
                p.event.set()
            self._cond.notify_all()
            done = self._take_completions_locked()
        self._complete(done)

    def __enter__(self) -> OdtClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def info(self) -> Info | None:
        """``INFO`` of the current session (``None`` before the first)."""
        return self._info

    @property
    def session(self) -> int:
        """Sessions (HELLO/INFO handshakes) so far; see :attr:`TrainResult.session`."""
        return self._session

    @property
    def connected(self) -> bool:
        """A session is up (never after :meth:`close`)."""
        with self._lock:
            return self._session_ok and not self._broken and not (self._closing or self._closed)

    def link_stats(self) -> LinkStats:
        """Snapshot of the link counters."""
        with self._lock:
            return self._counters.snapshot()

    @property
    def train_frame_bytes(self) -> int:
        """Bytes of one training frame on the wire for the current model."""
        return self._train_frame_len

    @property
    def fragmenting(self) -> bool:
        """The training stream is sent as fragments now (§2.1)."""
        return self._frag_mode

    @property
    def frag_size(self) -> int:
        """Features per fragment now (a multiple of 16)."""
        return self._frag_size

    @property
    def train_loss_estimate(self) -> float:
        """Share of the recent training transmissions lost (NaN before any)."""
        with self._lock:
            n = len(self._loss)
            return sum(lost for lost, _ in self._loss) / n if n else math.nan

    # ---- requests --------------------------------------------------------------------------

    def hello(self) -> Info:
        """Flush the training stream and start a new session; returns ``INFO``."""
        with self._lock:
            self._hold += 1
        try:
            self._wait_idle(None, inflight_only=True)
            with self._lock:
                nxt = self._train_next_seq
            resp = self._request(Hello(nxt), Info, hello=True)
            assert isinstance(resp, Info)
            return resp
        finally:
            with self._lock:
                self._hold -= 1
                self._pump_locked()
                done = self._take_completions_locked()
            self._complete(done)

    def infer(self, features: Any) -> Prediction:
        """Predict one sample (``int8`` features)."""
        feats = self._check_features(features)
        resp = self._request(Infer(feats), Prediction)
        assert isinstance(resp, Prediction)
        return resp

    def stats(self) -> Stats:
        """The co-processor's training statistics."""
        resp = self._request(GetStats(), Stats)
        assert isinstance(resp, Stats)
        return resp

    def set_params(self, params: SetParams | None = None, **kwargs: Any) -> None:
        """Set the training parameters (a :class:`SetParams`, or its fields as keywords).

        Flushes the training stream first, so the new values apply to samples given afterwards.
        """
        msg = params if params is not None else SetParams(**kwargs)
        if params is not None and kwargs:
            raise TypeError("give a SetParams or keywords, not both")
        self.flush()
        self._request(msg, Ok)

    def save(self) -> None:
        """Flush training and save the model to flash."""
        self.flush()
        self._request(Save(), Ok)

    def restore(self) -> None:
        """Flush training and reload the last saved model."""
        self.flush()
        self._request(Restore(), Ok)

    def reset_pretrained(self) -> None:
        """Flush training and reload the pretrained model."""
        self.flush()
        self._request(ResetPretrained(), Ok)

    def upload_model(self, blob: bytes, *, attempts: int = 3) -> Info:
        """Upload and load a model blob; returns the new session's ``INFO``.

        Restarts from ``UPLOAD_BEGIN`` if the co-processor restarts mid-way.
        """
        blob = bytes(blob)
        crc = zlib.crc32(blob)
        for _attempt in range(attempts):
            self.flush()
            boot = self._info.boot_count if self._info else None
            self._request(UploadBegin(len(blob), crc), Ok)
            off = 0
            chunk = _Chunker(self.retries, self._stall_timeout())
            while off < len(blob):
                n = chunk.size
                msg = UploadChunk(off, blob[off : off + n])
                if chunk.call(self._request, msg, Ok) is not None:
                    off += n
            try:
                self._request(UploadEnd(), Ok)
            except RemoteError as exc:
                restarted = self._info is not None and self._info.boot_count != boot
                if exc.code == ErrorCode.BAD_MODEL and restarted:
                    continue
                raise
            return self.hello()
        raise LinkError(f"upload failed {attempts} times: the co-processor kept restarting")

    def download_model(self) -> bytes:
        """Flush training and download the current model blob."""
        self.flush()
        out = bytearray()
        total: int | None = None
        chunk = _Chunker(self.retries, self._stall_timeout())
        while total is None or len(out) < total:
            resp = chunk.call(self._request, Download(len(out), chunk.size), DownloadData)
            if resp is None:
                continue
            assert isinstance(resp, DownloadData)
            if total is None:
                total = resp.total_len
            elif resp.total_len != total:
                raise LinkError("model changed during download")
            if resp.offset != len(out) or (not resp.data and len(out) < total):
                raise LinkError(f"bad DOWNLOAD_DATA at offset {resp.offset}")
            out += resp.data
        return bytes(out[:total])

    # ---- training stream -------------------------------------------------------------------

    def train(
        self, features: Any, label: int, *, timeout: float | None = None
    ) -> Future[TrainResult]:
        """Queue one sample; the future resolves to its :class:`TrainResult` once acknowledged.

        Blocks (up to ``timeout``, default ``connect_timeout``) only while the queue is full.
        """
        return self.train_many([features], [label], timeout=timeout)[0]

    def train_many(
        self, features: Any, labels: Iterable[int], *, timeout: float | None = None
    ) -> list[Future[TrainResult]]:
        """Queue many samples (rows of ``features``), in order; returns their futures."""
        labels = [int(x) for x in labels]
        if isinstance(features, np.ndarray) and features.ndim == 2:
            rows: list[bytes] = [self._check_features(r) for r in features]
        else:
            rows = [self._check_features(r) for r in features]
        if len(rows) != len(labels):
            raise ValueError(f"{len(rows)} feature rows but {len(labels)} labels")
        info = self._info
        for lab in labels:
            if not 0 <= lab <= 0xFF or (info is not None and lab >= info.classes):
                raise ValueError(f"label {lab} out of range")
        entries = [_Entry(lab, row) for lab, row in zip(labels, rows, strict=True)]
        deadline = time.monotonic() + (self.connect_timeout if timeout is None else timeout)
        i = 0
        with self._lock:
            while i < len(entries):
                self._check_open_locked()
                room = self.max_queue - len(self._queue)
                if room <= 0:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise LinkTimeout("training queue full")
                    self._cond.wait(min(left, 0.1))
                    continue
                batch = entries[i : i + room]
                self._queue.extend(batch)
                self._counters.inc("samples_queued", len(batch))
                i += len(batch)
                self._pump_locked()
            done = self._take_completions_locked()
        self._complete(done)
        return [e.future for e in entries]

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued sample is acknowledged (or failed).

        Raises :class:`LinkTimeout` after ``timeout`` seconds or, with ``timeout=None``, once no
        sample has been acknowledged for a stall period (``connect_timeout`` plus all retries of
        the training timeout): a slow but working link is waited for, a dead one is not.
        """
        self._wait_idle(timeout)

    @property
    def pending_samples(self) -> int:
        """Samples queued or in flight."""
        with self._lock:
            return len(self._queue) + sum(not e.acked for e in self._inflight)

    # ---- internals: helpers ----------------------------------------------------------------

    def _stall_timeout(self) -> float:
        return self.connect_timeout + self._train_timeout() * (self.retries + 1)

    def _check_features(self, features: Any) -> bytes:
        feats = features_to_bytes(features)
        info = self._info
        if info is not None and len(feats) != info.input_len:
            raise ValueError(f"{len(feats)} features, the model takes {info.input_len}")
        if len(feats) > MAX_PAYLOAD - 1:
            raise ValueError("too many features for one frame")
        return feats

    def _check_open_locked(self) -> None:
        if self._closing or self._closed:
            crashed = self._crash
            raise LinkError(
                f"link closed: reader failed: {crashed!r}" if crashed else "link closed"
            )

    def _frame_time(self, nbytes: int) -> float:
        return nbytes * 10.0 / self.baudrate if self.baudrate > 0 else 0.0

    def _timeout(self, mtype: MsgType, req_bytes: int) -> float:
        resp = _RESPONSE_BYTES.get(mtype, 32)
        frames = 4.0 * self._frame_time(req_bytes + resp)
        est = self._req_rtt.get(mtype)
        if mtype not in _SLOW and est is not None and est[2] >= RTO_MIN_SAMPLES:
            # Measured round trips (this link, this device): a lost frame is noticed in a few
            # round trips instead of the fixed 70 ms, which is what keeps a noisy line moving.
            srtt, var, _ = est
            return max(self.min_rto, frames, srtt + 4.0 * var)
        base = max(self.min_timeout, frames)
        work = self.slow_work_time if mtype in _SLOW else self.work_time
        return base + work

    def _observe_rtt_locked(self, mtype: MsgType, rtt: float) -> None:
        est = self._req_rtt.get(mtype)
        if est is None:
            self._req_rtt[mtype] = (rtt, rtt / 2, 1)
            return
        srtt, var, n = est
        var = 0.75 * var + 0.25 * abs(srtt - rtt)
        srtt = 0.875 * srtt + 0.125 * rtt
        self._req_rtt[mtype] = (srtt, var, n + 1)

    def _train_timeout(self) -> float:
        ft = self._frame_time(self._train_frame_len)
        return max(self.min_timeout, 4.0 * ft) + self.window * ft + self.work_time

    def _wait_session(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not (self._session_ok and not self._broken):
                self._check_open_locked()
                left = deadline - time.monotonic()
                if left <= 0:
                    why = f": {self._last_error}" if self._last_error else ""
                    raise LinkTimeout(
                        f"no session with the co-processor within {timeout:.1f} s{why}"
                    )
                self._cond.wait(min(left, 0.1))

    def _wait_idle(self, timeout: float | None, inflight_only: bool = False) -> None:
        start = time.monotonic()
        with self._lock:
            while self._inflight or (self._queue and not inflight_only):
                self._check_open_locked()
                now = time.monotonic()
                if timeout is not None:
                    left = start + timeout - now
                else:
                    left = max(start, self._last_progress) + self._stall_timeout() - now
                if left <= 0:
                    n = len(self._inflight) + len(self._queue)
                    why = f"after {timeout:.1f} s" if timeout is not None else "(no progress)"
                    raise LinkTimeout(f"flush: {n} samples still pending {why}")
                self._cond.wait(min(left, 0.1))

    def _take_completions_locked(self) -> list[tuple[Future[TrainResult], Any]]:
        done, self._completions = self._completions, []
        return done

    @staticmethod
    def _complete(done: list[tuple[Future[TrainResult], Any]]) -> None:
        # Outside the lock: future callbacks may call back into the client.
        for fut, res in done:
            if fut.done():
                continue
            try:
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)
            except InvalidStateError:  # cancelled by its owner meanwhile
                pass

    def _resolve_url(self) -> str:
        return self._url() if callable(self._url) else self._url

    # ---- internals: sending ----------------------------------------------------------------

    def _log_tx_locked(
        self, kind: str, seq: int, entry: _Entry | None = None, pending: _Pending | None = None
    ) -> _Tx:
        self._tx_id += 1
        tx = _Tx(self._tx_id, kind, seq, entry, pending)
        self._tx_log.append(tx)
        limit = 4 * self.window + 64
        while len(self._tx_log) > limit:
            self._tx_log.popleft()
        return tx

    def _write_locked(self, data: bytes) -> bool:
        port = self._port
        if port is None or self._broken:
            return False
        try:
            port.write(data)
        except _PORT_ERRORS as exc:
            self._mark_broken_locked(exc)
            return False
        self._counters.inc("frames_sent")
        self._counters.inc("bytes_sent", len(data))
        return True

    def _send_train_locked(self, e: _Entry) -> None:
        if e.frame is None:
            e.frame = encode_frame(Train(e.label, e.features), e.seq)
            self._train_frame_len = len(e.frame)
        if e.sends:
            self._counters.inc("retransmitted_frames")
        tx = self._log_tx_locked("train", e.seq, entry=e)
        e.last_tx = tx.tx_id
        e.last_sent = time.monotonic()
        e.sends += 1
        if self._write_locked(e.frame):
            self._counters.inc("train_frames_sent")
            self._counters.inc("train_bytes_sent", len(e.frame))

    def _pump_locked(self) -> None:
        """Send frames due for (re)transmission, then queued samples, in sequence order, while
        fewer than the congestion window are outstanding and the span stays within ``window``."""
        if not self._session_ok or self._broken or self._hold or self._closing:
            return
        self._choose_mode_locked()
        if self._frag_mode:
            self._pump_frag_locked()
            return
        limit = max(1, int(self._cwnd))
        outstanding = 0
        for e in self._inflight:
            if e.acked or e.rejected:
                continue
            if e.need_send:
                if outstanding >= limit:
                    return  # in order: nothing newer goes out first
                e.need_send = False
                self._send_train_locked(e)
                if self._broken:
                    return
            outstanding += 1
        while self._queue and len(self._inflight) < self.window and outstanding < limit:
            e = self._queue.popleft()
            e.seq = self._train_next_seq
            self._train_next_seq = (self._train_next_seq + 1) % SEQ_MOD
            self._inflight.append(e)
            self._send_train_locked(e)
            outstanding += 1
            if self._broken:
                return

    def _go_back_locked(self, loss: bool = True) -> None:
        """Resend every unacknowledged frame from the oldest, in order (go-back-N).

        A loss also halves the congestion window (at least 2; it grows back by one frame per
        window of acknowledgements): on a clean line the window stays full, on a noisy one the
        link backs off towards stop-and-wait instead of resending whole windows that are
        mostly corrupted.
        """
        unacked = [e for e in self._inflight if not e.acked and not e.rejected]
        if not unacked or self._broken or not self._session_ok:
            return
        self._counters.inc("go_backs")
        if loss:
            self._cwnd = max(min(_MIN_CWND, float(self.window)), self._cwnd / 2)
        for e in unacked:
            e.need_send = True
            # Nothing in flight counts any more; what the co-processor holds is resent
            # (harmless: fragments are idempotent) unless a bitmap says otherwise.
            self._clear_frags_locked(e)
        self._pump_locked()

    # ---- internals: fragments (§2.1) ------------------------------------------------------

    def _record_locked(self, lost: bool, nbytes: int) -> None:
        """One training transmission's outcome, for the mode and fragment size choice."""
        self._loss.append((lost, nbytes))
        self._mode_outcomes += 1

    def _byte_survival_locked(self) -> float | None:
        """Estimated probability that one byte crosses the line (both ways) intact."""
        n = len(self._loss)
        if n < _LOSS_MIN:
            return None
        ok = sum(not lost for lost, _ in self._loss)
        mean_bytes = sum(b for _, b in self._loss) / n
        ok_rate = min(max(ok, 0.5), n - 0.5) / n
        return ok_rate ** (1.0 / max(mean_bytes, 1.0))

    def _best_frag_size(self, total: int, survival: float) -> int:
        """The fragment size (a multiple of 16) with the fewest expected bytes sent per sample
        at the estimated byte survival: a fragment is sent until it and its answer get through
        (the outcomes measured are round trips)."""
        best, best_cost = FRAG_UNIT, math.inf
        for size in range(FRAG_UNIT, frag_units(total) * FRAG_UNIT + 1, FRAG_UNIT):
            cost = 0.0
            for off in range(0, total, size):
                n = min(size, total - off) + _FRAG_OVERHEAD
                cost += n / max(survival ** (n + _ACK_BYTES), 1e-9)
            if cost < best_cost * 0.98:  # ties: the smaller fragments
                best, best_cost = size, cost
        return best

    def _set_mode_locked(self, frag: bool) -> None:
        if frag == self._frag_mode:
            return
        self._frag_mode = frag
        self._counters.inc("mode_switches")
        self._mode_outcomes = 0
        self._chosen_at = 0
        log.info(
            "training stream: %s (recent loss %.0f %%)",
            f"fragments of {self._frag_size}" if frag else "whole frames",
            100.0 * sum(lost for lost, _ in self._loss) / max(1, len(self._loss)),
        )
        self._loss.clear()
        for e in self._inflight:
            e.frag = None
            e.need_send = not (e.acked or e.rejected)

    def _choose_mode_locked(self) -> None:
        """Switch between whole frames and fragments on the measured loss (``fragments=None``)."""
        if self.fragments is False or not self._frag_supported:
            if self._frag_mode:
                self._set_mode_locked(False)
            return
        if self._mode_outcomes < _LOSS_MIN or self._mode_outcomes - self._chosen_at < 4:
            return
        self._chosen_at = self._mode_outcomes
        surv = self._byte_survival_locked()
        if surv is None:
            return
        total = self._info.input_len if self._info is not None else 102
        if self._frag_mode:
            self._frag_size = self._best_frag_size(total, surv)
            whole = self._train_frame_len + _ACK_BYTES
            if self.fragments is None and 1.0 - surv**whole < FRAG_OFF_LOSS:
                self._set_mode_locked(False)
        elif self.fragments is None:
            lost = sum(lost for lost, _ in self._loss) / len(self._loss)
            if lost > FRAG_ON_LOSS:
                self._frag_size = self._best_frag_size(total, surv)
                self._set_mode_locked(True)

    def _frag_timeout(self) -> float:
        """How long a fragment waits for its answer, from the moment its last byte left (the
        line's pace is tracked), before it is sent again: the measured round trips
        (srtt + 4 rttvar) once known, else four frame times of a fragment and its answer plus
        the co-processor's work time."""
        est = self._req_rtt.get(MsgType.TRAIN_FRAG)
        answer = self._frame_time(_ACK_BYTES + FRAG_UNIT)
        if est is not None and est[2] >= RTO_MIN_SAMPLES:
            srtt, var, _ = est
            rto = max(_FRAG_MIN_RTO, 2.0 * answer, srtt + 4.0 * var) * self._frag_backoff
            return min(rto, self._train_timeout())
        frames = 4.0 * (answer + self._frame_time(self._frag_size + _FRAG_OVERHEAD))
        return max(_FRAG_MIN_RTO, frames) + self.work_time

    def _active_frag_entry_locked(self) -> _Entry | None:
        return next((e for e in self._inflight if not e.acked and not e.rejected), None)

    def _pump_frag_locked(self) -> None:
        """Fragments of the oldest unacknowledged sample: the units neither held nor in flight,
        at most ``2 × window`` fragments outstanding. Later samples wait for its ``TRAIN_ACK``
        (the co-processor assembles only the expected one)."""
        e = self._active_frag_entry_locked()
        if e is None:
            if not self._queue:
                return
            e = self._queue.popleft()
            e.seq = self._train_next_seq
            self._train_next_seq = (self._train_next_seq + 1) % SEQ_MOD
            self._inflight.append(e)
        e.need_send = False
        total = len(e.features)
        units = frag_units(total)
        if e.frag is None:
            e.frag = _FragState(units)
        fs = e.frag
        if fs.inflight and all(f.doubtful for f in fs.inflight.values()):
            # Every answer still due was corrupted: no bitmap will tell; send them again.
            for f in fs.inflight.values():
                self._record_locked(True, f.n * FRAG_UNIT + _FRAG_OVERHEAD + _ACK_BYTES)
            self._clear_frags_locked(e)
        if e.known_applied:
            # Applied already (a later sample was acknowledged): one short fragment fetches
            # the duplicate acknowledgement.
            if not fs.inflight:
                self._send_frag_locked(e, 0, 1)
            return
        per = max(1, self._frag_size // FRAG_UNIT)
        limit = 2 * self.window
        busy = fs.busy
        u = 0
        while u < units and len(fs.inflight) < limit and not self._broken:
            if busy >> u & 1:
                u += 1
                continue
            n = 1
            while n < per and u + n < units and not busy >> (u + n) & 1:
                n += 1
            self._send_frag_locked(e, u, n)
            busy |= ((1 << n) - 1) << u
            u += n
        if not fs.inflight and not self._broken:
            # All units held by the last bitmap but no TRAIN_ACK (it was lost): ask again.
            self._send_frag_locked(e, 0, 1)

    @staticmethod
    def _clear_frags_locked(e: _Entry) -> None:
        """Nothing of ``e`` in flight counts any more: what is missing is sent again. (Their
        transmissions stay in the log: an answer still on its way is attributed to the oldest
        one, never to a newer resend, which would make later fragments look lost.)"""
        if e.frag is not None:
            e.frag.inflight.clear()

    def _send_frag_locked(self, e: _Entry, first: int, n: int) -> None:
        assert e.frag is not None
        fs = e.frag
        total = len(e.features)
        off = first * FRAG_UNIT
        data = e.features[off : min(total, off + n * FRAG_UNIT)]
        frame = encode_frame(TrainFrag(e.label, total, off, data), e.seq)
        tx = self._log_tx_locked("frag", e.seq, entry=e)
        tx.offset = off
        now = time.monotonic()
        # Its timeout runs from when its last byte is on the wire (after what is queued).
        self._line_free_at = max(now, self._line_free_at) + self._frame_time(len(frame))
        mask = ((1 << n) - 1) << first
        ftx = _FragTx(first, n, tx.tx_id, self._line_free_at, bool(fs.sent & mask))
        if ftx.resend:
            self._counters.inc("retransmitted_frames")
        fs.sent |= ftx.mask
        fs.inflight[first] = ftx
        e.last_tx = tx.tx_id
        e.last_sent = now
        e.sends += 1
        if self._write_locked(frame):
            self._counters.inc("train_frames_sent")
            self._counters.inc("train_bytes_sent", len(frame))
            self._counters.inc("frags_sent")

    def _on_frag_ack_locked(self, seq: int, ack: FragAck) -> None:
        """The bitmap of the units held: fragments sent before the one answered whose units
        are missing were lost (answers come in order) and go out again."""
        self._counters.inc("frag_acks")
        tx = self._attribute_locked("frag", seq, offset=ack.offset)
        e = self._find_entry_locked(seq)
        if e is None or e.acked or e.rejected or e.frag is None or self._handshaking:
            self._counters.inc("stale_responses")
            return
        fs = e.frag
        fs.held = ack.units() & ((1 << fs.units) - 1)
        upto = tx.tx_id if tx is not None else e.last_tx
        now = time.monotonic()
        self._frag_progress = now
        self._last_progress = now
        self._train_timeouts = 0
        self._frag_backoff = 1
        for first, f in list(fs.inflight.items()):
            held = fs.held & f.mask == f.mask
            if not held and f.tx_id > upto:
                continue  # sent after the one answered: its answer is still to come
            del fs.inflight[first]
            self._record_locked(not held, f.n * FRAG_UNIT + _FRAG_OVERHEAD + _ACK_BYTES)
            if held and f.tx_id == upto and not f.doubtful:
                self._observe_frag_rtt_locked(f, now)
        self._pump_locked()

    def _observe_frag_rtt_locked(self, f: _FragTx, now: float) -> None:
        if not f.resend:  # Karn: only unambiguous round trips
            self._observe_rtt_locked(MsgType.TRAIN_FRAG, now - f.sent_at)

    def _frag_tx_failed_locked(self, tx: _Tx, corrupted_answer: bool) -> None:
        """A fragment arrived corrupted (the co-processor said ``BAD_FRAME``): send it again; or
        its answer did (``corrupted_answer``): it may be held, a later bitmap tells."""
        e = tx.entry
        if e is None or e.acked or e.rejected or e.frag is None:
            return
        f = e.frag.inflight.get(tx.offset // FRAG_UNIT)
        if f is None or f.tx_id != tx.tx_id:
            return
        if corrupted_answer:
            f.doubtful = True
        else:
            del e.frag.inflight[f.first]
            self._record_locked(True, f.n * FRAG_UNIT + _FRAG_OVERHEAD + _ACK_BYTES)
        self._pump_locked()

    def _request(
        self,
        msg: Message,
        expect: type[Message],
        *,
        hello: bool = False,
        retries: int | None = None,
    ) -> Message:
        """Stop-and-wait: send, wait, retry. Raises LinkTimeout, RemoteError or LinkError."""
        name = msg.TYPE.name
        retries = self.retries if retries is None else retries
        with self._req_lock:
            with self._lock:
                self._check_open_locked()
                seq = self._req_seq
                self._req_seq = (self._req_seq + 1) % SEQ_MOD
                self._counters.inc("requests")
            frame = encode_frame(msg, seq)
            timeout = self._timeout(msg.TYPE, len(frame))
            attempts = 0
            started = time.monotonic()
            while True:
                self._wait_session(self.connect_timeout)
                pend = _Pending(seq, name, hello=hello)
                with self._lock:
                    self._check_open_locked()
                    self._requests[seq] = pend
                    tx = self._log_tx_locked("req", seq, pending=pend)
                    pend.tx_id = tx.tx_id
                    pend.sent_at = time.monotonic()
                    self._write_locked(frame)
                got = pend.event.wait(timeout)
                with self._lock:
                    if self._requests.get(seq) is pend:
                        del self._requests[seq]
                    self._check_open_locked()
                resp = pend.response
                if resp is not None:
                    if isinstance(resp, ErrorReply):
                        if resp.code == ErrorCode.NO_SESSION and not hello:
                            with self._lock:
                                self._request_handshake_locked()
                        else:
                            raise RemoteError(resp.code, resp.detail, name)
                    elif isinstance(resp, expect):
                        if attempts == 0:  # Karn: only unambiguous round trips count
                            with self._lock:
                                rtt = time.monotonic() - pend.sent_at
                                self._counters.rtt.append(rtt)
                                self._observe_rtt_locked(msg.TYPE, rtt)
                        return resp
                    else:
                        raise LinkError(f"{name}: unexpected response {type(resp).__name__}")
                elif not got:
                    with self._lock:
                        self._counters.inc("timeouts")
                attempts += 1
                # A HELLO is retried for connect_timeout at least (a noisy line loses many).
                if attempts > retries and (
                    not hello or time.monotonic() - started > self.connect_timeout
                ):
                    raise LinkTimeout(f"{name} (seq {seq}): no response after {attempts} attempts")
                with self._lock:
                    self._counters.inc("retries")

    # ---- internals: receiving --------------------------------------------------------------

    def _attribute_locked(
        self, kind: str | frozenset[str] | None, seq: int, offset: int | None = None
    ) -> _Tx | None:
        """Pop the oldest unanswered transmission matching (kind, seq[, offset]) and all older
        ones. ``kind`` may be a set of kinds."""
        kinds = frozenset((kind,)) if isinstance(kind, str) else kind
        for i, tx in enumerate(self._tx_log):
            if (
                tx.seq == seq
                and tx.kind != "sync"
                and (kinds is None or tx.kind in kinds)
                and (offset is None or tx.offset == offset)
            ):
                for _ in range(i + 1):
                    self._tx_log.popleft()
                return tx
        return None

    def _dispatch_locked(self, item: Frame | FrameError) -> None:
        if isinstance(item, FrameError):
            self._counters.inc(_FRAME_ERROR_COUNTER[item.kind])
            # Most likely the answer to the oldest unanswered transmission: its fate is unknown.
            self._tx_failed_locked(self._pop_unanswered_locked(), corrupted_answer=True)
            return
        self._counters.inc("frames_received")
        msg = item.msg
        if isinstance(msg, TrainAck):
            self._on_train_ack_locked(item.seq, msg)
        elif isinstance(msg, FragAck):
            self._on_frag_ack_locked(item.seq, msg)
        elif isinstance(msg, ErrorReply):
            self._on_error_locked(item.seq, msg)
        elif msg.TYPE & 0x80:
            self._on_response_locked(item.seq, msg)
        else:
            self._counters.inc("stale_responses")

    def _pop_unanswered_locked(self) -> _Tx | None:
        """The oldest transmission still waiting for its answer, for an error that names none.

        Answers come in order, so that is the head of the log, except that an answer lost
        whole (or merged with the next one by a corrupted delimiter) leaves its transmission
        behind at the head, where it would absorb every later error. Transmissions much older
        than the round trip time are taken as answered-and-lost and dropped first.
        """
        if self._srtt is not None:
            old = time.monotonic() - max(_MIN_STALE_AGE, 3.0 * self._srtt)
            while len(self._tx_log) > 1 and self._tx_log[0].sent_at < old:
                self._tx_log.popleft()
        return self._tx_log.popleft() if self._tx_log else None

    def _tx_failed_locked(self, tx: _Tx | None, corrupted_answer: bool = False) -> None:
        """A transmission's answer was corrupted or it arrived corrupted: retry it now."""
        if tx is None:
            return
        if tx.kind == "frag":
            self._frag_tx_failed_locked(tx, corrupted_answer)
            return
        if tx.kind == "train" and self._frag_mode:
            # Sent as a whole frame before the switch: the fragments of the oldest sample
            # are what counts now.
            self._record_locked(True, self._train_frame_len + _ACK_BYTES)
            return
        if tx.kind == "train" and tx.entry is not None:
            self._record_locked(True, self._train_frame_len + _ACK_BYTES)
            oldest = next((e for e in self._inflight if not e.acked), None)
            if oldest is not None and not tx.entry.acked and oldest.last_tx <= tx.tx_id:
                self._go_back_locked()
        elif tx.kind == "req" and tx.pending is not None:
            p = tx.pending
            if p.tx_id == tx.tx_id and not p.event.is_set():
                p.retry_now = True
                p.event.set()

    def _find_entry_locked(self, seq: int) -> _Entry | None:
        if not self._inflight:
            return None
        idx = (seq - self._inflight[0].seq) % SEQ_MOD
        if idx < len(self._inflight):
            e = self._inflight[idx]
            if e.seq == seq:
                return e
        return None

    def _on_train_ack_locked(self, seq: int, ack: TrainAck) -> None:
        tx = self._attribute_locked(_TRAIN_ACK_TYPES, seq)
        e = self._find_entry_locked(seq)
        if ack.dup:
            self._counters.inc("duplicate_acks")
        if tx is not None and (tx.kind == "frag") == self._frag_mode:
            self._record_train_success_locked(tx)
        if e is None or e.acked or e.rejected or self._handshaking:
            self._counters.inc("stale_responses")
            return
        e.acked = True
        self._cwnd = min(float(self.window), self._cwnd + 1.0 / self._cwnd)
        self._train_timeouts = 0
        self._frag_backoff = 1
        self._frag_progress = time.monotonic()
        self._counters.inc("samples_acked")
        if e.frag is not None and tx is not None and tx.kind == "frag" and self._frag_mode:
            # The sample is complete: fragments sent before the one answered got through.
            for f in e.frag.inflight.values():
                if f.tx_id < tx.tx_id:
                    self._record_locked(False, f.n * FRAG_UNIT + _FRAG_OVERHEAD + _ACK_BYTES)
        e.frag = None
        if e.sends == 1 and not ack.dup and (tx is None or tx.kind == "train"):
            rtt = time.monotonic() - e.last_sent
            self._counters.train_rtt.append(rtt)
            self._srtt = rtt if self._srtt is None else 0.875 * self._srtt + 0.125 * rtt
        pred = None if (ack.dup and ack.pred == PRED_UNKNOWN) else ack.pred
        boot = self._info.boot_count if self._info is not None else -1
        res = TrainResult(
            e.seq,
            pred,
            ack.loss_q15,
            ack.applied,
            ack.disabled,
            ack.dup,
            e.sends,
            self._session,
            boot,
        )
        self._completions.append((e.future, res))
        # Older samples still unacknowledged were applied (in-order), their acks were lost:
        # ask again (duplicate acks carry the original outcome) unless already re-asked.
        t = tx.tx_id if tx is not None else e.last_tx
        for older in self._inflight:
            if older is e:
                break
            if self._frag_mode and not older.acked and not older.rejected:
                # One short fragment each fetches the duplicate acknowledgement (the pump
                # sends it when the sample is the oldest).
                older.known_applied = True
                self._clear_frags_locked(older)
            elif not older.acked and not older.rejected and older.last_tx < t:
                older.need_send = False
                self._send_train_locked(older)
        self._advance_locked()

    def _record_train_success_locked(self, tx: _Tx) -> None:
        """A training transmission was answered (acknowledged, or refused as out of order: it
        arrived either way)."""
        if tx.kind == "frag":
            e = tx.entry
            f = e.frag.inflight.get(tx.offset // FRAG_UNIT) if e and e.frag else None
            n = f.n * FRAG_UNIT if f is not None else self._frag_size
            self._record_locked(False, n + _FRAG_OVERHEAD + _ACK_BYTES)
            if f is not None and f.tx_id == tx.tx_id and not f.doubtful:
                self._observe_frag_rtt_locked(f, time.monotonic())
        else:
            self._record_locked(False, self._train_frame_len + _ACK_BYTES)

    def _advance_locked(self) -> None:
        self._last_progress = time.monotonic()
        changed = False
        while self._inflight and (self._inflight[0].acked or self._inflight[0].rejected):
            e = self._inflight.popleft()
            changed = True
            if e.rejected:
                # Not applied and `expected` did not move (BAD_LENGTH): the later samples take
                # its place.
                for later in self._inflight:
                    later.seq = (later.seq - 1) % SEQ_MOD
                    later.frame = None
                    later.frag = None
                self._train_next_seq = (self._train_next_seq - 1) % SEQ_MOD
                self._go_back_locked(loss=False)
        if changed:
            self._pump_locked()
            self._cond.notify_all()

    def _on_error_locked(self, seq: int, err: ErrorReply) -> None:
        code = err.code
        if code == ErrorCode.BAD_FRAME or seq == NO_SEQ:
            self._counters.inc("remote_frame_errors")
            self._tx_failed_locked(self._pop_unanswered_locked())
            return
        kind = _TRAIN_ACK_TYPES if code in _TRAIN_CODES else "req" if code in _REQ_CODES else None
        tx = self._attribute_locked(kind, seq)
        if tx is None and code == ErrorCode.NO_SESSION:
            tx = self._attribute_locked(None, seq)
        if tx is None:
            self._counters.inc("stale_responses")
            return
        if tx.kind == "req":
            if code == ErrorCode.NO_SESSION:
                self._counters.inc("no_session")
            self._on_response_locked(seq, err, tx)
            return
        e = tx.entry
        assert e is not None
        if code == ErrorCode.NO_SESSION:
            self._counters.inc("no_session")
            if not self._handshaking:
                self._request_handshake_locked()
        elif code == ErrorCode.OUT_OF_ORDER:
            self._counters.inc("out_of_order")
            if (tx.kind == "frag") == self._frag_mode:
                self._record_train_success_locked(tx)
            if self._frag_mode:
                # Fragments of the oldest sample only; a refused one of it: start it over.
                if tx.kind == "frag" and e is self._active_frag_entry_locked() and e.frag:
                    self._clear_frags_locked(e)
                    e.frag.held = 0
                    self._pump_locked()
                return
            oldest = next((x for x in self._inflight if not x.acked), None)
            if oldest is not None and oldest.last_tx < tx.tx_id:
                self._go_back_locked()
        elif code in (ErrorCode.BAD_LABEL, ErrorCode.BAD_LENGTH):
            if e.acked or e.rejected or self._find_entry_locked(e.seq) is not e:
                return
            # BAD_LABEL consumed the sequence number (like an ack); BAD_LENGTH did not (§2).
            if code == ErrorCode.BAD_LABEL:
                e.acked = True
            else:
                e.rejected = True
            self._counters.inc("samples_failed")
            self._completions.append((e.future, RemoteError(code, err.detail, "TRAIN")))
            self._advance_locked()
        elif (
            code == ErrorCode.UNKNOWN_TYPE
            and err.detail == MsgType.TRAIN_FRAG
            and tx.kind == "frag"
            and self._frag_supported
        ):
            # A co-processor without fragments (§2.1): whole frames from now on.
            log.warning("the co-processor does not take TRAIN_FRAG: whole training frames only")
            self._frag_supported = False
            self._set_mode_locked(False)
            self._pump_locked()
        else:  # BAD_VERSION / UNKNOWN_TYPE: our frame arrived damaged yet passed the CRC
            self._tx_failed_locked(tx)

    def _on_response_locked(self, seq: int, msg: Message, tx: _Tx | None = None) -> None:
        if tx is None:
            tx = self._attribute_locked("req", seq)
        p = self._requests.get(seq)
        if p is None or p.event.is_set() or tx is None:
            self._counters.inc("stale_responses")
            return
        if p.hello and isinstance(msg, Info):
            self._on_session_locked(msg)
        p.response = msg
        p.event.set()

    def _request_handshake_locked(self) -> None:
        if not self._need_handshake:
            self._need_handshake = True
            self._session_ok = False
            self._cond.notify_all()

    def _on_session_locked(self, info: Info) -> None:
        """A new session began (INFO for our HELLO): renumber and resend the unacked samples."""
        old = self._info
        if old is not None and info.boot_count != old.boot_count:
            self._counters.inc("coprocessor_resets")
            log.warning(
                "co-processor restarted (boot %d -> %d, %d training steps held)",
                old.boot_count,
                info.boot_count,
                info.train_steps,
            )
        if info.protocol_version != PROTOCOL_VERSION:
            log.warning("co-processor speaks protocol %d", info.protocol_version)
        self._info = info
        self._session += 1
        self._counters.inc("handshakes")
        self._train_frame_len = len(encode_frame(Train(0, bytes(info.input_len)), 0))
        unacked = [e for e in self._inflight if not e.acked and not e.rejected]
        e0 = info.next_train_seq
        if unacked:
            u = unacked[0].seq
            ahead = (e0 - u) % SEQ_MOD
            if 0 < ahead <= (self._train_next_seq - u) % SEQ_MOD:
                # The co-processor resumed its session: samples before `e0` were applied (their
                # acks were lost) and keep their numbers; resending them yields duplicate acks.
                for e in unacked:
                    e.known_applied = (e.seq - u) % SEQ_MOD < ahead
            else:
                # A new session at `e0`: nothing sent before the HELLO counts; renumber.
                self._inflight = deque(unacked)
                for e in unacked:
                    e.seq = e0
                    e.frame = None
                    e.known_applied = False
                    e0 = (e0 + 1) % SEQ_MOD
                self._train_next_seq = e0
        else:
            self._inflight.clear()
            self._train_next_seq = e0
        for e in unacked:
            # Any HELLO discards a partly assembled sample (§2.1).
            e.frag = None
        self._tx_log = deque(tx for tx in self._tx_log if tx.kind == "req")
        self._train_timeouts = 0
        self._session_ok = True
        self._need_handshake = False
        self._handshaking = False
        self._ever_connected = True
        self._last_error = None
        for e in unacked:
            e.need_send = True
        self._pump_locked()
        self._cond.notify_all()

    # ---- internals: reader thread ----------------------------------------------------------

    def _mark_broken_locked(self, exc: BaseException | None) -> None:
        if not self._broken:
            log.warning("link lost: %s", exc)
            self._broken = True
        self._last_error = exc
        self._session_ok = False
        for p in self._requests.values():
            if not p.event.is_set():
                p.retry_now = True
                p.event.set()
        self._cond.notify_all()

    def _close_port_locked(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(Exception):
                port.close()

    def _run(self) -> None:
        delay = self.backoff[0]
        try:
            while not self._closing:
                if self._broken:
                    if self._connect():
                        delay = self.backoff[0]
                    else:
                        with self._lock:
                            if self._port is not None:
                                self._mark_broken_locked(self._last_error or LinkTimeout("HELLO"))
                        self._sleep(delay)
                        delay = min(delay * 2, self.backoff[1])
                    continue
                if self._need_handshake:
                    if not self._handshake():
                        with self._lock:
                            self._mark_broken_locked(LinkTimeout("HELLO: no INFO"))
                    continue
                self._poll(self._poll_timeout())
                self._check_timers()
        except Exception as exc:  # a bug: fail loudly rather than hang the callers
            log.exception("odt link reader crashed")
            with self._lock:
                self._crash = exc
                self._closing = True
                self._cond.notify_all()
        finally:
            with self._lock:
                self._close_port_locked()

    def _sleep(self, seconds: float) -> None:
        with self._lock:
            if not self._closing:
                self._cond.wait(seconds)

    def _connect(self) -> bool:
        with self._lock:
            self._close_port_locked()
        try:
            url = self._resolve_url()
            kwargs = {"baudrate": self.baudrate or 115200, "timeout": 0, "write_timeout": 2.0}
            kwargs.update(self._serial_kwargs)
            port = serial.serial_for_url(url, **kwargs)
        except (serial.SerialException, OSError, ValueError) as exc:
            with self._lock:
                self._last_error = exc
            log.debug("open failed: %s", exc)
            return False
        with self._lock:
            if self._closing:
                with contextlib.suppress(Exception):
                    port.close()
                return False
            self._port = port
            self._broken = False
            if self._ever_connected:
                self._counters.inc("reconnects")
            self._decoder.reset()
            self._tx_log.clear()
            self._train_timeouts = 0
            # End any partial frame in the co-processor's receiver (an empty frame is ignored).
            self._log_tx_locked("sync", NO_SEQ)
            self._write_locked(b"\x00")
            has_unacked = any(not e.acked for e in self._inflight)
            if has_unacked and self._info is not None and not self._need_handshake:
                # Resend rather than HELLO: a co-processor that kept running acknowledges them
                # (duplicates for those applied before) even without the resume rule of §2;
                # one that restarted answers NO_SESSION and gets its HELLO then.
                self._session_ok = True
                self._go_back_locked(loss=False)
                self._cond.notify_all()
                return not self._broken
        return self._handshake()

    def _handshake(self) -> bool:
        """HELLO → INFO, from the reader thread (reads inline). False after all retries."""
        with self._lock:
            self._session_ok = False
            self._handshaking = True
            self._need_handshake = False
            self._cond.notify_all()
        try:
            # Retried with the normal timeout until connect_timeout has passed (at least
            # retries + 1 times): on a noisy line a HELLO or its INFO is often lost, and a
            # co-processor still booting simply gets the next one.
            start = time.monotonic()
            attempt = -1
            while True:
                attempt += 1
                if attempt > self.retries and time.monotonic() - start > self.connect_timeout:
                    break
                with self._lock:
                    if self._closing or self._broken:
                        return False
                    if attempt:
                        self._counters.inc("retries")
                    unacked = next((e for e in self._inflight if not e.acked), None)
                    nxt = unacked.seq if unacked is not None else self._train_next_seq
                    seq = self._req_seq
                    self._req_seq = (self._req_seq + 1) % SEQ_MOD
                    pend = _Pending(seq, "HELLO", hello=True)
                    self._requests[seq] = pend
                    tx = self._log_tx_locked("req", seq, pending=pend)
                    pend.tx_id = tx.tx_id
                    frame = encode_frame(Hello(nxt), seq)
                    pend.sent_at = time.monotonic()
                    self._write_locked(frame)
                deadline = pend.sent_at + self._timeout(MsgType.HELLO, len(frame))
                while not pend.event.is_set() and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._poll(min(left, self.poll_interval))
                with self._lock:
                    self._requests.pop(seq, None)
                    if isinstance(pend.response, Info):
                        return True
                    if isinstance(pend.response, ErrorReply):
                        self._last_error = RemoteError(
                            pend.response.code, pend.response.detail, "HELLO"
                        )
                    elif not pend.event.is_set():
                        self._counters.inc("timeouts")
            return False
        finally:
            with self._lock:
                self._handshaking = False

    def _poll(self, timeout: float) -> None:
        """Read what arrives within ``timeout`` and dispatch it."""
        port = self._port
        if port is None or self._broken:
            time.sleep(timeout)
            return
        try:
            try:
                fd = port.fileno()
            except (AttributeError, OSError, NotImplementedError, serial.SerialException):
                fd = None
            if fd is not None:
                ready, _, _ = select.select([fd], [], [], timeout)
                if not ready:
                    return
                data = port.read(65536)
            else:
                data = port.read(max(1, port.in_waiting))
                if not data:
                    time.sleep(timeout)
                    return
        except _PORT_ERRORS as exc:
            with self._lock:
                if port is self._port:
                    self._mark_broken_locked(exc)
            return
        if not data:
            return
        with self._lock:
            self._counters.inc("bytes_received", len(data))
            for item in self._decoder.feed(data):
                self._dispatch_locked(item)
            done = self._take_completions_locked()
        self._complete(done)

    def _check_timers(self) -> None:
        with self._lock:
            if self._broken or not self._session_ok or self._handshaking:
                return
            oldest = next((e for e in self._inflight if not e.acked and not e.rejected), None)
            if oldest is None:
                return
            if self._frag_mode:
                self._check_frag_timer_locked(oldest)
            else:
                if time.monotonic() - oldest.last_sent < self._train_timeout():
                    return
                self._counters.inc("timeouts")
                self._record_locked(True, self._train_frame_len + _ACK_BYTES)
                self._train_timeouts += 1
                if self._train_timeouts > self.retries:
                    self._train_timeouts = 0
                    self._mark_broken_locked(LinkTimeout("training stream: no acknowledgement"))
                    return
                self._go_back_locked()
            done = self._take_completions_locked()
        self._complete(done)

    def _check_frag_timer_locked(self, e: _Entry) -> None:
        """No answer for the fragments in flight within the fragment timeout: send them again.
        The link fails only when no fragment got through for the stall time."""
        fs = e.frag
        if fs is None or not fs.inflight:
            self._pump_locked()
            return
        now = time.monotonic()
        if now - min(f.sent_at for f in fs.inflight.values()) < self._frag_timeout():
            return
        self._counters.inc("timeouts")
        self._frag_backoff = min(2, 2 * self._frag_backoff)
        if self._train_timeouts == 0:
            self._stall_since = now
        self._train_timeouts += 1
        stall = self._train_timeout() * (self.retries + 1)
        if self._train_timeouts > self.retries and now - self._stall_since > stall:
            self._train_timeouts = 0
            self._mark_broken_locked(LinkTimeout("training stream: no fragment acknowledged"))
            return
        for f in fs.inflight.values():
            self._record_locked(True, f.n * FRAG_UNIT + _FRAG_OVERHEAD + _ACK_BYTES)
        self._clear_frags_locked(e)
        self._pump_locked()

    def _poll_timeout(self) -> float:
        """How long the reader may wait for input: less than the poll interval while fragments
        wait for answers with a shorter timeout."""
        with self._lock:
            if not self._frag_mode:
                return self.poll_interval
            e = self._active_frag_entry_locked()
            if e is None or e.frag is None or not e.frag.inflight:
                return self.poll_interval
            first = min(f.sent_at for f in e.frag.inflight.values())
            due = first + self._frag_timeout() - time.monotonic()
            return min(self.poll_interval, max(0.0005, due))
