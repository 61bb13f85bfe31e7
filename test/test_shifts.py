"""tools/shifts.py: the simulated IMU mountings rotate, scale, bias and add noise as documented."""

from __future__ import annotations

import numpy as np

from terrain_odt.data.borealtc import Run
from tools.shifts import MOUNTS, Mount, mount_imu, mounted_runs


def test_mount_rotation_gain_bias():
    m = Mount("t", 90.0, 2.0, 0.5, 0.1, 0.0, 0.0)
    x = np.array([[0.0, 0.0, 1.0, 0.0, 0.0, 9.81]])
    y = mount_imu(x, m, np.random.default_rng(0))
    np.testing.assert_allclose(y[0, :3], [1.1, 0.1, 0.1], atol=1e-12)  # z rotated onto x
    np.testing.assert_allclose(y[0, 3:], [2 * 9.81 + 0.5, 0.5, 0.5], atol=1e-9)


def test_mounted_runs_are_per_run_deterministic():
    imu = np.column_stack([np.arange(50) / 100.0, np.random.default_rng(1).normal(size=(50, 6))])
    runs = [Run("ICE", 3, imu, np.empty((0, 5))), Run("SNOW", 4, imu, np.empty((0, 5)))]
    a = mounted_runs(runs, MOUNTS[0], seed=0)
    b = mounted_runs(runs[1:], MOUNTS[0], seed=0)
    np.testing.assert_array_equal(a[1].imu, b[0].imu)  # independent of the other runs
    assert not np.array_equal(a[0].imu[:, 1:], imu[:, 1:])
    np.testing.assert_array_equal(a[0].imu[:, 0], imu[:, 0])
