"""OdtClient against the in-process fake co-processor (test/fake_coprocessor.py), no ROS."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

import numpy as np
import pytest
from fake_coprocessor import PRETRAINED_HASH, FakeCoprocessor, make_blob, reference_run

from terrain_odt.link import (
    ErrorCode,
    FragAck,
    Frame,
    GetStats,
    Hello,
    LinkError,
    LinkTimeout,
    Message,
    OdtClient,
    RemoteError,
    Train,
    TrainAck,
    TrainFrag,
    TrainResult,
)

IN, CLASSES = 8, 3


def samples(n: int, seed: int = 0, in_len: int = IN) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(n, in_len), dtype=np.int8)
    y = rng.integers(0, CLASSES, size=n)
    return x, y


def as_list(x: np.ndarray, y: np.ndarray) -> list[tuple[int, bytes]]:
    return [(int(lab), row.tobytes()) for lab, row in zip(y, x, strict=True)]


def results(futs: list[Future[TrainResult]]) -> list[TrainResult]:
    return [f.result(timeout=10) for f in futs]


@pytest.fixture
def fake() -> Iterator[FakeCoprocessor]:
    with FakeCoprocessor(input_len=IN, classes=CLASSES) as f:
        yield f


def client(fake: FakeCoprocessor, **kw: object) -> OdtClient:
    kw.setdefault("baudrate", 0)
    kw.setdefault("connect_timeout", 5.0)
    return OdtClient(fake.url, **kw)  # type: ignore[arg-type]


def check_exactly_once(fake: FakeCoprocessor, x: np.ndarray, y: np.ndarray, res: list) -> None:
    """The fake applied every sample once, in order, and the predictions are the reference's."""
    ref_hash, ref_preds = reference_run(as_list(x, y), CLASSES)
    assert [(lab, f) for _, lab, f in fake.applied] == as_list(x, y)
    assert fake.model_hash == ref_hash
    assert [r.pred for r in res] == ref_preds


# ---------------------------------------------------------------------------------------------
# Requests


def test_requests_round_trip(fake: FakeCoprocessor) -> None:
    with client(fake) as odt:
        info = odt.info
        assert info is not None and info.input_len == IN and info.classes == CLASSES
        assert odt.connected
        pred = odt.infer(np.zeros(IN, dtype=np.int8))
        assert pred.predicted == PRETRAINED_HASH % CLASSES and len(pred.scores_q15) == CLASSES
        st = odt.stats()
        assert st.train_steps == 0 and st.training_enabled == 1
        odt.set_params(enabled=False, lr_m=20000, lr_e=-18, batch=1, modes=(2, 2))
        assert fake.state.enabled is False
        with pytest.raises(RemoteError) as err:
            odt.set_params(lr_m=5)
        assert err.value.code == ErrorCode.BAD_PARAMS
        odt.set_params(enabled=True)
        again = odt.hello()
        assert again.next_train_seq == 0
        ls = odt.link_stats()
        assert ls.requests >= 6 and ls.rtt_count >= 5 and ls.rtt_p50_ms < 1000
        assert ls.retries == 0 and ls.frame_errors == 0


def test_model_transfer_save_restore(fake: FakeCoprocessor) -> None:
    x, y = samples(20)
    with client(fake) as odt:
        blob0 = odt.download_model()
        assert blob0 == make_blob(PRETRAINED_HASH, 0)
        odt.train_many(x, y)
        odt.save()  # flushes first: all 20 samples are in the saved model
        assert fake.flash == (fake.model_hash, 20)
        trained = odt.download_model()
        odt.reset_pretrained()
        assert odt.download_model() == blob0
        odt.restore()
        assert odt.download_model() == trained
        info = odt.upload_model(blob0)
        assert info.model_hash == PRETRAINED_HASH and fake.model_hash == PRETRAINED_HASH
        with pytest.raises(RemoteError) as err:
            odt.upload_model(b"NOPE" + bytes(100))
        assert err.value.code == ErrorCode.BAD_MODEL and err.value.detail == 2


def test_request_retry_after_lost_response(fake: FakeCoprocessor) -> None:
    dropped: list[int] = []

    def drop_first_stats(seq: int, msg: Message) -> str | None:
        if type(msg).__name__ == "Stats" and not dropped:
            dropped.append(seq)
            return "drop"
        return None

    fake.tx_filter = drop_first_stats
    with client(fake) as odt:
        t0 = time.monotonic()
        assert odt.stats().train_steps == 0
        assert time.monotonic() - t0 < 2
        ls = odt.link_stats()
        assert ls.retries == 1 and ls.timeouts == 1
    # The retransmission reused the sequence number.
    stats_seqs = [f.seq for f in fake.requests if isinstance(f.msg, GetStats)]
    assert stats_seqs == [dropped[0], dropped[0]]


def test_corrupted_response_retried_at_once(fake: FakeCoprocessor) -> None:
    n = {"stats": 0}

    def corrupt_first(seq: int, msg: Message) -> str | None:
        if type(msg).__name__ == "Stats":
            n["stats"] += 1
            return "corrupt" if n["stats"] == 1 else None
        return None

    fake.tx_filter = corrupt_first
    with client(fake, min_timeout=2.0) as odt:
        t0 = time.monotonic()
        odt.stats()
        assert time.monotonic() - t0 < 1.0  # did not wait for the 2 s timeout
        ls = odt.link_stats()
        assert ls.crc_errors == 1 and ls.retries == 1 and ls.timeouts == 0


def test_corrupted_request_retried_at_once(fake: FakeCoprocessor) -> None:
    n = {"stats": 0}

    def corrupt_first(frame: Frame) -> str | None:
        if isinstance(frame.msg, GetStats):
            n["stats"] += 1
            return "corrupt" if n["stats"] == 1 else None
        return None

    fake.rx_filter = corrupt_first
    with client(fake, min_timeout=2.0) as odt:
        t0 = time.monotonic()
        odt.stats()
        assert time.monotonic() - t0 < 1.0
        assert odt.link_stats().remote_frame_errors == 1


def test_request_timeout_is_bounded(fake: FakeCoprocessor) -> None:
    fake.silent = {GetStats}
    with client(fake, retries=3, min_timeout=0.05) as odt:
        t0 = time.monotonic()
        with pytest.raises(LinkTimeout):
            odt.stats()
        assert time.monotonic() - t0 < 3
        ls = odt.link_stats()
        assert ls.timeouts == 4 and ls.retries == 3
        # The link itself is fine.
        assert odt.infer(bytes(IN)).predicted in range(CLASSES)


def test_open_fails_cleanly_without_device() -> None:
    t0 = time.monotonic()
    with pytest.raises(LinkTimeout) as err:
        OdtClient("/dev/does-not-exist-odt", baudrate=0, connect_timeout=0.5)
    assert time.monotonic() - t0 < 3
    assert "does-not-exist" in str(err.value)


def test_input_validation(fake: FakeCoprocessor) -> None:
    with client(fake) as odt:
        with pytest.raises(ValueError):
            odt.train(bytes(IN + 1), 0)
        with pytest.raises(ValueError):
            odt.train(bytes(IN), CLASSES)
        with pytest.raises(ValueError):
            odt.infer(np.zeros(3, dtype=np.int8))
        with pytest.raises(ValueError):
            odt.train_many(np.zeros((3, IN), dtype=np.int8), [0, 1])


# ---------------------------------------------------------------------------------------------
# Training stream


def test_train_pipelined_exactly_once(fake: FakeCoprocessor) -> None:
    x, y = samples(300)
    with client(fake) as odt:
        futs = odt.train_many(x[:150], y[:150])
        futs += [odt.train(x[i], int(y[i])) for i in range(150, 300)]
        odt.flush()
        res = results(futs)
        assert [r.seq for r in res] == list(range(300))
        assert all(r.sends == 1 and not r.duplicate_ack and r.updated for r in res)
        check_exactly_once(fake, x, y, res)
        ls = odt.link_stats()
        assert ls.samples_acked == 300 and ls.retransmitted_frames == 0
        assert odt.stats().train_steps == 300
        assert not np.isnan(ls.train_rtt_p50_ms)


def test_window_limits_frames_in_flight(fake: FakeCoprocessor) -> None:
    fake.silent = {Train}  # nothing is ever acknowledged
    with client(fake, window=4, retries=100, min_timeout=5.0) as odt:
        x, y = samples(20)
        odt.train_many(x, y)
        time.sleep(0.3)
        assert fake.count(Train) == 4
        assert odt.pending_samples == 20
        with pytest.raises(LinkTimeout):
            odt.flush(timeout=0.2)


def test_out_of_order_go_back_n(fake: FakeCoprocessor) -> None:
    lost = {5, 6, 40}
    seen: set[int] = set()

    def lose_once(frame: Frame) -> str | None:
        if isinstance(frame.msg, Train) and frame.seq in lost and frame.seq not in seen:
            seen.add(frame.seq)
            return "drop"
        return None

    fake.rx_filter = lose_once
    x, y = samples(100)
    with client(fake) as odt:
        res = results(odt.train_many(x, y))
        check_exactly_once(fake, x, y, res)
        ls = odt.link_stats()
        assert ls.out_of_order > 0 and ls.go_backs >= 2 and ls.retransmitted_frames > 0
        assert ls.timeouts == 0  # OUT_OF_ORDER triggered the resend, not the timer
        assert res[5].sends == 2 and res[4].sends == 1


def test_lost_last_frame_recovered_by_timeout(fake: FakeCoprocessor) -> None:
    seen: set[int] = set()

    def lose_last(frame: Frame) -> str | None:
        if isinstance(frame.msg, Train) and frame.seq == 9 and 9 not in seen:
            seen.add(9)
            return "drop"
        return None

    fake.rx_filter = lose_last
    x, y = samples(10)
    with client(fake) as odt:
        res = results(odt.train_many(x, y))
        check_exactly_once(fake, x, y, res)
        assert odt.link_stats().timeouts >= 1 and res[9].sends == 2


def test_lost_ack_gets_duplicate_ack_with_original_prediction(fake: FakeCoprocessor) -> None:
    dropped: set[int] = set()
    acks = {"n": 0}

    def drop_some_acks(seq: int, msg: Message) -> str | None:
        if isinstance(msg, TrainAck) and not msg.dup:
            acks["n"] += 1
            if seq in (3, 17, 18, 49) and seq not in dropped:
                dropped.add(seq)
                return "drop"
        return None

    fake.tx_filter = drop_some_acks
    x, y = samples(50)
    with client(fake) as odt:
        res = results(odt.train_many(x, y))
        check_exactly_once(fake, x, y, res)
        for i in (3, 17, 18, 49):
            assert res[i].duplicate_ack and res[i].pred is not None
        assert odt.link_stats().duplicate_acks >= 4
        assert odt.stats().train_steps == 50


def test_duplicated_ack_frames_ignored(fake: FakeCoprocessor) -> None:
    fake.tx_filter = lambda seq, msg: "dup" if isinstance(msg, TrainAck) else None
    x, y = samples(60)
    with client(fake) as odt:
        res = results(odt.train_many(x, y))
        check_exactly_once(fake, x, y, res)
        # The last sample completes on the first copy of its ack; the copy may still be on
        # its way to the reader thread.
        deadline = time.monotonic() + 2.0
        while odt.link_stats().stale_responses < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert odt.link_stats().stale_responses >= 60


def test_corrupted_train_frames_and_acks(fake: FakeCoprocessor) -> None:
    rng = np.random.default_rng(3)
    fake.rx_filter = lambda f: (
        "corrupt" if isinstance(f.msg, Train) and rng.random() < 0.2 else None
    )
    fake.tx_filter = lambda s, m: (
        "corrupt" if isinstance(m, TrainAck) and rng.random() < 0.2 else None
    )
    x, y = samples(200)
    with client(fake) as odt:
        res = results(odt.train_many(x, y))
        check_exactly_once(fake, x, y, res)
        ls = odt.link_stats()
        assert ls.crc_errors > 0 and ls.remote_frame_errors > 0


@pytest.mark.parametrize("transport", ["tcp", "pty"])
def test_byte_noise_soak(transport: str) -> None:
    """1 % of the bytes corrupted both ways: still exactly once, in order."""
    with FakeCoprocessor(
        input_len=IN, classes=CLASSES, transport=transport, rx_noise=0.01, tx_noise=0.01, seed=7
    ) as fake:
        x, y = samples(400, seed=1)
        with client(fake, retries=10) as odt:
            res = results(odt.train_many(x, y))
            odt.flush()
            check_exactly_once(fake, x, y, res)
            assert odt.download_model() == make_blob(fake.model_hash, 400)
            ls = odt.link_stats()
            assert ls.frame_errors > 0 and ls.remote_frame_errors > 0


def test_rejected_label_consumes_its_number() -> None:
    with FakeCoprocessor(input_len=IN, classes=CLASSES, reject_labels=frozenset({2})) as fake:
        x, y = samples(40)
        with client(fake) as odt:
            futs = odt.train_many(x, y)
            odt.flush()
            for i, f in enumerate(futs):
                if y[i] == 2:
                    with pytest.raises(RemoteError) as err:
                        f.result(timeout=5)
                    assert err.value.code == ErrorCode.BAD_LABEL
                else:
                    assert f.result(timeout=5).seq == i
            keep = y != 2
            assert [(lab, f) for _, lab, f in fake.applied] == as_list(x[keep], y[keep])
            assert odt.link_stats().samples_failed == int((~keep).sum())


def test_bad_length_renumbers_following_samples(fake: FakeCoprocessor) -> None:
    """BAD_LENGTH consumes no number: the samples after it move up one (not applied twice)."""
    x, y = samples(30)
    bad = x[7].tobytes()
    fake.bad_length = lambda m: m.features == bad
    with client(fake) as odt:
        futs = odt.train_many(x, y)
        odt.flush()
        with pytest.raises(RemoteError) as err:
            futs[7].result(timeout=5)
        assert err.value.code == ErrorCode.BAD_LENGTH
        keep = [i for i in range(30) if i != 7]
        assert [futs[i].result(timeout=5).seq for i in keep] == list(range(29))
        assert [(lab, f) for _, lab, f in fake.applied] == as_list(x[keep], y[keep])


# ---------------------------------------------------------------------------------------------
# Resets, unplugging


def test_no_session_after_coprocessor_reset(fake: FakeCoprocessor) -> None:
    x, y = samples(200)
    with client(fake) as odt:
        first = results(odt.train_many(x[:100], y[:100]))
        odt.save()
        fake.reset()  # RAM lost; the saved model (100 samples) is reloaded
        res = results(odt.train_many(x[100:], y[100:]))
        assert [r.seq for r in res] == list(range(100, 200))
        ls = odt.link_stats()
        assert ls.no_session >= 1 and ls.handshakes == 2 and ls.coprocessor_resets == 1
        check_exactly_once_after(fake, x, y, first + res, reset_at=100)
        assert odt.info is not None and odt.info.boot_count == 2 and odt.info.train_steps == 100


def check_exactly_once_after(
    fake: FakeCoprocessor, x: np.ndarray, y: np.ndarray, res: list[TrainResult], reset_at: int
) -> None:
    ref_hash, ref_preds = reference_run(as_list(x, y), CLASSES)
    assert [(lab, f) for _, lab, f in fake.applied] == as_list(x[reset_at:], y[reset_at:])
    assert fake.model_hash == ref_hash
    assert [r.pred for r in res] == ref_preds


def test_reset_while_frames_in_flight(fake: FakeCoprocessor) -> None:
    """Reset mid-stream, nothing saved: unacked samples are resent in the new session."""
    x, y = samples(300)
    count = {"n": 0}

    def reset_at_120(frame: Frame) -> str | None:
        if isinstance(frame.msg, Train):
            count["n"] += 1
            if count["n"] == 120:
                fake.reset(keep_flash=False)
        return None

    fake.rx_filter = reset_at_120
    with client(fake) as odt:
        futs = odt.train_many(x, y)
        results(futs)
        assert odt.link_stats().no_session >= 1
        # Samples acknowledged before the reset were lost with its RAM; every other sample was
        # applied exactly once, in order, in the new session.
        applied = [(lab, f) for _, lab, f in fake.applied]
        k = 300 - len(applied)  # samples 0..k-1 were acknowledged before the reset
        assert applied == as_list(x[k:], y[k:])
        assert 120 - odt.window <= k < 120
        assert all(not f.exception() for f in futs)
        assert odt.info is not None and odt.info.boot_count == 2


def test_unplug_with_frames_in_flight_no_double_apply(fake: FakeCoprocessor) -> None:
    """The port goes away but the co-processor keeps running: no HELLO (it would reset
    `expected`); the unacked samples are resent and the lost acks come back as duplicates."""
    x, y = samples(300)
    count = {"n": 0}

    def unplug(seq: int, msg: Message) -> str | None:
        if isinstance(msg, TrainAck):
            count["n"] += 1
            if count["n"] in (50, 180):
                fake.disconnect()
                return "drop"
        return None

    fake.tx_filter = unplug
    with client(fake, backoff=(0.01, 0.1)) as odt:
        res = results(odt.train_many(x, y))
        check_exactly_once(fake, x, y, res)
        ls = odt.link_stats()
        assert ls.reconnects == 2 and ls.handshakes == 1
        assert fake.count(Hello) == 1
        assert odt.stats().train_steps == 300


def test_reconnect_with_backoff_while_refused(fake: FakeCoprocessor) -> None:
    with client(fake, backoff=(0.02, 0.1)) as odt:
        fake.accepting = False
        fake.disconnect()
        time.sleep(0.4)
        assert not odt.connected
        fake.accepting = True
        fake.reset()  # and it restarted meanwhile
        st = odt.stats()  # waits for the reconnection
        assert st.train_steps == 0
        ls = odt.link_stats()
        assert ls.reconnects >= 2 and ls.handshakes == 2 and ls.coprocessor_resets == 1


def test_url_callable_reevaluated(fake: FakeCoprocessor) -> None:
    calls: list[str] = []

    def url() -> str:
        calls.append(fake.url)
        return fake.url

    with OdtClient(url, baudrate=0) as odt:
        fake.disconnect()
        odt.stats()
    assert len(calls) >= 2


def test_close_fails_pending_and_rejects_calls(fake: FakeCoprocessor) -> None:
    fake.silent = {Train}
    odt = client(fake, min_timeout=10.0)
    futs = odt.train_many(*samples(5))
    odt.close()
    for f in futs:
        with pytest.raises(LinkError):
            f.result(timeout=2)
    with pytest.raises(LinkError):
        odt.stats()
    with pytest.raises(LinkError):
        odt.train(bytes(IN), 0)
    odt.close()  # idempotent


def test_thread_safety(fake: FakeCoprocessor) -> None:
    x, y = samples(400)
    errors: list[BaseException] = []
    with client(fake) as odt:
        futs: list[list[Future[TrainResult]]] = [[] for _ in range(4)]

        def trainer(k: int) -> None:
            try:
                for i in range(k * 100, (k + 1) * 100):
                    futs[k].append(odt.train(x[i], int(y[i])))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def prober() -> None:
            try:
                for _ in range(30):
                    odt.infer(x[0])
                    odt.stats()
            except BaseException as exc:  # pragma: no cover
                errors.append(exc)

        threads = [threading.Thread(target=trainer, args=(k,)) for k in range(4)]
        threads += [threading.Thread(target=prober) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        odt.flush()
        assert not errors
        res = [f.result(timeout=5) for fs in futs for f in fs]
        assert sorted(r.seq for r in res) == list(range(400))
        assert fake.state.steps == 400 and len({r.seq for r in res}) == 400
        # The order of application is the order of the sequence numbers.
        by_seq = {r.seq: r for r in res}
        assert [s for s, _, _ in fake.applied] == sorted(by_seq)


def test_future_callbacks_may_call_the_client(fake: FakeCoprocessor) -> None:
    """Futures complete outside the client's lock: a callback may queue more work (it runs on
    the link's reader thread, so it must not block waiting for the link)."""
    x, y = samples(5)
    chained: list[Future[TrainResult]] = []
    with client(fake) as odt:
        fut = odt.train(x[0], int(y[0]))
        fut.add_done_callback(lambda f: chained.append(odt.train(x[1], int(y[1]))))
        fut.result(timeout=5)
        odt.flush()
        assert len(chained) == 1 and chained[0].result(timeout=5).seq == 1


# ---------------------------------------------------------------------------------------------
# Fragmented training samples (TRAIN_FRAG, docs/protocol.md §2.1)

WIDE = 40  # three fragment units: 16, 16, 8


@pytest.fixture
def wide() -> Iterator[FakeCoprocessor]:
    with FakeCoprocessor(input_len=WIDE, classes=CLASSES) as f:
        yield f


def test_fragments_exactly_once(wide: FakeCoprocessor) -> None:
    x, y = samples(150, in_len=WIDE)
    with client(wide, fragments=True) as odt:
        res = results(odt.train_many(x, y))
        check_exactly_once(wide, x, y, res)
        assert [r.seq for r in res] == list(range(150))
        ls = odt.link_stats()
        assert ls.frags_sent >= 150 and ls.train_frames_sent == ls.frags_sent
        assert wide.count(Train) == 0 and wide.count(TrainFrag) == ls.frags_sent
        # A clean line resends only when a round trip outlasts its timeout (a loaded machine
        # can stall the fake co-processor's thread): a few, never a stream of them.
        assert odt.fragmenting and ls.retransmitted_frames <= ls.frags_sent // 10


def test_lost_and_corrupted_fragments_and_acks(wide: FakeCoprocessor) -> None:
    """Fragments dropped or corrupted on the way in, FRAG_ACK / TRAIN_ACK dropped, corrupted or
    duplicated on the way out: every sample once, in order."""
    rng = np.random.default_rng(4)

    def rx(f: Frame) -> str | None:
        if isinstance(f.msg, TrainFrag):
            r = rng.random()
            return "drop" if r < 0.15 else "corrupt" if r < 0.3 else None
        return None

    def tx(seq: int, m: Message) -> str | None:
        if isinstance(m, (FragAck, TrainAck)):
            r = rng.random()
            return "drop" if r < 0.15 else "corrupt" if r < 0.3 else "dup" if r < 0.35 else None
        return None

    wide.rx_filter, wide.tx_filter = rx, tx
    x, y = samples(100, in_len=WIDE)
    with client(wide, fragments=True, retries=10) as odt:
        res = results(odt.train_many(x, y))
        check_exactly_once(wide, x, y, res)
        ls = odt.link_stats()
        assert ls.retransmitted_frames > 0 and ls.duplicate_acks > 0
        assert wide.count(Train) == 0


def test_switches_to_fragments_under_noise_and_back(wide: FakeCoprocessor) -> None:
    """Automatic (fragments=None): whole frames on a clean line, fragments once many training
    frames are lost, whole frames again when the loss measured on fragments is low."""
    x, y = samples(700, in_len=WIDE, seed=2)
    with client(wide, retries=10) as odt:
        res = results(odt.train_many(x[:100], y[:100]))
        assert not odt.fragmenting and odt.link_stats().mode_switches == 0
        wide.rx_noise = wide.tx_noise = 0.03  # 40-feature TRAIN + ack ~75 % lost
        res += results(odt.train_many(x[100:300], y[100:300]))
        assert odt.fragmenting and odt.link_stats().mode_switches == 1
        assert odt.frag_size < WIDE
        wide.rx_noise = wide.tx_noise = 0.0
        res += results(odt.train_many(x[300:], y[300:]))
        odt.flush()
        assert not odt.fragmenting and odt.link_stats().mode_switches == 2
        check_exactly_once(wide, x, y, res)


def test_coprocessor_without_fragments_gets_whole_frames(wide: FakeCoprocessor) -> None:
    """An older co-processor answers TRAIN_FRAG with ERROR(UNKNOWN_TYPE): the client falls back
    to TRAIN for good, and nothing is lost or applied twice."""
    wide.fragments = False
    x, y = samples(100, in_len=WIDE)
    with client(wide, fragments=True) as odt:
        res = results(odt.train_many(x, y))
        check_exactly_once(wide, x, y, res)
        assert not odt.fragmenting and wide.count(TrainFrag) >= 1
        assert wide.count(Train) >= 100


def test_fragments_bad_label_and_reset(wide: FakeCoprocessor) -> None:
    """BAD_LABEL at a fragment consumes the number; a reset mid-sample (RAM and the partial
    sample lost) is recovered by HELLO and the resent fragments."""
    wide.reject_labels = frozenset({2})
    x, y = samples(120, in_len=WIDE, seed=3)
    count = {"n": 0}

    def reset_at_100(frame: Frame) -> str | None:
        if isinstance(frame.msg, TrainFrag):
            count["n"] += 1
            if count["n"] == 100:
                wide.reset(keep_flash=False)
        return None

    wide.rx_filter = reset_at_100
    with client(wide, fragments=True) as odt:
        futs = odt.train_many(x, y)
        for f, lab in zip(futs, y, strict=True):
            if lab == 2:
                with pytest.raises(RemoteError) as info:
                    f.result(10)
                assert info.value.code == ErrorCode.BAD_LABEL
            else:
                assert f.result(10).pred is not None
        assert odt.link_stats().no_session >= 1 and odt.info is not None
        assert odt.info.boot_count == 2
        # Applied after the reset: the samples not acknowledged before it, good labels only.
        applied = [(lab, f) for _, lab, f in wide.applied]
        tail = [(lab, f) for lab, f in as_list(x, y) if lab != 2][-len(applied) :]
        assert applied == tail


def test_request_timeout_backs_off_over_a_stall(fake: FakeCoprocessor) -> None:
    """A short timeout from quick measured round trips must not exhaust the retries while the
    co-processor is stalled for a moment (a loaded machine): once the line stays silent, each
    retry waits twice as long."""
    with client(fake, retries=5, min_rto=0.005) as odt:
        for _ in range(20):  # enough round trips for the measured timeout (about 5 ms)
            odt.stats()
        fake.response_delay = 0.12  # longer than all six 5 ms timeouts together
        assert odt.stats().train_steps == 0
        fake.response_delay = 0.0
        assert odt.link_stats().timeouts >= 2


def test_backoff_waits_for_silence_in_a_row() -> None:
    """Answers lost whole between damaged ones (a noisy line, not a stall) keep the measured
    timeout; two silent timeouts in a row double it, up to REQUEST_BACKOFF_MAX_S; a slow
    first timeout is not shortened."""
    from terrain_odt.link.client import REQUEST_BACKOFF_MAX_S, _Backoff

    b = _Backoff(0.005)
    for _ in range(5):  # lost, damaged, lost, damaged, ...
        b.silent()
        b.damaged()
        assert b.timeout == 0.005
    b.silent()
    assert b.timeout == 0.005
    b.silent()
    assert b.timeout == 0.01
    b.silent()
    assert b.timeout == 0.02
    b.damaged()
    b.silent()
    assert b.timeout == 0.02  # the line spoke: silence counts again from there
    for _ in range(20):
        b.silent()
    assert b.timeout == REQUEST_BACKOFF_MAX_S
    slow = _Backoff(2.5)
    slow.silent()
    slow.silent()
    assert slow.timeout == 2.5
