"""The link's retransmission state machine (terrain_odt.link.arq) alone: a fake clock, frames
scripted by hand, no threads, no port. What goes out is decoded and checked frame by frame."""

from __future__ import annotations

from dataclasses import replace

import pytest

from terrain_odt.link import (
    NO_SEQ,
    PRED_UNKNOWN,
    Arq,
    Entry,
    ErrorCode,
    ErrorReply,
    FragAck,
    Frame,
    FrameError,
    FrameErrorKind,
    Hello,
    Info,
    LinkTimeout,
    Message,
    Train,
    TrainAck,
    TrainFrag,
    TrainResult,
    decode_frame,
)

INFO = Info(1, 0x000100, 7, 0xABCD, 4, 3, 1, 0, 0, 1, 0)


class Clock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def sent(arq: Arq) -> list[Frame]:
    """The frames the machine wants written (the sync byte left out), decoded."""
    out = []
    for o in arq.take_output():
        arq.wrote(o)
        if o.data != b"\x00":
            out.append(decode_frame(o.data, direction="request"))
    return out


def connect(arq: Arq, info: Info = INFO) -> None:
    """Port up, HELLO -> INFO: a session."""
    assert arq.link_up() is False  # nothing to resume: a handshake
    arq.begin_handshake()
    pend, timeout = arq.send_hello(0)
    assert timeout > 0
    (hello,) = sent(arq)
    assert isinstance(hello.msg, Hello)
    arq.receive(Frame(hello.seq, info))
    assert arq.end_hello(pend)
    arq.handshaking = False
    assert arq.session_ok


def make(clock: Clock, **kw: object) -> Arq:
    kw.setdefault("fragments", False)
    arq = Arq(baudrate=0, clock=clock, **kw)  # type: ignore[arg-type]
    connect(arq)
    return arq


def queue(arq: Arq, n: int, features: bytes = b"\x01\x02\x03\x04") -> list[str]:
    tokens = [f"s{i}" for i in range(n)]
    arq.enqueue([Entry(i % 3, features, tok) for i, tok in enumerate(tokens)])
    return tokens


def ack(arq: Arq, seq: int, msg: Message | None = None) -> None:
    arq.receive(Frame(seq, msg if msg is not None else TrainAck(1, 100, 0)))


def results(arq: Arq) -> dict[str, TrainResult | BaseException]:
    return dict(arq.take_completions())


def train_seqs(frames: list[Frame]) -> list[int]:
    assert all(isinstance(f.msg, Train) for f in frames), frames
    return [f.seq for f in frames]


def test_acks_in_order_complete_the_samples_in_order() -> None:
    clock = Clock()
    arq = make(clock, window=4)
    tokens = queue(arq, 3)
    assert train_seqs(sent(arq)) == [0, 1, 2]
    for seq in range(3):
        clock.advance(0.001)
        ack(arq, seq)
    done = results(arq)
    assert list(done) == tokens
    res = [done[t] for t in tokens]
    assert all(isinstance(r, TrainResult) for r in res)
    assert [r.seq for r in res] == [0, 1, 2]  # type: ignore[union-attr]
    assert all(r.sends == 1 and not r.duplicate_ack for r in res)  # type: ignore[union-attr]
    assert not arq.inflight and arq.unacked == 0
    st = arq.counters.snapshot()
    assert st.samples_acked == 3 and st.train_frames_sent == 3 and st.retransmitted_frames == 0


def test_window_full_waits_for_an_ack() -> None:
    arq = make(Clock(), window=4)
    queue(arq, 6)
    assert train_seqs(sent(arq)) == [0, 1, 2, 3]
    assert len(arq.queue) == 2
    ack(arq, 0)
    assert train_seqs(sent(arq)) == [4]  # one acknowledged, one more in flight
    ack(arq, 1)
    assert train_seqs(sent(arq)) == [5]
    assert not arq.queue


def test_lost_frame_is_resent_after_the_timeout_go_back_n() -> None:
    clock = Clock()
    arq = make(clock, window=4)
    tokens = queue(arq, 2)
    assert train_seqs(sent(arq)) == [0, 1]
    rto = arq.train_timeout()
    clock.advance(rto * 0.9)
    arq.tick()
    assert sent(arq) == []  # not yet
    clock.advance(rto * 0.2)
    arq.tick()
    assert train_seqs(sent(arq)) == [0, 1]  # both again, from the oldest
    st = arq.counters.snapshot()
    assert st.timeouts == 1 and st.go_backs == 1 and st.retransmitted_frames == 2
    ack(arq, 0)
    ack(arq, 1)
    done = results(arq)
    assert [done[t].sends for t in tokens] == [2, 2]  # type: ignore[union-attr]


def test_out_of_order_error_goes_back() -> None:
    """Frame 0 lost on the way: the co-processor refuses 1 as out of order; 0 and 1 go again."""
    arq = make(Clock(), window=4)
    queue(arq, 2)
    assert train_seqs(sent(arq)) == [0, 1]
    arq.receive(Frame(1, ErrorReply(ErrorCode.OUT_OF_ORDER, 0)))
    assert train_seqs(sent(arq)) == [0, 1]
    assert arq.counters.snapshot().out_of_order == 1


def test_duplicate_ack_completes_once() -> None:
    arq = make(Clock(), window=4)
    tokens = queue(arq, 1)
    sent(arq)
    ack(arq, 0)
    ack(arq, 0, TrainAck(1, 100, TrainAck.FLAG_DUP))  # the same ack again
    done = results(arq)
    assert list(done) == tokens
    st = arq.counters.snapshot()
    assert st.duplicate_acks == 1 and st.stale_responses == 1 and st.samples_acked == 1


def test_lost_ack_is_asked_again_and_the_duplicate_completes_it() -> None:
    arq = make(Clock(), window=4)
    tokens = queue(arq, 2)
    assert train_seqs(sent(arq)) == [0, 1]
    ack(arq, 1)  # the ack of 0 was lost: 0 was applied (in order), ask for its ack again
    assert train_seqs(sent(arq)) == [0]
    ack(arq, 0, TrainAck(PRED_UNKNOWN, 0, TrainAck.FLAG_DUP))
    done = results(arq)
    r0, r1 = done[tokens[0]], done[tokens[1]]
    assert isinstance(r0, TrainResult) and isinstance(r1, TrainResult)
    assert r0.duplicate_ack and r0.pred is None and r0.sends == 2
    assert not r1.duplicate_ack and r1.pred == 1


def test_no_ack_after_all_retries_loses_the_link() -> None:
    clock = Clock()
    arq = make(clock, window=2, retries=2)
    queue(arq, 1)
    sent(arq)
    for _ in range(2):
        clock.advance(arq.train_timeout() + 0.001)
        arq.tick()
        assert train_seqs(sent(arq)) == [0]
    clock.advance(arq.train_timeout() + 0.001)
    arq.tick()
    assert arq.broken and not arq.session_ok
    assert isinstance(arq.last_error, LinkTimeout)
    assert sent(arq) == []
    clock.advance(10.0)
    arq.tick()  # nothing happens without a port
    assert sent(arq) == []


def test_reconnect_resends_the_unacknowledged_without_a_handshake() -> None:
    arq = make(Clock(), window=4)
    tokens = queue(arq, 3)
    sent(arq)
    ack(arq, 0)
    arq.link_lost(OSError("unplugged"))
    assert arq.broken and sent(arq) == []
    assert arq.link_up() is True  # same session: resend 1 and 2
    assert train_seqs(sent(arq)) == [1, 2]
    ack(arq, 1)
    ack(arq, 2)
    assert list(results(arq)) == tokens
    assert arq.counters.snapshot().reconnects == 1


def test_coprocessor_reset_renumbers_the_unacknowledged() -> None:
    """The co-processor restarted: NO_SESSION, a new HELLO, and INFO with another boot count
    and sequence number; what was not acknowledged is sent again under new numbers."""
    arq = make(Clock(), window=4)
    tokens = queue(arq, 4)
    sent(arq)
    ack(arq, 0)
    ack(arq, 1)
    first = results(arq)
    arq.link_lost(OSError("reset"))
    assert arq.link_up() is True
    assert train_seqs(sent(arq)) == [2, 3]
    arq.receive(Frame(2, ErrorReply(ErrorCode.NO_SESSION, 0)))
    assert arq.need_handshake and not arq.session_ok
    arq.begin_handshake()
    pend, _ = arq.send_hello(0)
    (hello,) = sent(arq)
    assert hello.msg == Hello(2)  # the oldest unacknowledged
    arq.receive(Frame(hello.seq, replace(INFO, boot_count=2, next_train_seq=0)))
    assert arq.end_hello(pend)
    arq.handshaking = False
    assert train_seqs(sent(arq)) == [0, 1]  # renumbered from the new session's start
    ack(arq, 0)
    ack(arq, 1)
    done = {**first, **results(arq)}
    r2, r3 = done[tokens[2]], done[tokens[3]]
    assert isinstance(r2, TrainResult) and isinstance(r3, TrainResult)
    assert (r2.seq, r3.seq) == (0, 1) and r2.boot == r3.boot == 2 and r2.session == 2
    st = arq.counters.snapshot()
    assert st.coprocessor_resets == 1 and st.no_session == 1 and st.handshakes == 2


def test_corrupted_answer_is_retried_at_once() -> None:
    """A frame that does not decode is taken as the oldest transmission's answer: go back."""
    arq = make(Clock(), window=4)
    queue(arq, 2)
    sent(arq)
    arq.receive(FrameError(FrameErrorKind.CRC))
    assert train_seqs(sent(arq)) == [0, 1]
    assert arq.counters.snapshot().crc_errors == 1


def test_remote_bad_frame_is_retried_at_once() -> None:
    arq = make(Clock(), window=4)
    queue(arq, 1)
    sent(arq)
    arq.receive(Frame(NO_SEQ, ErrorReply(ErrorCode.BAD_FRAME, 2)))
    assert train_seqs(sent(arq)) == [0]
    assert arq.counters.snapshot().remote_frame_errors == 1


@pytest.mark.parametrize(
    "damage",
    [FrameError(FrameErrorKind.CRC), Frame(NO_SEQ, ErrorReply(ErrorCode.BAD_FRAME, 2))],
)
def test_damage_after_a_timed_out_attempt_retries_the_current_one(damage: object) -> None:
    """An attempt whose answer was lost whole (timed out) must not stay first in line for the
    next error that names no frame: that error belongs to the attempt now waiting, which is
    retried at once. (Left in the log, each timed-out attempt shifted every later error onto
    the frame before its own, and a model download at 2 % byte errors took 18x longer.)"""
    from terrain_odt.link import GetStats, encode_frame

    arq = make(Clock())
    seq = arq.next_request_seq()
    frame = encode_frame(GetStats(), seq)
    first = arq.send_request(seq, frame, "STATS")
    sent(arq)
    arq.end_request(first)  # timed out: nothing came back at all
    second = arq.send_request(seq, frame, "STATS")
    sent(arq)
    arq.receive(damage)  # type: ignore[arg-type]
    assert second.retry_now and second in arq.take_woken()


def test_a_download_block_is_timed_by_its_own_size() -> None:
    """A 16-byte DOWNLOAD block's answer is a short frame: its timeout must not be that of a
    1 KB frame (at 115200 baud about 360 ms per lost answer instead of the 50 ms floor)."""
    from terrain_odt.link import Download
    from terrain_odt.link.arq import DOWNLOAD_OVERHEAD
    from terrain_odt.link.protocol import MsgType

    arq = Arq(baudrate=115200, clock=Clock())
    short = arq.request_timeout(Download(0, 16), 20)
    assert short == arq.timeout(MsgType.STATS, 20, 16 + DOWNLOAD_OVERHEAD)
    assert short < arq.request_timeout(Download(0, 512), 20)
    assert short < arq.timeout(MsgType.DOWNLOAD, 20) / 5


def frags(frames: list[Frame]) -> list[tuple[int, int, int]]:
    out = []
    for f in frames:
        assert isinstance(f.msg, TrainFrag), f
        out.append((f.seq, f.msg.offset, len(f.msg.data)))
    return out


def test_lost_fragment_is_resent_when_a_later_bitmap_lacks_it() -> None:
    """40 features = units of 16, 16, 8; fragments of 32: [0, 32) and [32, 40)."""
    clock = Clock()
    arq = Arq(baudrate=0, clock=clock, fragments=True, window=4)
    connect(arq, replace(INFO, input_len=40))
    assert arq.frag_mode
    tokens = queue(arq, 1, bytes(range(40)))
    assert frags(sent(arq)) == [(0, 0, 32), (0, 32, 8)]
    # The first is lost; the second is answered: only unit 2 held.
    arq.receive(Frame(0, FragAck(32, bytes([0b100]))))
    assert frags(sent(arq)) == [(0, 0, 32)]
    assert arq.counters.snapshot().retransmitted_frames == 1
    arq.receive(Frame(0, TrainAck(2, 50, 0)))  # the sample is complete
    done = results(arq)
    assert list(done) == tokens
    r = done[tokens[0]]
    assert isinstance(r, TrainResult) and r.seq == 0 and r.sends == 3


def test_unanswered_fragments_go_again_after_their_timeout() -> None:
    clock = Clock()
    arq = Arq(baudrate=0, clock=clock, fragments=True, window=4)
    connect(arq, replace(INFO, input_len=40))
    queue(arq, 1, bytes(40))
    assert frags(sent(arq)) == [(0, 0, 32), (0, 32, 8)]
    clock.advance(arq.frag_timeout() * 0.5)
    arq.tick()
    assert sent(arq) == []
    clock.advance(arq.frag_timeout())
    arq.tick()
    assert frags(sent(arq)) == [(0, 0, 32), (0, 32, 8)]
    assert arq.counters.snapshot().timeouts == 1
    assert arq.poll_timeout(0.01) <= 0.01


def test_whole_frames_only_when_the_coprocessor_has_no_fragments() -> None:
    arq = Arq(baudrate=0, clock=Clock(), fragments=None, window=4)
    connect(arq)
    arq.frag_mode = True  # as after a switch on a noisy line
    queue(arq, 1)
    (f,) = sent(arq)
    assert isinstance(f.msg, TrainFrag)
    arq.receive(Frame(0, ErrorReply(ErrorCode.UNKNOWN_TYPE, 0x0D)))
    assert not arq.frag_mode
    assert train_seqs(sent(arq)) == [0]


def test_closing_fails_what_is_pending() -> None:
    arq = make(Clock(), window=2)
    tokens = queue(arq, 3)
    sent(arq)
    ack(arq, 0)
    err = RuntimeError("closed")
    arq.close(err)
    done = results(arq)
    assert isinstance(done[tokens[0]], TrainResult)
    assert done[tokens[1]] is err and done[tokens[2]] is err


def test_window_is_checked() -> None:
    with pytest.raises(ValueError):
        Arq(window=17)
