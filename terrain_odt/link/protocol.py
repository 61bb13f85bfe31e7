"""The link's vocabulary (``docs/protocol.md`` §1-§3): constants, codes, errors and messages.

Changes here are protocol changes: each message is declared once by its fields' wire types
(``Annotated`` markers below) and one codec encodes and decodes them all.
"""

from __future__ import annotations

import contextlib
import enum
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Annotated, Any, ClassVar, TypeVar, get_type_hints

import numpy as np

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


class BadLength(Exception):
    """Raised by a payload decoder; the frame codec turns it into ``FrameError(BAD_LENGTH)``."""


# ---------------------------------------------------------------------------------------------
# Wire types of message fields. A message is a frozen dataclass whose fields are annotated with
# these; `@message(type)` derives its encoder and decoder from them, in field order.


@dataclass(frozen=True)
class Counted:
    """A ``u8`` count followed by that many items of struct code ``item``."""

    item: str


@dataclass(frozen=True)
class Tail:
    """The rest of the payload as bytes (the last field), ``min_len`` to ``max_len`` long; with
    ``input_len`` exactly the model's input length when the decoder knows it."""

    min_len: int = 0
    max_len: int | None = None
    input_len: bool = False


U8 = Annotated[int, "B"]
I8 = Annotated[int, "b"]
U16 = Annotated[int, "H"]
U32 = Annotated[int, "I"]
Flag = Annotated[bool, "?"]
U8s = Annotated[tuple[int, ...], Counted("B")]
U16s = Annotated[tuple[int, ...], Counted("H")]
Bytes = Annotated[bytes, Tail()]
Features = Annotated[bytes, Tail(input_len=True)]
Chunk = Annotated[bytes, Tail(max_len=MAX_CHUNK)]


class Run:
    """Consecutive fixed-size fields (struct codes ``codes``), packed as one struct."""

    __slots__ = ("fields", "size", "st")

    def __init__(self, codes: str) -> None:
        self.st = struct.Struct("<" + codes)
        self.size = self.st.size
        self.fields = len(codes)


_Segment = Run | Counted | Tail

M = TypeVar("M", bound="Message")


class Message:
    """Base of all messages. ``TYPE`` is the wire type; ``payload()`` / ``from_payload()``."""

    TYPE: ClassVar[MsgType]
    #: The payload layout: runs of fixed fields as one struct, counted arrays, a tail.
    LAYOUT: ClassVar[tuple[_Segment, ...]] = ()

    def payload(self) -> bytes:
        """The packet payload."""
        values = iter([getattr(self, f.name) for f in fields(self)])  # type: ignore[arg-type]
        out: list[bytes] = []
        for seg in type(self).LAYOUT:
            if isinstance(seg, Run):
                out.append(seg.st.pack(*(next(values) for _ in range(seg.fields))))
            elif isinstance(seg, Counted):
                items = next(values)
                out.append(struct.pack(f"<B{len(items)}{seg.item}", len(items), *items))
            else:
                out.append(next(values))
        return b"".join(out)

    @classmethod
    def from_payload(cls: type[M], payload: bytes, input_len: int | None = None) -> M:
        """Decode a payload; raises :class:`BadLength` on a wrong length."""
        n = len(payload)
        values: list[Any] = []
        pos = 0
        for seg in cls.LAYOUT:
            if isinstance(seg, Run):
                if pos + seg.size > n:
                    raise BadLength
                values.extend(seg.st.unpack_from(payload, pos))
                pos += seg.size
            elif isinstance(seg, Counted):
                if pos >= n:
                    raise BadLength
                k = payload[pos]
                size = k * struct.calcsize(seg.item)
                if pos + 1 + size > n:
                    raise BadLength
                values.append(struct.unpack_from(f"<{k}{seg.item}", payload, pos + 1))
                pos += 1 + size
            else:
                rest = n - pos
                if rest < seg.min_len or (seg.max_len is not None and rest > seg.max_len):
                    raise BadLength
                if seg.input_len and input_len is not None and rest != input_len:
                    raise BadLength
                values.append(bytes(payload[pos:]))
                pos = n
        if pos != n:
            raise BadLength
        msg = cls(*values)
        if not msg.valid():
            raise BadLength
        return msg

    def valid(self) -> bool:
        """Checks beyond the field lengths (a decoded message that fails is ``BAD_LENGTH``)."""
        return True


MESSAGE_TYPES: dict[int, type[Message]] = {}


def message(mtype: MsgType) -> Callable[[type[M]], type[M]]:
    """Class decorator (over ``@dataclass``): the wire type, and the layout from the fields'
    annotations; registers the class in :data:`MESSAGE_TYPES`."""

    def wrap(cls: type[M]) -> type[M]:
        hints = get_type_hints(cls, include_extras=True)
        layout: list[_Segment] = []
        run = ""
        for f in fields(cls):  # type: ignore[arg-type]
            spec = hints[f.name].__metadata__[0]
            if isinstance(spec, str):
                run += spec
                continue
            if run:
                layout.append(Run(run))
                run = ""
            assert not layout or not isinstance(layout[-1], Tail), "a Tail field comes last"
            layout.append(spec)
        if run or not layout:
            layout.append(Run(run))
        cls.TYPE = mtype
        cls.LAYOUT = tuple(layout)
        MESSAGE_TYPES[mtype] = cls
        return cls

    return wrap


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


# ---------------------------------------------------------------------------------------------
# Messages: requests (host -> co-processor), then responses.

_msg = dataclass(frozen=True, slots=True)


@message(MsgType.HELLO)
@_msg
class Hello(Message):
    """``HELLO``: start a session; the co-processor then expects ``next_train_seq``."""

    next_train_seq: U16


@message(MsgType.TRAIN)
@_msg
class Train(Message):
    """``TRAIN``: one labelled sample; ``features`` are raw ``int8`` bytes."""

    label: U8
    features: Features

    @property
    def features_i8(self) -> np.ndarray:
        """The features as an ``int8`` array."""
        return np.frombuffer(self.features, dtype=np.int8)


@message(MsgType.INFER)
@_msg
class Infer(Message):
    """``INFER``: predict one sample."""

    features: Features

    @property
    def features_i8(self) -> np.ndarray:
        """The features as an ``int8`` array."""
        return np.frombuffer(self.features, dtype=np.int8)


@message(MsgType.STATS)
@_msg
class GetStats(Message):
    """``STATS`` request."""


@message(MsgType.SET_PARAMS)
@_msg
class SetParams(Message):
    """``SET_PARAMS`` (§3.5). ``topk_min`` 0xFF = off; ``modes`` 0 frozen, 1 bias only, 2 all."""

    enabled: Flag = True
    lr_m: U16 = 1 << 14
    lr_e: I8 = -20
    batch: U8 = 1
    topk_min: U8 = TOPK_OFF
    modes: U8s = ()
    seed: U32 = 0x2545_F491


@message(MsgType.SAVE)
@_msg
class Save(Message):
    """``SAVE``: write the model to flash."""


@message(MsgType.RESTORE)
@_msg
class Restore(Message):
    """``RESTORE``: reload the last saved model."""


@message(MsgType.RESET_PRETRAINED)
@_msg
class ResetPretrained(Message):
    """``RESET_PRETRAINED``: reload the pretrained model."""


@message(MsgType.UPLOAD_BEGIN)
@_msg
class UploadBegin(Message):
    """``UPLOAD_BEGIN``: announce a blob of ``total_len`` bytes with CRC-32 ``crc32``."""

    total_len: U32
    crc32: U32


@message(MsgType.UPLOAD_CHUNK)
@_msg
class UploadChunk(Message):
    """``UPLOAD_CHUNK``: ``data`` (at most 512 bytes) at ``offset``."""

    offset: U32
    data: Chunk


@message(MsgType.UPLOAD_END)
@_msg
class UploadEnd(Message):
    """``UPLOAD_END``: check and load the uploaded blob."""


@message(MsgType.DOWNLOAD)
@_msg
class Download(Message):
    """``DOWNLOAD``: up to ``max_len`` (≤ 512) bytes of the current model blob from ``offset``."""

    offset: U32
    max_len: U16 = MAX_CHUNK


@message(MsgType.TRAIN_FRAG)
@_msg
class TrainFrag(Message):
    """``TRAIN_FRAG`` (§2.1): features ``offset .. offset + len(data)`` of training sample
    ``seq`` (the packet's sequence number) with ``label`` and ``total`` features."""

    label: U8
    total: U16
    offset: U16
    data: Annotated[bytes, Tail(min_len=1)]

    def valid(self) -> bool:
        return frag_geometry_ok(self.total, self.offset, len(self.data))


@message(MsgType.ERROR)
@_msg
class ErrorReply(Message):
    """``ERROR(code, detail)`` from the co-processor."""

    code: U8
    detail: U16 = 0

    @property
    def name(self) -> str:
        """The code's name, or ``code N``."""
        try:
            return ErrorCode(self.code).name
        except ValueError:
            return f"code {self.code}"


@message(MsgType.INFO)
@_msg
class Info(Message):
    """``INFO`` (§3.1), the answer to ``HELLO``."""

    protocol_version: U16
    firmware_version: U32
    model_id: U32
    model_hash: U32
    input_len: U16
    classes: U8
    batch_capacity: U8
    model_ram: U32
    train_steps: U32
    boot_count: U32
    next_train_seq: U16

    @property
    def firmware_version_str(self) -> str:
        """``major.minor.patch``."""
        v = self.firmware_version
        return f"{v >> 16}.{(v >> 8) & 0xFF}.{v & 0xFF}"


@message(MsgType.TRAIN_ACK)
@_msg
class TrainAck(Message):
    """``TRAIN_ACK`` (§3.2): the prequential prediction and loss of one sample."""

    pred: U8
    loss_q15: U16
    flags: U8 = 0

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


@message(MsgType.PREDICTION)
@_msg
class Prediction(Message):
    """``PREDICTION`` (§3.3): predicted class and softmax scores in Q15."""

    predicted: U8
    scores_q15: U16s = ()

    @property
    def scores(self) -> np.ndarray:
        """Scores as probabilities (``float64``)."""
        return np.asarray(self.scores_q15, dtype=np.float64) / 32768.0


@message(MsgType.STATS_REPLY)
@_msg
class Stats(Message):
    """``STATS`` reply (§3.4)."""

    train_steps: U32
    updates: U32
    preq_correct: U32
    preq_samples: U32
    loss_ema_q15: U32
    forward_saturations: U32
    update_clips: U32
    weight_saturations: U32
    zero_grad_steps: U32
    frame_errors: U32
    training_enabled: U8
    diverged: U8

    @property
    def preq_accuracy(self) -> float:
        """Prequential accuracy (NaN before any sample)."""
        return self.preq_correct / self.preq_samples if self.preq_samples else math.nan


@message(MsgType.OK)
@_msg
class Ok(Message):
    """``OK``."""


@message(MsgType.DOWNLOAD_DATA)
@_msg
class DownloadData(Message):
    """``DOWNLOAD_DATA``: ``data`` of the ``total_len``-byte model blob at ``offset``."""

    total_len: U32
    offset: U32
    data: Chunk


@message(MsgType.FRAG_ACK)
@_msg
class FragAck(Message):
    """``FRAG_ACK`` (§2.1): the ``TRAIN_FRAG`` at ``offset`` was taken; ``held`` is the bitmap of
    the sample's units held (bit ``u % 8`` of byte ``u // 8`` = unit ``u``)."""

    offset: U16
    held: Annotated[bytes, Tail(min_len=1, max_len=MAX_FRAG_BITMAP)]

    def units(self) -> int:
        """The bitmap as an integer: bit ``u`` = unit ``u`` held."""
        return int.from_bytes(self.held, "little")


REQUEST_TYPES = frozenset(t for t in MESSAGE_TYPES if t < 0x7F)
RESPONSE_TYPES = frozenset(t for t in MESSAGE_TYPES if t >= 0x7F)


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: sequence number and message."""

    seq: int
    msg: Message
