"""Model toolbox: pretrain → quantize → export → reload, on synthetic data split by group."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from terrain_odt.model.blob import BlobError, LayerDesc, decode_blob
from terrain_odt.model.qnn import QModel
from terrain_odt.model.toolbox import (
    FloatModel,
    convert,
    describe_blob,
    estimate_memory,
    evaluate,
    export,
    firmware_verdict,
    group_split,
    load_sidecar,
    pretrain_mlp,
    quantize_inputs,
    quantize_model,
    quantize_with_sidecar,
    rust_layers,
    rust_snippet,
)

CLASSES = np.array(["asphalt", "grass", "gravel", "snow"])


def synthetic(
    n_runs: int = 24, per_run: int = 60, n_feat: int = 24, noise: float = 1.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlapping classes (float accuracy ~85 %, so int8 errors would show), features on very
    different scales, one class per run plus a per-run offset (what makes a window-level random
    split optimistic)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (len(CLASSES), n_feat))
    feat_scale = 10.0 ** rng.uniform(-3, 3, n_feat)
    xs, ys, gs = [], [], []
    for r in range(n_runs):
        c = r % len(CLASSES)
        off = rng.normal(0.0, 0.3, n_feat)
        xs.append((centres[c] + off + rng.normal(0.0, noise, (per_run, n_feat))) * feat_scale)
        ys.append(np.full(per_run, CLASSES[c]))
        gs.append(np.full(per_run, r))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    x, y, g = synthetic()
    tr, te = group_split(g, 0.25, seed=1)
    return {"x": x, "y": y, "g": g, "tr": tr, "te": te}


@pytest.fixture(scope="module")
def trained(data: dict[str, Any]) -> tuple[FloatModel, QModel]:
    x, y, tr = data["x"], data["y"], data["tr"]
    fm = pretrain_mlp(x[tr], y[tr], hidden=(32, 16), seed=0, epochs=60)
    return fm, quantize_model(fm, x[tr])


def test_group_split_holds_out_whole_groups(data: dict[str, Any]) -> None:
    g, tr, te = data["g"], data["tr"], data["te"]
    assert set(g[tr]).isdisjoint(g[te])
    assert len(tr) + len(te) == len(g)
    assert len(set(g[te])) == 6  # 25 % of 24 runs
    with pytest.raises(ValueError, match="two groups"):
        group_split(np.zeros(5))
    # stratified: each class keeps training runs and loses round(25 %) of its 6 runs
    tr2, te2 = group_split(data["g"], 0.25, seed=2, labels=data["y"])
    assert set(data["g"][tr2]).isdisjoint(data["g"][te2])
    for c in CLASSES:
        assert len(set(data["g"][te2][data["y"][te2] == c])) == 2  # round(1.5) = 2
        assert len(set(data["g"][tr2][data["y"][tr2] == c])) == 4


def test_int8_accuracy_close_to_float(data: dict[str, Any], trained: Any) -> None:
    fm, qm = trained
    x, y, te = data["x"], data["y"], data["te"]
    ev = evaluate(fm, qm, x[te], y[te])
    assert ev["n"] == len(te)
    assert 0.75 < ev["float_acc"] < 0.98  # hard enough for quantization errors to matter
    assert abs(ev["int8_acc"] - ev["float_acc"]) <= 0.02
    assert ev["agreement"] > 0.97
    assert fm.labels == CLASSES.tolist()
    assert fm.class_names == CLASSES.tolist()
    assert [d.dims[:2] for d in fm.descs] == [(24, 32), (32, 16), (16, 4)]


def test_export_reload_and_sidecar(tmp_path: Path, data: dict[str, Any], trained: Any) -> None:
    fm, qm = trained
    x, y, te = data["x"], data["y"], data["te"]
    blob_path, side_path = export(qm, tmp_path / "m.odtm", float_model=fm, name="Terrain")
    assert side_path == tmp_path / "m.json"
    data_b = blob_path.read_bytes()
    again = QModel.from_blob(data_b)
    xq = quantize_inputs(fm, qm, x[te])
    np.testing.assert_array_equal(again.predict_batch(xq), qm.predict_batch(xq))

    side = load_sidecar(side_path)
    blob = decode_blob(data_b)
    assert side["model_id"] == blob.model_id == qm.meta.model_id != 0
    assert side["blob_len"] == len(data_b) == side["memory"]["blob_len"]
    assert side["input"]["scale"] == blob.input_scale
    assert side["input"]["zero_point"] == blob.input_zp
    assert len(side["input"]["standardization"]["mean"]) == 24
    assert side["classes"]["names"] == CLASSES.tolist()
    assert side["rust"]["layers"] == [
        "fc1: Dense<24, 32, true>",
        "fc2: Dense<32, 16, true>",
        "fc3: Dense<16, 4, false>",
    ]
    assert "pub struct Terrain {" in side["rust"]["odt_model"]
    assert "fc1: Dense<24, 32, true>," in side["rust"]["odt_model"]
    # the host-side quantization from the sidecar alone equals the toolbox's
    np.testing.assert_array_equal(quantize_with_sidecar(x[te], side), xq)
    # int8 accuracy from the reloaded blob + sidecar
    pred = np.argmax(again.predict_batch(quantize_with_sidecar(x[te], side)), axis=1)
    acc = np.mean(np.array(side["classes"]["names"])[pred] == y[te])
    assert acc == pytest.approx(evaluate(fm, qm, x[te], y[te])["int8_acc"])
    with pytest.raises(ValueError, match=r"\.json"):
        export(qm, tmp_path / "m.json")


def test_model_id_deterministic_and_explicit(data: dict[str, Any], trained: Any) -> None:
    fm, qm = trained
    x, tr = data["x"], data["tr"]
    assert quantize_model(fm, x[tr]).meta.model_id == qm.meta.model_id
    assert qm.meta.model_id == decode_blob(qm.to_blob()).model_id
    # another model (other calibration) gets another id
    assert quantize_model(fm, x[tr][:100]).meta.model_id != qm.meta.model_id
    assert quantize_model(fm, x[tr], model_id=0x1234).meta.model_id == 0x1234


def test_percentile_calibration(data: dict[str, Any], trained: Any) -> None:
    fm, qm = trained
    x, y, tr, te = data["x"], data["y"], data["tr"], data["te"]
    qp = quantize_model(fm, x[tr], percentile=99.9)
    b, bp = decode_blob(qm.to_blob()), decode_blob(qp.to_blob())
    assert bp.input_scale < b.input_scale  # clipped range
    assert bp.output_scale == b.output_scale  # logits keep min/max
    ev = evaluate(fm, qp, x[te], y[te])
    assert abs(ev["int8_acc"] - ev["float_acc"]) <= 0.02
    with pytest.raises(ValueError, match="percentile"):
        quantize_model(fm, x[tr], percentile=30.0)


def test_binary_and_integer_labels() -> None:
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(-1, 0.5, (150, 5)), rng.normal(1, 0.5, (150, 5))])
    y = np.repeat([3, 7], 150)
    fm = pretrain_mlp(
        x, y, hidden=(8,), seed=1, epochs=40, learning_rate=1e-2, class_names=["flat", "rough"]
    )
    assert fm.n_classes == 2 and fm.labels == [3, 7]
    qm = quantize_model(fm, x)
    ev = evaluate(fm, qm, x, y)
    assert ev["float_acc"] > 0.95 and abs(ev["int8_acc"] - ev["float_acc"]) <= 0.02
    with pytest.raises(ValueError, match="label 5"):
        evaluate(fm, qm, x[:2], [3, 5])


def test_input_errors(trained: Any) -> None:
    fm, _ = trained
    with pytest.raises(ValueError, match=r"shape \(N, 24\)"):
        fm.predict(np.zeros((3, 23)))
    with pytest.raises(ValueError, match="NaN"):
        quantize_model(fm, np.full((3, 24), np.nan))
    with pytest.raises(ValueError, match="two classes"):
        pretrain_mlp(np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="class names"):
        pretrain_mlp(np.zeros((4, 2)), [0, 1, 0, 1], class_names=["a"])


def test_convert_one_call(tmp_path: Path, data: dict[str, Any]) -> None:
    x, y, tr, te = data["x"], data["y"], data["tr"], data["te"]
    lines: list[str] = []
    res = convert(
        x[tr],
        y[tr],
        x_test=x[te],
        y_test=y[te],
        out=tmp_path / "c.odtm",
        hidden=(16,),
        epochs=30,
        progress=lines.append,
    )
    assert res.report["held_out"]
    assert abs(res.report["test"]["int8_acc"] - res.report["test"]["float_acc"]) <= 0.02
    assert any(s.startswith("pretrain epoch 1/30") for s in lines)
    assert any("held-out" in s for s in lines)
    side = json.loads(res.sidecar_path.read_text())
    assert side["metrics"]["test"]["n"] == len(te)
    assert side["blob"] == "c.odtm"
    assert QModel.from_blob(res.blob_path.read_bytes()).output_len == 4


def test_memory_estimate_matches_firmware_table() -> None:
    """`make mem` (odt-core's compile-time sizes, 64-bit host) for the shipped models."""
    mlp = [LayerDesc.dense(102, 64, True), LayerDesc.dense(64, 32, True), LayerDesc.dense(32, 5)]
    assert estimate_memory(mlp)["total"] == 12488
    assert estimate_memory(mlp, storage="i16")["total"] == 21224
    assert estimate_memory(mlp)["entries"]["fc1.batch_stash"] == 564
    cnn = [
        LayerDesc.conv2d(28, 28, 1, 8, 3, 3, 1, 0, True),
        LayerDesc.maxpool2d(26, 26, 8, 2, 2),
        LayerDesc.conv2d(13, 13, 8, 16, 3, 3, 1, 0, True),
        LayerDesc.maxpool2d(11, 11, 16, 2, 2),
        LayerDesc.flatten(400),
        LayerDesc.dense(400, 10),
    ]
    est = estimate_memory(cnn)
    assert (est["total"], est["params"], est["blob_len"]) == (80840, 5258, 5968)
    assert rust_layers(cnn) == [
        "conv1: Conv2d<28, 28, 1, 8, 3, 3, 1, 0, 26, 26, true>",
        "pool1: MaxPool2d<26, 26, 8, 2, 2>",
        "conv2: Conv2d<13, 13, 8, 16, 3, 3, 1, 0, 11, 11, true>",
        "pool2: MaxPool2d<11, 11, 16, 2, 2>",
        "flat1: Flatten<400>",
        "fc1: Dense<400, 10, false>",
    ]
    snip = rust_snippet(cnn, "MnistCnn")
    assert "use odt_core::layers::{Conv2d, Dense, Flatten, MaxPool2d};" in snip
    assert "budget: 99 * 1024," in snip  # 1.25 × estimate, rounded up to KiB
    assert "weights: odt_core::Hp," in rust_snippet(cnn, storage="i16")


def test_describe_blob(trained: Any) -> None:
    _, qm = trained
    text = describe_blob(qm.to_blob())
    assert f"model_id 0x{qm.meta.model_id:08x}" in text
    assert "fc2: Dense<32, 16, true>" in text
    assert "RAM estimate" in text
    assert "co-processor firmware: runs it" in text
    bad = bytearray(qm.to_blob())
    bad[0] = ord("X")
    with pytest.raises(BlobError):
        describe_blob(bytes(bad))


def test_firmware_verdict_names_the_capacity_limit() -> None:
    from tools.gen_golden import quantized

    golden = Path(__file__).parent.parent / "firmware" / "odt-core" / "golden"
    conv = bytes.fromhex(json.loads((golden / "conv1d_i8_all.json").read_text())["blob_hex"])
    assert firmware_verdict(conv).startswith("refuses it: layer 0 is Conv1d (kind 2)")
    big = quantized([LayerDesc.dense(300, 8, relu=True), LayerDesc.dense(8, 4)], 3)
    assert firmware_verdict(big) == "refuses it: 300 inputs > capacity 256"
    assert "refuses it: 300 inputs" in describe_blob(big)
