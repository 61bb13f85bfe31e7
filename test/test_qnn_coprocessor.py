"""The in-process co-processor (`terrain_odt.model.qnn_coprocessor`, for experiments) against the
real one: the deterministic evaluation of the demo bag gives the same report with both, window
by window and counter by counter (the bit-exact reference is the firmware's arithmetic)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from terrain_odt.cli import main as cli_main
from terrain_odt.link import SetParams
from terrain_odt.model.qnn_coprocessor import QnnCoprocessor

ROOT = Path(__file__).resolve().parent.parent
BAG = ROOT / "data" / "demo" / "borealtc_demo.mcap"
IMU = [
    "-p", "odt_bridge.model_sidecar:=models/borealtc_imu_mlp.json",
    "-p", "odt_bridge.model_blob:=models/borealtc_imu_mlp.odtm",
    "-p", "imu_features.wheel_joints_left:=[]",
    "-p", "imu_features.wheel_joints_right:=[]",
]  # fmt: skip


def evaluate(out: Path, backend: str) -> dict:
    args = ["evaluate", str(BAG), "--operator-until", "180", "--out-dir", str(out), "-q"]
    assert cli_main([*args, "--coprocessor", backend, *IMU]) == 0
    rep = json.loads((out / "report.json").read_text())
    rep.pop("co_processor")
    return rep


def test_same_report_as_the_emulator(emu_bin: Path, tmp_path: Path) -> None:
    emu = evaluate(tmp_path / "emu", "emulator")
    qnn = evaluate(tmp_path / "qnn", "qnn")
    assert emu == qnn
    assert (tmp_path / "emu" / "windows.json").read_bytes() == (
        tmp_path / "qnn" / "windows.json"
    ).read_bytes()
    assert emu["passes"]["after"]["finetune"]["checks"] > 0  # the rollback path ran too


def test_calls_the_bridge_makes() -> None:
    blob = (ROOT / "models" / "borealtc_imu_mlp.odtm").read_bytes()
    c = QnnCoprocessor(blob)
    info = c.open()
    assert info.input_len == 102 and info.classes == 5
    x = np.zeros(102, dtype=np.int8)
    c.set_params(SetParams(enabled=False, lr_m=1 << 14, lr_e=-20, modes=(2, 2, 2)))
    r = c.train(x, 1).result()
    assert r.disabled and not r.updated and c.stats().train_steps == 0
    c.set_params(SetParams(enabled=True, lr_m=1 << 14, lr_e=-20, modes=(2, 2, 2)))
    assert c.train(x, 1).result().updated and c.stats().train_steps == 1
    trained = c.download_model()
    assert trained != blob
    c.reset_pretrained()
    assert c.download_model() == blob
    c.upload_model(trained)
    assert c.download_model() == trained
    with pytest.raises(ValueError):
        c.train(np.zeros(5, dtype=np.int8), 0)
    with pytest.raises(ValueError):
        c.restore()  # nothing saved
    p = c.infer(x)
    assert 0 <= p.predicted < 5 and abs(sum(p.scores_q15) - 32768) < 8
