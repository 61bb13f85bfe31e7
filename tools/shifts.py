"""Simulated changes of a robot's IMU mounting, applied to raw BorealTC runs (for the laps with a
shift, `tools/eval_laps.py --shift`): what a model pretrained on one robot sees on another."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from terrain_odt.data.borealtc import CLASSES, Run  # noqa: E402


@dataclass(frozen=True)
class Mount:
    """A changed IMU mounting, applied per raw sample `(wx wy wz ax ay az)`:
    `gyro' = R·gyro + b_g + n_g`, `accel' = gain·R·accel + b_a + n_a`, with R a rotation of
    `pitch_deg` about the IMU y axis, constant biases on all three axes and white gaussian noise
    (std per sample and axis)."""

    name: str
    pitch_deg: float
    accel_gain: float
    accel_bias: float  # m/s², added to ax, ay, az
    gyro_bias: float  # rad/s, added to wx, wy, wz
    accel_noise: float  # m/s² std
    gyro_noise: float  # rad/s std

    def describe(self) -> str:
        return (
            f"rotation {self.pitch_deg:g}° about y (accel and gyro), accel gain "
            f"{self.accel_gain:g}, bias +{self.accel_bias:g} m/s² (accel) / "
            f"+{self.gyro_bias:g} rad/s (gyro) on each axis, gaussian noise σ "
            f"{self.accel_noise:g} m/s² / {self.gyro_noise:g} rad/s per sample"
        )


MOUNTS = (
    Mount("mount-mild", 20.0, 1.1, 0.1, 0.005, 0.05, 0.005),
    Mount("mount-severe", 60.0, 1.3, 0.5, 0.02, 0.2, 0.02),
)


def mount_imu(imu: np.ndarray, m: Mount, rng: np.random.Generator) -> np.ndarray:
    """Raw IMU `(N, 6)` (`wx wy wz ax ay az`) as seen through the changed mounting `m`."""
    th = math.radians(m.pitch_deg)
    c, s = math.cos(th), math.sin(th)
    rot = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    x = np.asarray(imu, dtype=np.float64)
    gyro = x[:, :3] @ rot.T + m.gyro_bias + rng.normal(0.0, m.gyro_noise, (len(x), 3))
    acc = m.accel_gain * (x[:, 3:] @ rot.T) + m.accel_bias
    acc = acc + rng.normal(0.0, m.accel_noise, (len(x), 3))
    return np.concatenate([gyro, acc], axis=1)


def mounted_runs(runs: Sequence[Run], m: Mount, seed: int) -> list[Run]:
    """Copies of `runs` with the IMU columns passed through `mount_imu` (noise seeded per run,
    so a run's shifted features do not depend on which other runs are shifted with it)."""
    out = []
    for run in runs:
        rng = np.random.default_rng([seed, CLASSES.index(run.terrain), int(run.number)])
        imu = run.imu.copy()
        imu[:, 1:] = mount_imu(run.imu[:, 1:], m, rng)
        out.append(Run(run.terrain, run.number, imu, run.pro))
    return out
