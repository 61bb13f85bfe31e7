"""tools/exp_learning.py on tiny synthetic data (no BorealTC needed)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from terrain_odt.borealtc import RunWindows
from tools import exp_learning as el

CFG = replace(
    el.QUICK,
    seeds=(0,),
    n_report=(20, 40),
    n_curve=(0, 10),
    pretrain_epochs=5,
    hidden=(8, 6),
    lr_grid=(3e-3, 1e-2),
    epoch_grid=(1, 2),
    n_select=30,
    rehearsal_per_class=5,
)


def synthetic(
    n_classes: int = 5, runs_per_class: int = 5, per_run: int = 30, n_feat: int = 10, seed: int = 0
) -> RunWindows:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 2.0, (n_classes, n_feat))
    x, y, ids, speed = [], [], [], []
    for c in range(n_classes):
        for r in range(runs_per_class):
            x.append(centers[c] + rng.normal(0.0, 1.0, (per_run, n_feat)))
            y.append(np.full(per_run, c))
            ids.append(np.full(per_run, f"C{c}/{r:02d}"))
            speed.append(np.full(per_run, 0.1 * (r + 1)) + rng.normal(0, 0.01, per_run))
    n = n_classes * runs_per_class * per_run
    return RunWindows(
        np.concatenate(x).astype(np.float32),
        np.concatenate(y).astype(np.int64),
        np.concatenate(ids).astype(str),
        np.concatenate(speed).astype(np.float32),
        np.zeros(n),
        {},
    )


def shifted(base: RunWindows) -> RunWindows:
    return replace(base, features=(base.features * 1.5 + 0.5).astype(np.float32))


def test_split3_by_run_disjoint_and_stratified() -> None:
    b = synthetic()
    y, ids = b.labels, b.run_ids
    src, ada, tst = el.split3_by_run(ids, y, 0.25, 0.25, seed=3)
    assert np.all(src.astype(int) + ada.astype(int) + tst.astype(int) == 1)
    sets = [set(ids[m].tolist()) for m in (src, ada, tst)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    for m in (src, ada, tst):
        assert set(y[m].tolist()) == set(range(5))  # every class on every side
    again = el.split3_by_run(ids, y, 0.25, 0.25, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((src, ada, tst), again, strict=True))


def test_speed_split_low_vs_high() -> None:
    b = synthetic()
    y, ids = b.labels, b.run_ids
    s_tr, s_te, t_ad, t_te, run_speed = el.speed_split(ids, y, b.speed, 0.3, 0.5, seed=0)
    for c in range(5):
        src = set(ids[(s_tr | s_te) & (y == c)].tolist())
        tgt = set(ids[(t_ad | t_te) & (y == c)].tolist())
        assert src and tgt and not (src & tgt)
        assert max(run_speed[k] for k in src) < min(run_speed[k] for k in tgt)
    assert np.all(s_tr.astype(int) + s_te + t_ad + t_te == 1)


@pytest.mark.parametrize("speed", [False, True])
def test_inner_split_only_uses_allowed_runs(speed: bool) -> None:
    b = synthetic(runs_per_class=8)
    allowed = np.isin(b.run_ids, [f"C{c}/{r:02d}" for c in range(5) for r in range(1, 8)])
    parts = el.inner_split(CFG, b, allowed, seed=1, speed=speed)
    total = sum(p.astype(int) for p in parts)
    assert np.array_equal(total, allowed.astype(int))  # a partition of the allowed windows
    sets = [set(b.run_ids[p].tolist()) for p in parts]
    assert all(s for s in sets)
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])  # whole runs
    if speed:  # inner source = the slower runs of each class
        for c in range(5):
            lo = b.speed[parts[0] & (b.labels == c)].max()
            hi = b.speed[(parts[1] | parts[2]) & (b.labels == c)].min()
            assert lo < hi


def roles_are_clean(prob: el.Problem) -> None:
    runs = prob.runs
    test = set(runs["test"]) | set(runs.get("source_test", []))
    for role in ("source", "adapt", "buffer"):
        assert not (set(runs.get(role, [])) & test), role
    assert not (set(runs["source"]) & set(runs["adapt"]))
    assert len(prob.inner) == CFG.inner_splits
    for inn in prob.inner:
        for role in ("source", "adapt", "validation", "buffer"):
            assert not (set(inn.runs.get(role, [])) & test), role
        val = set(inn.runs["validation"])
        assert val and not (val & set(inn.runs["source"]) or val & set(inn.runs["adapt"]))
        assert set(inn.runs.get("buffer", [])) <= set(inn.runs["source"])
    splits = {tuple(inn.runs["validation"]) for inn in prob.inner}
    assert len(splits) == len(prob.inner)  # the nested splits differ


def test_problems_never_touch_test_runs() -> None:
    b = synthetic(runs_per_class=8)
    for seed in range(3):
        for prob in (
            el.split_problem(CFG, seed, b),
            el.split_problem(CFG, seed, b, shifted(b)),
            el.speed_problem(CFG, seed, b),
            el.class_incremental_problem(CFG, seed, b),
        ):
            roles_are_clean(prob)
            n_test = sum(np.isin(b.run_ids, prob.runs["test"]))
            assert len(prob.evals["target"][1]) == n_test
            assert set(prob.evals["target"][2].tolist()) == set(prob.runs["test"])


def test_rehearsal_buffer_only_old_classes_of_source_runs() -> None:
    b = synthetic()
    prob = el.class_incremental_problem(CFG, 0, b)
    k = el.CLASSES.index(CFG.new_class)
    assert prob.buffer is not None and all(inn.buffer is not None for inn in prob.inner)
    bx, by = prob.buffer
    assert k not in by.tolist() and k not in prob.src[1].tolist()
    assert np.bincount(by, minlength=5).tolist() == [5 if c != k else 0 for c in range(5)]
    assert set(prob.runs["buffer"]) <= set(prob.runs["source"])
    # every buffer window is a source-train window (same features), none a test-run window
    src_rows = {r.tobytes() for r in b.features[np.isin(b.run_ids, prob.runs["source"])]}
    test_rows = {r.tobytes() for r in b.features[np.isin(b.run_ids, prob.runs["test"])]}
    assert all(r.tobytes() in src_rows and r.tobytes() not in test_rows for r in bx)
    idx = el.rehearsal_buffer(b.labels, b.labels == 1, [0, 1], 7, seed=2)
    assert np.all(b.labels[idx] == 1) and len(idx) == 7  # nothing outside the mask


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


def test_vote_accuracy() -> None:
    runs = np.array(["a"] * 6 + ["b"] * 3)
    y = np.array([0] * 6 + [1] * 3)
    pred = np.array([0, 1, 0, 2, 0, 1, 1, 1, 1])
    # run a: windows ending at 4 and 5: [0 1 0 2 0] → 0 (right), [1 0 2 0 1] → tie 0/1 → 1, the
    # later one (wrong); run b is shorter than 5 windows and gives no decision
    assert el.vote_accuracy(pred, y, runs, 5) == 0.5
    # a 2-2 tie goes to the class predicted last
    assert el.vote_accuracy(np.array([1, 0, 1, 0]), np.zeros(4, int), np.array(["r"] * 4), 4) == 1
    assert el.vote_accuracy(np.array([0, 1, 0, 1]), np.zeros(4, int), np.array(["r"] * 4), 4) == 0
    assert el.vote_accuracy(pred[:6], y[:6], runs[:6], 1) == pytest.approx(np.mean(pred[:6] == 0))


def test_step_orders_prefix_and_replay() -> None:
    a = el.step_orders(6, 0, 3, seed=4)
    b = el.step_orders(6, 0, 5, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b[:3], strict=True))
    assert all(sorted(o.tolist()) == list(range(6)) for o in a)
    r = el.step_orders(6, 4, 2, seed=4)[0]
    assert len(r) == 12 and sorted(r[0::2].tolist()) == list(range(6))
    assert all(6 <= v < 10 for v in r[1::2])  # every second step replays a buffer window


def test_finetune_checkpoints_equal_shorter_schedules() -> None:
    b = synthetic()
    src, ada, tst = el.split3_by_run(b.run_ids, b.labels, 0.25, 0.25, 0)
    fm = el.pretrain(b.features[src], b.labels[src], CFG, 0)
    qm = el.quantize_model(fm, b.features[src])
    evals = {"t": el.domain(fm, qm, (b.features[tst], b.labels[tst], b.run_ids[tst]))}
    x, y = b.features[ada][:25], b.labels[ada][:25]
    buf = (b.features[src][:4], b.labels[src][:4])
    long, cnt = el.finetune(fm, qm, x, y, el.Schedule(1e-2, 3, 0.8), evals, (1, 2, 3), 0, 9, buf)
    short, _ = el.finetune(fm, qm, x, y, el.Schedule(1e-2, 2, 0.8), evals, (2,), 0, 9, buf)
    assert long[2] == short[2]  # epoch e does not depend on the number of epochs
    assert cnt["steps"] == 3 * 2 * 25  # every stored window followed by one replayed window
    assert set(long[3]) == set(el.KINDS) and "t_vote" in long[3]["int8"]
    empty, _ = el.finetune(fm, qm, x[:0], y[:0], el.Schedule(1e-2, 3), evals, (0, 3), 0, 9)
    assert empty[3] == empty[0]
    lo, hi = el.input_range(qm)
    assert lo < 0 < hi and np.all(np.abs(el.FloatNet(fm, (lo, hi)).inputs(b.features)) <= 1e3)


def test_scenario_end_to_end(tmp_path: Path) -> None:
    b = synthetic()
    prob = el.class_incremental_problem(CFG, 0, b)
    res, (fm, qm), _ = el.run_scenario(CFG, 0, prob)
    assert qm.output_len == 5 and fm.params[-1][0].shape[0] == 5  # absent class got its row
    assert res["points"][-1] == 40
    sched = el.Schedule(**res["schedule"])
    assert sched.lr in CFG.lr_grid and sched.epochs in CFG.epoch_grid
    assert set(res["selection"]["scores"]) == {f"{lr:g}/{e}" for lr in CFG.lr_grid for e in (1, 2)}
    for kind in ("int8", "float"):
        assert set(res["curves"][kind]) == {"0", "10", "20", "40"}
        assert all(0.0 <= v <= 1.0 for v in res["curves"][kind]["40"].values())
    assert set(res["curves"]["float_clip"]) == {"0", "20", "40"}
    assert res["counters"]["steps"] == 2 * 40 * sched.epochs  # with one replay per window
    assert set(res["no_rehearsal"]) == {"20", "40"} and set(res["onepass"]["int8"]) == {"20", "40"}
    entries = el.scenario_entries(CFG, "class-incremental", {0: res})
    assert [e["device_samples"] for e in entries] == [20, 40]
    need = {
        "dataset", "shift", "acc_before", "acc_after_int8", "acc_float_finetune",
        "acc_retrain_target", "acc_source_after", "device_samples", "seeds",
        "acc_new_class_after", "acc_after_int8_vote", "acc_float_finetune_clipped",
        "int8_minus_float_ci95", "stored_bytes", "rehearsal_buffer_windows",
    }  # fmt: skip
    assert need <= set(entries[0])
    assert entries[1]["stored_bytes"] == [(40 + 4 * 5) * 103]
    assert any("class-incremental" in line for line in el.goals(CFG, entries))

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


def test_ci95_and_recovery() -> None:
    assert el.ci95([1.0]) is None
    lo, hi = el.ci95([1.0, 2.0, 3.0])  # type: ignore[misc]
    assert lo < 2.0 < hi and hi - 2.0 == pytest.approx(2.0 - lo)
    assert el.recovery(0.4, 0.6, 0.8) == pytest.approx(0.5)
    assert el.recovery(0.4, 0.6, 0.405) is None
