"""Feature extractor: layout, known signals, rejection rules, streaming = batch."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from terrain_odt.signals.features import (
    AXES,
    DEFAULT_BANDS,
    STATS,
    FeatureConfig,
    Reject,
    WindowBuffer,
    extract_windows,
    feature_names,
    window_features,
)

CFG = FeatureConfig()
FS = CFG.sample_rate_hz
NB = len(CFG.bands)
BLOCK = NB + len(STATS)


def col(axis: str, name: str) -> int:
    return feature_names(CFG).index(f"{axis}_{name}")


def noise(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    x = rng.normal(size=(n, 6)) * [0.05, 0.05, 0.05, 0.5, 0.5, 0.5] + [0, 0, 0, 0, 0, 9.81]
    return t, x


def window_starts(n_windows: int) -> np.ndarray:
    return np.arange(n_windows) * CFG.hop_samples / FS


# ---------------------------------------------------------------------------------------------
# layout


def test_defaults_and_layout():
    assert (CFG.sample_rate_hz, CFG.window_s, CFG.hop_s) == (100.0, 1.7, 0.5)
    assert (CFG.window_samples, CFG.hop_samples) == (170, 50)
    names = feature_names(CFG)
    assert len(names) == CFG.n_features == 102 == 6 * (11 + 6)
    assert len(set(names)) == len(names)
    assert names[0] == "wx_logpow_0.5-2Hz"
    assert names[NB - 1] == "wx_logpow_41-50Hz"
    assert names[NB:BLOCK] == [f"wx_{s}" for s in STATS]
    assert names[-1] == "az_zcr"
    assert [n.split("_")[0] for n in names[::BLOCK]] == list(AXES)


def test_shapes_and_dtype():
    t, x = noise(1000)
    w = extract_windows(t, x)
    # (1000 - 170) // 50 + 1 complete windows
    assert w.features.shape == (17, 102)
    assert w.features.dtype == np.float32
    assert np.isfinite(w.features).all()
    np.testing.assert_allclose(w.t_start, window_starts(17))
    np.testing.assert_allclose(w.t_end - w.t_start, 1.69)
    assert not w.rejected and w.n_windows == 17


def test_short_and_empty_inputs():
    t, x = noise(169)
    assert extract_windows(t, x).features.shape == (0, 102)
    assert extract_windows(t[: 170 - 169], x[:1]).n_windows == 0
    assert extract_windows(np.empty(0), np.empty((0, 6))).n_windows == 0
    t, x = noise(170)
    assert extract_windows(t, x).features.shape == (1, 102)
    with pytest.raises(ValueError):
        extract_windows(t, x[:, :5])
    with pytest.raises(ValueError):
        window_features(np.zeros((2, 6, 100)))


def test_config_validation():
    with pytest.raises(ValueError, match="no Welch bin"):
        FeatureConfig(bands=((10.5, 11.0),))
    with pytest.raises(ValueError, match="Nyquist"):
        FeatureConfig(bands=((10.0, 60.0),))
    with pytest.raises(ValueError):
        FeatureConfig(hop_s=0.001)
    cfg = FeatureConfig(bands=DEFAULT_BANDS[:4])
    assert len(feature_names(cfg)) == cfg.n_features == 6 * 10


# ---------------------------------------------------------------------------------------------
# known signals


@pytest.mark.parametrize("band", [0, 3, 4, 6, 8, 10])
def test_sine_power_lands_in_its_band(band: int):
    lo, hi = CFG.bands[band]
    f = 0.5 * (lo + hi)
    amp = 2.0
    t = np.arange(600) / FS
    x = np.zeros((t.size, 6))
    x[:, 4] = amp * np.sin(2 * np.pi * f * t + 0.3)  # ay
    f_all = extract_windows(t, x).features
    ay = f_all[:, 4 * BLOCK : 4 * BLOCK + NB]
    assert (ay.argmax(axis=1) == band).all()
    power = 10.0 ** ay.astype(np.float64)
    # Most of the power in the band, the total matching the sine's variance (Parseval).
    assert (power[:, band] / power.sum(axis=1) > 0.6).all()
    if band > 0:  # the lowest band is coarse: 0.68 s Welch segments, 1.47 Hz bins
        np.testing.assert_allclose(power.sum(axis=1), amp**2 / 2, rtol=0.1)
    # Silent axes sit at the floor.
    assert (f_all[:, :NB] == -12).all()
    # Zero crossings: 2 per period (± one crossing in the window).
    np.testing.assert_allclose(f_all[:, col("ay", "zcr")], 2 * f, atol=1 / 1.69 + 1e-3)
    np.testing.assert_allclose(f_all[:, col("ay", "rms")], amp / np.sqrt(2), rtol=0.05)
    np.testing.assert_allclose(f_all[:, col("ay", "ptp")], 2 * amp, rtol=0.05)


def test_constant_signal():
    t = np.arange(400) / FS
    x = np.tile([0.1, -0.2, 0.0, 1.5, -3.0, 9.81], (t.size, 1))
    f = extract_windows(t, x).features
    assert np.isfinite(f).all()
    for a, value in zip(AXES, x[0], strict=True):
        np.testing.assert_allclose(f[:, col(a, "rms")], abs(value), rtol=1e-6)
        for name in ("std", "skew", "kurt", "ptp", "zcr"):
            np.testing.assert_allclose(f[:, col(a, name)], 0.0, atol=1e-6)
    assert (f[:, :NB] == -12).all()


def test_moments_match_scipy():
    rng = np.random.default_rng(3)
    w = rng.gamma(2.0, size=(4, 6, 170))
    f = window_features(w).reshape(4, 6, BLOCK)
    np.testing.assert_allclose(f[..., NB + 1], w.std(axis=-1), rtol=1e-5)
    np.testing.assert_allclose(f[..., NB + 2], stats.skew(w, axis=-1), rtol=1e-4)
    np.testing.assert_allclose(f[..., NB + 3], stats.kurtosis(w, axis=-1), rtol=1e-4)
    np.testing.assert_allclose(f[..., NB + 0], np.sqrt((w**2).mean(axis=-1)), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# irregular input


def windows_over(sample_idx: int, n_windows: int) -> np.ndarray:
    """Start times of the windows whose grid contains sample `sample_idx` (regular 100 Hz)."""
    j = np.arange(n_windows)
    hit = (j * CFG.hop_samples <= sample_idx) & (sample_idx < j * CFG.hop_samples + 170)
    return window_starts(n_windows)[hit]


def test_nan_rejects_exactly_the_windows_containing_it():
    t, x = noise(1000)
    x[500, 3] = np.nan
    w = extract_windows(t, x)
    expected = windows_over(500, 17)
    assert len(expected) == 4
    assert w.rejected == {Reject.NONFINITE: 4}
    assert w.dropped_samples == {Reject.NONFINITE: 1}
    np.testing.assert_allclose(w.rejected_t_start, expected)
    assert w.n_windows == 17 and len(w.features) == 13
    assert np.isfinite(w.features).all()


def test_inf_and_nan_time_are_nonfinite():
    t, x = noise(1000)
    x[200, 0] = np.inf
    t = t.copy()
    t[700] = np.nan
    w = extract_windows(t, x)
    assert set(w.rejected) == {Reject.NONFINITE}
    assert w.dropped_samples == {Reject.NONFINITE: 2}
    assert w.rejected[Reject.NONFINITE] == len(windows_over(200, 17)) + len(windows_over(700, 17))


def test_gap_longer_than_limit_rejected_short_gap_bridged():
    t, x = noise(1000)
    short = np.ones(1000, bool)
    short[300 : 300 + CFG.max_gap_samples] = False  # 3 missing samples: interpolated
    w = extract_windows(t[short], x[short])
    assert not w.rejected and len(w.features) == 17

    long_ = np.ones(1000, bool)
    long_[300 : 300 + CFG.max_gap_samples + 1] = False  # 4 missing: rejected
    w = extract_windows(t[long_], x[long_])
    assert set(w.rejected) == {Reject.GAP}
    np.testing.assert_allclose(
        w.rejected_t_start,
        np.union1d(windows_over(300, 17), windows_over(303, 17)),
    )


def test_long_outage_yields_gap_windows_not_garbage():
    t, x = noise(1000)
    t = np.concatenate([t[:500], t[500:] + 30.0])  # 30 s without data
    w = extract_windows(t, x)
    # The pause ends the grid: no window is made over it (none would hold a sample).
    assert w.pauses == 1 and not w.rejected
    assert len(w.features) == 2 * ((500 - 170) // 50 + 1)
    assert np.isfinite(w.features).all()
    # Accepted windows lie entirely on one side of the outage.
    assert ((w.t_end <= t[499]) | (w.t_start >= t[500])).all()


@pytest.mark.parametrize("kind", ["backward", "duplicate"])
def test_non_monotonic_time_rejected(kind: str):
    t, x = noise(1000)
    t = t.copy()
    t[600] = t[598] if kind == "backward" else t[599]
    w = extract_windows(t, x)
    assert set(w.rejected) == {Reject.NON_MONOTONIC}
    assert w.dropped_samples == {Reject.NON_MONOTONIC: 1}
    np.testing.assert_allclose(w.rejected_t_start, windows_over(600, 17))


def test_clock_jump_back_rejects_the_seam():
    t, x = noise(1000)
    t = np.concatenate([t[:500], t[500:] - 2.0])  # jumps back 2 s, then runs on
    w = extract_windows(t, x)
    assert w.dropped_samples[Reject.NON_MONOTONIC] == 200  # samples not later than t[499]
    assert Reject.NON_MONOTONIC in w.rejected
    assert np.all(np.diff(w.t_start) > 0)


def test_wrong_rate_rejected():
    # A 50 Hz stream read with the 100 Hz config: every other sample is "missing" (within the
    # gap limit), so only the count check can catch it.
    t = np.arange(500) / 50.0
    x = np.random.default_rng(1).normal(size=(500, 6))
    w = extract_windows(t, x)
    assert len(w.features) == 0
    assert set(w.rejected) == {Reject.RATE}
    cfg50 = FeatureConfig(sample_rate_hz=50.0, bands=DEFAULT_BANDS[:7])
    ok = extract_windows(t, x, cfg50)
    assert ok.rejected == {} and len(ok.features) > 0


def test_jitter_is_resampled():
    t = np.arange(1200) / FS
    rng = np.random.default_rng(9)
    tj = t + rng.uniform(-0.002, 0.002, size=t.size)  # ±20 % of a sample period
    # The jittered stamps describe the same signal: the value at tj is the clean signal there.
    f = 3.0
    xs = np.sin(2 * np.pi * f * t)[:, None] * np.ones(6)
    xj = np.sin(2 * np.pi * f * tj)[:, None] * np.ones(6)
    clean = extract_windows(t, xs).features
    jit = extract_windows(tj, xj)
    assert not jit.rejected
    assert jit.features.shape[0] in (clean.shape[0], clean.shape[0] - 1)
    n = jit.features.shape[0]
    # Start times shift by the first sample's jitter: compare loosely, where the power is (the
    # interpolation error shows in the empty high bands, far below the signal).
    np.testing.assert_allclose(jit.features[:n, :3], clean[:n, :3], atol=0.05)
    for name in ("rms", "std", "ptp"):
        c = col("wx", name)
        np.testing.assert_allclose(jit.features[:n, c], clean[:n, c], rtol=0.05)
    c = col("wx", "zcr")
    np.testing.assert_allclose(jit.features[:n, c], clean[:n, c], atol=1 / 1.69 + 1e-3)


# ---------------------------------------------------------------------------------------------
# streaming


def messy_stream(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    t, x = noise(2500, seed)
    rng = np.random.default_rng(seed)
    t = t + rng.uniform(-0.002, 0.002, size=t.size)
    x[400, 1] = np.nan
    t[900] = t[897]
    keep = np.ones(t.size, bool)
    keep[1300:1308] = False  # gap
    keep[1600:1602] = False  # bridged
    t, x = t[keep], x[keep]
    t = np.concatenate([t[:2000], t[2000:] + 5.0])  # outage
    return t, x


def test_window_buffer_matches_extract_windows():
    t, x = messy_stream()
    batch = extract_windows(t, x)
    buf = WindowBuffer()
    events = []
    for i in range(len(t)):
        events += buf.push(t[i], x[i])
    acc = [e for e in events if e.accepted]
    rej = [e for e in events if not e.accepted]
    assert len(acc) == len(batch.features) > 0
    np.testing.assert_array_equal([e.t_start for e in acc], batch.t_start)
    np.testing.assert_allclose(np.stack([e.features for e in acc]), batch.features, atol=1e-6)
    assert [e.reason for e in rej] == batch.rejected_reason
    np.testing.assert_array_equal([e.t_start for e in rej], batch.rejected_t_start)
    assert buf.accepted == len(acc)
    assert buf.rejected == batch.rejected
    assert buf.dropped_samples == batch.dropped_samples
    assert set(batch.rejected) == {Reject.NONFINITE, Reject.NON_MONOTONIC, Reject.GAP}
    # Events come in time order, one per hop.
    starts = [e.t_start for e in events]
    assert np.all(np.diff(starts) > 0)
    # Bounded memory: only what the next window needs.
    assert len(buf._t) <= CFG.window_samples + CFG.hop_samples + 5


def test_window_buffer_emits_when_hop_elapsed_and_resets():
    t, x = noise(400)
    buf = WindowBuffer()
    first = [i for i in range(len(t)) if buf.push(t[i], x[i])]
    # Windows end on grid samples 169, 219, 269, ...: decided when that sample arrives.
    assert first == [169, 219, 269, 319, 369]
    buf.reset()
    assert buf.push(0.0, x[0]) == []  # old anchor and history forgotten
    assert buf.accepted == 5
    with pytest.raises(ValueError):
        buf.push(1.0, [0.0] * 5)


def test_push_many_equals_push():
    t, x = messy_stream(11)
    a = WindowBuffer().push_many(t[:1500], x[:1500])
    b = WindowBuffer()
    events = []
    for ti, xi in zip(t[:1500], x[:1500], strict=True):
        events += b.push(ti, xi)
    assert [e.t_start for e in a] == [e.t_start for e in events]
    assert [e.reason for e in a] == [e.reason for e in events]


def test_long_nonfinite_run_is_one_span_and_bounded():
    t, x = noise(2000)
    x[500:1500, 2] = np.nan  # 10 s of NaN: samples dropped (NONFINITE), a pause in the data
    w = extract_windows(t, x)
    assert w.dropped_samples == {Reject.NONFINITE: 1000} and w.pauses == 1
    buf = WindowBuffer()
    events = buf.push_many(t, x)
    assert len(buf._pending_bad) == 0 and len(buf._bad.code) <= 1
    assert [e.reason for e in events if not e.accepted] == w.rejected_reason
    assert [e.t_start for e in events if e.accepted] == w.t_start.tolist()
    assert buf.pauses == 1


def test_moments_equal_scipy_stats_bit_for_bit():
    """Skewness and kurtosis are written out for speed: the same values as scipy.stats."""
    rng = np.random.default_rng(7)
    cfg = FeatureConfig()
    w = rng.normal(size=(300, 6, cfg.window_samples)) * rng.uniform(1e-3, 10, (300, 6, 1))
    w += rng.normal(size=(300, 6, 1)) * 5
    f = window_features(w, cfg).reshape(300, 6, -1)
    nb = len(cfg.bands)
    skew = stats.skew(w, axis=-1, bias=True).astype(np.float32)
    kurt = stats.kurtosis(w, axis=-1, fisher=True, bias=True).astype(np.float32)
    assert np.array_equal(f[..., nb + 2], skew)
    assert np.array_equal(f[..., nb + 3], kurt)


@pytest.mark.parametrize("scale", [1e9, 1.0])
def test_work_is_bounded_by_the_data_not_the_time_span(scale: float):
    """Nanosecond stamps passed as seconds, or a 1e6 s jump: no grid over the span (which was a
    MemoryError, or 38 s of CPU for 500 samples), every sample still screened."""
    import time

    t, x = noise(500)
    t = t * scale
    if scale == 1.0:
        t = np.concatenate([t[:250], t[250:] + 1e6])
    t0 = time.process_time()
    w = extract_windows(t, x)
    buf = WindowBuffer()
    events = buf.push_many(t, x)
    assert time.process_time() - t0 < 5.0  # generous: was 38 s; the point is no blow-up
    assert [e.t_start for e in events if e.accepted] == w.t_start.tolist()
    if scale == 1e9:
        assert len(w.features) == 0 and w.pauses == 499
    else:
        assert w.pauses == 1 and len(w.features) == 2 * ((250 - 170) // 50 + 1)


def test_absurd_finite_values_are_dropped_as_out_of_range():
    t, x = noise(1000)
    x = x.copy()
    x[400, 3] = 1e155  # finite, but its square overflows: inf features before
    w = extract_windows(t, x)
    assert w.dropped_samples == {Reject.OUT_OF_RANGE: 1}
    assert set(w.rejected) == {Reject.OUT_OF_RANGE}
    assert np.isfinite(w.features).all()
    buf = WindowBuffer()
    ev = buf.push_many(t, x)
    assert buf.dropped_samples == {Reject.OUT_OF_RANGE: 1}
    assert [e.reason for e in ev if not e.accepted] == w.rejected_reason
