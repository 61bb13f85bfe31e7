"""IMU vibration features: one extractor, offline (`extract_windows`) and online (`WindowBuffer`).

Pipeline (both entry points run the same code, see `_evaluate`):

1. **Sample screening.** A sample is dropped when its time or any of its 6 channels is not finite
   (reason `NONFINITE`), when a channel's magnitude exceeds `max_abs_value` (`OUT_OF_RANGE`:
   corrupt data, e.g. 1e155 would overflow the moments), or when its time is not later than
   every earlier sample's time (`NON_MONOTONIC`; duplicates count as non-monotonic). The time
   span between the last kept sample before and the first kept sample after a dropped sample
   is marked bad with that reason.
2. **Resampling.** Kept samples are linearly interpolated onto the nominal grid
   `t_k = t0 + k / sample_rate_hz`, which absorbs clock jitter and the odd missing sample. The
   anchor `t0` is the first multiple of `hop_s` (in absolute time) at or after the first kept
   sample: window times do not depend on where a stream happens to begin, so two recordings of
   one drive (e.g. a replay that lost the first few IMU messages) produce the same windows, and
   a window's end time identifies it.
3. **Windowing.** Window `j` is grid samples `[j·hop, j·hop + n)` (`n = round(window_s · rate)`,
   `hop = round(hop_s · rate)`). A window is **rejected**, never silently repaired, when its
   time span overlaps an (open) interval between consecutive kept samples that had samples
   dropped inside (`NON_MONOTONIC`, `NONFINITE`) or that is longer than `max_gap_samples + 1.5`
   sample periods (`GAP`: more than `max_gap_samples` samples missing), or when
   the number of kept samples inside it differs from `n` by more than `rate_tolerance · n`
   (`RATE`: the stream does not run at the configured rate). The first matching reason in that
   order is reported; rejections are counted per reason. A pause longer than a window (no
   data, or only dropped data: an outage, a clock jump, stamps in the wrong unit) ends the
   grid: the recording continues as a new part on a grid of its own, and the windows of the
   pause, which hold no sample, are not windows at all (counted as `pauses`), so the work is
   in proportion to the data, not to the time span.
4. **Features** of accepted windows (`window_features`), per axis in the order
   `wx wy wz ax ay az` (rad/s, m/s²): `len(bands)` log10 band powers from a Welch PSD (Hann,
   `nperseg = 2n // 5`, 50 % overlap: 4 segments over the 170-sample default window; mean
   removed per segment), then RMS (about zero, so it includes the mean, e.g. gravity), standard
   deviation, skewness, excess kurtosis (the biased estimators of `scipy.stats`; 0 for a constant
   window), peak-to-peak, and zero-crossing rate of the mean-removed signal in crossings per
   second. With the default 11 bands: 6 × (11 + 6) = 102 float32 values; `feature_names(cfg)`
   gives the name of each.

5. **Wheel proprioception** (`FeatureConfig.wheels`): for robots that report wheel speed and
   motor effort (`sensor_msgs/JointState`: velocity and effort of the wheel joints, left and
   right side; BorealTC records motor current), 8 more values per window from the wheel samples
   stamped inside its span (`wheel_features`): mean and standard deviation of the left and right
   effort, mean ground speed `(|v_l| + |v_r|) / 2` (m/s), mean left−right speed difference, the
   speed's standard deviation, and the mean effort per speed `(|e_l| + |e_r|) / max(speed,
   0.05)` (the load the terrain puts on the motors). A window with fewer than
   `min_wheel_samples` wheel samples is rejected (`WHEELS`). Wheel data is optional: an IMU-only
   configuration (the default) has none of this.

Bands: by default derived from the sample rate (`derive_bands`): the edges of `DEFAULT_BANDS`
(0.5 … 50 Hz, roughly logarithmic) continued in the same ratio, cut at the Nyquist frequency
(which becomes the last edge), and a band holding no Welch bin merged into its neighbour; at
100 Hz this is exactly `DEFAULT_BANDS`.

Defaults: 100 Hz, 1.7 s windows (the BorealTC paper's choice), 0.5 s hop.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal

AXES: tuple[str, ...] = ("wx", "wy", "wz", "ax", "ay", "az")
"""IMU channel order everywhere in this package (BorealTC CSV column order)."""

STATS: tuple[str, ...] = ("rms", "std", "skew", "kurt", "ptp", "zcr")
"""Time-domain statistics per axis, in feature order."""

DEFAULT_BANDS: tuple[tuple[float, float], ...] = (
    (0.5, 2.0),
    (2.0, 4.0),
    (4.0, 6.0),
    (6.0, 8.0),
    (8.0, 11.0),
    (11.0, 15.0),
    (15.0, 20.0),
    (20.0, 26.0),
    (26.0, 33.0),
    (33.0, 41.0),
    (41.0, 50.0),
)
"""Band edges in Hz: half-open `[lo, hi)`, the last band also includes `hi` (Nyquist at 100 Hz)."""

#: Band edges beyond `DEFAULT_BANDS` (for IMUs faster than 100 Hz), in the same ratio.
_MORE_EDGES: tuple[float, ...] = (62.0, 77.0, 95.0, 118.0, 146.0, 180.0, 225.0, 280.0, 350.0, 440.0)

WHEEL_STATS: tuple[str, ...] = (
    "effort_left_mean",
    "effort_right_mean",
    "effort_left_std",
    "effort_right_std",
    "speed_mean",
    "speed_diff_mean",
    "speed_std",
    "effort_per_speed",
)
"""Wheel features per window (`wheel_features`), in feature order after the IMU features."""

WHEEL_CHANNELS: tuple[str, ...] = ("vel_left", "vel_right", "effort_left", "effort_right")
"""Columns of a wheel sample: ground speed of each side (m/s, signed) and motor effort."""

#: Speed below which effort per speed uses this instead (m/s): standing still is not infinite load.
MIN_SPEED_FOR_EFFORT = 0.05

LOG_POWER_FLOOR = 1e-12
"""Band powers are `log10(max(power, LOG_POWER_FLOOR))`."""


class Reject(str, Enum):  # noqa: UP042 (StrEnum needs 3.11; setup.py allows 3.10)
    """Why a window was rejected (value = short string for logs, diagnostics and JSON)."""

    NON_MONOTONIC = "non_monotonic"
    NONFINITE = "nonfinite"
    #: A finite value beyond `FeatureConfig.max_abs_value` (corrupt data, not an IMU reading).
    OUT_OF_RANGE = "out_of_range"
    GAP = "gap"
    RATE = "rate"
    #: Fewer than `min_wheel_samples` wheel samples inside the window (wheel data on).
    WHEELS = "wheels"


# Priority order when several reasons apply (first wins). Codes are 1-based indices into it.
_REASONS: tuple[Reject, ...] = (
    Reject.NON_MONOTONIC,
    Reject.NONFINITE,
    Reject.OUT_OF_RANGE,
    Reject.GAP,
    Reject.RATE,
    Reject.WHEELS,
)
_CODE = {r: i + 1 for i, r in enumerate(_REASONS)}


@dataclass(frozen=True)
class FeatureConfig:
    """Windowing and feature parameters (see the module docstring)."""

    sample_rate_hz: float = 100.0
    window_s: float = 1.7
    hop_s: float = 0.5
    bands: tuple[tuple[float, float], ...] | None = None
    """Band edges in Hz; `None`: derived from the sample rate (`derive_bands`)."""
    max_gap_samples: int = 3
    """Largest run of missing samples bridged by interpolation; longer gaps reject the window."""
    rate_tolerance: float = 0.1
    """Allowed relative deviation of the kept-sample count per window from `window_samples`."""
    wheels: bool = False
    """Append the wheel features (module doc, step 5)."""
    min_wheel_samples: int = 3
    max_abs_value: float = 1e4
    """Larger |values| (rad/s, m/s²; far beyond any IMU's range) are dropped as corrupt."""

    def __post_init__(self) -> None:
        if self.bands is None and self.sample_rate_hz > 0 and math.isfinite(self.sample_rate_hz):
            object.__setattr__(
                self, "bands", derive_bands(self.sample_rate_hz, self.nperseg_for_rate)
            )
        elif self.bands is not None:
            object.__setattr__(
                self, "bands", tuple((float(lo), float(hi)) for lo, hi in self.bands)
            )
        if self.min_wheel_samples < 2:
            raise ValueError(f"min_wheel_samples must be >= 2, got {self.min_wheel_samples}")
        if not (self.sample_rate_hz > 0 and math.isfinite(self.sample_rate_hz)):
            raise ValueError(f"sample_rate_hz must be positive, got {self.sample_rate_hz}")
        if self.window_samples < 16:
            raise ValueError(f"window of {self.window_samples} samples is too short (min 16)")
        if self.hop_samples < 1:
            raise ValueError(f"hop_s={self.hop_s} gives a hop of less than one sample")
        if self.max_gap_samples < 0 or self.rate_tolerance < 0:
            raise ValueError("max_gap_samples and rate_tolerance must be >= 0")
        if not self.bands:
            raise ValueError("at least one band is needed")
        freqs = self.welch_freqs
        for i, (lo, hi) in enumerate(self.band_list):
            if not 0 <= lo < hi <= self.sample_rate_hz / 2:
                raise ValueError(f"band {i} ({lo}, {hi}) Hz is not inside [0, Nyquist]")
            if not self._band_mask(freqs, i).any():
                raise ValueError(
                    f"band {i} ({lo}, {hi}) Hz holds no Welch bin (resolution "
                    f"{freqs[1]:.3g} Hz): widen it or lengthen the window"
                )

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sample_rate_hz)

    @property
    def nperseg_for_rate(self) -> int:
        return max(2 * round(self.window_s * self.sample_rate_hz) // 5, 2)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_s * self.sample_rate_hz)

    @property
    def nperseg(self) -> int:
        """Welch segment length: 4 half-overlapping Hann segments span the window."""
        return 2 * self.window_samples // 5

    @property
    def welch_freqs(self) -> np.ndarray:
        return np.fft.rfftfreq(self.nperseg, d=1.0 / self.sample_rate_hz)

    @property
    def band_list(self) -> tuple[tuple[float, float], ...]:
        assert self.bands is not None  # set in __post_init__
        return self.bands

    @property
    def n_imu_features(self) -> int:
        return len(AXES) * (len(self.band_list) + len(STATS))

    @property
    def n_features(self) -> int:
        return self.n_imu_features + (len(WHEEL_STATS) if self.wheels else 0)

    def _band_mask(self, freqs: np.ndarray, i: int) -> np.ndarray:
        return _band_mask(freqs, self.band_list, i)

    def to_dict(self) -> dict[str, object]:
        """What a model was trained with (stored in its sidecar, `features`)."""
        return {
            "sample_rate_hz": self.sample_rate_hz,
            "window_s": self.window_s,
            "hop_s": self.hop_s,
            "bands": [list(b) for b in self.band_list],
            "wheels": self.wheels,
            "n_features": self.n_features,
        }

    def describe(self) -> str:
        """One line naming what the features are (sent with every features message)."""
        bands = ",".join(f"{lo:g}-{hi:g}" for lo, hi in self.band_list)
        return (
            f"{self.sample_rate_hz:g} Hz, window {self.window_s:g} s, hop {self.hop_s:g} s, "
            f"bands {bands} Hz, wheels {'on' if self.wheels else 'off'}, "
            f"{self.n_features} features"
        )

    @classmethod
    def describe_dict(cls, d: dict[str, object]) -> str:
        """`describe()` of a sidecar's `features` entry (`ValueError` if malformed)."""
        try:
            return cls(
                sample_rate_hz=float(d["sample_rate_hz"]),  # type: ignore[arg-type]
                window_s=float(d["window_s"]),  # type: ignore[arg-type]
                hop_s=float(d["hop_s"]),  # type: ignore[arg-type]
                bands=tuple((float(lo), float(hi)) for lo, hi in d["bands"]),  # type: ignore[attr-defined]
                wheels=bool(d["wheels"]),
            ).describe()
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a feature configuration: {exc}") from None


def _band_mask(freqs: np.ndarray, bands: Sequence[tuple[float, float]], i: int) -> np.ndarray:
    lo, hi = bands[i]
    last = i == len(bands) - 1
    return (freqs >= lo) & ((freqs <= hi) if last else (freqs < hi))


def derive_bands(sample_rate_hz: float, nperseg: int) -> tuple[tuple[float, float], ...]:
    """Bands for a sample rate (module doc): `DEFAULT_BANDS`' edges and their continuation, cut
    at Nyquist; a band without a Welch bin is merged into the next (the last into the one
    before)."""
    nyq = sample_rate_hz / 2
    edges = [DEFAULT_BANDS[0][0], *(hi for _, hi in DEFAULT_BANDS), *_MORE_EDGES]
    edges = [e for e in edges if e < nyq - 1e-9] + [nyq]
    freqs = np.fft.rfftfreq(nperseg, d=1.0 / sample_rate_hz)
    i = 0
    while len(edges) > 2 and i < len(edges) - 1:
        bands = list(itertools.pairwise(edges))
        if _band_mask(freqs, bands, i).any():
            i += 1
            continue
        del edges[i + 1 if i + 1 < len(edges) - 1 else i]
    return tuple(itertools.pairwise(edges))


def feature_names(cfg: FeatureConfig | None = None) -> list[str]:
    """Name of each feature column, e.g. `wx_logpow_0.5-2Hz`, ..., `az_zcr`."""
    cfg = cfg or FeatureConfig()
    names: list[str] = []
    for axis in AXES:
        names += [f"{axis}_logpow_{lo:g}-{hi:g}Hz" for lo, hi in cfg.band_list]
        names += [f"{axis}_{s}" for s in STATS]
    if cfg.wheels:
        names += [f"wheel_{s}" for s in WHEEL_STATS]
    return names


# ---------------------------------------------------------------------------------------------
# Features of already-cut, clean windows.


def window_features(windows: np.ndarray, cfg: FeatureConfig | None = None) -> np.ndarray:
    """IMU features `(M, n_imu_features)` float32 of clean windows `(M, 6, window_samples)`.

    The single feature core: `extract_windows` and `WindowBuffer` both end here.
    """
    cfg = cfg or FeatureConfig()
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 3 or w.shape[1] != len(AXES) or w.shape[2] != cfg.window_samples:
        raise ValueError(
            f"windows must be (M, {len(AXES)}, {cfg.window_samples}), got {tuple(w.shape)}"
        )
    m = w.shape[0]
    out = np.empty((m, len(AXES), len(cfg.band_list) + len(STATS)), dtype=np.float64)
    if m == 0:
        return out.reshape(0, cfg.n_imu_features).astype(np.float32)

    freqs, psd = signal.welch(
        w,
        fs=cfg.sample_rate_hz,
        window="hann",
        nperseg=cfg.nperseg,
        noverlap=cfg.nperseg // 2,
        detrend="constant",
        scaling="density",
        axis=-1,
    )
    df = freqs[1] - freqs[0]
    for i in range(len(cfg.band_list)):
        power = psd[..., cfg._band_mask(freqs, i)].sum(axis=-1) * df
        out[..., i] = np.log10(np.maximum(power, LOG_POWER_FLOOR))

    nb = len(cfg.band_list)
    std = w.std(axis=-1)
    mean = w.mean(axis=-1)
    # A window is "flat" when its spread is at rounding level: moments are then meaningless.
    flat = std <= 1e-9 * np.maximum(1.0, np.abs(mean))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        # The biased estimators of scipy.stats.skew / kurtosis (bias=True), written out: the
        # same values bit for bit (checked in test_features), at a fraction of the per-call
        # overhead (the online node computes one window at a time).
        d = w - mean[..., None]
        d2 = d * d
        m2 = d2.mean(axis=-1)
        skew = (d2 * d).mean(axis=-1) / m2**1.5
        kurt = (d2 * d2).mean(axis=-1) / (m2 * m2) - 3.0
    out[..., nb + 0] = np.sqrt(np.mean(w * w, axis=-1))
    out[..., nb + 1] = std
    out[..., nb + 2] = np.where(flat, 0.0, skew)
    out[..., nb + 3] = np.where(flat, 0.0, kurt)
    out[..., nb + 4] = np.ptp(w, axis=-1)
    positive = (w - mean[..., None]) >= 0
    crossings = np.count_nonzero(positive[..., 1:] != positive[..., :-1], axis=-1)
    duration = (cfg.window_samples - 1) / cfg.sample_rate_hz
    out[..., nb + 5] = np.where(flat, 0.0, crossings / duration)
    return out.reshape(m, cfg.n_imu_features).astype(np.float32)


def wheel_features(
    tw: np.ndarray, w: np.ndarray, t0: float, t1: float, cfg: FeatureConfig
) -> np.ndarray | None:
    """The wheel features (`WHEEL_STATS`) of the window `[t0, t1]` from wheel samples `tw`
    (increasing times) and `w` (`(N, 4)` in `WHEEL_CHANNELS` order); `None` when fewer than
    `cfg.min_wheel_samples` lie inside. One window at a time, offline and online alike, so
    both compute exactly the same values."""
    lo = int(np.searchsorted(tw, t0, side="left"))
    hi = int(np.searchsorted(tw, t1, side="right"))
    if hi - lo < cfg.min_wheel_samples:
        return None
    x = np.asarray(w[lo:hi], dtype=np.float64)
    vl, vr, el, er = x[:, 0], x[:, 1], x[:, 2], x[:, 3]
    speed = 0.5 * (np.abs(vl) + np.abs(vr))
    load = (np.abs(el) + np.abs(er)) / np.maximum(speed, MIN_SPEED_FOR_EFFORT)
    return np.array(
        [
            el.mean(),
            er.mean(),
            el.std(),
            er.std(),
            speed.mean(),
            (vl - vr).mean(),
            speed.std(),
            load.mean(),
        ],
        dtype=np.float32,
    )


def _as_wheels(wheels: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Wheel samples screened like IMU samples: finite, strictly increasing times."""
    tw = np.asarray(wheels[0], dtype=np.float64).reshape(-1)
    w = np.asarray(wheels[1], dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != len(WHEEL_CHANNELS) or len(w) != len(tw):
        raise ValueError(f"wheels must be (N, {len(WHEEL_CHANNELS)}) with N = len(times)")
    ok = np.isfinite(tw) & np.isfinite(w).all(axis=1)
    tw, w = tw[ok], w[ok]
    if tw.size:
        prev = np.concatenate(([-np.inf], np.maximum.accumulate(tw)[:-1]))
        keep = tw > prev
        tw, w = tw[keep], w[keep]
    return tw, w


# ---------------------------------------------------------------------------------------------
# Screening, resampling and window validity (shared by the batch and the streaming path).


@dataclass
class Windows:
    """Result of `extract_windows`: accepted windows' features plus the rejection record."""

    features: np.ndarray
    """`(M, n_features)` float32, accepted windows only, in time order."""
    t_start: np.ndarray
    """`(M,)` time of each accepted window's first grid sample (input clock, s)."""
    t_end: np.ndarray
    """`(M,)` time of each accepted window's last grid sample."""
    rejected: Counter[Reject] = field(default_factory=Counter)
    """Rejected windows per reason."""
    rejected_t_start: np.ndarray = field(default_factory=lambda: np.empty(0))
    rejected_reason: list[Reject] = field(default_factory=list)
    dropped_samples: Counter[Reject] = field(default_factory=Counter)
    """Input samples dropped in screening (`NONFINITE`, `OUT_OF_RANGE`, `NON_MONOTONIC`)."""
    pauses: int = 0
    """Pauses longer than a window (no data, or bad data dropped): each starts a new grid."""

    @property
    def n_windows(self) -> int:
        """Windows considered (accepted + rejected)."""
        return len(self.features) + len(self.rejected_reason)


@dataclass
class _Bad:
    """Bad time spans `(start, end)` (open intervals) with a reason code each."""

    start: list[float] = field(default_factory=list)
    end: list[float] = field(default_factory=list)
    code: list[int] = field(default_factory=list)


def _as_inputs(t: Sequence[float] | np.ndarray, imu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    x = np.asarray(imu, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(AXES) or x.shape[0] != t.shape[0]:
        raise ValueError(f"imu must be (N, {len(AXES)}) with N = len(t) = {t.shape[0]}")
    return t, x


def _screen(
    t: np.ndarray, x: np.ndarray, max_abs: float = math.inf
) -> tuple[np.ndarray, np.ndarray, _Bad, Counter[Reject]]:
    """Drop non-finite, out-of-range and non-monotonic samples; return kept samples and the bad
    spans."""
    n = t.shape[0]
    finite = np.isfinite(t) & np.isfinite(x).all(axis=1)
    with np.errstate(invalid="ignore"):
        huge = finite & (np.abs(x) > max_abs).any(axis=1)
    tf = np.where(np.isfinite(t), t, -np.inf)
    prev_max = np.concatenate(([-np.inf], np.maximum.accumulate(tf)[:-1])) if n else tf
    backward = np.isfinite(t) & (t <= prev_max)
    code = np.zeros(n, dtype=np.int8)
    code[~finite] = _CODE[Reject.NONFINITE]
    code[huge] = _CODE[Reject.OUT_OF_RANGE]
    code[backward] = _CODE[Reject.NON_MONOTONIC]  # takes precedence
    keep = code == 0
    dropped = Counter({r: int(np.count_nonzero(code == _CODE[r])) for r in _REASONS})
    dropped = +dropped  # drop zero counts
    bad = _Bad()
    idx = np.flatnonzero(~keep)
    if idx.size:
        kept_idx = np.flatnonzero(keep)
        pos = np.searchsorted(kept_idx, idx)  # first kept sample after each dropped one
        # One span per (interval between kept samples, reason): runs of drops collapse.
        pos, codes = np.unique(np.stack([pos, code[idx]]), axis=1)
        kept_t = np.concatenate(([-np.inf], t[kept_idx], [np.inf]))
        bad = _Bad(kept_t[pos].tolist(), kept_t[pos + 1].tolist(), codes.tolist())
    return t[keep], x[keep], bad, dropped


def _evaluate(
    tg: np.ndarray,
    xg: np.ndarray,
    bad: _Bad,
    t0: float,
    first_window: int,
    n_windows: int,
    cfg: FeatureConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows `first_window .. first_window + n_windows - 1` of the grid anchored at `t0`.

    `tg` (strictly increasing) and `xg` are kept samples that bracket every grid point of those
    windows. Returns (features of accepted windows, reason code per window (0 = accepted),
    start time per window).
    """
    fs, n, hop = cfg.sample_rate_hz, cfg.window_samples, cfg.hop_samples
    k0 = first_window * hop
    k = np.arange(k0, k0 + (n_windows - 1) * hop + n)
    g = t0 + k / fs  # the same expression in both paths: bit-identical grid times
    starts = g[: (n_windows - 1) * hop + 1 : hop]
    ends = g[n - 1 :: hop][:n_windows]

    if tg.size < 2 or tg[0] > starts[0] or tg[-1] < ends[-1]:
        raise AssertionError("kept samples do not cover the requested windows")
    # Every defect lives in an interval between consecutive kept samples: a long one is a GAP,
    # one that had samples dropped inside carries their reason. A window is hit by the intervals
    # it overlaps (open intervals, closed window), also when no grid point falls inside: e.g.
    # a clock that jumped back leaves two kept samples one period apart around the seam.
    icode = np.where(np.diff(tg) > (cfg.max_gap_samples + 1.5) / fs, _CODE[Reject.GAP], 0)
    icode = icode.astype(np.int8)
    if bad.end:
        b_end = np.asarray(bad.end)
        b_code = np.asarray(bad.code, dtype=np.int8)
        idx = np.searchsorted(tg, b_end, side="left") - 1
        inside = (idx >= 0) & (idx < tg.size - 1)
        inside[inside] &= tg[idx[inside] + 1] == b_end[inside]
        inside[inside] &= tg[idx[inside]] == np.asarray(bad.start)[inside]
        best = np.where(icode == 0, np.int8(127), icode)
        np.minimum.at(best, idx[inside], b_code[inside])  # smallest code = highest priority
        icode = np.where(best == 127, np.int8(0), best)
    i_lo = np.searchsorted(tg, starts, side="right") - 1
    i_hi = np.searchsorted(tg, ends, side="left") - 1
    codes = np.zeros(n_windows, dtype=np.int8)
    for r in reversed(_REASONS[:4]):  # GAP, OUT_OF_RANGE, NONFINITE, NON_MONOTONIC: later win
        csum = np.concatenate(([0], np.cumsum(icode == _CODE[r])))
        codes[csum[i_hi + 1] - csum[i_lo] > 0] = _CODE[r]
    n_kept = np.searchsorted(tg, ends, side="right") - np.searchsorted(tg, starts, side="left")
    rate_bad = np.abs(n_kept - n) > cfg.rate_tolerance * n
    codes[(codes == 0) & rate_bad] = _CODE[Reject.RATE]

    ok = codes == 0
    if not ok.any():
        return np.empty((0, cfg.n_imu_features), np.float32), codes, starts
    grid = np.stack([np.interp(g, tg, xg[:, a]) for a in range(xg.shape[1])], axis=0)
    cut = sliding_window_view(grid, n, axis=1)[:, ::hop][:, :n_windows]  # (6, W, n) view
    return window_features(cut.transpose(1, 0, 2)[ok], cfg), codes, starts


def grid_anchor(t_first: float, cfg: FeatureConfig) -> float:
    """The grid's `t0` for a stream whose first kept sample is at `t_first` (module doc)."""
    hop = cfg.hop_s
    k = math.ceil(t_first / hop - 1e-9)
    while k * hop < t_first:  # rounding: the grid must not start before the first sample
        k += 1
    return k * hop


def _n_windows(t0: float, t_last: float, cfg: FeatureConfig) -> int:
    """Complete windows of the grid anchored at `t0` whose grid times are all <= `t_last`."""
    fs = cfg.sample_rate_hz
    n_grid = max(math.floor((t_last - t0) * fs) + 1, 0)
    # Settle rounding with the exact grid expression used by `_evaluate`.
    while t0 + n_grid / fs <= t_last:
        n_grid += 1
    while n_grid > 0 and t0 + (n_grid - 1) / fs > t_last:
        n_grid -= 1
    if n_grid < cfg.window_samples:
        return 0
    return (n_grid - cfg.window_samples) // cfg.hop_samples + 1


def extract_windows(
    t: Sequence[float] | np.ndarray,
    imu: np.ndarray,
    cfg: FeatureConfig | None = None,
    wheels: tuple[np.ndarray, np.ndarray] | None = None,
) -> Windows:
    """Features of every complete window of one recording.

    `t` `(N,)` in seconds, `imu` `(N, 6)` in `AXES` order; with `cfg.wheels`, `wheels` = (times,
    `(M, 4)` samples in `WHEEL_CHANNELS` order) of the same recording. See the module docstring
    for the screening, resampling and rejection rules.
    """
    cfg = cfg or FeatureConfig()
    if cfg.wheels and wheels is None:
        raise ValueError("the configuration has wheel features: pass the wheel samples")
    t, x = _as_inputs(t, imu)
    tg, xg, bad, dropped = _screen(t, x, cfg.max_abs_value)
    parts = []
    # Work in proportion to the data, not to the time span: a pause longer than a window (or
    # stamps in the wrong unit) splits the recording into parts, each on its own grid; windows
    # of the pause itself hold no sample and are not windows at all.
    cuts = np.flatnonzero(np.diff(tg) > cfg.window_s) + 1
    pauses = len(cuts)
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, tg.size], strict=True):
        if hi - lo < 2:
            continue
        t0 = grid_anchor(float(tg[lo]), cfg)
        nw = _n_windows(t0, float(tg[hi - 1]), cfg)
        if nw > 0:
            parts.append(_evaluate(tg[lo:hi], xg[lo:hi], bad, t0, 0, nw, cfg))
    if not parts:
        return Windows(
            features=np.empty((0, cfg.n_features), np.float32),
            t_start=np.empty(0),
            t_end=np.empty(0),
            dropped_samples=dropped,
            pauses=pauses,
        )
    feats = np.concatenate([f for f, _, _ in parts])
    codes = np.concatenate([c for _, c, _ in parts])
    starts = np.concatenate([st for _, _, st in parts])
    if cfg.wheels:
        assert wheels is not None
        tw, w = _as_wheels(wheels)
        feats, codes = _with_wheels(feats, codes, starts, tw, w, cfg)
    out = _pack(feats, codes, starts, cfg, dropped)
    out.pauses = pauses
    return out


def _with_wheels(
    feats: np.ndarray,
    codes: np.ndarray,
    starts: np.ndarray,
    tw: np.ndarray,
    w: np.ndarray,
    cfg: FeatureConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """IMU features of the accepted windows + their wheel features; no wheel data: WHEELS."""
    span = (cfg.window_samples - 1) / cfg.sample_rate_hz
    out = []
    codes = codes.copy()
    for fi, i in enumerate(np.flatnonzero(codes == 0)):
        wf = wheel_features(tw, w, float(starts[i]), float(starts[i]) + span, cfg)
        if wf is None:
            codes[i] = _CODE[Reject.WHEELS]
        else:
            out.append(np.concatenate([feats[fi], wf]))
    if not out:
        return np.empty((0, cfg.n_features), np.float32), codes
    return np.stack(out).astype(np.float32), codes


def _pack(
    feats: np.ndarray,
    codes: np.ndarray,
    starts: np.ndarray,
    cfg: FeatureConfig,
    dropped: Counter[Reject],
) -> Windows:
    ok = codes == 0
    reasons = [_REASONS[c - 1] for c in codes[~ok]]
    return Windows(
        features=feats,
        t_start=starts[ok],
        t_end=starts[ok] + (cfg.window_samples - 1) / cfg.sample_rate_hz,
        rejected=Counter(reasons),
        rejected_t_start=starts[~ok],
        rejected_reason=reasons,
        dropped_samples=dropped,
    )


# ---------------------------------------------------------------------------------------------
# Streaming.


@dataclass(frozen=True)
class WindowEvent:
    """One window decided by `WindowBuffer`: features when accepted, else the reason."""

    t_start: float
    t_end: float
    features: np.ndarray | None
    reason: Reject | None

    @property
    def accepted(self) -> bool:
        return self.reason is None


class WindowBuffer:
    """Streaming front end of the same pipeline as `extract_windows`.

    `push(t, sample)` returns the windows that became complete (usually none, one every hop).
    The sequence of events over a whole stream equals `extract_windows` on the same samples
    (same features, start times and rejection reasons). A window is decided once a kept sample
    at or after its last grid time has arrived. Memory stays bounded: only the samples still
    needed by the next window are kept. Call `reset()` after a deliberate clock jump (e.g. bag
    restart); otherwise every sample older than the newest one seen is dropped as non-monotonic.
    """

    def __init__(self, cfg: FeatureConfig | None = None) -> None:
        self.cfg = cfg or FeatureConfig()
        self.accepted = 0
        self.rejected: Counter[Reject] = Counter()
        self.dropped_samples: Counter[Reject] = Counter()
        self.pauses = 0
        self.reset()

    def reset(self) -> None:
        """Forget all buffered samples and the time anchor (counters are kept)."""
        self._t: list[float] = []
        self._x: list[list[float]] = []
        self._bad = _Bad()
        self._pending_bad: list[int] = []  # reason codes waiting for the next kept sample
        self._t_max = -math.inf
        self._t0: float | None = None
        self._next = 0  # index of the next window to decide

    def push(self, t: float, sample: Sequence[float] | np.ndarray) -> list[WindowEvent]:
        """Add one sample (time in s, 6 values in `AXES` order)."""
        # Plain floats, not a numpy array: six values per call, where numpy's per-call overhead
        # is most of the cost (the same checks and values).
        if type(sample) is list and all(type(v) is float for v in sample):
            x = list(sample)  # the stream's own samples
        else:
            x = [float(v) for v in np.asarray(sample, dtype=np.float64).reshape(-1)]
        if len(x) != len(AXES):
            raise ValueError(f"sample must have {len(AXES)} values, got {len(x)}")
        return self.push_floats(float(t), x)

    def push_floats(self, t: float, x: list[float]) -> list[WindowEvent]:
        """`push` of a sample that is already a new list of `len(AXES)` floats (the caller
        gives it up), without the conversion: what `FeatureStream` sends, 400 times a second."""
        # The common case in a few C-level calls: the sum of finite values is finite (unless it
        # overflows, which takes the checks below like any non-finite value), and a finite
        # sample within the range has max <= lim and min >= -lim.
        total = sum(x)
        lim = self.cfg.max_abs_value
        if (
            t > self._t_max
            and math.isfinite(t)
            and math.isfinite(total)
            and max(x) <= lim
            and min(x) >= -lim
        ):
            self._t_max = t
        else:
            if math.isfinite(t) and t <= self._t_max:
                return self._drop(Reject.NON_MONOTONIC)
            if math.isfinite(t):
                self._t_max = t
            if not (math.isfinite(t) and all(math.isfinite(v) for v in x)):
                return self._drop(Reject.NONFINITE)
            if any(abs(v) > lim for v in x):
                return self._drop(Reject.OUT_OF_RANGE)
        if self._t and t - self._t[-1] > self.cfg.window_s:
            # A pause longer than a window: a new part on its own grid (as extract_windows).
            self.pauses += 1
            self._t, self._x = [], []
            self._bad = _Bad()
            self._pending_bad.clear()
            self._t0 = None
            self._next = 0
        last = self._t[-1] if self._t else -math.inf
        for code in self._pending_bad:
            self._bad.start.append(last)
            self._bad.end.append(t)
            self._bad.code.append(code)
        self._pending_bad.clear()
        self._t.append(t)
        self._x.append(x)
        if self._t0 is None:
            self._t0 = grid_anchor(t, self.cfg)
        return self._decide()

    @property
    def next_window_end(self) -> float | None:
        """Time of the last grid sample of the next undecided window (`None` before any
        sample): the window is decided once a sample at or after this time arrives."""
        if self._t0 is None:
            return None
        cfg = self.cfg
        return self._t0 + (self._next * cfg.hop_samples + cfg.window_samples - 1) / (
            cfg.sample_rate_hz
        )

    def push_many(self, t: Sequence[float] | np.ndarray, imu: np.ndarray) -> list[WindowEvent]:
        """`push` for each row; events of all of them in order."""
        t, x = _as_inputs(t, imu)
        events: list[WindowEvent] = []
        for ti, xi in zip(t, x, strict=True):
            events += self.push(ti, xi)
        return events

    def _drop(self, reason: Reject) -> list[WindowEvent]:
        self.dropped_samples[reason] += 1
        if _CODE[reason] not in self._pending_bad:
            self._pending_bad.append(_CODE[reason])
        return []

    def _decide(self) -> list[WindowEvent]:
        cfg = self.cfg
        assert self._t0 is not None
        t0, fs, n, hop = self._t0, cfg.sample_rate_hz, cfg.window_samples, cfg.hop_samples
        # The next window's last grid time, by the expression `_n_windows` settles on: before
        # it no window is complete (most samples), without the grid arithmetic.
        if self._t[-1] < t0 + (self._next * hop + n - 1) / fs:
            return []
        n_ready = _n_windows(t0, self._t[-1], cfg) - self._next
        if n_ready <= 0:
            return []
        tg = np.asarray(self._t)
        xg = np.array(self._x, dtype=np.float64)
        feats, codes, starts = _evaluate(tg, xg, self._bad, t0, self._next, n_ready, cfg)
        events: list[WindowEvent] = []
        fi = 0
        for code, start in zip(codes, starts, strict=True):
            end = float(start) + (n - 1) / fs
            if code == 0:
                events.append(WindowEvent(float(start), end, feats[fi], None))
                fi += 1
                self.accepted += 1
            else:
                reason = _REASONS[code - 1]
                events.append(WindowEvent(float(start), end, None, reason))
                self.rejected[reason] += 1
        self._next += n_ready
        # Keep only what the next window needs: the last kept sample before its start, onwards.
        next_start = t0 + (self._next * hop) / fs
        cut = max(int(np.searchsorted(tg, next_start, side="right")) - 1, 0)
        if cut:
            del self._t[:cut]
            del self._x[:cut]
        first = self._t[0]
        keep = [i for i, e in enumerate(self._bad.end) if e > first]
        self._bad = _Bad(
            [self._bad.start[i] for i in keep],
            [self._bad.end[i] for i in keep],
            [self._bad.code[i] for i in keep],
        )
        return events
