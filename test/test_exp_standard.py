"""Smoke test of tools/exp_standard.py on synthetic data (no shared data sets, a few seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

from tools import exp_standard as ex


def blobs(n: int, seed: int, dims: int = 12, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(0.0, 2.0, (classes, dims))
    y = rng.integers(0, classes, n)
    return centers[y] + rng.normal(0.0, 1.0, (n, dims)), y


@pytest.fixture(scope="module")
def task() -> ex.Task:
    z_pre, y_pre = blobs(300, 0)
    z_dev, y_dev = blobs(200, 1)
    z_te, y_te = blobs(300, 2)
    params = ex.pretrain(z_pre, y_pre, 4, epochs=3)
    return ex.Task(
        dataset="mnist",  # so that the MNIST goal is applied
        model="MLP 12-64-32-4",
        features="synthetic blobs",
        params=params,
        quant=ex.build_quantized(params, z_pre),
        stream=ex.stream_from_pool(z_dev, y_dev, 150),
        evals={"test": (z_te, y_te), "train_like": (z_pre[:100], y_pre[:100])},
        info={"pretrain": "300 samples"},
    )


def test_pair_is_deterministic_and_close(task: ex.Task) -> None:
    cfg = ex.QUICK
    a = ex.run_pair(task, ex.MODES["all"], 0, cfg.lr, cfg.lcg_seed_base)
    b = ex.run_pair(task, ex.MODES["all"], 0, cfg.lr, cfg.lcg_seed_base)
    assert a["test"] == b["test"] and a["counters"] == b["counters"]
    assert a["n_steps"] == 150 and a["counters"]["updates"] == 150
    # easy, separable data: both trainers end high and close to each other
    assert a["test"]["float32"] > 0.8 and abs(a["test"]["int8"] - a["test"]["float32"]) < 0.1
    last = ex.run_pair(task, ex.MODES["last1"], 1, cfg.lr, cfg.lcg_seed_base)
    rec = ex.summarize_runs(task, "synthetic", "all", [a, last], cfg)
    assert rec["seeds"] == [0, 1] and rec["goal_max_gap_pp"] == 1.0
    assert set(rec["metrics"]) == {"test", "train_like"}
    assert rec["acc_int8"] == pytest.approx(np.mean([a["test"]["int8"], last["test"]["int8"]]))


def test_float_frozen_layers_stay_put(task: ex.Task) -> None:
    net = ex.FloatMLP(task.params)
    w0 = [w.copy() for w in net.w]
    z, y = task.stream(0)
    for i in range(10):
        net.step(z[i], int(y[i]), 1e-2, ex.MODES["last1"])
    assert np.array_equal(net.w[0], w0[0]) and np.array_equal(net.w[1], w0[1])
    assert not np.array_equal(net.w[2], w0[2])


def test_merge_keeps_other_keys_and_markers(tmp_path: Path) -> None:
    js = tmp_path / "learning.json"
    js.write_text(json.dumps({"scenarios": [1, 2]}))
    ex.merge_json(js, {"runs": [3]})
    ex.merge_json(js, {"runs": [4]})
    assert json.loads(js.read_text()) == {"scenarios": [1, 2], "standard": {"runs": [4]}}

    md = tmp_path / "RESULTS.md"
    ex.merge_md(md, "first")
    text = md.read_text()
    assert ex.SCEN_BEGIN in text and ex.SCEN_END in text and "first" in text
    md.write_text(text.replace(ex.SCEN_END, "theirs\n" + ex.SCEN_END))
    ex.merge_md(md, "second")
    text = md.read_text()
    assert "theirs" in text and "second" in text and "first" not in text
    assert text.count(ex.BEGIN) == 1 and text.count(ex.END) == 1
