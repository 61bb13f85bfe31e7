"""Online front end of the feature extractor, as the `imu_features` node runs it (no ROS here).

`FeatureStream` = optional block-average decimation (a 400 Hz IMU feeding a model trained at
100 Hz) → `features.WindowBuffer` (the offline extractor's streaming form), plus the clock-jump
policy of a robot: a sample much older than the newest one means the clock jumped back (a bag
restarted, sim time reset), so the buffer restarts instead of rejecting everything that follows;
a small step back is an out-of-order sample and is dropped (counted) by the buffer itself. A
sample far newer than the newest (a clock that jumped forward) restarts the buffer as well.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .features import AXES, FeatureConfig, Reject, WindowBuffer, WindowEvent

__all__ = ["Decimator", "FeatureStream", "StreamConfig"]


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

    def __post_init__(self) -> None:
        if self.decimation < 1:
            raise ValueError(f"decimation must be >= 1, got {self.decimation}")
        if not self.time_jump_reset_s >= 0:
            raise ValueError("time_jump_reset_s must be >= 0")
        if not self.forward_jump_reset_s > 0:
            raise ValueError("forward_jump_reset_s must be > 0")


class FeatureStream:
    """Samples in, `WindowEvent`s out; counters for diagnostics."""

    def __init__(self, cfg: StreamConfig | None = None) -> None:
        self.cfg = cfg or StreamConfig()
        self.buffer = WindowBuffer(self.cfg.features)
        self.decimator = Decimator(self.cfg.decimation)
        self.samples = 0
        self.time_resets = 0
        self._t_max = -math.inf

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
        return self.buffer.push(*out)

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
