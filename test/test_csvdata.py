"""Your own robot's data: CSV recordings with any class names, rates and column order →
`bag-from-csv` → `dataset` → `convert`; the column reader's aliases, map and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic_robot import CLASSES, params_yaml, write_recordings

from terrain_odt import cli
from terrain_odt.data.csvdata import (
    IMU_FIELDS,
    CsvError,
    list_recordings,
    load_recording,
    read_table,
)


def test_columns_any_order_aliases_and_map(tmp_path: Path):
    f = tmp_path / "x.csv"
    f.write_text("AX,t,foo\n1,2,3\n4,5,6\n")
    a = read_table(f, ("time", "ax"))
    assert a.tolist() == [[2.0, 1.0], [5.0, 4.0]]
    assert read_table(f, ("time", "wx"), {"wx": "foo"}, time_scale=0.5).tolist() == [
        [1.0, 3.0],
        [2.5, 6.0],
    ]
    with pytest.raises(CsvError, match="no column for 'wy'"):
        read_table(f, ("time", "wy"))
    with pytest.raises(CsvError, match="'bar'"):
        read_table(f, ("time", "wx"), {"wx": "bar"})
    (tmp_path / "bad.csv").write_text("t,ax\n1,x\n")
    with pytest.raises(CsvError, match="not numeric"):
        read_table(tmp_path / "bad.csv", ("time", "ax"))


def test_recordings_of_another_robot(tmp_path: Path):
    ids = write_recordings(tmp_path / "robot", runs_per_class=1, seconds=6.0)
    assert list_recordings(tmp_path / "robot") == [tuple(i.split("/")) for i in sorted(ids)]
    run = load_recording(tmp_path / "robot", "MUD", "r0")
    assert run.imu.shape[1] == len(IMU_FIELDS) and run.has_wheels
    assert np.allclose(np.diff(run.imu[:, 0]), 1 / 50.0)
    assert 9.0 < run.imu[:, 6].mean() < 10.5  # az found under its other name and place
    assert run.run_id == "MUD/r0"
    with pytest.raises(CsvError, match="no such file"):
        load_recording(tmp_path / "robot", "MUD", "r9")


@pytest.fixture(scope="module")
def robot_bag(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("robot")
    write_recordings(d / "csv", runs_per_class=3, seconds=30.0)
    bag = d / "robot.mcap"
    assert cli.main(["bag-from-csv", str(d / "csv"), "-o", str(bag), "-q"]) == 0
    return d, bag


def test_csv_to_dataset_to_model(robot_bag: tuple[Path, Path]):
    d, bag = robot_bag
    params = params_yaml(d / "robot.yaml", d / "model.odtm")
    npz = d / "features.npz"
    args = ["dataset", str(bag), "-o", str(npz), "--params-file", str(params)]
    assert cli.main([*args, "--group-by", "stretch", "-q"]) == 0
    with np.load(npz, allow_pickle=False) as z:
        x, y, g = z["X"], z["y"], z["groups"]
        fc = json.loads(str(z["feature_config"]))
        assert sorted(z["class_names"].tolist()) == sorted(CLASSES)
    assert fc["sample_rate_hz"] == 50.0 and fc["wheels"] and fc["bands"][-1][1] == 25.0
    assert x.shape[1] == fc["n_features"] == 6 * (len(fc["bands"]) + 6) + 8
    assert len(set(g.tolist())) == 12  # one group per recording (stretch of one label)
    assert set(y.tolist()) == set(CLASSES)
    model = d / "model.odtm"
    rc = cli.main(
        ["convert", str(npz), "-o", str(model), "--hidden", "32,16", "--epochs", "60", "-q"]
    )
    assert rc == 0
    side = json.loads(model.with_suffix(".json").read_text())
    assert side["classes"]["names"] == sorted(CLASSES)
    assert side["features"]["sample_rate_hz"] == 50.0 and side["input_len"] == x.shape[1]
    assert side["metrics"]["test"]["int8_acc"] > 0.8  # the synthetic terrains are separable
    assert [r["dims"] for r in side["layers"] if r["kind"] == "Dense"] == [
        [x.shape[1], 32],
        [32, 16],
        [16, 4],
    ]


def test_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert cli.main(["bag-from-csv", str(tmp_path / "none"), "-o", str(tmp_path / "b.mcap")]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "r" / "ICE").mkdir(parents=True)
    (tmp_path / "r" / "ICE" / "imu_1.csv").write_text("time,wx\n0,1\n")
    assert cli.main(["bag-from-csv", str(tmp_path / "r"), "-o", str(tmp_path / "b.mcap")]) == 2
    assert "no column for 'wy'" in capsys.readouterr().err
    rc = cli.main(["bag-from-csv", str(tmp_path / "r"), "ICE/1", "--columns", "wx", "-o", "x"])
    assert rc == 2 and "FIELD=COLUMN" in capsys.readouterr().err


def test_second_robot_end_to_end_with_the_emulator(
    emu_bin: Path, robot_bag: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
):
    """Issue 10: another robot (4 classes of its own, IMU at 50 Hz, wheels at 15 Hz, columns in
    another order, a 32-16 model): CSV → bag-from-csv → dataset → convert → evaluate on the
    emulated co-processor, every step exit 0."""
    d, _bag = robot_bag
    params = params_yaml(d / "robot2.yaml", d / "m2.odtm")
    npz = d / "f2.npz"
    train_bag = d / "train.mcap"  # recordings r0 and r1 of each class: the pretraining data
    segs = [f"{c}/r{r}" for r in (0, 1) for c in CLASSES]
    assert cli.main(["bag-from-csv", str(d / "csv"), *segs, "-o", str(train_bag), "-q"]) == 0
    args = ["dataset", str(train_bag), "-o", str(npz), "--params-file", str(params), "-q"]
    assert cli.main([*args, "--group-by", "stretch"]) == 0
    rc = cli.main(["convert", str(npz), "-o", str(d / "m2.odtm"), "--hidden", "32,16", "-q",
                   "--epochs", "60"])  # fmt: skip
    assert rc == 0
    # The drive evaluated: lap 1 = r2 of each class, labelled by the operator; lap 2 = r1 again
    # (this robot has only three recordings per class).
    drive = d / "drive.mcap"
    segs = [f"{c}/r2" for c in CLASSES] + [f"{c}/r1" for c in CLASSES]
    assert cli.main(["bag-from-csv", str(d / "csv"), *segs, "-o", str(drive), "-q"]) == 0
    out = d / "eval"
    rc = cli.main(
        ["evaluate", str(drive), "--params-file", str(params), "--operator-until", "123",
         "--out-dir", str(out), "--summary-json", str(d / "s.json"), "-q"]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    s = json.loads((d / "s.json").read_text())
    assert s["evaluated_windows"] > 100 and s["samples_trained"] > 50
    assert s["acc_before"] is not None and s["acc_after"] is not None
    rep = json.loads((out / "report.json").read_text())
    assert rep["classes"] == sorted(CLASSES)
    assert rep["parameters"]["imu_features"]["sample_rate_hz"] == 50.0
