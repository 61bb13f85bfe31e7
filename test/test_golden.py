"""The numpy reference reproduces every golden vector exactly, and the generator is deterministic.

The same files are checked by `cargo test` in `firmware/odt-core`, so this is the bridge between
the Python and the Rust implementations of docs/integer_training.md.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from terrain_odt.model.blob import (
    CAPACITY_NOUNS,
    ArchMismatch,
    BadQuant,
    BlobError,
    Capacity,
    OverCapacity,
    UnsupportedLayer,
    decode_blob,
    error_name,
)
from terrain_odt.model.qnn import QModel, TrainConfig

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "firmware" / "odt-core" / "golden"
ERROR_FILES = {"blob_errors.json", "capacity_errors.json"}
CASE_FILES = sorted(p for p in GOLDEN.glob("*.json") if p.name not in ERROR_FILES)
ARCH_LAYERS = {"mlp": 3, "terrain": 3, "mlp4": 4, "conv1d": 5, "conv2d": 6}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def gen_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_golden", ROOT / "tools" / "gen_golden.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gen_golden"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def configured(case: dict[str, Any]) -> QModel:
    model = QModel.from_blob(bytes.fromhex(case["blob_hex"]), storage=case["storage"])
    c = case["config"]
    model.set_config(
        TrainConfig(c["lr_m"], c["lr_e"], tuple(c["modes"]), c["batch"], c["topk_min"], c["seed"])
    )
    return model


def test_expected_cases_present() -> None:
    names = {p.stem for p in CASE_FILES}
    assert len(names) >= 10
    assert {"conv1d_i8_all", "conv2d_i8_all", "conv2d_i16_batch2", "mlp_i8_all"} <= names
    cases = [load(p) for p in CASE_FILES]
    assert {c["arch"] for c in cases} == {"mlp", "terrain", "mlp4", "conv1d", "conv2d"}
    # at least two MLP shapes, one of them the shipped terrain classifier's
    shapes = {
        tuple(d.dims[:2] for d in decode_blob(bytes.fromhex(c["blob_hex"])).layers)
        for c in cases
        if c["arch"] in ("terrain", "mlp4")
    }
    assert ((102, 64), (64, 32), (32, 5)) in shapes and len(shapes) >= 2
    assert {c["storage"] for c in cases} == {"i8", "i16"}
    assert any(c["config"]["batch"] > 1 for c in cases)
    assert any(c["config"]["topk_min"] is not None for c in cases)
    # every counter is exercised by at least one case
    for key in ("forward_saturations", "update_clips", "weight_saturations", "zero_grad_steps"):
        assert any(c["counters"][key] > 0 for c in cases), key
    # some input zero point is not 0 and some input zero point is not −128
    zps = {decode_blob(bytes.fromhex(c["blob_hex"])).input_zp for c in cases}
    assert zps - {0, -128}


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: p.stem)
def test_schema(path: Path) -> None:
    case = load(path)
    assert list(case) == [
        "name", "arch", "storage", "blob_hex", "config", "steps", "counters", "infer",
        "final_blob_hex", "final_state_crc32",
    ]  # fmt: skip
    assert case["name"] == path.stem
    assert list(case["config"]) == ["lr_m", "lr_e", "modes", "batch", "topk_min", "seed"]
    blob = decode_blob(bytes.fromhex(case["blob_hex"]))
    assert len(blob.layers) == ARCH_LAYERS[case["arch"]]
    assert len(case["config"]["modes"]) == sum(d.has_params for d in blob.layers)
    assert len(case["steps"]) % case["config"]["batch"] == 0
    for step in case["steps"]:
        assert list(step) == ["x", "label", "logits", "p_q15", "loss_q15", "ce_q16", "pred"]
        assert len(step["x"]) == blob.input_len and len(step["logits"]) == blob.output_len
        assert all(-128 <= v <= 127 for v in step["x"] + step["logits"])
    assert set(case["counters"]) == {
        "forward_saturations", "update_clips", "weight_saturations", "zero_grad_steps", "steps",
        "updates",
    }  # fmt: skip
    assert case["counters"]["steps"] == len(case["steps"])
    assert case["counters"]["updates"] == len(case["steps"]) // case["config"]["batch"]


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: p.stem)
def test_reproduces_golden(path: Path) -> None:
    case = load(path)
    initial = bytes.fromhex(case["blob_hex"])
    model = configured(case)
    assert model.to_blob() == initial
    for k, step in enumerate(case["steps"]):
        r = model.train_step(np.array(step["x"]), step["label"])
        assert r.logits.tolist() == step["logits"], f"step {k}"
        assert r.p_q15 == step["p_q15"], f"step {k}"
        assert (r.loss_q15, r.ce_q16, r.pred) == (step["loss_q15"], step["ce_q16"], step["pred"])
    assert model.counters.as_dict() == case["counters"]
    for inf in case["infer"]:
        assert model.forward(np.array(inf["x"]))[0].tolist() == inf["logits"]
    assert model.to_blob().hex() == case["final_blob_hex"]
    assert model.state_crc32() == case["final_state_crc32"]
    # the final blob is a valid blob of the same architecture
    final = decode_blob(bytes.fromhex(case["final_blob_hex"]), decode_blob(initial).arch)
    assert final.layers == decode_blob(initial).layers


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: p.stem)
def test_predict_batch_matches_golden(path: Path) -> None:
    case = load(path)
    initial = QModel.from_blob(bytes.fromhex(case["blob_hex"]), storage=case["storage"])
    # the first batch is predicted with the initial weights
    first = case["steps"][: case["config"]["batch"]]
    got = initial.predict_batch(np.array([s["x"] for s in first]))
    assert got.tolist() == [s["logits"] for s in first]
    final = QModel.from_blob(bytes.fromhex(case["final_blob_hex"]), storage="i8")
    xs = np.array([i["x"] for i in case["infer"]])
    assert final.predict_batch(xs).tolist() == [i["logits"] for i in case["infer"]]
    assert final.counters.forward_saturations == 0  # predict_batch leaves the counters alone


def test_infer_counts_forward_saturations_after_counters_snapshot() -> None:
    """`counters` is captured before `infer`; inference still counts forward saturations."""
    case = load(GOLDEN / "mlp_high_lr.json")
    model = configured(case)
    for step in case["steps"]:
        model.train_step(np.array(step["x"]), step["label"])
    before = model.counters.as_dict()
    assert before == case["counters"]
    for inf in case["infer"]:
        model.forward(np.array(inf["x"]))
    after = model.counters.as_dict()
    assert {k: v for k, v in after.items() if k != "forward_saturations"} == {
        k: v for k, v in before.items() if k != "forward_saturations"
    }
    assert after["forward_saturations"] >= before["forward_saturations"]


def test_capacity_errors_match_the_reference_loader() -> None:
    """`decode_blob(capacity=...)` gives each verdict the firmware's `DynMlp` gives (the same
    file is checked by `cargo test`)."""
    data = load(GOLDEN / "capacity_errors.json")
    cap = Capacity(**data["capacity"])
    assert len(data["cases"]) >= 10
    for case in data["cases"]:
        blob = bytes.fromhex(case["blob_hex"])
        if case["error"] is None:
            decoded = decode_blob(blob, capacity=cap)
            QModel.from_blob(blob)  # and the reference runs it
            assert decoded.input_len <= cap.max_inputs
            continue
        with pytest.raises(BlobError) as exc:
            decode_blob(blob, capacity=cap)
        err = exc.value
        assert error_name(err) == case["error"], case["name"]
        if isinstance(err, OverCapacity):
            assert (err.limit, err.got, err.max) == (case["limit"], case["got"], case["max"])
            assert str(err) == f"{err.got} {CAPACITY_NOUNS[err.limit]} > capacity {err.max}"
        elif isinstance(err, UnsupportedLayer):
            assert (err.layer, err.kind) == (case["layer"], case["kind"])
        elif isinstance(err, ArchMismatch | BadQuant):
            assert err.layer == case["layer"], case["name"]


def test_over_capacity_message_names_the_limit() -> None:
    assert str(OverCapacity("Inputs", 300, 256)) == "300 inputs > capacity 256"
    assert "Conv1d" in str(UnsupportedLayer(0, 2))


def test_generator_is_deterministic(tmp_path: Path) -> None:
    gen = gen_module()
    written = gen.generate(tmp_path, log=lambda _msg: None)
    assert {p.name for p in written} == {p.name for p in GOLDEN.glob("*.json")}
    for p in written:
        assert p.read_bytes() == (GOLDEN / p.name).read_bytes(), p.name
