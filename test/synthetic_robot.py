"""A synthetic second robot for tests: 4 terrain classes of its own, IMU at 50 Hz, wheel data at
15 Hz, CSV columns in another order and with other names than BorealTC's. Each terrain has its
own vibration spectrum, gain and rolling resistance, so a model can learn it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("GRAVEL", "GRASS", "MUD", "TILE")
IMU_HZ = 50.0
WHEEL_HZ = 15.0
#: Per class: vibration frequency (Hz), amplitude (m/s²), effort per m/s.
SIGNATURE = {"GRAVEL": (9.0, 1.5, 8.0), "GRASS": (4.0, 0.8, 12.0), "MUD": (2.0, 0.5, 20.0),
             "TILE": (17.0, 0.4, 4.0)}  # fmt: skip


def write_recordings(root: Path, runs_per_class: int = 3, seconds: float = 30.0) -> list[str]:
    """Write `<root>/<CLASS>/imu_rN.csv` and `pro_rN.csv`; returns the `CLASS/rN` ids."""
    ids = []
    for ci, cls in enumerate(CLASSES):
        f0, amp, load = SIGNATURE[cls]
        (root / cls).mkdir(parents=True, exist_ok=True)
        for r in range(runs_per_class):
            rng = np.random.default_rng(100 * ci + r)
            speed = 0.3 + 0.1 * r
            t = 5.0 + np.arange(round(seconds * IMU_HZ)) / IMU_HZ
            vib = amp * np.sin(2 * np.pi * f0 * t + rng.uniform(0, 6)) * (1 + speed)
            acc = np.column_stack([vib * 0.3, vib * 0.2, 9.81 + vib]) + rng.normal(
                0, 0.2, (t.size, 3)
            )
            gyr = np.column_stack([vib * 0.02, vib * 0.03, np.zeros(t.size)]) + rng.normal(
                0, 0.01, (t.size, 3)
            )
            # Columns in another order and spelled otherwise (aliases of the CSV reader).
            imu = np.column_stack(
                [acc[:, 2], acc[:, 0], acc[:, 1], t, gyr[:, 1], gyr[:, 0], gyr[:, 2]]
            )
            np.savetxt(root / cls / f"imu_r{r}.csv", imu, delimiter=",", comments="",
                       header="accel_z,accel_x,accel_y,timestamp,gyro_y,gyro_x,gyro_z")  # fmt: skip
            tw = 5.0 + np.arange(0.0, seconds, 1 / WHEEL_HZ)
            v = speed + rng.normal(0, 0.01, (tw.size, 2))
            eff = load * v + rng.normal(0, 0.3, v.shape)
            pro = np.column_stack([tw, v[:, 0], v[:, 1], eff[:, 0], eff[:, 1]])
            np.savetxt(root / cls / f"pro_r{r}.csv", pro, delimiter=",", comments="",
                       header="stamp,vel_left,vel_right,current_left,current_right")  # fmt: skip
            ids.append(f"{cls}/r{r}")
    return ids


def params_yaml(path: Path, model: Path) -> Path:
    """The robot's parameter file: its classes, IMU rate, wheel joints, model."""
    path.write_text(
        "imu_features:\n  ros__parameters:\n    sample_rate_hz: 50.0\n"
        "terrain_labeler:\n  ros__parameters:\n"
        f"    class_names: [{', '.join(CLASSES)}]\n"
        "odt_bridge:\n  ros__parameters:\n"
        f'    model_sidecar: "{model.with_suffix(".json")}"\n    model_blob: "{model}"\n'
    )
    return path
