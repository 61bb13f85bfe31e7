"""BorealTC loader (LaRocque et al., IROS 2024; CC0): runs, windows and run-level splits.

Layout (see `shared/data/README.md`): `<root>/<CLASS>/imu_NN.csv` with `time,wx,wy,wz,ax,ay,az`
(s, rad/s, m/s², 100 Hz) and `<root>/<CLASS>/pro_NN.csv` with `time,curL,curR,velL,velR`
(A, m/s wheel speeds, about 6.5 Hz) on the same clock.

The root is, first match wins: the `root` argument, `$TERRAIN_ODT_BOREALTC`,
`$TERRAIN_ODT_DATA/borealtc`, `<repo>/../shared/data/borealtc`. Nothing is downloaded.

Windows of one run are strongly correlated (overlapping, same drive): split **by run** only
(`split_by_run`), never by window.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..signals.features import FeatureConfig, extract_windows
from .csvdata import CsvError, read_table

CLASSES: tuple[str, ...] = ("ASPHALT", "FLOORING", "ICE", "SANDY_LOAM", "SNOW")
"""Terrain classes; the label of a class is its index here."""

ROOT_ENV = "TERRAIN_ODT_BOREALTC"
DATA_ENV = "TERRAIN_ODT_DATA"

IMU_COLUMNS = ("time", "wx", "wy", "wz", "ax", "ay", "az")
PRO_COLUMNS = ("time", "curL", "curR", "velL", "velR")

_RUN_RE = re.compile(r"^imu_(\d+)\.csv$")


class BorealTCError(Exception):
    """The data set is missing or a file is malformed."""


def default_root() -> Path:
    """The BorealTC directory (see the module docstring for the search order)."""
    if env := os.environ.get(ROOT_ENV):
        return Path(env)
    if env := os.environ.get(DATA_ENV):
        return Path(env) / "borealtc"
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "borealtc"


def available(root: str | Path | None = None) -> bool:
    """True when `root` (default: `default_root()`) holds at least one class folder."""
    root = Path(root) if root is not None else default_root()
    return any((root / c).is_dir() for c in CLASSES)


@dataclass(frozen=True)
class Run:
    """One recording: IMU `(N, 7)` and proprioception `(M, 5)` float64, time in column 0.

    Also the form of any robot's recordings (`terrain_odt.data.csvdata`): `number` is then the run
    name from the file name (an int when it is all digits), and `pro` may have no rows (no wheel
    data).
    """

    terrain: str
    number: int | str
    imu: np.ndarray
    pro: np.ndarray

    @property
    def run_id(self) -> str:
        """`CLASS/NN`, unique over the data set (run numbers repeat across classes)."""
        if isinstance(self.number, str):
            return f"{self.terrain}/{self.number}"
        return f"{self.terrain}/{self.number:02d}"

    @property
    def has_wheels(self) -> bool:
        return len(self.pro) > 0

    @property
    def label(self) -> int:
        return CLASSES.index(self.terrain)

    @property
    def duration_s(self) -> float:
        return float(self.imu[-1, 0] - self.imu[0, 0]) if len(self.imu) else 0.0

    def wheel_samples(self) -> tuple[np.ndarray, np.ndarray]:
        """Wheel samples for `features.extract_windows` (`WHEEL_CHANNELS` order): left/right
        wheel speed (m/s) and left/right motor current (A, the effort BorealTC records)."""
        return self.pro[:, 0], self.pro[:, [3, 4, 1, 2]]

    def wheel_speed(self, t: np.ndarray) -> np.ndarray:
        """Mean wheel speed magnitude `(|velL| + |velR|) / 2` (m/s) interpolated at times `t`.

        Magnitudes, not the signed linear speed: turning in place spins the wheels (and shakes
        the IMU) with zero linear speed.
        """
        speed = 0.5 * (np.abs(self.pro[:, 3]) + np.abs(self.pro[:, 4]))
        return np.interp(t, self.pro[:, 0], speed)


def _read_csv(path: Path, columns: Sequence[str]) -> np.ndarray:
    """The named columns (in this order) of a BorealTC file, whatever the file's column order."""
    try:
        return read_table(path, columns)
    except CsvError as exc:
        raise BorealTCError(str(exc)) from exc


def list_runs(
    root: str | Path | None = None, classes: Iterable[str] = CLASSES
) -> list[tuple[str, int]]:
    """`(class, run number)` of every run with both CSV files, sorted."""
    root = Path(root) if root is not None else default_root()
    out: list[tuple[str, int]] = []
    for cls in classes:
        if cls not in CLASSES:
            raise ValueError(f"unknown class {cls!r}; known: {', '.join(CLASSES)}")
        folder = root / cls
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            m = _RUN_RE.match(p.name)
            if m and (folder / f"pro_{m.group(1)}.csv").is_file():
                out.append((cls, int(m.group(1))))
    return sorted(out, key=lambda r: (CLASSES.index(r[0]), r[1]))


def load_run(terrain: str, number: int, root: str | Path | None = None) -> Run:
    """One run, e.g. `load_run("SNOW", 6)`."""
    root = Path(root) if root is not None else default_root()
    if terrain not in CLASSES:
        raise ValueError(f"unknown class {terrain!r}; known: {', '.join(CLASSES)}")
    folder = root / terrain
    imu = _read_csv(folder / f"imu_{number:02d}.csv", IMU_COLUMNS)
    pro = _read_csv(folder / f"pro_{number:02d}.csv", PRO_COLUMNS)
    return Run(terrain, number, imu, pro)


def load_runs(root: str | Path | None = None, classes: Iterable[str] = CLASSES) -> list[Run]:
    """Every run of the given classes (about 1.5 s for the whole set). Raises if there is none."""
    root = Path(root) if root is not None else default_root()
    ids = list_runs(root, classes)
    if not ids:
        raise BorealTCError(
            f"no BorealTC runs under {root} (set ${ROOT_ENV} or pass the directory)"
        )
    return [load_run(c, n, root) for c, n in ids]


@dataclass(frozen=True)
class RunWindows:
    """Windows of several runs, row-aligned."""

    features: np.ndarray
    """`(N, n_features)` float32 (`terrain_odt.signals.features.feature_names`)."""
    labels: np.ndarray
    """`(N,)` int64 class index into `CLASSES`."""
    run_ids: np.ndarray
    """`(N,)` str `CLASS/NN` of the run each window comes from."""
    speed: np.ndarray
    """`(N,)` float32 mean wheel speed magnitude over the window (m/s), see `Run.wheel_speed`."""
    t_start: np.ndarray
    """`(N,)` float64 window start, in its run's clock."""
    rejected: dict[str, int]
    """Rejected windows per reason over all runs."""


def windows_by_run(runs: Sequence[Run], cfg: FeatureConfig | None = None) -> RunWindows:
    """Features, labels, run ids and mean wheel speed of every accepted window of `runs` (with
    `cfg.wheels`, the wheel features from each run's `pro` file too)."""
    cfg = cfg or FeatureConfig()
    feats, labels, ids, speeds, starts = [], [], [], [], []
    rejected: dict[str, int] = {}
    offsets = np.arange(cfg.window_samples) / cfg.sample_rate_hz
    for run in runs:
        w = extract_windows(
            run.imu[:, 0], run.imu[:, 1:], cfg, run.wheel_samples() if cfg.wheels else None
        )
        for reason, count in w.rejected.items():
            rejected[reason.value] = rejected.get(reason.value, 0) + count
        m = len(w.features)
        feats.append(w.features)
        labels.append(np.full(m, run.label, dtype=np.int64))
        ids.append(np.full(m, run.run_id, dtype=object))
        grid = w.t_start[:, None] + offsets[None, :]
        speeds.append(run.wheel_speed(grid.ravel()).reshape(grid.shape).mean(axis=1))
        starts.append(w.t_start)
    if not runs:
        return RunWindows(
            np.empty((0, cfg.n_features), np.float32),
            np.empty(0, np.int64),
            np.empty(0, str),
            np.empty(0, np.float32),
            np.empty(0),
            {},
        )
    return RunWindows(
        features=np.concatenate(feats),
        labels=np.concatenate(labels),
        run_ids=np.concatenate(ids).astype(str),
        speed=np.concatenate(speeds).astype(np.float32),
        t_start=np.concatenate(starts),
        rejected=rejected,
    )


def split_by_run(
    run_ids: np.ndarray,
    labels: np.ndarray,
    test_fraction: float = 0.3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, test) over windows, splitting whole runs, stratified by class.

    Per class, `round(test_fraction · runs)` runs (at least 1 when the class has 2 or more runs,
    and never all of them) go to the test side, chosen by `seed`. No run is on both sides.
    """
    if not 0 <= test_fraction < 1:
        raise ValueError("test_fraction must be in [0, 1)")
    run_ids = np.asarray(run_ids)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test_runs: set[str] = set()
    for label in np.unique(labels):
        runs = sorted(set(run_ids[labels == label].tolist()))
        n_test = round(test_fraction * len(runs))
        if test_fraction > 0 and len(runs) >= 2:
            n_test = min(max(n_test, 1), len(runs) - 1)
        test_runs.update(rng.permutation(runs)[:n_test].tolist())
    test = np.isin(run_ids, sorted(test_runs))
    return ~test, test
