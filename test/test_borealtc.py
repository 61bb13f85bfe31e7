"""BorealTC loader: synthetic data set in tmp_path; the real one when ../shared/data has it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from terrain_odt.data import borealtc
from terrain_odt.data.borealtc import CLASSES, Run, split_by_run, windows_by_run
from terrain_odt.signals.features import FeatureConfig


def write_run(root: Path, cls: str, num: int, seconds: float, speed: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder = root / cls
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * 100)) / 100.0
    imu = np.column_stack([t, rng.normal(size=(t.size, 6))])
    tp = np.arange(0.0, seconds, 1 / 6.5)
    pro = np.column_stack([tp, np.ones_like(tp), np.ones_like(tp), -speed + 0 * tp, speed + 0 * tp])
    np.savetxt(
        folder / f"imu_{num:02d}.csv",
        imu,
        delimiter=",",
        header="time,wx,wy,wz,ax,ay,az",
        comments="",
    )
    np.savetxt(
        folder / f"pro_{num:02d}.csv",
        pro,
        delimiter=",",
        header="time,curL,curR,velL,velR",
        comments="",
    )


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "borealtc"
    seed = 0
    for cls in ("ASPHALT", "SNOW"):
        for num, secs in ((0, 6.0), (3, 4.0), (12, 5.0)):
            write_run(root, cls, num, secs, speed=0.1 * (num + 1), seed=seed)
            seed += 1
    # An IMU file without its pro file is not a run.
    (root / "SNOW" / "imu_20.csv").write_text("time,wx,wy,wz,ax,ay,az\n0,0,0,0,0,0,0\n")
    return root


def test_list_and_load(fake_root: Path):
    assert borealtc.available(fake_root)
    ids = borealtc.list_runs(fake_root)
    assert ids == [
        ("ASPHALT", 0),
        ("ASPHALT", 3),
        ("ASPHALT", 12),
        ("SNOW", 0),
        ("SNOW", 3),
        ("SNOW", 12),
    ]
    runs = borealtc.load_runs(fake_root, classes=["SNOW"])
    assert [r.run_id for r in runs] == ["SNOW/00", "SNOW/03", "SNOW/12"]
    r = runs[0]
    assert r.imu.shape == (600, 7) and r.pro.shape[1] == 5
    assert r.label == CLASSES.index("SNOW") and r.duration_s == pytest.approx(5.99)
    with pytest.raises(ValueError):
        borealtc.list_runs(fake_root, classes=["GRASS"])


def test_root_resolution(fake_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv(borealtc.ROOT_ENV, str(fake_root))
    assert borealtc.default_root() == fake_root
    assert len(borealtc.load_runs()) == 6
    monkeypatch.delenv(borealtc.ROOT_ENV)
    monkeypatch.setenv(borealtc.DATA_ENV, str(fake_root.parent))
    assert borealtc.default_root() == fake_root
    monkeypatch.delenv(borealtc.DATA_ENV)
    assert borealtc.default_root().parts[-3:] == ("shared", "data", "borealtc")
    with pytest.raises(borealtc.BorealTCError, match="no BorealTC runs"):
        borealtc.load_runs(tmp_path / "nowhere")


def test_bad_header(fake_root: Path):
    (fake_root / "ASPHALT" / "imu_00.csv").write_text("t,a,b\n1,2,3\n")
    with pytest.raises(borealtc.BorealTCError, match="header"):
        borealtc.load_run("ASPHALT", 0, fake_root)


def test_windows_by_run(fake_root: Path):
    runs = borealtc.load_runs(fake_root)
    w = windows_by_run(runs)
    cfg = FeatureConfig()
    # 600, 400, 500 samples → 9, 5, 7 windows per class
    per_run = {"00": 9, "03": 5, "12": 7}
    assert w.features.shape == (2 * sum(per_run.values()), cfg.n_features)
    assert w.features.dtype == np.float32 and np.isfinite(w.features).all()
    assert w.labels.tolist().count(CLASSES.index("ASPHALT")) == sum(per_run.values())
    for run_id in set(w.run_ids.tolist()):
        mask = w.run_ids == run_id
        assert mask.sum() == per_run[run_id[-2:]]
        # Wheel speed magnitude (turning in place at ±0.1·(num+1) m/s).
        np.testing.assert_allclose(w.speed[mask], 0.1 * (int(run_id[-2:]) + 1), rtol=1e-5)
    assert w.rejected == {}
    assert windows_by_run([]).features.shape == (0, cfg.n_features)


def test_split_by_run_never_shares_a_run():
    run_ids = np.repeat([f"{c}/{i:02d}" for c in CLASSES for i in range(5)], 7)
    labels = np.repeat([CLASSES.index(c) for c in CLASSES for _ in range(5)], 7)
    train, test = split_by_run(run_ids, labels, test_fraction=0.4, seed=1)
    assert (train ^ test).all()
    assert not set(run_ids[train]) & set(run_ids[test])
    for label in range(len(CLASSES)):  # stratified: 2 of 5 runs per class
        assert len(set(run_ids[test & (labels == label)])) == 2
    again = split_by_run(run_ids, labels, test_fraction=0.4, seed=1)
    assert (again[1] == test).all()
    # A class with a single run stays on the training side.
    tr, te = split_by_run(np.array(["A/00", "A/00", "B/00", "B/01"]), np.array([0, 0, 1, 1]))
    assert tr[:2].all() and te[2:].sum() == 1


def test_run_wheel_speed_interpolates():
    pro = np.array([[0.0, 0, 0, 0.2, 0.4], [1.0, 0, 0, -0.4, -0.6]])
    run = Run("ICE", 1, np.zeros((2, 7)), pro)
    np.testing.assert_allclose(run.wheel_speed(np.array([0.0, 0.5, 1.0])), [0.3, 0.4, 0.5])


# ---------------------------------------------------------------------------------------------
# The shared data set (skipped on a fresh clone without ../shared/data).

needs_data = pytest.mark.skipif(
    not borealtc.available(), reason="BorealTC not found (../shared/data/borealtc)"
)


@needs_data
def test_shared_dataset_layout():
    ids = borealtc.list_runs()
    assert {c for c, _ in ids} == set(CLASSES)
    assert len(ids) >= 50
    for cls in CLASSES:  # one run per class, fully checked
        num = next(n for c, n in ids if c == cls)
        run = borealtc.load_run(cls, num)
        dt = np.diff(run.imu[:, 0])
        np.testing.assert_allclose(dt, 0.01, atol=1e-6)
        assert np.isfinite(run.imu).all() and np.isfinite(run.pro).all()
        assert abs(run.pro[-1, 0] - run.imu[-1, 0]) < 2.0  # same clock
        w = windows_by_run([run])
        assert len(w.features) > 0 and np.isfinite(w.features).all()
        assert (w.labels == CLASSES.index(cls)).all()
        assert (w.speed >= 0).all() and (w.speed < 2.0).all()
