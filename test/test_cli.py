"""`terrain-odt` toolbox subcommands (convert, import-tflite, inspect) through `cli.main`."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from terrain_odt import cli
from terrain_odt.model.qnn import QModel

ROOT = Path(__file__).resolve().parent.parent


def _fixtures() -> ModuleType:
    name = "make_tflite_fixtures"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _features(path: Path, groups: bool = True) -> Path:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 2, (3, 10))
    runs = np.repeat(np.arange(12), 40)
    y = runs % 3
    x = centres[y] + rng.normal(0, 0.7, (len(y), 10))
    arrays = {"X": x, "y": y, "class_names": np.array(["a", "b", "c"])}
    if groups:
        arrays["groups"] = runs
    np.savez(path, **arrays)
    return path


def test_convert_then_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feats = _features(tmp_path / "f.npz")
    out = tmp_path / "model.odtm"
    rc = cli.main(
        [
            "convert",
            str(feats),
            "-o",
            str(out),
            "--hidden",
            "16,8",
            "--epochs",
            "20",
            "--seed",
            "3",
            "--percentile",
            "99.9",
            "--model-id",
            "0xabc",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "held-out" in text and "model_id 0x00000abc" in text
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["model_id"] == 0xABC
    assert side["classes"]["names"] == ["a", "b", "c"]
    assert side["metrics"]["test"]["n"] == 3 * 40  # 3 of 12 runs held out
    assert side["metrics"]["calibration"]["percentile"] == 99.9
    assert QModel.from_blob(out.read_bytes()).input_len == 10

    assert cli.main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fc1: Dense<10, 16, true>" in text and "RAM estimate" in text


def test_convert_without_groups_reports_training_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feats = _features(tmp_path / "f.npz", groups=False)
    rc = cli.main(["convert", str(feats), "-o", str(tmp_path / "m.bin"), "--epochs", "5"])
    assert rc == 0
    assert "training (no held-out split given)" in capsys.readouterr().out


def test_convert_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["convert", str(tmp_path / "nope.npz"), "-o", str(tmp_path / "m")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert cli.main(["convert", str(bad), "-o", str(tmp_path / "m")]) == 2
    assert "not a readable .npz" in capsys.readouterr().err
    np.savez(tmp_path / "shape.npz", X=np.zeros((5, 3)), y=np.zeros(4))
    assert cli.main(["convert", str(tmp_path / "shape.npz"), "-o", str(tmp_path / "m")]) == 2
    assert "X must be (N, F)" in capsys.readouterr().err
    np.savez(tmp_path / "keys.npz", A=np.zeros(3))
    assert cli.main(["convert", str(tmp_path / "keys.npz"), "-o", str(tmp_path / "m")]) == 2
    assert "needs arrays X, y" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["convert", "f.npz", "-o", "m", "--hidden", "16,x"])


def test_import_tflite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx = _fixtures()
    g, _ = fx.example_models(0)["conv1d"]
    src = tmp_path / "c.tflite"
    src.write_bytes(fx.write_tflite(g))
    out = tmp_path / "c.odtm"
    assert cli.main(["import-tflite", str(src), "-o", str(out), "--class-names", "x,y,z"]) == 0
    assert "SOFTMAX" in capsys.readouterr().out
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["classes"]["names"] == ["x", "y", "z"]
    assert side["rust"]["layers"][0] == "conv1: Conv1d<16, 3, 5, 3, 1, 1, 16, true>"
    assert side["source"]["operators"][-1]["op"] == "SOFTMAX"
    assert QModel.from_blob(out.read_bytes()).output_len == 3

    # wrong number of class names, a missing file, a non-TFLite file
    assert cli.main(["import-tflite", str(src), "-o", str(out), "--class-names", "a,b"]) == 2
    assert "2 class names for 3 outputs" in capsys.readouterr().err
    assert cli.main(["import-tflite", str(tmp_path / "none.tflite"), "-o", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli.main(["import-tflite", str(out), "-o", str(tmp_path / "o")]) == 2
    assert "not a TFLite flatbuffer" in capsys.readouterr().err


def test_import_tflite_unsupported_operator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fx = _fixtures()
    g, _ = fx.example_models(0)["mlp"]
    g.ops[1].op = "DEPTHWISE_CONV_2D"  # an operator odt-core has no layer for
    g.ops[1].options = {}
    src = tmp_path / "u.tflite"
    src.write_bytes(fx.write_tflite(g))
    assert cli.main(["import-tflite", str(src), "-o", str(tmp_path / "u.odtm")]) == 2
    err = capsys.readouterr().err
    assert "operator 1 is DEPTHWISE_CONV_2D; supported: FULLY_CONNECTED" in err
    assert not (tmp_path / "u.odtm").exists()


def test_inspect_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["inspect", str(tmp_path / "none.odtm")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.odtm"
    bad.write_bytes(b"ODTM" + bytes(60))
    assert cli.main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.odtm: Truncated" in err


def test_progress_plain_and_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._progress(True) is None
    report = cli._progress(False)
    assert report is not None
    report("pretrain epoch 1/2 loss 0.5")
    report("done")
    out = capsys.readouterr()
    assert "done" in out.out
