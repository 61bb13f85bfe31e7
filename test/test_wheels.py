"""Wheel proprioception in the one feature extractor: offline (`extract_windows` with wheel
samples) and online (`FeatureStream.push_wheels`) give the same windows and values; too few
wheel samples reject a window (`WHEELS`); late wheel data waits, then times out; JointState
messages become wheel samples; bands derive from the sample rate; the configuration travels
as a description the bridge compares with the model's."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from terrain_odt.signals.features import (
    DEFAULT_BANDS,
    WHEEL_STATS,
    FeatureConfig,
    Reject,
    derive_bands,
    extract_windows,
    feature_names,
    wheel_features,
)
from terrain_odt.signals.streaming import FeatureStream, StreamConfig, joint_wheel_sample

CFG = FeatureConfig(wheels=True)


def recording(seconds: float = 12.0, fs: float = 100.0, fw: float = 6.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = 1000.0 + np.arange(round(seconds * fs)) / fs
    imu = rng.normal(size=(t.size, 6))
    tw = 1000.0 + np.arange(0.0, seconds, 1 / fw) + 0.003
    w = np.column_stack(
        [0.4 + 0.05 * rng.normal(size=tw.size), 0.35 + 0.05 * rng.normal(size=tw.size),
         5 + rng.normal(size=tw.size), 6 + rng.normal(size=tw.size)]
    )  # fmt: skip
    return t, imu, tw, w


def stream_events(s: FeatureStream, t, imu, tw, w):
    """Both streams interleaved in time order, as a bag plays them."""
    order = sorted([(x, 0, i) for i, x in enumerate(t)] + [(x, 1, i) for i, x in enumerate(tw)])
    out = []
    for x, kind, i in order:
        out += s.push(x, imu[i]) if kind == 0 else s.push_wheels(x, w[i])
    return out


def test_offline_and_online_wheel_features_are_identical():
    t, imu, tw, w = recording()
    off = extract_windows(t, imu, CFG, (tw, w))
    assert off.features.shape[1] == CFG.n_features == 102 + len(WHEEL_STATS)
    assert len(feature_names(CFG)) == CFG.n_features
    on = [e for e in stream_events(FeatureStream(StreamConfig(CFG)), t, imu, tw, w) if e.accepted]
    assert [e.t_start for e in on] == off.t_start.tolist()
    assert np.array_equal(np.stack([e.features for e in on]), off.features)
    # The wheel part by hand for one window.
    i = 3
    m = (tw >= off.t_start[i]) & (tw <= off.t_end[i])
    speed = 0.5 * (np.abs(w[m, 0]) + np.abs(w[m, 1]))
    wf = off.features[i, 102:]
    np.testing.assert_allclose(wf[0], w[m, 2].mean(), rtol=1e-6)
    np.testing.assert_allclose(wf[4], speed.mean(), rtol=1e-6)
    np.testing.assert_allclose(wf[5], (w[m, 0] - w[m, 1]).mean(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(wf[7], ((w[m, 2] + w[m, 3]) / speed).mean(), rtol=1e-6)


def test_windows_without_wheel_samples_are_rejected():
    t, imu, tw, w = recording()
    keep = (tw < 1003.0) | (tw > 1006.0)  # a 3 s wheel outage
    off = extract_windows(t, imu, CFG, (tw[keep], w[keep]))
    assert off.rejected[Reject.WHEELS] > 0
    assert all(not (a > 1003.0 and b < 1006.0) for a, b in zip(off.t_start, off.t_end, strict=True))
    s = FeatureStream(StreamConfig(CFG))
    ev = stream_events(s, t, imu, tw[keep], w[keep])
    assert sum(e.reason == Reject.WHEELS for e in ev) == off.rejected[Reject.WHEELS]
    assert s.rejected[Reject.WHEELS] == off.rejected[Reject.WHEELS]
    with pytest.raises(ValueError, match="wheel"):
        extract_windows(t, imu, CFG)


def test_windows_wait_for_late_wheel_data_then_time_out():
    t, imu, _tw, _w = recording(6.0)
    s = FeatureStream(StreamConfig(CFG, wheel_timeout_s=0.5))
    ev = []
    for i in range(len(t)):  # IMU only: every window waits, then is judged without wheels
        ev += s.push(t[i], imu[i])
    assert ev and all(e.reason == Reject.WHEELS for e in ev)
    first_end = ev[0].t_end
    # A window is given up only once the IMU is the timeout past its end.
    s2 = FeatureStream(StreamConfig(CFG, wheel_timeout_s=0.5))
    released_at = None
    for i in range(len(t)):
        if s2.push(t[i], imu[i]):
            released_at = t[i]
            break
    assert released_at is not None and released_at >= first_end + 0.5 - 1e-9


def test_bad_wheel_samples_are_dropped_and_counted():
    s = FeatureStream(StreamConfig(CFG))
    s.push_wheels(1.0, [0.1, 0.1, 1.0, 1.0])
    s.push_wheels(0.9, [0.1, 0.1, 1.0, 1.0])  # out of order
    s.push_wheels(1.1, [np.nan, 0.1, 1.0, 1.0])
    assert s.wheel_samples == 1 and s.wheel_dropped == 2
    with pytest.raises(ValueError):
        s.push_wheels(1.2, [0.1, 0.1])


def test_joint_state_to_wheel_sample():
    names = ["fl", "rl", "fr", "rr", "arm"]
    vel = [2.0, 4.0, 1.0, 1.0, 9.0]
    eff = [1.0, 3.0, 5.0, 7.0, 0.0]
    w = joint_wheel_sample(names, vel, eff, ["fl", "rl"], ["fr", "rr"], 0.5)
    assert w == [1.5, 0.5, 2.0, 6.0]
    assert joint_wheel_sample(["arm"], [1.0], [1.0], ["fl"], ["fr"], 0.5) is None
    with pytest.raises(ValueError, match="effort"):
        joint_wheel_sample(names, vel, [], ["fl"], ["fr"], 0.5)


def test_bands_derive_from_the_rate():
    assert FeatureConfig().band_list == DEFAULT_BANDS
    for fs in (50.0, 30.0, 200.0, 400.0):
        cfg = FeatureConfig(sample_rate_hz=fs)  # validates: every band holds a Welch bin
        bands = cfg.band_list
        assert bands[-1][1] == fs / 2 and bands[0][0] == 0.5
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bands))
    assert derive_bands(50.0, 34)[-1] == (20.0, 25.0)
    with pytest.raises(ValueError, match="Nyquist"):
        FeatureConfig(sample_rate_hz=50.0, bands=DEFAULT_BANDS)


def test_description_round_trip():
    cfg = FeatureConfig(sample_rate_hz=50.0, wheels=True)
    d = cfg.to_dict()
    assert FeatureConfig.describe_dict(d) == cfg.describe()
    assert "wheels on" in cfg.describe() and "50 Hz" in cfg.describe()
    assert FeatureConfig().describe() != cfg.describe()
    with pytest.raises(ValueError, match="not a feature configuration"):
        FeatureConfig.describe_dict({"sample_rate_hz": 50.0})


def test_wheel_features_of_a_window_need_min_samples():
    cfg = FeatureConfig(wheels=True, min_wheel_samples=4)
    tw = np.array([0.0, 0.5, 1.0])
    w = np.ones((3, 4))
    assert wheel_features(tw, w, 0.0, 1.7, cfg) is None
    assert wheel_features(tw, w, 0.0, 1.7, FeatureConfig(wheels=True)) is not None
