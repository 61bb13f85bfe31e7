"""Your own robot's recordings as CSV files: any class names, rates and column orders.

Layout: `<root>/<CLASS>/imu_<RUN>.csv` (one recording of one terrain) and, optionally,
`<root>/<CLASS>/pro_<RUN>.csv` (wheel speeds and motor effort of the same recording, same
clock). `CLASS` is any name of letters, digits and `_`; `RUN` any name of letters, digits, `.`,
`-` and `_`. The first line names the columns, in any order; the columns needed are
(`IMU_FIELDS`) time [s], angular velocity wx, wy, wz [rad/s], linear acceleration ax, ay, az
[m/s²], and (`WHEEL_FIELDS`) time [s], left/right effort (motor current or torque) and
left/right wheel ground speed [m/s]. Common other spellings are recognised (`ALIASES`, matched
case-insensitively); `column_map` names the rest (`{"wx": "gyro_x_rad_s", ...}`). Times may be in
another unit (`time_scale`, e.g. 1e-9 for nanoseconds).

BorealTC (`terrain_odt.data.borealtc`) is read with the same code: its files are one such layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .borealtc import Run

__all__ = [
    "ALIASES",
    "IMU_FIELDS",
    "WHEEL_FIELDS",
    "CsvError",
    "list_recordings",
    "load_recording",
    "read_table",
]

IMU_FIELDS: tuple[str, ...] = ("time", "wx", "wy", "wz", "ax", "ay", "az")
WHEEL_FIELDS: tuple[str, ...] = ("time", "curL", "curR", "velL", "velR")
"""The wheel file's columns as `borealtc.Run.pro` holds them (BorealTC's `pro_NN.csv`)."""

ALIASES: dict[str, tuple[str, ...]] = {
    "time": ("time", "t", "stamp", "timestamp", "time_s", "sec", "seconds"),
    "wx": ("wx", "gx", "gyro_x", "gyr_x", "angular_velocity_x", "omega_x"),
    "wy": ("wy", "gy", "gyro_y", "gyr_y", "angular_velocity_y", "omega_y"),
    "wz": ("wz", "gz", "gyro_z", "gyr_z", "angular_velocity_z", "omega_z"),
    "ax": ("ax", "acc_x", "accel_x", "linear_acceleration_x"),
    "ay": ("ay", "acc_y", "accel_y", "linear_acceleration_y"),
    "az": ("az", "acc_z", "accel_z", "linear_acceleration_z"),
    "curL": ("curl", "cur_l", "current_left", "effort_left", "torque_left", "il"),
    "curR": ("curr", "cur_r", "current_right", "effort_right", "torque_right", "ir"),
    "velL": ("vell", "vel_l", "vel_left", "speed_left", "v_left", "vl"),
    "velR": ("velr", "vel_r", "vel_right", "speed_right", "v_right", "vr"),
}

CLASS_RE = re.compile(r"^[A-Za-z0-9_]+$")
RUN_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_IMU_FILE = re.compile(r"^imu_([A-Za-z0-9_.-]+)\.csv$")


class CsvError(ValueError):
    """A recording file is missing or malformed (the message names the file and column)."""


def read_table(
    path: Path,
    fields: Sequence[str],
    column_map: Mapping[str, str] | None = None,
    time_scale: float = 1.0,
) -> np.ndarray:
    """The named columns of a CSV file with a header line, as `(N, len(fields))` float64 in
    `fields` order; the `time` column multiplied by `time_scale`."""
    try:
        with path.open() as f:
            header = [h.strip() for h in f.readline().strip().split(",")]
            data = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    except OSError as exc:
        raise CsvError(f"{path}: {exc}") from exc
    except ValueError as exc:
        raise CsvError(f"{path}: not numeric CSV after the header: {exc}") from exc
    lower = {h.lower(): i for i, h in enumerate(header)}
    cols = []
    for name in fields:
        wanted = (column_map or {}).get(name)
        if wanted is not None:
            if wanted not in header:
                raise CsvError(f"{path}: column {wanted!r} (for {name}) not in header {header}")
            cols.append(header.index(wanted))
            continue
        hit = next(
            (lower[a.lower()] for a in (name, *ALIASES.get(name, ())) if a.lower() in lower),
            None,
        )
        if hit is None:
            raise CsvError(
                f"{path}: no column for {name!r} in header {header} (known spellings: "
                f"{', '.join(ALIASES.get(name, (name,)))}; or give a column map {name}=COLUMN)"
            )
        cols.append(hit)
    if data.size == 0:
        data = np.empty((0, len(header)))
    if data.shape[1] != len(header):
        raise CsvError(f"{path}: {data.shape[1]} values per row for {len(header)} header names")
    out = data[:, cols]
    out[:, 0] *= time_scale
    return out


def list_recordings(root: Path) -> list[tuple[str, str]]:
    """`(class, run)` of every `<root>/<CLASS>/imu_<RUN>.csv`, sorted."""
    out = []
    if not root.is_dir():
        raise CsvError(f"{root} is not a directory")
    for d in sorted(p for p in root.iterdir() if p.is_dir() and CLASS_RE.match(p.name)):
        for f in sorted(d.iterdir()):
            m = _IMU_FILE.match(f.name)
            if m:
                out.append((d.name, m.group(1)))
    return out


def load_recording(
    root: Path,
    terrain: str,
    run: str,
    column_map: Mapping[str, str] | None = None,
    time_scale: float = 1.0,
) -> Run:
    """One recording (`borealtc.Run`, wheel data empty when there is no `pro_<RUN>.csv`)."""
    from .borealtc import Run

    if not CLASS_RE.match(terrain) or not RUN_RE.match(run):
        raise CsvError(f"bad class or run name {terrain!r}/{run!r}")
    folder = root / terrain
    imu_path = folder / f"imu_{run}.csv"
    if not imu_path.is_file():
        raise CsvError(f"{imu_path}: no such file")
    imu = read_table(imu_path, IMU_FIELDS, column_map, time_scale)
    if len(imu) < 2:
        raise CsvError(f"{imu_path}: fewer than 2 samples")
    pro_path = folder / f"pro_{run}.csv"
    pro = (
        read_table(pro_path, WHEEL_FIELDS, column_map, time_scale)
        if pro_path.is_file()
        else np.empty((0, len(WHEEL_FIELDS)))
    )
    number: int | str = int(run) if run.isdigit() else run
    return Run(terrain, number, imu, pro)
