"""An in-process fake co-processor speaking docs/protocol.md, for testing terrain_odt.link.

It implements the session, sequence and duplicate rules of §2 exactly, with a toy "model" whose
state is a CRC chain over the applied samples: any sample lost, applied twice or out of order
changes every later prequential prediction and the final ``model_hash``. Faults are injected by
filters on decoded frames (drop, corrupt, duplicate) or by byte noise, and the device can be reset
(RAM lost), unplugged (connection closed) or made to refuse connections for a while.

Transports: TCP on 127.0.0.1 (``socket://`` URL) or a pseudo-terminal (``/dev/pts/N``).
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import socket
import struct
import threading
import time
import tty
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from terrain_odt.link import (
    FRAG_UNIT,
    SEQ_MOD,
    Download,
    DownloadData,
    ErrorCode,
    ErrorReply,
    FragAck,
    Frame,
    FrameDecoder,
    FrameError,
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
    encode_frame,
    frag_bitmap_len,
    frag_units,
)

BLOB_LEN = 3000
PRETRAINED_HASH = 0x1234_5678


def model_step(h: int, label: int, features: bytes) -> int:
    """The toy model's state after training one sample."""
    return zlib.crc32(bytes([label]) + features, h)


def model_pred(h: int, features: bytes, classes: int) -> int:
    """The toy model's prediction for ``features`` in state ``h``."""
    return (h + sum(features)) % classes


def reference_run(
    samples: list[tuple[int, bytes]], classes: int, h: int = PRETRAINED_HASH
) -> tuple[int, list[int]]:
    """(final hash, prequential predictions) of applying ``samples`` once, in order."""
    preds = []
    for label, feats in samples:
        preds.append(model_pred(h, feats, classes))
        h = model_step(h, label, feats)
    return h, preds


def make_blob(h: int, steps: int) -> bytes:
    """The toy model serialised: a magic, the state, and filler derived from it."""
    rnd = random.Random(h).randbytes(BLOB_LEN - 12)
    return struct.pack("<4sII", b"FAKE", h, steps) + rnd


RxFilter = Callable[[Frame], str | None]
TxFilter = Callable[[int, Message], str | None]


@dataclass
class FakeState:
    """What survives in the fake's "RAM" (lost on reset) and "flash"."""

    h: int = PRETRAINED_HASH
    steps: int = 0
    applied: list[tuple[int, int, bytes]] = field(default_factory=list)  # (seq, label, feats)
    session: bool = False
    expected: int = 0
    history: deque[tuple[int, int, int, int]] = field(default_factory=lambda: deque(maxlen=16))
    preq_correct: int = 0
    enabled: bool = True
    upload: bytearray | None = None
    upload_len: int = 0
    upload_crc: int = 0
    frame_errors: int = 0
    #: The sample being assembled from TRAIN_FRAGs: (seq, label, features so far, units held).
    partial: tuple[int, int, bytearray, int] | None = None


class FakeCoprocessor:
    """Fake co-processor. ``url`` is what :class:`OdtClient` opens."""

    def __init__(
        self,
        *,
        input_len: int = 8,
        classes: int = 3,
        transport: str = "tcp",
        rx_noise: float = 0.0,
        tx_noise: float = 0.0,
        seed: int = 1,
        reject_labels: frozenset[int] = frozenset(),
    ) -> None:
        self.input_len = input_len
        self.classes = classes
        self.transport = transport
        self.rx_noise = rx_noise
        self.tx_noise = tx_noise
        self.reject_labels = reject_labels
        self.rng = random.Random(seed)
        self.lock = threading.RLock()
        self.state = FakeState()
        self.flash: tuple[int, int] | None = None
        self.boot_count = 1
        self.rx_filter: RxFilter | None = None
        self.tx_filter: TxFilter | None = None
        self.silent: set[type[Message]] = set()  # request types never answered
        self.bad_length: Callable[[Train], bool] | None = None  # TRAINs answered BAD_LENGTH
        self.fragments = True  # False: an older co-processor, TRAIN_FRAG is an unknown type
        self.requests: list[Frame] = []  # every decoded request, in order
        self.accepting = True
        self.response_delay = 0.0
        self._stop = threading.Event()
        self._conn: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._decoder = FrameDecoder(input_len=input_len, direction="request")
        if transport == "tcp":
            self._server = socket.create_server(("127.0.0.1", 0))
            self._server.settimeout(0.05)
            self.url = f"socket://127.0.0.1:{self._server.getsockname()[1]}"
            self._spawn(self._serve_tcp)
        elif transport == "pty":
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)
            self.url = os.ttyname(self._slave)
            self._spawn(self._serve_pty)
        else:
            raise ValueError(transport)

    # ---- control ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop all threads and close the transport."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        if self.transport == "tcp":
            self._drop_conn()
            self._server.close()
        else:
            for fd in (self._master, self._slave):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __enter__(self) -> FakeCoprocessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self, *, keep_flash: bool = True) -> None:
        """A co-processor restart: RAM state and session lost, boot count + 1."""
        with self.lock:
            st = FakeState()
            if keep_flash and self.flash is not None:
                st.h, st.steps = self.flash
            self.state = st
            self.boot_count += 1
            self._decoder.reset()

    def disconnect(self) -> None:
        """Unplug: close the client's connection (TCP only)."""
        self._drop_conn()

    @property
    def applied(self) -> list[tuple[int, int, bytes]]:
        """Samples applied since the last reset: (seq, label, features)."""
        with self.lock:
            return list(self.state.applied)

    @property
    def model_hash(self) -> int:
        """The toy model's state."""
        with self.lock:
            return self.state.h

    def count(self, mtype: type[Message]) -> int:
        """Requests of a type received (decoded)."""
        with self.lock:
            return sum(isinstance(f.msg, mtype) for f in self.requests)

    # ---- transports ------------------------------------------------------------------------

    def _spawn(self, fn: Callable[[], None]) -> None:
        t = threading.Thread(target=fn, daemon=True, name="fake-coprocessor")
        t.start()
        self._threads.append(t)

    def _drop_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.accepting:
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conn = conn
            with self.lock:
                self._decoder.reset()
            while not self._stop.is_set() and self._conn is conn:
                try:
                    ready, _, _ = select.select([conn], [], [], 0.05)
                    if not ready:
                        continue
                    data = conn.recv(65536)
                except (OSError, ValueError):
                    break
                if not data:
                    break
                self._on_bytes(data, conn.sendall)
            if self._conn is conn:
                self._drop_conn()

    def _serve_pty(self) -> None:
        def write(data: bytes) -> None:
            view = memoryview(data)
            while view:
                n = os.write(self._master, view)
                view = view[n:]

        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(self._master, 65536)
            except OSError:
                time.sleep(0.01)
                continue
            self._on_bytes(data, write)

    # ---- protocol --------------------------------------------------------------------------

    def _noise(self, data: bytes, rate: float) -> bytes:
        if rate <= 0:
            return data
        out = bytearray(data)
        for i in range(len(out)):
            if self.rng.random() < rate:
                out[i] ^= self.rng.randrange(1, 256)
        return bytes(out)

    def _on_bytes(self, data: bytes, write: Callable[[bytes], None]) -> None:
        data = self._noise(data, self.rx_noise)
        with self.lock:
            items = self._decoder.feed(data)
        for item in items:
            out: list[tuple[int, Message]] = []
            with self.lock:
                if isinstance(item, FrameError):
                    self.state.frame_errors += 1
                    out.append(item.error_reply())
                else:
                    self.requests.append(item)
                    action = self.rx_filter(item) if self.rx_filter else None
                    if action == "drop" or type(item.msg) in self.silent:
                        continue
                    if action == "corrupt":
                        self.state.frame_errors += 1
                        out.append((0xFFFF, ErrorReply(ErrorCode.BAD_FRAME, 2)))
                    else:
                        out.append((item.seq, self._handle(item.seq, item.msg)))
            for seq, msg in out:
                self._send(seq, msg, write)

    def _send(self, seq: int, msg: Message, write: Callable[[bytes], None]) -> None:
        action = self.tx_filter(seq, msg) if self.tx_filter else None
        if action == "drop":
            return
        frame = encode_frame(msg, seq)
        if action == "corrupt":
            frame = frame[:3] + bytes([frame[3] ^ 0x55 or 1]) + frame[4:]
        if self.response_delay:
            time.sleep(self.response_delay)
        frame = self._noise(frame, self.tx_noise)
        try:
            write(frame)
            if action == "dup":
                write(frame)
        except OSError:
            pass

    def _info(self) -> Info:
        st = self.state
        return Info(
            1, 0x000100, 0x42, st.h, self.input_len, self.classes, 1, 1234, st.steps,
            self.boot_count, st.expected,
        )  # fmt: skip

    def _handle(self, seq: int, msg: Message) -> Message:
        st = self.state
        if isinstance(msg, Hello):
            # A session that is up resumes if the host is at `expected` or only behind by
            # samples whose outcome is remembered (its acks were lost); else a new session.
            st.partial = None  # any HELLO discards a partly assembled sample
            remembered = any(h[0] == msg.next_train_seq for h in st.history)
            if not (st.session and (msg.next_train_seq == st.expected or remembered)):
                st.session = True
                st.expected = msg.next_train_seq
                st.history.clear()
            return self._info()
        if isinstance(msg, Train):
            return self._train(seq, msg)
        if isinstance(msg, TrainFrag) and self.fragments:
            return self._train_frag(seq, msg)
        if isinstance(msg, Infer):
            p = model_pred(st.h, msg.features, self.classes)
            scores = tuple(30000 if c == p else 100 for c in range(self.classes))
            return Prediction(p, scores)
        if isinstance(msg, GetStats):
            return Stats(
                st.steps, st.steps, st.preq_correct, len(st.applied), 0, 0, 0, 0, 0,
                st.frame_errors, int(st.enabled), 0,
            )  # fmt: skip
        if isinstance(msg, SetParams):
            if not (1 << 14) <= msg.lr_m < (1 << 15) or msg.batch < 1:
                return ErrorReply(ErrorCode.BAD_PARAMS, 0)
            st.enabled = msg.enabled
            return Ok()
        if isinstance(msg, Save):
            self.flash = (st.h, st.steps)
            return Ok()
        if isinstance(msg, Restore):
            if self.flash is None:
                return ErrorReply(ErrorCode.FLASH, 0)
            st.h, st.steps = self.flash
            return Ok()
        if isinstance(msg, ResetPretrained):
            st.h, st.steps = PRETRAINED_HASH, 0
            return Ok()
        if isinstance(msg, UploadBegin):
            if msg.total_len > 64 * 1024:
                return ErrorReply(ErrorCode.TOO_LARGE, 64 * 1024)
            st.upload = bytearray(msg.total_len)
            st.upload_len, st.upload_crc = msg.total_len, msg.crc32
            return Ok()
        if isinstance(msg, UploadChunk):
            if st.upload is None or msg.offset + len(msg.data) > st.upload_len:
                return ErrorReply(ErrorCode.BAD_PARAMS, 0)
            st.upload[msg.offset : msg.offset + len(msg.data)] = msg.data
            return Ok()
        if isinstance(msg, UploadEnd):
            blob = bytes(st.upload or b"")
            st.upload = None
            if zlib.crc32(blob) != st.upload_crc:
                return ErrorReply(ErrorCode.BAD_MODEL, 9)
            if len(blob) < 12 or blob[:4] != b"FAKE":
                return ErrorReply(ErrorCode.BAD_MODEL, 2)
            _, st.h, st.steps = struct.unpack_from("<4sII", blob)
            return Ok()
        if isinstance(msg, Download):
            blob = make_blob(st.h, st.steps)
            n = min(msg.max_len, 512)
            return DownloadData(len(blob), msg.offset, blob[msg.offset : msg.offset + n])
        return ErrorReply(ErrorCode.UNKNOWN_TYPE, int(msg.TYPE))

    def _train_frag(self, seq: int, msg: TrainFrag) -> Message:
        """§2.1: assemble the expected sample; apply it as a TRAIN when complete."""
        st = self.state
        if msg.total != self.input_len:
            return ErrorReply(ErrorCode.BAD_LENGTH, 5 + len(msg.data))
        if not st.session:
            return ErrorReply(ErrorCode.NO_SESSION, 0)
        bad_label = msg.label >= self.classes or msg.label in self.reject_labels
        if (st.expected - seq) % SEQ_MOD != 0 or bad_label:
            # A duplicate, out of order, or a bad label: as a TRAIN of that sample.
            return self._train(seq, Train(msg.label, bytes(msg.total)))
        if st.partial is None or st.partial[:2] != (seq, msg.label):
            st.partial = (seq, msg.label, bytearray(msg.total), 0)
        _, _, buf, held = st.partial
        buf[msg.offset : msg.offset + len(msg.data)] = msg.data
        first = msg.offset // FRAG_UNIT
        n = frag_units(msg.offset + len(msg.data)) - first
        held |= ((1 << n) - 1) << first
        st.partial = (seq, msg.label, buf, held)
        if held != (1 << frag_units(msg.total)) - 1:
            bitmap = held.to_bytes(frag_bitmap_len(msg.total), "little")
            return FragAck(msg.offset, bitmap)
        return self._train(seq, Train(msg.label, bytes(buf)))

    def _train(self, seq: int, msg: Train) -> Message:
        st = self.state
        if self.bad_length is not None and self.bad_length(msg):
            return ErrorReply(ErrorCode.BAD_LENGTH, 1 + len(msg.features))
        if not st.session:
            return ErrorReply(ErrorCode.NO_SESSION, 0)
        d = (st.expected - seq) % SEQ_MOD
        if d == 0:
            st.partial = None  # the expected sample moves on
            if msg.label >= self.classes or msg.label in self.reject_labels:
                # Consumes the number, not applied; a resend is a duplicate with pred 0xFF.
                st.expected = (st.expected + 1) % SEQ_MOD
                st.history.append((seq, 0xFF, 0, 0))
                return ErrorReply(ErrorCode.BAD_LABEL, msg.label)
            pred = model_pred(st.h, msg.features, self.classes)
            st.h = model_step(st.h, msg.label, msg.features)
            st.steps += 1
            st.preq_correct += pred == msg.label
            st.applied.append((seq, msg.label, msg.features))
            loss = (msg.label * 1000 + st.steps) & 0x7FFF
            flags = TrainAck.FLAG_APPLIED if st.enabled else TrainAck.FLAG_DISABLED
            st.history.append((seq, pred, loss, flags))
            st.expected = (st.expected + 1) % SEQ_MOD
            return TrainAck(pred, loss, flags)
        if 1 <= d <= 32768:
            for hseq, pred, loss, flags in st.history:
                if hseq == seq:
                    return TrainAck(pred, loss, flags | TrainAck.FLAG_DUP)
            return TrainAck(0xFF, 0, TrainAck.FLAG_DUP)
        return ErrorReply(ErrorCode.OUT_OF_ORDER, st.expected)
