"""Online front end of the feature extractor, as the `imu_features` node runs it (no ROS here).

`FeatureStream` = optional block-average decimation (a 400 Hz IMU feeding a model trained at
100 Hz) → `features.WindowBuffer` (the offline extractor's streaming form), plus the clock-jump
policy of a robot: a sample much older than the newest one means the clock jumped back (a bag
restarted, sim time reset), so the buffer restarts instead of rejecting everything that follows;
a small step back is an out-of-order sample and is dropped (counted) by the buffer itself. A
sample far newer than the newest (a clock that jumped forward) restarts the buffer as well.

With wheel features on (`FeatureConfig.wheels`), `push_wheels` takes the wheel samples
(`sensor_msgs/JointState`, converted by the node) and a window decided by the IMU waits until a
wheel sample at or after its end has arrived, so it sees every wheel sample of its span (as
`extract_windows` does offline), or until the IMU is `wheel_timeout_s` past its end (the wheel
data is late or gone: the window is judged with what arrived and rejected as `WHEELS` if that
is too little).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .features import (
    AXES,
    WHEEL_CHANNELS,
    FeatureConfig,
    Reject,
    WindowBuffer,
    WindowEvent,
    wheel_features,
)

__all__ = ["Decimator", "FeatureStream", "StreamConfig", "joint_wheel_sample"]


def joint_wheel_sample(
    names: Sequence[str],
    velocity: Sequence[float],
    effort: Sequence[float],
    left: Sequence[str],
    right: Sequence[str],
    radius_m: float,
) -> list[float] | None:
    """A `sensor_msgs/JointState`'s wheel sample in `WHEEL_CHANNELS` order (ground speed of
    each side, m/s, = mean joint velocity × `radius_m`; mean effort of each side), `None` if
    the message does not carry every configured joint. `ValueError` if it names them but lacks
    their velocity or effort."""
    index = {n: i for i, n in enumerate(names)}
    if any(j not in index for j in (*left, *right)):
        return None
    out = []
    for values, what in ((velocity, "velocity"), (effort, "effort")):
        for side in (left, right):
            idx = [index[j] for j in side]
            if max(idx) >= len(values):
                raise ValueError(f"JointState names {list(side)} but has {len(values)} {what}")
            v = sum(float(values[i]) for i in idx) / len(idx)
            out.append(v * radius_m if what == "velocity" else v)
    return out


class Decimator:
    """Averages each block of `factor` consecutive samples (a boxcar anti-alias filter).

    The output time is the block's mean time. A non-finite value anywhere in a block makes the
    whole output sample non-finite, so the window buffer rejects the windows it touches instead
    of averaging garbage in.
    """

    def __init__(self, factor: int) -> None:
        if factor < 1:
            raise ValueError(f"decimation factor must be >= 1, got {factor}")
        self.factor = factor
        self.reset()

    def reset(self) -> None:
        # Plain float sums: at 400 Hz a numpy call per sample costs more than the arithmetic.
        self._n = 0
        self._t = 0.0
        self._x = [0.0] * len(AXES)

    def push(self, t: float, x: Sequence[float]) -> tuple[float, list[float]] | None:
        if self.factor == 1:
            return t, list(x)
        self._n += 1
        self._t += t
        acc = self._x
        for i, v in enumerate(x):
            acc[i] += v
        if self._n < self.factor:
            return None
        k = 1.0 / self.factor
        out = self._t * k, [v * k for v in acc]
        self.reset()
        return out


@dataclass(frozen=True)
class StreamConfig:
    """`FeatureConfig` plus the online-only settings."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    decimation: int = 1
    #: A sample older than the newest by more than this restarts the stream (s).
    time_jump_reset_s: float = 1.0
    #: A sample newer than the newest by more than this restarts it too (s): the clock jumped
    #: forward (boot time to epoch time, sim time starting). Shorter gaps are IMU outages whose
    #: windows are rejected one by one (GAP); across a jump that would cost time and memory in
    #: proportion to the jump (an epoch jump could never be windowed).
    forward_jump_reset_s: float = 60.0
    #: With wheel features: how long (IMU time) a window waits for its wheel samples (s).
    wheel_timeout_s: float = 0.5

    def __post_init__(self) -> None:
        if self.decimation < 1:
            raise ValueError(f"decimation must be >= 1, got {self.decimation}")
        if not self.time_jump_reset_s >= 0:
            raise ValueError("time_jump_reset_s must be >= 0")
        if not self.forward_jump_reset_s > 0:
            raise ValueError("forward_jump_reset_s must be > 0")
        if not self.wheel_timeout_s >= 0:
            raise ValueError("wheel_timeout_s must be >= 0")


class FeatureStream:
    """Samples in, `WindowEvent`s out; counters for diagnostics."""

    def __init__(self, cfg: StreamConfig | None = None) -> None:
        self.cfg = cfg or StreamConfig()
        self.buffer = WindowBuffer(self.cfg.features)
        self.decimator = Decimator(self.cfg.decimation)
        self.samples = 0
        self.time_resets = 0
        self._t_max = -math.inf
        self.wheel_samples = 0
        self.wheel_dropped = 0
        self.wheel_rejected = 0
        self._wt: list[float] = []
        self._wx: list[list[float]] = []
        self._pending: list[WindowEvent] = []

    @property
    def accepted(self) -> int:
        return self.buffer.accepted

    @property
    def rejected(self) -> Counter[Reject]:
        return self.buffer.rejected

    @property
    def dropped_samples(self) -> Counter[Reject]:
        return self.buffer.dropped_samples

    def push(self, t: float, sample: Sequence[float] | np.ndarray) -> list[WindowEvent]:
        """One IMU sample: time (s) and 6 values in `features.AXES` order (rad/s, m/s²)."""
        x = [float(v) for v in sample]
        if len(x) != len(AXES):
            raise ValueError(f"sample must have {len(AXES)} values, got {len(x)}")
        self.samples += 1
        t = float(t)
        if math.isfinite(t):
            if t < self._t_max - self.cfg.time_jump_reset_s or (
                math.isfinite(self._t_max) and t > self._t_max + self.cfg.forward_jump_reset_s
            ):
                self.restart()
                self.time_resets += 1
            self._t_max = max(self._t_max, t)
        out = self.decimator.push(t, x)
        if out is None:
            return []
        events = self.buffer.push_floats(*out)
        if not self.cfg.features.wheels:
            return events
        if not events and not self._pending:
            # Nothing waits for wheel samples (most IMU samples): the trimming of old wheel
            # samples can wait for the next window, it keeps only what no window needs.
            return []
        self._pending += events
        return self._release(t)

    def push_wheels(self, t: float, sample: Sequence[float]) -> list[WindowEvent]:
        """One wheel sample: time (s) and `WHEEL_CHANNELS` (m/s, m/s, effort, effort). Returns
        the windows it completes. Non-finite or out-of-order samples are dropped (counted)."""
        x = [float(v) for v in sample]
        if len(x) != len(WHEEL_CHANNELS):
            raise ValueError(f"wheel sample must have {len(WHEEL_CHANNELS)} values, got {len(x)}")
        t = float(t)
        if not (math.isfinite(t) and all(math.isfinite(v) for v in x)) or (
            self._wt and t <= self._wt[-1]
        ):
            if self._wt and math.isfinite(t) and t < self._wt[-1] - self.cfg.time_jump_reset_s:
                self._wt.clear()  # the clock jumped back: a new stream
                self._wx.clear()
            else:
                self.wheel_dropped += 1
                return []
        self.wheel_samples += 1
        self._wt.append(t)
        self._wx.append(x)
        return self._release(None)

    def _release(self, imu_t: float | None) -> list[WindowEvent]:
        """Pending windows whose wheel samples are in (or waited long enough), in order."""
        out: list[WindowEvent] = []
        fcfg = self.cfg.features
        newest = self._wt[-1] if self._wt else -math.inf
        while self._pending:
            ev = self._pending[0]
            late = imu_t is not None and imu_t >= ev.t_end + self.cfg.wheel_timeout_s
            if newest < ev.t_end and not late and ev.features is not None:
                break
            self._pending.pop(0)
            if ev.features is None:
                out.append(ev)
                continue
            wf = wheel_features(
                np.asarray(self._wt), np.asarray(self._wx), ev.t_start, ev.t_end, fcfg
            )
            if wf is None:
                self.wheel_rejected += 1
                self.buffer.accepted -= 1
                self.buffer.rejected[Reject.WHEELS] += 1
                out.append(WindowEvent(ev.t_start, ev.t_end, None, Reject.WHEELS))
            else:
                out.append(
                    WindowEvent(ev.t_start, ev.t_end, np.concatenate([ev.features, wf]), None)
                )
        # Keep the wheel samples the next windows may still need.
        keep_from = self._pending[0].t_start if self._pending else None
        if keep_from is None:
            nxt = self.buffer.next_window_end
            keep_from = None if nxt is None else nxt - self.cfg.features.window_s - 1.0
        if keep_from is not None and self._wt and self._wt[0] < keep_from:
            i = int(np.searchsorted(self._wt, keep_from, side="left"))
            del self._wt[:i]
            del self._wx[:i]
        return out

    @property
    def next_window_end(self) -> float | None:
        """Input time at which the next window will be decided (`None`: not known yet).

        With decimation, the completing output sample is the mean of a block, so the input
        sample that completes it comes up to one block later."""
        t = self.buffer.next_window_end
        if t is None:
            return None
        return t + (self.cfg.decimation - 1) / (
            self.cfg.features.sample_rate_hz * self.cfg.decimation
        )

    def restart(self) -> None:
        """Forget buffered samples and the time anchor (after a clock jump); counters stay."""
        self.buffer.reset()
        self.decimator.reset()
        self._t_max = -math.inf
        self._pending.clear()
        self._wt.clear()
        self._wx.clear()
