"""The client's retransmission logic as a plain state machine: no threads, no port, no sleeping.

Inputs: samples to send (:meth:`Arq.enqueue`), stop-and-wait requests, frames received
(:meth:`Arq.receive`), time passing (:meth:`Arq.tick`, read from the injected ``clock``), the
port coming up or going away. Outputs, taken by the driver: frames to write
(:meth:`Arq.take_output`), finished samples (:meth:`Arq.take_completions`) and answered requests
(:meth:`Arq.take_woken`). Kept apart so go-back-N, acks, resends, timeouts and fragments can be
tested step by step with a fake clock (``test/test_link_arq.py``); :class:`~.client.OdtClient`
only moves bytes and wakes callers.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .framing import FrameError, encode_frame
from .protocol import (
    DUP_HISTORY,
    FRAG_UNIT,
    MAX_FRAME,
    NO_SEQ,
    PRED_UNKNOWN,
    PROTOCOL_VERSION,
    SEQ_MOD,
    Download,
    ErrorCode,
    ErrorReply,
    FragAck,
    Frame,
    Hello,
    Info,
    LinkTimeout,
    Message,
    MsgType,
    RemoteError,
    Train,
    TrainAck,
    TrainFrag,
    frag_units,
)
from .stats import FRAME_ERROR_COUNTER, Counters

log = logging.getLogger(__package__)


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


class Entry:
    """A training sample in the pipeline (``token``: the driver's handle for its outcome)."""

    __slots__ = (
        "acked",
        "features",
        "frag",
        "frame",
        "known_applied",
        "label",
        "last_sent",
        "last_tx",
        "need_send",
        "rejected",
        "sends",
        "seq",
        "token",
    )

    def __init__(self, label: int, features: bytes, token: Any = None) -> None:
        self.label = label
        self.features = features
        #: The driver's handle, given back with the outcome (the client's future).
        self.token = token
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


class Pending:
    """A stop-and-wait request waiting for its response."""

    __slots__ = (
        "done",
        "hello",
        "name",
        "response",
        "retry_now",
        "sent_at",
        "seq",
        "tx_id",
        "waiter",
    )

    def __init__(self, seq: int, name: str, hello: bool = False) -> None:
        self.seq = seq
        self.name = name
        self.hello = hello
        #: Answered (``response``) or to be retried now (``retry_now``).
        self.done = False
        #: The driver's wake-up handle (the client's ``threading.Event``).
        self.waiter: Any = None
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
        entry: Entry | None = None,
        pending: Pending | None = None,
        sent_at: float = 0.0,
    ) -> None:
        self.tx_id = tx_id
        self.kind = kind  # "train", "frag", "req" or "sync"
        self.seq = seq
        self.entry = entry
        self.pending = pending
        self.offset = -1  # of a "frag"
        self.sent_at = sent_at


_TRAIN_CODES = frozenset({ErrorCode.NO_SESSION, ErrorCode.OUT_OF_ORDER, ErrorCode.BAD_LABEL})
_REQ_CODES = frozenset(
    {ErrorCode.BAD_PARAMS, ErrorCode.BAD_MODEL, ErrorCode.TOO_LARGE, ErrorCode.FLASH}
)
# Smallest congestion window: with two frames outstanding, a frame whose delimiter is corrupted
# is ended by the next one (an immediate error) instead of stalling until the timeout.
_MIN_CWND = 2.0
# A transmission unanswered for this long (and three smoothed round trips) lost its answer.
_MIN_STALE_AGE = 0.005
_SLOW = frozenset({MsgType.SAVE, MsgType.RESTORE, MsgType.RESET_PRETRAINED, MsgType.UPLOAD_END})
# Largest response frame per request type (for the timeout's frame-time term).
_RESPONSE_BYTES = {MsgType.DOWNLOAD: MAX_FRAME, MsgType.HELLO: 48, MsgType.STATS: 56}
#: ``DOWNLOAD_DATA`` frame bytes besides its data (header 4, lengths 8, CRC 4, COBS, delimiter).
DOWNLOAD_OVERHEAD = 24


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


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A frame to write: ``kind`` is ``"train"``, ``"frag"``, ``"req"`` or ``"sync"``."""

    data: bytes
    kind: str


class Arq:
    """Go-back-N training stream, fragments (§2.1) and stop-and-wait bookkeeping of one link.

    Not thread-safe: the driver serialises calls (``OdtClient`` holds its lock). Arguments are
    those of :class:`~.client.OdtClient` of the same names; ``clock`` returns seconds.
    """

    def __init__(
        self,
        *,
        baudrate: int = 115200,
        window: int = 8,
        retries: int = 5,
        min_timeout: float = 0.05,
        min_rto: float = 0.005,
        work_time: float = 0.02,
        slow_work_time: float = 2.0,
        connect_timeout: float = 5.0,
        fragments: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= window <= DUP_HISTORY:
            raise ValueError(f"window must be 1..{DUP_HISTORY}")
        self.baudrate = baudrate
        self.window = window
        self.retries = retries
        self.min_timeout = min_timeout
        self.min_rto = min_rto
        self.work_time = work_time
        self.slow_work_time = slow_work_time
        self.connect_timeout = connect_timeout
        self.clock = clock

        #: Link state, set by the driver (closing) or by the inputs below.
        self.closing = False
        self.broken = True  # no port yet
        self.ever_connected = False
        self.session_ok = False
        self.handshaking = False
        self.need_handshake = False
        #: Callers holding the training stream back (a HELLO in progress).
        self.hold = 0
        self.info: Info | None = None
        self.session = 0
        self.srtt: float | None = None
        #: Per request type: (smoothed RTT, RTT variation, samples), Jacobson/Karels.
        self._req_rtt: dict[MsgType, tuple[float, float, int]] = {}
        self.last_progress = 0.0
        self.last_error: BaseException | None = None
        self.counters = Counters()

        self.req_seq = 0
        self.requests: dict[int, Pending] = {}
        self._tx_id = 0
        self.tx_log: deque[_Tx] = deque()
        self.train_next_seq = 0
        self.queue: deque[Entry] = deque()
        self.inflight: deque[Entry] = deque()
        self._train_timeouts = 0
        self._cwnd = float(window)
        self._completions: list[tuple[Any, TrainResult | BaseException]] = []
        self._outbox: list[Outgoing] = []
        self._woken: list[Pending] = []
        self.fragments = fragments
        self._frag_supported = True
        self.frag_mode = fragments is True
        self.frag_size = 2 * FRAG_UNIT
        #: Recent training transmissions: (lost, bytes on the wire of the round trip).
        self.loss: deque[tuple[bool, int]] = deque(maxlen=_LOSS_WINDOW)
        self._mode_outcomes = 0
        self._chosen_at = 0
        self._frag_progress = 0.0
        self._stall_since = 0.0
        self._line_free_at = 0.0
        #: 2 after a fragment timeout, 1 after an answer: a timeout that was only a slow answer
        #: (a peer slower than its round trips so far) does not repeat at once.
        self._frag_backoff = 1

        self.train_frame_len = len(encode_frame(Train(0, bytes(102)), 0))

    # ---- outputs ---------------------------------------------------------------------------

    def take_output(self) -> list[Outgoing]:
        """Frames to write, in order. After a failed write call :meth:`link_lost` and drop the
        rest; after each successful one call :meth:`wrote`."""
        out, self._outbox = self._outbox, []
        return out

    def wrote(self, out: Outgoing) -> None:
        """``out`` is on the wire: count it."""
        self.counters.inc("frames_sent")
        self.counters.inc("bytes_sent", len(out.data))
        if out.kind in _TRAIN_ACK_TYPES:
            self.counters.inc("train_frames_sent")
            self.counters.inc("train_bytes_sent", len(out.data))
            if out.kind == "frag":
                self.counters.inc("frags_sent")

    def take_woken(self) -> list[Pending]:
        """Requests answered (or to be retried at once) since the last call."""
        woken, self._woken = self._woken, []
        return woken

    def _emit(self, data: bytes, kind: str) -> bool:
        if self.broken:
            return False
        self._outbox.append(Outgoing(data, kind))
        return True

    def _wake(self, p: Pending) -> None:
        p.done = True
        self._woken.append(p)

    # ---- inputs: the port ------------------------------------------------------------------

    def link_up(self) -> bool:
        """The port is open (again). True if the stream resumes without a handshake (unacked
        samples are resent: a co-processor that kept running acknowledges them, one that
        restarted answers ``NO_SESSION`` and gets its HELLO then); False: call
        :meth:`send_hello`."""
        self.broken = False
        if self.ever_connected:
            self.counters.inc("reconnects")
        self.tx_log.clear()
        self._train_timeouts = 0
        # End any partial frame in the co-processor's receiver (an empty frame is ignored).
        self.log_tx("sync", NO_SEQ)
        self._emit(b"\x00", "sync")
        has_unacked = any(not e.acked for e in self.inflight)
        if has_unacked and self.info is not None and not self.need_handshake:
            self.session_ok = True
            self.go_back(loss=False)
            return True
        return False

    def link_lost(self, exc: BaseException | None) -> None:
        """The port failed or is gone: no session; waiting requests are woken to retry."""
        if not self.broken:
            log.warning("link lost: %s", exc)
            self.broken = True
        self.last_error = exc
        self.session_ok = False
        self._outbox.clear()
        for p in self.requests.values():
            if not p.done:
                p.retry_now = True
                self._wake(p)

    def close(self, err: BaseException) -> None:
        """The link is closed: every sample not acknowledged fails with ``err``."""
        self.closing = True
        for e in list(self.inflight) + list(self.queue):
            if not e.acked:
                self._completions.append((e.token, err))
        self.inflight.clear()
        self.queue.clear()
        for p in self.requests.values():
            self._wake(p)

    # ---- inputs: samples and requests ------------------------------------------------------

    def enqueue(self, entries: list[Entry]) -> None:
        """Queue samples (in order) and send what the window allows."""
        self.queue.extend(entries)
        self.counters.inc("samples_queued", len(entries))
        self.pump()

    @property
    def unacked(self) -> int:
        """Samples queued or in flight."""
        return len(self.queue) + sum(not e.acked for e in self.inflight)

    def next_request_seq(self) -> int:
        """A sequence number for a new stop-and-wait request (kept over its retries)."""
        seq = self.req_seq
        self.req_seq = (self.req_seq + 1) % SEQ_MOD
        return seq

    def send_request(self, seq: int, frame: bytes, name: str, hello: bool = False) -> Pending:
        """(Re)send a stop-and-wait request; it is answered when it shows in :meth:`take_woken`
        (``response`` set, or ``retry_now``)."""
        pend = Pending(seq, name, hello=hello)
        self.requests[seq] = pend
        tx = self.log_tx("req", seq, pending=pend)
        pend.tx_id = tx.tx_id
        pend.sent_at = self.clock()
        self._emit(frame, "req")
        return pend

    def end_request(self, pend: Pending) -> None:
        """Stop waiting for ``pend`` (answered or timed out)."""
        if self.requests.get(pend.seq) is pend:
            del self.requests[pend.seq]
        self._forget(pend)

    def _forget(self, pend: Pending) -> None:
        # Its transmission is answered or given up on: left in the log it would take the next
        # error that names no frame, and every later one would go to the frame before its own
        # (each lost answer then cost a full timeout instead of an immediate retry).
        if any(tx.pending is pend for tx in self.tx_log):
            self.tx_log = deque(tx for tx in self.tx_log if tx.pending is not pend)

    def request_rtt(self, mtype: MsgType, pend: Pending) -> None:
        """``pend`` was answered at its first attempt: a round trip sample (Karn)."""
        rtt = self.clock() - pend.sent_at
        self.counters.rtt.append(rtt)
        self.observe_rtt(mtype, rtt)

    def begin_handshake(self) -> None:
        """A HELLO/INFO handshake starts (the training stream waits)."""
        self.session_ok = False
        self.handshaking = True
        self.need_handshake = False

    def send_hello(self, attempt: int) -> tuple[Pending, float]:
        """Send (attempt > 0: again) the handshake's HELLO; returns it and its timeout."""
        if attempt:
            self.counters.inc("retries")
        unacked = next((e for e in self.inflight if not e.acked), None)
        nxt = unacked.seq if unacked is not None else self.train_next_seq
        seq = self.next_request_seq()
        frame = encode_frame(Hello(nxt), seq)
        return self.send_request(seq, frame, "HELLO", hello=True), self.timeout(
            MsgType.HELLO, len(frame)
        )

    def end_hello(self, pend: Pending) -> bool:
        """The handshake's HELLO was answered or timed out: True if a session began."""
        self.requests.pop(pend.seq, None)
        self._forget(pend)
        if isinstance(pend.response, Info):
            return True
        if isinstance(pend.response, ErrorReply):
            self.last_error = RemoteError(pend.response.code, pend.response.detail, "HELLO")
        elif not pend.done:
            self.counters.inc("timeouts")
        return False

    # ---- inputs: time ----------------------------------------------------------------------

    def tick(self) -> None:
        """Time passed: resend what timed out; fail the link after all retries."""
        if self.broken or not self.session_ok or self.handshaking:
            return
        oldest = next((e for e in self.inflight if not e.acked and not e.rejected), None)
        if oldest is None:
            return
        if self.frag_mode:
            self._check_frag_timer(oldest)
            return
        if self.clock() - oldest.last_sent < self.train_timeout():
            return
        self.counters.inc("timeouts")
        self._record(True, self.train_frame_len + _ACK_BYTES)
        self._train_timeouts += 1
        if self._train_timeouts > self.retries:
            self._train_timeouts = 0
            self.link_lost(LinkTimeout("training stream: no acknowledgement"))
            return
        self.go_back()

    def poll_timeout(self, poll_interval: float) -> float:
        """How long the driver may wait for input before :meth:`tick`: less than the poll
        interval while fragments wait for answers with a shorter timeout."""
        if not self.frag_mode:
            return poll_interval
        e = self._active_frag_entry()
        if e is None or e.frag is None or not e.frag.inflight:
            return poll_interval
        first = min(f.sent_at for f in e.frag.inflight.values())
        due = first + self.frag_timeout() - self.clock()
        return min(poll_interval, max(0.0005, due))

    @property
    def loss_estimate(self) -> float:
        """Share of the recent training transmissions lost (NaN before any)."""
        n = len(self.loss)
        return sum(lost for lost, _ in self.loss) / n if n else math.nan

    # ---- timeouts --------------------------------------------------------------------------

    def stall_timeout(self) -> float:
        return self.connect_timeout + self.train_timeout() * (self.retries + 1)

    def frame_time(self, nbytes: int) -> float:
        return nbytes * 10.0 / self.baudrate if self.baudrate > 0 else 0.0

    def request_timeout(self, msg: Message, frame_len: int) -> float:
        """Response timeout of stop-and-wait request ``msg`` (``frame_len`` bytes on the wire):
        a ``DOWNLOAD`` block's answer is timed by the block size asked for, not as a 1 KB frame."""
        resp = msg.max_len + DOWNLOAD_OVERHEAD if isinstance(msg, Download) else None
        return self.timeout(msg.TYPE, frame_len, resp)

    def timeout(self, mtype: MsgType, req_bytes: int, resp_bytes: int | None = None) -> float:
        """Response timeout of a request; ``resp_bytes``: its answer's frame size if known (else
        the largest of its type)."""
        resp = _RESPONSE_BYTES.get(mtype, 32) if resp_bytes is None else resp_bytes
        frames = 4.0 * self.frame_time(req_bytes + resp)
        est = self._req_rtt.get(mtype)
        if mtype not in _SLOW and est is not None and est[2] >= RTO_MIN_SAMPLES:
            # Measured round trips (this link, this device): a lost frame is noticed in a few
            # round trips instead of the fixed 70 ms, which is what keeps a noisy line moving.
            srtt, var, _ = est
            return max(self.min_rto, frames, srtt + 4.0 * var)
        base = max(self.min_timeout, frames)
        work = self.slow_work_time if mtype in _SLOW else self.work_time
        return base + work

    def observe_rtt(self, mtype: MsgType, rtt: float) -> None:
        est = self._req_rtt.get(mtype)
        if est is None:
            self._req_rtt[mtype] = (rtt, rtt / 2, 1)
            return
        srtt, var, n = est
        var = 0.75 * var + 0.25 * abs(srtt - rtt)
        srtt = 0.875 * srtt + 0.125 * rtt
        self._req_rtt[mtype] = (srtt, var, n + 1)

    def train_timeout(self) -> float:
        ft = self.frame_time(self.train_frame_len)
        return max(self.min_timeout, 4.0 * ft) + self.window * ft + self.work_time

    def take_completions(self) -> list[tuple[Any, TrainResult | BaseException]]:
        """Samples finished since the last call: ``(token, TrainResult or exception)``."""
        done, self._completions = self._completions, []
        return done

    def log_tx(
        self, kind: str, seq: int, entry: Entry | None = None, pending: Pending | None = None
    ) -> _Tx:
        self._tx_id += 1
        tx = _Tx(self._tx_id, kind, seq, entry, pending, self.clock())
        self.tx_log.append(tx)
        limit = 4 * self.window + 64
        while len(self.tx_log) > limit:
            self.tx_log.popleft()
        return tx

    def _send_train(self, e: Entry) -> None:
        if e.frame is None:
            e.frame = encode_frame(Train(e.label, e.features), e.seq)
            self.train_frame_len = len(e.frame)
        if e.sends:
            self.counters.inc("retransmitted_frames")
        tx = self.log_tx("train", e.seq, entry=e)
        e.last_tx = tx.tx_id
        e.last_sent = self.clock()
        e.sends += 1
        self._emit(e.frame, "train")

    def pump(self) -> None:
        """Send frames due for (re)transmission, then queued samples, in sequence order, while
        fewer than the congestion window are outstanding and the span stays within ``window``."""
        if not self.session_ok or self.broken or self.hold or self.closing:
            return
        self._choose_mode()
        if self.frag_mode:
            self._pump_frag()
            return
        limit = max(1, int(self._cwnd))
        outstanding = 0
        for e in self.inflight:
            if e.acked or e.rejected:
                continue
            if e.need_send:
                if outstanding >= limit:
                    return  # in order: nothing newer goes out first
                e.need_send = False
                self._send_train(e)
                if self.broken:
                    return
            outstanding += 1
        while self.queue and len(self.inflight) < self.window and outstanding < limit:
            e = self.queue.popleft()
            e.seq = self.train_next_seq
            self.train_next_seq = (self.train_next_seq + 1) % SEQ_MOD
            self.inflight.append(e)
            self._send_train(e)
            outstanding += 1
            if self.broken:
                return

    def go_back(self, loss: bool = True) -> None:
        """Resend every unacknowledged frame from the oldest, in order (go-back-N).

        A loss also halves the congestion window (at least 2; it grows back by one frame per
        window of acknowledgements): on a clean line the window stays full, on a noisy one the
        link backs off towards stop-and-wait instead of resending whole windows that are
        mostly corrupted.
        """
        unacked = [e for e in self.inflight if not e.acked and not e.rejected]
        if not unacked or self.broken or not self.session_ok:
            return
        self.counters.inc("go_backs")
        if loss:
            self._cwnd = max(min(_MIN_CWND, float(self.window)), self._cwnd / 2)
        for e in unacked:
            e.need_send = True
            # Nothing in flight counts any more; what the co-processor holds is resent
            # (harmless: fragments are idempotent) unless a bitmap says otherwise.
            self._clear_frags(e)
        self.pump()

    def _record(self, lost: bool, nbytes: int) -> None:
        """One training transmission's outcome, for the mode and fragment size choice."""
        self.loss.append((lost, nbytes))
        self._mode_outcomes += 1

    def _byte_survival(self) -> float | None:
        """Estimated probability that one byte crosses the line (both ways) intact."""
        n = len(self.loss)
        if n < _LOSS_MIN:
            return None
        ok = sum(not lost for lost, _ in self.loss)
        mean_bytes = sum(b for _, b in self.loss) / n
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

    def _set_mode(self, frag: bool) -> None:
        if frag == self.frag_mode:
            return
        self.frag_mode = frag
        self.counters.inc("mode_switches")
        self._mode_outcomes = 0
        self._chosen_at = 0
        log.info(
            "training stream: %s (recent loss %.0f %%)",
            f"fragments of {self.frag_size}" if frag else "whole frames",
            100.0 * sum(lost for lost, _ in self.loss) / max(1, len(self.loss)),
        )
        self.loss.clear()
        for e in self.inflight:
            e.frag = None
            e.need_send = not (e.acked or e.rejected)

    def _choose_mode(self) -> None:
        """Switch between whole frames and fragments on the measured loss (``fragments=None``)."""
        if self.fragments is False or not self._frag_supported:
            if self.frag_mode:
                self._set_mode(False)
            return
        if self._mode_outcomes < _LOSS_MIN or self._mode_outcomes - self._chosen_at < 4:
            return
        self._chosen_at = self._mode_outcomes
        surv = self._byte_survival()
        if surv is None:
            return
        total = self.info.input_len if self.info is not None else 102
        if self.frag_mode:
            self.frag_size = self._best_frag_size(total, surv)
            whole = self.train_frame_len + _ACK_BYTES
            if self.fragments is None and 1.0 - surv**whole < FRAG_OFF_LOSS:
                self._set_mode(False)
        elif self.fragments is None:
            lost = sum(lost for lost, _ in self.loss) / len(self.loss)
            if lost > FRAG_ON_LOSS:
                self.frag_size = self._best_frag_size(total, surv)
                self._set_mode(True)

    def frag_timeout(self) -> float:
        """How long a fragment waits for its answer, from the moment its last byte left (the
        line's pace is tracked), before it is sent again: the measured round trips
        (srtt + 4 rttvar) once known, else four frame times of a fragment and its answer plus
        the co-processor's work time."""
        est = self._req_rtt.get(MsgType.TRAIN_FRAG)
        answer = self.frame_time(_ACK_BYTES + FRAG_UNIT)
        if est is not None and est[2] >= RTO_MIN_SAMPLES:
            srtt, var, _ = est
            rto = max(_FRAG_MIN_RTO, 2.0 * answer, srtt + 4.0 * var) * self._frag_backoff
            return min(rto, self.train_timeout())
        frames = 4.0 * (answer + self.frame_time(self.frag_size + _FRAG_OVERHEAD))
        return max(_FRAG_MIN_RTO, frames) + self.work_time

    def _active_frag_entry(self) -> Entry | None:
        return next((e for e in self.inflight if not e.acked and not e.rejected), None)

    def _pump_frag(self) -> None:
        """Fragments of the oldest unacknowledged sample: the units neither held nor in flight,
        at most ``2 × window`` fragments outstanding. Later samples wait for its ``TRAIN_ACK``
        (the co-processor assembles only the expected one)."""
        e = self._active_frag_entry()
        if e is None:
            if not self.queue:
                return
            e = self.queue.popleft()
            e.seq = self.train_next_seq
            self.train_next_seq = (self.train_next_seq + 1) % SEQ_MOD
            self.inflight.append(e)
        e.need_send = False
        total = len(e.features)
        units = frag_units(total)
        if e.frag is None:
            e.frag = _FragState(units)
        fs = e.frag
        if fs.inflight and all(f.doubtful for f in fs.inflight.values()):
            # Every answer still due was corrupted: no bitmap will tell; send them again.
            for f in fs.inflight.values():
                self._record(True, f.n * FRAG_UNIT + _FRAG_OVERHEAD + _ACK_BYTES)
            self._clear_frags(e)
        if e.known_applied:
            # Applied already (a later sample was acknowledged): one short fragment fetches
            # the duplicate acknowledgement.
            if not fs.inflight:
                self._send_frag(e, 0, 1)
            return
        per = max(1, self.frag_size // FRAG_UNIT)
        limit = 2 * self.window
        busy = fs.busy
        u = 0
        while u < units and len(fs.inflight) < limit and not self.broken:
            if busy >> u & 1:
                u += 1
                continue
            n = 1
            while n < per and u + n < units and not busy >> (u + n) & 1:
                n += 1
            self._send_frag(e, u, n)
            busy |= ((1 << n) - 1) << u
            u += n
        if not fs.inflight and not self.broken:
            # All units held by the last bitmap but no TRAIN_ACK (it was lost): ask again.
            self._send_frag(e, 0, 1)

    @staticmethod
    def _clear_frags(e: Entry) -> None:
        """Nothing of ``e`` in flight counts any more: what is missing is sent again. (Their
        transmissions stay in the log: an answer still on its way is attributed to the oldest
        one, never to a newer resend, which would make later fragments look lost.)"""
        if e.frag is not None:
            e.frag.inflight.clear()

    def _send_frag(self, e: Entry, first: int, n: int) -> None:
        assert e.frag is not None
        fs = e.frag
        total = len(e.features)
        off = first * FRAG_UNIT
        data = e.features[off : min(total, off + n * FRAG_UNIT)]
        frame = encode_frame(TrainFrag(e.label, total, off, data), e.seq)
        tx = self.log_tx("frag", e.seq, entry=e)
        tx.offset = off
        now = self.clock()
        # Its timeout runs from when its last byte is on the wire (after what is queued).
        self._line_free_at = max(now, self._line_free_at) + self.frame_time(len(frame))
        mask = ((1 << n) - 1) << first
        ftx = _FragTx(first, n, tx.tx_id, self._line_free_at, bool(fs.sent & mask))
        if ftx.resend:
            self.counters.inc("retransmitted_frames")
        fs.sent |= ftx.mask
        fs.inflight[first] = ftx
        e.last_tx = tx.tx_id
        e.last_sent = now
        e.sends += 1
        self._emit(frame, "frag")

    def _on_frag_ack(self, seq: int, ack: FragAck) -> None:
        """The bitmap of the units held: fragments sent before the one answered whose units
        are missing were lost (answers come in order) and go out again."""
        self.counters.inc("frag_acks")
        tx = self._attribute("frag", seq, offset=ack.offset)
        e = self._find_entry(seq)
        if e is None or e.acked or e.rejected or e.frag is None or self.handshaking:
            self.counters.inc("stale_responses")
            return
        fs = e.frag
        fs.held = ack.units() & ((1 << fs.units) - 1)
        upto = tx.tx_id if tx is not None else e.last_tx
        now = self.clock()
        self._frag_progress = now
        self.last_progress = now
        self._train_timeouts = 0
        self._frag_backoff = 1
        for first, f in list(fs.inflight.items()):
            held = fs.held & f.mask == f.mask
            if not held and f.tx_id > upto:
                continue  # sent after the one answered: its answer is still to come
            del fs.inflight[first]
            self._record(not held, f.n * FRAG_UNIT + _FRAG_OVERHEAD + _ACK_BYTES)
            if held and f.tx_id == upto and not f.doubtful:
                self._observe_frag_rtt(f, now)
        self.pump()

    def _observe_frag_rtt(self, f: _FragTx, now: float) -> None:
        if not f.resend:  # Karn: only unambiguous round trips
            self.observe_rtt(MsgType.TRAIN_FRAG, now - f.sent_at)

    def _frag_tx_failed(self, tx: _Tx, corrupted_answer: bool) -> None:
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
            self._record(True, f.n * FRAG_UNIT + _FRAG_OVERHEAD + _ACK_BYTES)
        self.pump()

    def _attribute(
        self, kind: str | frozenset[str] | None, seq: int, offset: int | None = None
    ) -> _Tx | None:
        """Pop the oldest unanswered transmission matching (kind, seq[, offset]) and all older
        ones. ``kind`` may be a set of kinds."""
        kinds = frozenset((kind,)) if isinstance(kind, str) else kind
        for i, tx in enumerate(self.tx_log):
            if (
                tx.seq == seq
                and tx.kind != "sync"
                and (kinds is None or tx.kind in kinds)
                and (offset is None or tx.offset == offset)
            ):
                for _ in range(i + 1):
                    self.tx_log.popleft()
                return tx
        return None

    def receive(self, item: Frame | FrameError) -> None:
        """A frame (or an undecodable one) arrived from the co-processor."""
        if isinstance(item, FrameError):
            self.counters.inc(FRAME_ERROR_COUNTER[item.kind])
            # Most likely the answer to the oldest unanswered transmission: its fate is unknown.
            self._tx_failed(self._pop_unanswered(), corrupted_answer=True)
            return
        self.counters.inc("frames_received")
        msg = item.msg
        if isinstance(msg, TrainAck):
            self._on_train_ack(item.seq, msg)
        elif isinstance(msg, FragAck):
            self._on_frag_ack(item.seq, msg)
        elif isinstance(msg, ErrorReply):
            self._on_error(item.seq, msg)
        elif msg.TYPE & 0x80:
            self._on_response(item.seq, msg)
        else:
            self.counters.inc("stale_responses")

    def _pop_unanswered(self) -> _Tx | None:
        """The oldest transmission still waiting for its answer, for an error that names none.

        Answers come in order, so that is the head of the log, except that an answer lost
        whole (or merged with the next one by a corrupted delimiter) leaves its transmission
        behind at the head, where it would absorb every later error. Transmissions much older
        than the round trip time are taken as answered-and-lost and dropped first.
        """
        srtt = self.srtt
        if srtt is None and self._req_rtt:  # no training yet: the requests' round trips
            srtt = min(est[0] for est in self._req_rtt.values())
        if srtt is not None:
            old = self.clock() - max(_MIN_STALE_AGE, 3.0 * srtt)
            while len(self.tx_log) > 1 and self.tx_log[0].sent_at < old:
                self.tx_log.popleft()
        return self.tx_log.popleft() if self.tx_log else None

    def _tx_failed(self, tx: _Tx | None, corrupted_answer: bool = False) -> None:
        """A transmission's answer was corrupted or it arrived corrupted: retry it now."""
        if tx is None:
            return
        if tx.kind == "frag":
            self._frag_tx_failed(tx, corrupted_answer)
            return
        if tx.kind == "train" and self.frag_mode:
            # Sent as a whole frame before the switch: the fragments of the oldest sample
            # are what counts now.
            self._record(True, self.train_frame_len + _ACK_BYTES)
            return
        if tx.kind == "train" and tx.entry is not None:
            self._record(True, self.train_frame_len + _ACK_BYTES)
            oldest = next((e for e in self.inflight if not e.acked), None)
            if oldest is not None and not tx.entry.acked and oldest.last_tx <= tx.tx_id:
                self.go_back()
        elif tx.kind == "req" and tx.pending is not None:
            p = tx.pending
            if p.tx_id == tx.tx_id and not p.done:
                p.retry_now = True
                self._wake(p)

    def _find_entry(self, seq: int) -> Entry | None:
        if not self.inflight:
            return None
        idx = (seq - self.inflight[0].seq) % SEQ_MOD
        if idx < len(self.inflight):
            e = self.inflight[idx]
            if e.seq == seq:
                return e
        return None

    def _on_train_ack(self, seq: int, ack: TrainAck) -> None:
        tx = self._attribute(_TRAIN_ACK_TYPES, seq)
        e = self._find_entry(seq)
        if ack.dup:
            self.counters.inc("duplicate_acks")
        if tx is not None and (tx.kind == "frag") == self.frag_mode:
            self._record_train_success(tx)
        if e is None or e.acked or e.rejected or self.handshaking:
            self.counters.inc("stale_responses")
            return
        e.acked = True
        self._cwnd = min(float(self.window), self._cwnd + 1.0 / self._cwnd)
        self._train_timeouts = 0
        self._frag_backoff = 1
        self._frag_progress = self.clock()
        self.counters.inc("samples_acked")
        if e.frag is not None and tx is not None and tx.kind == "frag" and self.frag_mode:
            # The sample is complete: fragments sent before the one answered got through.
            for f in e.frag.inflight.values():
                if f.tx_id < tx.tx_id:
                    self._record(False, f.n * FRAG_UNIT + _FRAG_OVERHEAD + _ACK_BYTES)
        e.frag = None
        if e.sends == 1 and not ack.dup and (tx is None or tx.kind == "train"):
            rtt = self.clock() - e.last_sent
            self.counters.train_rtt.append(rtt)
            self.srtt = rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * rtt
        pred = None if (ack.dup and ack.pred == PRED_UNKNOWN) else ack.pred
        boot = self.info.boot_count if self.info is not None else -1
        res = TrainResult(
            e.seq,
            pred,
            ack.loss_q15,
            ack.applied,
            ack.disabled,
            ack.dup,
            e.sends,
            self.session,
            boot,
        )
        self._completions.append((e.token, res))
        # Older samples still unacknowledged were applied (in-order), their acks were lost:
        # ask again (duplicate acks carry the original outcome) unless already re-asked.
        t = tx.tx_id if tx is not None else e.last_tx
        for older in self.inflight:
            if older is e:
                break
            if self.frag_mode and not older.acked and not older.rejected:
                # One short fragment each fetches the duplicate acknowledgement (the pump
                # sends it when the sample is the oldest).
                older.known_applied = True
                self._clear_frags(older)
            elif not older.acked and not older.rejected and older.last_tx < t:
                older.need_send = False
                self._send_train(older)
        self._advance()

    def _record_train_success(self, tx: _Tx) -> None:
        """A training transmission was answered (acknowledged, or refused as out of order: it
        arrived either way)."""
        if tx.kind == "frag":
            e = tx.entry
            f = e.frag.inflight.get(tx.offset // FRAG_UNIT) if e and e.frag else None
            n = f.n * FRAG_UNIT if f is not None else self.frag_size
            self._record(False, n + _FRAG_OVERHEAD + _ACK_BYTES)
            if f is not None and f.tx_id == tx.tx_id and not f.doubtful:
                self._observe_frag_rtt(f, self.clock())
        else:
            self._record(False, self.train_frame_len + _ACK_BYTES)

    def _advance(self) -> None:
        self.last_progress = self.clock()
        changed = False
        while self.inflight and (self.inflight[0].acked or self.inflight[0].rejected):
            e = self.inflight.popleft()
            changed = True
            if e.rejected:
                # Not applied and `expected` did not move (BAD_LENGTH): the later samples take
                # its place.
                for later in self.inflight:
                    later.seq = (later.seq - 1) % SEQ_MOD
                    later.frame = None
                    later.frag = None
                self.train_next_seq = (self.train_next_seq - 1) % SEQ_MOD
                self.go_back(loss=False)
        if changed:
            self.pump()

    def _on_error(self, seq: int, err: ErrorReply) -> None:
        code = err.code
        if code == ErrorCode.BAD_FRAME or seq == NO_SEQ:
            self.counters.inc("remote_frame_errors")
            self._tx_failed(self._pop_unanswered())
            return
        kind = _TRAIN_ACK_TYPES if code in _TRAIN_CODES else "req" if code in _REQ_CODES else None
        tx = self._attribute(kind, seq)
        if tx is None and code == ErrorCode.NO_SESSION:
            tx = self._attribute(None, seq)
        if tx is None:
            self.counters.inc("stale_responses")
            return
        if tx.kind == "req":
            if code == ErrorCode.NO_SESSION:
                self.counters.inc("no_session")
            self._on_response(seq, err, tx)
            return
        e = tx.entry
        assert e is not None
        if code == ErrorCode.NO_SESSION:
            self.counters.inc("no_session")
            if not self.handshaking:
                self.request_handshake()
        elif code == ErrorCode.OUT_OF_ORDER:
            self.counters.inc("out_of_order")
            if (tx.kind == "frag") == self.frag_mode:
                self._record_train_success(tx)
            if self.frag_mode:
                # Fragments of the oldest sample only; a refused one of it: start it over.
                if tx.kind == "frag" and e is self._active_frag_entry() and e.frag:
                    self._clear_frags(e)
                    e.frag.held = 0
                    self.pump()
                return
            oldest = next((x for x in self.inflight if not x.acked), None)
            if oldest is not None and oldest.last_tx < tx.tx_id:
                self.go_back()
        elif code in (ErrorCode.BAD_LABEL, ErrorCode.BAD_LENGTH):
            if e.acked or e.rejected or self._find_entry(e.seq) is not e:
                return
            # BAD_LABEL consumed the sequence number (like an ack); BAD_LENGTH did not (§2).
            if code == ErrorCode.BAD_LABEL:
                e.acked = True
            else:
                e.rejected = True
            self.counters.inc("samples_failed")
            self._completions.append((e.token, RemoteError(code, err.detail, "TRAIN")))
            self._advance()
        elif (
            code == ErrorCode.UNKNOWN_TYPE
            and err.detail == MsgType.TRAIN_FRAG
            and tx.kind == "frag"
            and self._frag_supported
        ):
            # A co-processor without fragments (§2.1): whole frames from now on.
            log.warning("the co-processor does not take TRAIN_FRAG: whole training frames only")
            self._frag_supported = False
            self._set_mode(False)
            self.pump()
        else:  # BAD_VERSION / UNKNOWN_TYPE: our frame arrived damaged yet passed the CRC
            self._tx_failed(tx)

    def _on_response(self, seq: int, msg: Message, tx: _Tx | None = None) -> None:
        if tx is None:
            tx = self._attribute("req", seq)
        p = self.requests.get(seq)
        if p is None or p.done or tx is None:
            self.counters.inc("stale_responses")
            return
        if p.hello and isinstance(msg, Info):
            self._on_session(msg)
        p.response = msg
        self._wake(p)

    def request_handshake(self) -> None:
        if not self.need_handshake:
            self.need_handshake = True
            self.session_ok = False

    def _on_session(self, info: Info) -> None:
        """A new session began (INFO for our HELLO): renumber and resend the unacked samples."""
        old = self.info
        if old is not None and info.boot_count != old.boot_count:
            self.counters.inc("coprocessor_resets")
            log.warning(
                "co-processor restarted (boot %d -> %d, %d training steps held)",
                old.boot_count,
                info.boot_count,
                info.train_steps,
            )
        if info.protocol_version != PROTOCOL_VERSION:
            log.warning("co-processor speaks protocol %d", info.protocol_version)
        self.info = info
        self.session += 1
        self.counters.inc("handshakes")
        self.train_frame_len = len(encode_frame(Train(0, bytes(info.input_len)), 0))
        unacked = [e for e in self.inflight if not e.acked and not e.rejected]
        e0 = info.next_train_seq
        if unacked:
            u = unacked[0].seq
            ahead = (e0 - u) % SEQ_MOD
            if 0 < ahead <= (self.train_next_seq - u) % SEQ_MOD:
                # The co-processor resumed its session: samples before `e0` were applied (their
                # acks were lost) and keep their numbers; resending them yields duplicate acks.
                for e in unacked:
                    e.known_applied = (e.seq - u) % SEQ_MOD < ahead
            else:
                # A new session at `e0`: nothing sent before the HELLO counts; renumber.
                self.inflight = deque(unacked)
                for e in unacked:
                    e.seq = e0
                    e.frame = None
                    e.known_applied = False
                    e0 = (e0 + 1) % SEQ_MOD
                self.train_next_seq = e0
        else:
            self.inflight.clear()
            self.train_next_seq = e0
        for e in unacked:
            # Any HELLO discards a partly assembled sample (§2.1).
            e.frag = None
        self.tx_log = deque(tx for tx in self.tx_log if tx.kind == "req")
        self._train_timeouts = 0
        self.session_ok = True
        self.need_handshake = False
        self.handshaking = False
        self.ever_connected = True
        self.last_error = None
        for e in unacked:
            e.need_send = True
        self.pump()

    def _check_frag_timer(self, e: Entry) -> None:
        """No answer for the fragments in flight within the fragment timeout: send them again.
        The link fails only when no fragment got through for the stall time."""
        fs = e.frag
        if fs is None or not fs.inflight:
            self.pump()
            return
        now = self.clock()
        if now - min(f.sent_at for f in fs.inflight.values()) < self.frag_timeout():
            return
        self.counters.inc("timeouts")
        self._frag_backoff = min(2, 2 * self._frag_backoff)
        if self._train_timeouts == 0:
            self._stall_since = now
        self._train_timeouts += 1
        stall = self.train_timeout() * (self.retries + 1)
        if self._train_timeouts > self.retries and now - self._stall_since > stall:
            self._train_timeouts = 0
            self.link_lost(LinkTimeout("training stream: no fragment acknowledged"))
            return
        for f in fs.inflight.values():
            self._record(True, f.n * FRAG_UNIT + _FRAG_OVERHEAD + _ACK_BYTES)
        self._clear_frags(e)
        self.pump()
