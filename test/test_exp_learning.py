"""tools/exp_learning.py on tiny synthetic data (no BorealTC needed)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from tools import exp_learning as el

CFG = replace(
    el.QUICK, seeds=(0,), n_report=(20, 40), n_curve=(0, 10), pretrain_epochs=5, hidden=(8, 6)
)


def synthetic(
    n_classes: int = 5, runs_per_class: int = 4, per_run: int = 30, n_feat: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 2.0, (n_classes, n_feat))
    x, y, ids, speed = [], [], [], []
    for c in range(n_classes):
        for r in range(runs_per_class):
            x.append(centers[c] + rng.normal(0.0, 1.0, (per_run, n_feat)))
            y.append(np.full(per_run, c))
            ids.append(np.full(per_run, f"C{c}/{r:02d}"))
            speed.append(np.full(per_run, 0.1 * (r + 1)) + rng.normal(0, 0.01, per_run))
    return np.concatenate(x), np.concatenate(y), np.concatenate(ids), np.concatenate(speed)


def test_split3_by_run_disjoint_and_stratified() -> None:
    _, y, ids, _ = synthetic()
    src, ada, tst = el.split3_by_run(ids, y, 0.25, 0.25, seed=3)
    assert np.all(src.astype(int) + ada.astype(int) + tst.astype(int) == 1)
    sets = [set(ids[m].tolist()) for m in (src, ada, tst)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    for m in (src, ada, tst):
        assert set(y[m].tolist()) == set(range(5))  # every class on every side
    again = el.split3_by_run(ids, y, 0.25, 0.25, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((src, ada, tst), again, strict=True))


def test_speed_split_low_vs_high() -> None:
    _, y, ids, speed = synthetic()
    s_tr, s_te, t_ad, t_te, run_speed = el.speed_split(ids, y, speed, 0.3, 0.5, seed=0)
    for c in range(5):
        src = set(ids[(s_tr | s_te) & (y == c)].tolist())
        tgt = set(ids[(t_ad | t_te) & (y == c)].tolist())
        assert src and tgt and not (src & tgt)
        assert max(run_speed[k] for k in src) < min(run_speed[k] for k in tgt)
    assert np.all(s_tr.astype(int) + s_te + t_ad + t_te == 1)


def test_mount_imu_rotation_gain_bias() -> None:
    rng = np.random.default_rng(0)
    imu = np.zeros((4, 6))
    imu[:, 5] = 9.81  # gravity on z, no rotation rate
    imu[:, 0] = 1.0  # rotation about x
    m = el.Mount("t", 90.0, 2.0, 0.0, 0.0, 0.0, 0.0)
    out = el.mount_imu(imu, m, rng)
    np.testing.assert_allclose(out[:, 3], 2.0 * 9.81, atol=1e-9)  # z → x, times the gain
    np.testing.assert_allclose(out[:, 5], 0.0, atol=1e-9)
    np.testing.assert_allclose(out[:, 2], -1.0, atol=1e-9)  # gyro x → −z
    biased = el.mount_imu(imu, el.Mount("b", 0.0, 1.0, 0.5, 0.1, 0.0, 0.0), rng)
    np.testing.assert_allclose(biased - imu, [[0.1] * 3 + [0.5] * 3] * 4, atol=1e-12)


def test_scenario_end_to_end(tmp_path: Path) -> None:
    x, y, ids, _ = synthetic()
    src, ada, tst = el.split3_by_run(ids, y, 0.25, 0.25, seed=0)
    shifted = x * 1.5 + 0.5
    old = y != 2
    evals = {
        "target": (shifted[tst], y[tst]),
        "source": (x[tst & old], y[tst & old]),
        "new": (x[tst & ~old], y[tst & ~old]),
    }
    res, fm, qm = el.run_scenario(CFG, 0, x[src & old], y[src & old], shifted[ada], y[ada], evals)
    assert qm.output_len == 5 and fm.params[-1][0].shape[0] == 5  # absent class got its row
    assert res["points"][-1] == 40
    for kind in ("int8", "float"):
        assert set(res["curves"][kind]) == {"0", "10", "20", "40"}
        assert all(0.0 <= v <= 1.0 for v in res["curves"][kind]["40"].values())
    assert res["counters"]["steps"] == 40
    entries = el.scenario_entries(CFG, "class-incremental", {0: res})
    assert [e["device_samples"] for e in entries] == [20, 40]
    need = {
        "dataset", "shift", "acc_before", "acc_after_int8", "acc_float_finetune",
        "acc_retrain_target", "acc_source_after", "device_samples", "seeds",
        "acc_new_class_after",
    }  # fmt: skip
    assert need <= set(entries[0])

    js = tmp_path / "learning.json"
    js.write_text(json.dumps({"standard": {"keep": 1}, "scenarios": ["old"]}))
    el.merge_json(js, {"scenarios": entries})
    data = json.loads(js.read_text())
    assert data["standard"] == {"keep": 1} and data["scenarios"][0]["shift"] == "class-incremental"

    md = tmp_path / "RESULTS.md"
    md.write_text(f"# R\n\nother\n\n{el.BEGIN}\nold\n{el.END}\n\ntail\n")
    el.merge_md(md, f"{el.BEGIN}\nnew\n{el.END}\n")
    text = md.read_text()
    assert "old" not in text and "new" in text and "other" in text and "tail" in text
    el.merge_md(tmp_path / "fresh.md", f"{el.BEGIN}\nx\n{el.END}\n")
    assert el.BEGIN in (tmp_path / "fresh.md").read_text()
