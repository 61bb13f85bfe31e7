"""terrain_odt.signals.streaming.FeatureStream (the imu_features node's logic): equal to the offline
extractor, decimation, clock jumps, non-finite and out-of-order samples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from terrain_odt.signals.features import FeatureConfig, Reject, WindowEvent, extract_windows
from terrain_odt.signals.streaming import Decimator, FeatureStream, StreamConfig

CFG = FeatureConfig()
FS = CFG.sample_rate_hz
N_WIN, HOP = CFG.window_samples, CFG.hop_samples  # 170, 50


def imu(n: int, fs: float = FS, seed: int = 0, t0: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """`n` samples at `fs`: vibration tones (below 50 Hz) plus noise, gravity on az."""
    rng = np.random.default_rng(seed)
    t = t0 + np.arange(n) / fs
    freqs = [3, 7, 13, 21, 30, 44]
    tones = np.stack([np.sin(2 * np.pi * f * t + i) for i, f in enumerate(freqs)], axis=1)
    x = 0.3 * tones + rng.normal(size=(n, 6)) * [0.05, 0.05, 0.05, 0.5, 0.5, 0.5]
    x[:, 5] += 9.81
    return t, x


def run(stream: FeatureStream, t: np.ndarray, x: np.ndarray) -> list[WindowEvent]:
    events: list[WindowEvent] = []
    for ti, xi in zip(t, x, strict=True):
        events += stream.push(ti, xi)
    return events


def accepted(events: list[WindowEvent]) -> list[WindowEvent]:
    return [e for e in events if e.accepted]


def assert_same_as_batch(events: list[WindowEvent], t: np.ndarray, x: np.ndarray) -> None:
    """The stream's accepted windows and rejections are exactly `extract_windows`'."""
    w = extract_windows(t, x, CFG)
    ok = accepted(events)
    assert len(ok) == len(w.features)
    np.testing.assert_array_equal([e.t_start for e in ok], w.t_start)
    np.testing.assert_array_equal([e.t_end for e in ok], w.t_end)
    if ok:
        np.testing.assert_array_equal(np.stack([e.features for e in ok]), w.features)
    np.testing.assert_array_equal([e.t_start for e in events if not e.accepted], w.rejected_t_start)
    assert [e.reason for e in events if not e.accepted] == w.rejected_reason


def assert_no_nonfinite_features(events: list[WindowEvent]) -> None:
    for e in events:
        if e.accepted:
            assert e.features is not None and np.isfinite(e.features).all()
        else:
            assert e.features is None


# ---------------------------------------------------------------------------------------------
# regular input


def test_equals_extract_windows_on_regular_samples():
    t, x = imu(1234, t0=1000.0)
    s = FeatureStream()
    events = run(s, t, x)
    assert len(events) == (1234 - N_WIN) // HOP + 1 == 22
    assert all(e.accepted for e in events)
    assert_same_as_batch(events, t, x)
    assert s.samples == 1234 and s.accepted == 22
    assert not s.rejected and not s.dropped_samples and s.time_resets == 0
    # A window is emitted as soon as its last sample arrived (no extra latency).
    s2 = FeatureStream()
    for i, (ti, xi) in enumerate(zip(t, x, strict=True)):
        ev = s2.push(ti, xi)
        complete = i + 1 >= N_WIN and (i + 1 - N_WIN) % HOP == 0
        assert len(ev) == int(complete), i


def test_sample_shape_checked():
    s = FeatureStream()
    with pytest.raises(ValueError, match="6 values"):
        s.push(0.0, [1.0] * 5)
    with pytest.raises(ValueError):
        StreamConfig(decimation=0)
    with pytest.raises(ValueError):
        StreamConfig(time_jump_reset_s=math.nan)
    with pytest.raises(ValueError):
        StreamConfig(forward_jump_reset_s=0.0)


def test_decimation_of_a_400hz_stream():
    """Decimation 4: 400 Hz in, the windows of the 100 Hz block-averaged signal out."""
    n = 4 * 1000
    t, x = imu(n, fs=400.0, seed=3, t0=50.0)
    s = FeatureStream(StreamConfig(CFG, decimation=4))
    events = run(s, t, x)
    assert s.samples == n
    # Block means start 1.5 input periods after 50.0 s, so the grid (anchored at a multiple of
    # the hop) starts at 50.5 s: one hop of the 1000 output samples is before it.
    assert events[0].t_start == 50.5
    assert len(events) == (1000 - HOP - N_WIN) // HOP + 1 == 16
    assert all(e.accepted for e in events)
    tb = t.reshape(-1, 4).mean(axis=1)
    xb = x.reshape(-1, 4, 6).mean(axis=1)
    w = extract_windows(tb, xb, CFG)
    assert len(w.features) == 16
    np.testing.assert_allclose([e.t_start for e in events], w.t_start, rtol=0, atol=1e-9)
    got = np.stack([e.features for e in events])
    np.testing.assert_allclose(got, w.features, rtol=1e-5, atol=1e-5)
    # Without decimation the 400 Hz stream would be judged against the 100 Hz rate: rejected.
    plain = FeatureStream(StreamConfig(CFG, decimation=1))
    plain_events = run(plain, t[:800], x[:800])
    assert not accepted(plain_events) and plain.rejected[Reject.RATE] > 0


def test_decimator_block_average():
    d = Decimator(3)
    assert d.push(0.0, np.ones(6)) is None
    assert d.push(1.0, 2 * np.ones(6)) is None
    tb, xb = d.push(2.0, 6 * np.ones(6))
    assert tb == 1.0
    np.testing.assert_array_equal(xb, np.full(6, 3.0))
    assert d.push(3.0, np.zeros(6)) is None  # a new block begins
    with pytest.raises(ValueError):
        Decimator(0)


# ---------------------------------------------------------------------------------------------
# clock jumps


def test_big_backwards_jump_restarts_and_windows_resume():
    t1, x1 = imu(600, seed=1, t0=500.0)
    t2, x2 = imu(600, seed=2, t0=10.0)  # the clock jumped back by 490 s (a bag restarted)
    s = FeatureStream()
    ev1 = run(s, t1, x1)
    ev2 = run(s, t2, x2)
    assert s.time_resets == 1
    assert not s.dropped_samples  # nothing after the jump was thrown away as out of order
    # After the restart the stream behaves like a fresh one on the new clock.
    assert_same_as_batch(ev1, t1, x1)
    assert_same_as_batch(ev2, t2, x2)
    assert len(accepted(ev2)) == (600 - N_WIN) // HOP + 1
    assert ev2[0].t_start == t2[0]


def test_backwards_jump_with_decimation_restarts_the_block():
    t1, x1 = imu(2000, fs=400.0, seed=1, t0=500.0)
    t2, x2 = imu(2002, fs=400.0, seed=2, t0=0.0)
    s = FeatureStream(StreamConfig(CFG, decimation=4))
    run(s, t1[:-2], x1[:-2])  # ends in the middle of a block
    ev = run(s, t2, x2)
    assert s.time_resets == 1
    assert ev and all(e.accepted for e in ev)
    # The half block from before the jump is not averaged into the first new sample: the
    # windows are those of the new stream's own blocks.
    w = extract_windows(
        t2[:2000].reshape(-1, 4).mean(axis=1), x2[:2000].reshape(-1, 4, 6).mean(axis=1), CFG
    )
    assert [e.t_start for e in ev] == pytest.approx(w.t_start.tolist(), abs=1e-12)
    np.testing.assert_allclose(np.stack([e.features for e in ev]), w.features, rtol=1e-5, atol=1e-5)


def test_small_step_back_is_out_of_order_not_a_restart():
    """A sample older than the newest by less than time_jump_reset_s is dropped (non_monotonic),
    and only the windows around it are rejected."""
    t, x = imu(800, seed=4)
    t = t.copy()
    t[300] = t[299] - 0.2  # out of order (0.2 s < 1 s)
    t[500] = t[499]  # duplicate stamp
    s = FeatureStream()
    events = run(s, t, x)
    assert s.time_resets == 0
    assert s.dropped_samples == {Reject.NON_MONOTONIC: 2}
    assert s.rejected[Reject.NON_MONOTONIC] >= 2
    assert_same_as_batch(events, t, x)
    for e in events:
        # The defect is the open interval between the kept samples around the dropped one.
        hit = any(e.t_start < t[i + 1] and t[i - 1] < e.t_end for i in (300, 500))
        assert e.accepted != hit, (e.t_start, e.reason)
    assert_no_nonfinite_features(events)


def test_time_jump_reset_threshold_is_configurable():
    t, x = imu(400, seed=5)
    t = t.copy()
    t[250:] -= 0.6  # a 0.6 s step back
    strict = FeatureStream(StreamConfig(CFG, time_jump_reset_s=0.5))
    run(strict, t, x)
    assert strict.time_resets == 1 and not strict.dropped_samples
    lenient = FeatureStream(StreamConfig(CFG, time_jump_reset_s=1.0))
    run(lenient, t, x)
    assert lenient.time_resets == 0
    assert lenient.dropped_samples[Reject.NON_MONOTONIC] == 60  # until the clock catches up


@pytest.mark.parametrize("jump_s", [5.0, 3600.0 * 24, 1.7e9])
def test_forward_jump_does_not_stall_the_stream(jump_s: float):
    """A stamp far in the future (a driver switching from boot time to epoch time, sim time
    starting) must not make the stream build a window grid across the jump (memory and time
    grow with the jump: a MemoryError on every later sample for an epoch jump): it restarts, and
    windows resume on the new clock. An ordinary outage longer than a window starts a new grid too
    (without a restart)."""
    t1, x1 = imu(400, seed=6, t0=0.0)
    t2, x2 = imu(400, seed=7, t0=4.0 + jump_s)
    s = FeatureStream()
    run(s, t1, x1)
    ev = run(s, t2[:1], x2[:1])
    assert len(ev) <= 100  # not one event per hop of the jump
    ev += run(s, t2[1:], x2[1:])
    ok = accepted(ev)
    assert len(ok) >= (400 - N_WIN) // HOP + 1 - 4
    assert 0 <= t2[-1] - ok[-1].t_end < CFG.hop_s
    assert_no_nonfinite_features(ev)
    if jump_s < 60:
        # A pause longer than a window: a new grid (no windows over the pause itself).
        assert s.buffer.pauses == 1 and s.time_resets == 0 and not s.rejected
    else:
        assert s.time_resets == 1 and not s.rejected
        assert_same_as_batch(ev, t2, x2)


def test_glitched_future_stamp_costs_two_restarts_only():
    """One sample stamped in the far future, then the clock is normal again."""
    t, x = imu(800, seed=12)
    t = t.copy()
    t[400] = 1.7e9
    s = FeatureStream()
    events = run(s, t, x)
    assert s.time_resets == 2
    assert_no_nonfinite_features(events)
    assert accepted(events)[-1].t_end > t[401] + 1.0  # windows resumed after the glitch


# ---------------------------------------------------------------------------------------------
# non-finite samples


def test_nan_and_inf_samples_dropped_counted_and_windows_rejected():
    t, x = imu(1200, seed=8)
    t, x = t.copy(), x.copy()
    x[200, 0] = math.nan
    x[420, 4] = math.inf
    x[421, 5] = -math.inf
    t[650] = math.nan
    t[700] = math.inf
    s = FeatureStream()
    events = run(s, t, x)
    assert s.dropped_samples == {Reject.NONFINITE: 5}
    assert s.rejected[Reject.NONFINITE] > 0
    assert s.samples == 1200
    assert_no_nonfinite_features(events)
    assert_same_as_batch(events, t, x)
    # Each defect is the open interval between the kept samples around the dropped ones.
    spans = [(t[199], t[201]), (t[419], t[422]), (t[649], t[651]), (t[699], t[701])]
    for e in events:
        hit = any(e.t_start < b and a < e.t_end for a, b in spans)
        assert e.accepted != hit, (e.t_start, e.reason)
        assert e.accepted or e.reason is Reject.NONFINITE
    # Windows clear of the bad samples still come out, also after the last one.
    assert len(accepted(events)) >= 5
    assert accepted(events)[-1].t_start > t[701]


def test_nan_inside_a_decimation_block_rejects_instead_of_averaging():
    t, x = imu(4 * 600, fs=400.0, seed=9)
    x = x.copy()
    x[1001, 2] = math.nan
    s = FeatureStream(StreamConfig(CFG, decimation=4))
    events = run(s, t, x)
    assert s.dropped_samples == {Reject.NONFINITE: 1}  # one decimated sample
    assert s.rejected[Reject.NONFINITE] > 0
    assert_no_nonfinite_features(events)
    bad_t = t[1000:1004].mean()
    for e in events:
        assert e.accepted == (not e.t_start - 0.02 <= bad_t <= e.t_end + 0.02)


def test_all_nan_stream_never_emits_features():
    t, _ = imu(600, seed=10)
    s = FeatureStream()
    events = run(s, t, np.full((600, 6), math.nan))
    assert events == []
    assert s.dropped_samples == {Reject.NONFINITE: 600}
    # Good data afterwards is windowed normally.
    t2, x2 = imu(400, seed=11, t0=t[-1] + 0.01)
    ev = run(s, t2, x2)
    assert len(accepted(ev)) == (400 - N_WIN) // HOP + 1


def test_sample_checks_agree_with_the_batch_path_at_the_edges():
    """The per-sample fast path (finite sum, min/max in range) decides like the batch screen:
    +inf and -inf in one sample (sum NaN), values at and past the limit, a sum that overflows
    although every value is finite (kept when the limit allows it)."""
    t, x = imu(1200, seed=9)
    t, x = t.copy(), x.copy()
    x[100, 1], x[100, 2] = math.inf, -math.inf
    x[300, 0] = 1e4  # at max_abs_value: kept
    x[500, 3] = -1e4 - 1e-9  # just past it
    x[700] = 1e4
    s = FeatureStream()
    events = run(s, t, x)
    assert s.dropped_samples == {Reject.NONFINITE: 1, Reject.OUT_OF_RANGE: 1}
    assert_same_as_batch(events, t, x)
    wide = StreamConfig(features=FeatureConfig(max_abs_value=math.inf))
    x[900] = 1.7e308  # finite, but six of them sum to inf
    s = FeatureStream(wide)
    run(s, t, x)
    assert s.dropped_samples == {Reject.NONFINITE: 1}  # only the +inf/-inf sample
