"""The link's I/O loop: :class:`OdtClient` owns the port, a reader thread and the callers' waits,
and drives :class:`~.arq.Arq` (the retransmission logic) under one lock.

It talks to a co-processor (ESP32 or the ``odt-emu`` emulator) over anything
:func:`serial.serial_for_url` opens: ``/dev/ttyUSB0``, ``/dev/pts/N``, ``socket://host:port``.
Training samples are pipelined (go-back-N, exactly once and in order), every other request is
stop-and-wait with timeouts and retries, and the link survives unplugging and co-processor resets.

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
import logging
import math
import select
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import Future, InvalidStateError
from typing import Any

import numpy as np
import serial

from .arq import Arq, Entry, TrainResult
from .framing import FrameDecoder, encode_frame
from .protocol import (
    MAX_CHUNK,
    MAX_PAYLOAD,
    Download,
    DownloadData,
    ErrorCode,
    ErrorReply,
    GetStats,
    Hello,
    Infer,
    Info,
    LinkError,
    LinkTimeout,
    Message,
    Ok,
    Prediction,
    RemoteError,
    ResetPretrained,
    Restore,
    Save,
    SetParams,
    Stats,
    UploadBegin,
    UploadChunk,
    UploadEnd,
    features_to_bytes,
)
from .stats import LinkStats

log = logging.getLogger(__package__)

# What a pyserial port raises when the device goes away (a port closed under a concurrent call
# can also raise TypeError/AttributeError/ValueError from inside pyserial).
#: Longest a request's timeout grows to by backing off (a slow first timeout stays as it is).
REQUEST_BACKOFF_MAX_S = 1.0
#: Silent timeouts in a row (no answer at all, not even a damaged one) before backing off.
REQUEST_BACKOFF_AFTER = 2

_PORT_ERRORS = (serial.SerialException, OSError, TypeError, ValueError, AttributeError)

_Done = list[tuple[Any, TrainResult | BaseException]]


class _Backoff:
    """A stop-and-wait request's response timeout over its retries (RFC 6298 5.5, gated).

    A round trip measured on a quiet link makes a short timeout, and a co-processor stalled for
    a moment (a loaded machine) must not exhaust every retry within it: the timeout doubles,
    up to `REQUEST_BACKOFF_MAX_S`, once `REQUEST_BACKOFF_AFTER` timeouts in a row passed in
    silence. A noisy line loses single answers whole (a corrupted delimiter) between damaged
    ones, which prove it alive; backing off on those made a model download at 5 % byte errors
    1.7x slower.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._silent = 0

    def silent(self) -> None:
        """The attempt timed out without any answer."""
        self._silent += 1
        if self._silent >= REQUEST_BACKOFF_AFTER:
            self.timeout = min(2.0 * self.timeout, max(self.timeout, REQUEST_BACKOFF_MAX_S))

    def damaged(self) -> None:
        """The attempt's answer (or the request) arrived damaged: retried at once."""
        self._silent = 0


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
        self._url = url
        self.backoff = backoff
        self.max_queue = max_queue
        self.poll_interval = poll_interval
        self._serial_kwargs = dict(serial_kwargs or {})
        self._arq = Arq(
            baudrate=baudrate,
            window=window,
            retries=retries,
            min_timeout=min_timeout,
            min_rto=min_rto,
            work_time=work_time,
            slow_work_time=slow_work_time,
            connect_timeout=connect_timeout,
            fragments=fragments,
        )
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._req_lock = threading.Lock()
        self._port: Any = None
        self._decoder = FrameDecoder(direction="response")
        self._thread: threading.Thread | None = None
        self._closed = False
        self._crash: BaseException | None = None
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
        info = self._arq.info
        assert info is not None
        return info

    def close(self) -> None:
        """Stop the reader thread, close the device and fail everything still pending."""
        with self._lock:
            if self._closed:
                return
            self._arq.closing = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        with self._lock:
            self._closed = True
            self._close_port_locked()
            self._arq.close(LinkError("link closed"))
            done = self._sync_locked()
        self._complete(done)

    def __enter__(self) -> OdtClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def info(self) -> Info | None:
        """``INFO`` of the current session (``None`` before the first)."""
        return self._arq.info

    @property
    def session(self) -> int:
        """Sessions (HELLO/INFO handshakes) so far; see :attr:`TrainResult.session`."""
        return self._arq.session

    @property
    def connected(self) -> bool:
        """A session is up (never after :meth:`close`)."""
        with self._lock:
            a = self._arq
            return a.session_ok and not a.broken and not (a.closing or self._closed)

    def link_stats(self) -> LinkStats:
        """Snapshot of the link counters."""
        with self._lock:
            return self._arq.counters.snapshot()

    @property
    def train_frame_bytes(self) -> int:
        """Bytes of one training frame on the wire for the current model."""
        return self._arq.train_frame_len

    @property
    def fragmenting(self) -> bool:
        """The training stream is sent as fragments now (§2.1)."""
        return self._arq.frag_mode

    @property
    def frag_size(self) -> int:
        """Features per fragment now (a multiple of 16)."""
        return self._arq.frag_size

    @property
    def train_loss_estimate(self) -> float:
        """Share of the recent training transmissions lost (NaN before any)."""
        with self._lock:
            return self._arq.loss_estimate

    @property
    def fragments(self) -> bool | None:
        """How training samples are sent (see the class docstring); settable."""
        return self._arq.fragments

    @fragments.setter
    def fragments(self, value: bool | None) -> None:
        with self._lock:
            self._arq.fragments = value

    @property
    def window(self) -> int:
        """Training frames in flight at most."""
        return self._arq.window

    @property
    def baudrate(self) -> int:
        """UART speed (0 = unthrottled)."""
        return self._arq.baudrate

    @property
    def retries(self) -> int:
        """Retransmissions of a request before the link is declared failed."""
        return self._arq.retries

    @property
    def connect_timeout(self) -> float:
        """How long :meth:`open` and requests wait for a session."""
        return self._arq.connect_timeout

    # ---- requests --------------------------------------------------------------------------

    def hello(self) -> Info:
        """Flush the training stream and start a new session; returns ``INFO``."""
        with self._lock:
            self._arq.hold += 1
        try:
            self._wait_idle(None, inflight_only=True)
            with self._lock:
                nxt = self._arq.train_next_seq
            resp = self._request(Hello(nxt), Info, hello=True)
            assert isinstance(resp, Info)
            return resp
        finally:
            with self._lock:
                self._arq.hold -= 1
                self._arq.pump()
                done = self._sync_locked()
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
            boot = self._arq.info.boot_count if self._arq.info else None
            self._request(UploadBegin(len(blob), crc), Ok)
            off = 0
            chunk = _Chunker(self.retries, self._arq.stall_timeout())
            while off < len(blob):
                n = chunk.size
                msg = UploadChunk(off, blob[off : off + n])
                if chunk.call(self._request, msg, Ok) is not None:
                    off += n
            try:
                self._request(UploadEnd(), Ok)
            except RemoteError as exc:
                restarted = self._arq.info is not None and self._arq.info.boot_count != boot
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
        chunk = _Chunker(self.retries, self._arq.stall_timeout())
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
        info = self._arq.info
        for lab in labels:
            if not 0 <= lab <= 0xFF or (info is not None and lab >= info.classes):
                raise ValueError(f"label {lab} out of range")
        futures: list[Future[TrainResult]] = [Future() for _ in labels]
        entries = [
            Entry(lab, row, fut) for lab, row, fut in zip(labels, rows, futures, strict=True)
        ]
        deadline = time.monotonic() + (self.connect_timeout if timeout is None else timeout)
        i = 0
        with self._lock:
            while i < len(entries):
                self._check_open_locked()
                room = self.max_queue - len(self._arq.queue)
                if room <= 0:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise LinkTimeout("training queue full")
                    self._cond.wait(min(left, 0.1))
                    continue
                batch = entries[i : i + room]
                self._arq.enqueue(batch)
                i += len(batch)
                self._flush_output_locked()
            done = self._sync_locked()
        self._complete(done)
        return futures

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
            return self._arq.unacked

    # ---- internals: helpers ----------------------------------------------------------------

    def _check_features(self, features: Any) -> bytes:
        feats = features_to_bytes(features)
        info = self._arq.info
        if info is not None and len(feats) != info.input_len:
            raise ValueError(f"{len(feats)} features, the model takes {info.input_len}")
        if len(feats) > MAX_PAYLOAD - 1:
            raise ValueError("too many features for one frame")
        return feats

    def _check_open_locked(self) -> None:
        if self._arq.closing or self._closed:
            crashed = self._crash
            raise LinkError(
                f"link closed: reader failed: {crashed!r}" if crashed else "link closed"
            )

    def _wait_session(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        a = self._arq
        with self._lock:
            while not (a.session_ok and not a.broken):
                self._check_open_locked()
                left = deadline - time.monotonic()
                if left <= 0:
                    why = f": {a.last_error}" if a.last_error else ""
                    raise LinkTimeout(
                        f"no session with the co-processor within {timeout:.1f} s{why}"
                    )
                self._cond.wait(min(left, 0.1))

    def _wait_idle(self, timeout: float | None, inflight_only: bool = False) -> None:
        start = time.monotonic()
        a = self._arq
        with self._lock:
            while a.inflight or (a.queue and not inflight_only):
                self._check_open_locked()
                now = time.monotonic()
                if timeout is not None:
                    left = start + timeout - now
                else:
                    left = max(start, a.last_progress) + a.stall_timeout() - now
                if left <= 0:
                    n = len(a.inflight) + len(a.queue)
                    why = f"after {timeout:.1f} s" if timeout is not None else "(no progress)"
                    raise LinkTimeout(f"flush: {n} samples still pending {why}")
                self._cond.wait(min(left, 0.1))

    def _flush_output_locked(self) -> None:
        """Write the state machine's frames and wake the callers it answered."""
        for out in self._arq.take_output():
            if not self._write_locked(out.data):
                break
            self._arq.wrote(out)
        for p in self._arq.take_woken():
            if p.waiter is not None:
                p.waiter.set()
        self._cond.notify_all()

    def _sync_locked(self) -> _Done:
        """After every input to the state machine: its output, and the samples it finished
        (to complete outside the lock)."""
        self._flush_output_locked()
        return self._arq.take_completions()

    @staticmethod
    def _complete(done: _Done) -> None:
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

    def _write_locked(self, data: bytes) -> bool:
        port = self._port
        if port is None or self._arq.broken:
            return False
        try:
            port.write(data)
        except _PORT_ERRORS as exc:
            self._arq.link_lost(exc)
            return False
        return True

    # ---- internals: stop-and-wait requests -------------------------------------------------

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
        a = self._arq
        with self._req_lock:
            with self._lock:
                self._check_open_locked()
                seq = a.next_request_seq()
                a.counters.inc("requests")
            frame = encode_frame(msg, seq)
            backoff = _Backoff(a.request_timeout(msg, len(frame)))
            attempts = 0
            started = time.monotonic()
            while True:
                self._wait_session(self.connect_timeout)
                with self._lock:
                    self._check_open_locked()
                    pend = a.send_request(seq, frame, name, hello=hello)
                    pend.waiter = threading.Event()
                    done = self._sync_locked()
                self._complete(done)
                got = pend.waiter.wait(backoff.timeout)
                with self._lock:
                    a.end_request(pend)
                    self._check_open_locked()
                resp = pend.response
                if resp is not None:
                    if isinstance(resp, ErrorReply):
                        if resp.code == ErrorCode.NO_SESSION and not hello:
                            with self._lock:
                                a.request_handshake()
                                self._cond.notify_all()
                        else:
                            raise RemoteError(resp.code, resp.detail, name)
                    elif isinstance(resp, expect):
                        if attempts == 0:  # Karn: only unambiguous round trips count
                            with self._lock:
                                a.request_rtt(msg.TYPE, pend)
                        return resp
                    else:
                        raise LinkError(f"{name}: unexpected response {type(resp).__name__}")
                elif not got:
                    with self._lock:
                        a.counters.inc("timeouts")
                    backoff.silent()
                else:  # retry now: a damaged answer or request, or the link came back
                    backoff.damaged()
                attempts += 1
                # A HELLO is retried for connect_timeout at least (a noisy line loses many).
                if attempts > retries and (
                    not hello or time.monotonic() - started > self.connect_timeout
                ):
                    raise LinkTimeout(f"{name} (seq {seq}): no response after {attempts} attempts")
                with self._lock:
                    a.counters.inc("retries")

    # ---- internals: reader thread ----------------------------------------------------------

    def _lost_locked(self, exc: BaseException | None) -> None:
        self._arq.link_lost(exc)
        self._flush_output_locked()

    def _close_port_locked(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(Exception):
                port.close()

    def _run(self) -> None:
        delay = self.backoff[0]
        a = self._arq
        try:
            while not a.closing:
                if a.broken:
                    if self._connect():
                        delay = self.backoff[0]
                    else:
                        with self._lock:
                            if self._port is not None:
                                self._lost_locked(a.last_error or LinkTimeout("HELLO"))
                        self._sleep(delay)
                        delay = min(delay * 2, self.backoff[1])
                    continue
                if a.need_handshake:
                    if not self._handshake():
                        with self._lock:
                            self._lost_locked(LinkTimeout("HELLO: no INFO"))
                    continue
                with self._lock:
                    wait = a.poll_timeout(self.poll_interval)
                self._poll(wait)
                with self._lock:
                    a.tick()
                    done = self._sync_locked()
                self._complete(done)
        except Exception as exc:  # a bug: fail loudly rather than hang the callers
            log.exception("odt link reader crashed")
            with self._lock:
                self._crash = exc
                a.closing = True
                self._cond.notify_all()
        finally:
            with self._lock:
                self._close_port_locked()

    def _sleep(self, seconds: float) -> None:
        with self._lock:
            if not self._arq.closing:
                self._cond.wait(seconds)

    def _connect(self) -> bool:
        a = self._arq
        with self._lock:
            self._close_port_locked()
        try:
            url = self._resolve_url()
            kwargs = {"baudrate": self.baudrate or 115200, "timeout": 0, "write_timeout": 2.0}
            kwargs.update(self._serial_kwargs)
            port = serial.serial_for_url(url, **kwargs)
        except (serial.SerialException, OSError, ValueError) as exc:
            with self._lock:
                a.last_error = exc
            log.debug("open failed: %s", exc)
            return False
        with self._lock:
            if a.closing:
                with contextlib.suppress(Exception):
                    port.close()
                return False
            self._port = port
            self._decoder.reset()
            resumed = a.link_up()
            done = self._sync_locked()
        self._complete(done)
        if resumed:
            return not a.broken
        return self._handshake()

    def _handshake(self) -> bool:
        """HELLO → INFO, from the reader thread (reads inline). False after all retries."""
        a = self._arq
        with self._lock:
            a.begin_handshake()
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
                    if a.closing or a.broken:
                        return False
                    pend, timeout = a.send_hello(attempt)
                    done = self._sync_locked()
                self._complete(done)
                deadline = pend.sent_at + timeout
                while not pend.done and not a.closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._poll(min(left, self.poll_interval))
                with self._lock:
                    if a.end_hello(pend):
                        return True
            return False
        finally:
            with self._lock:
                a.handshaking = False

    def _poll(self, timeout: float) -> None:
        """Read what arrives within ``timeout`` and dispatch it."""
        port = self._port
        if port is None or self._arq.broken:
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
                    self._lost_locked(exc)
            return
        if not data:
            return
        with self._lock:
            self._arq.counters.inc("bytes_received", len(data))
            for item in self._decoder.feed(data):
                self._arq.receive(item)
            done = self._sync_locked()
        self._complete(done)
