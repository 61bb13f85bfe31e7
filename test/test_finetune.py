"""terrain_odt.pipeline.finetune: mixed replay, held-out blocks, the validation score, the
accept/rollback
rule, the source-window file; and the bridge's accept/rollback check against the emulator
(a model that training makes worse on the validation windows is rolled back to the accepted one,
bit for bit)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from terrain_odt.link.emulator import emulator
from terrain_odt.model.qnn import QModel
from terrain_odt.pipeline.bridge import (
    BridgeConfig,
    BridgeCore,
    ModelFileError,
    Outcome,
    load_model_files,
)
from terrain_odt.pipeline.finetune import (
    Guard,
    Holdout,
    ReplayPlanner,
    SourceWindows,
    SourceWindowsError,
    load_source_windows,
    save_source_windows,
    score,
)

ROOT = Path(__file__).resolve().parent.parent
SIDECAR = ROOT / "models" / "borealtc_imu_mlp.json"
BLOB = ROOT / "models" / "borealtc_imu_mlp.odtm"


def _windows(n: int, k: int, seed: int = 0, length: int = 4) -> SourceWindows:
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (n, length)).astype(np.int8)
    y = np.arange(n) % k
    return SourceWindows(x, y, x[: n // 2], y[: n // 2])


def test_replay_draws_are_class_uniform_and_mix_robot_and_source():
    src = _windows(50, 5)
    p = ReplayPlanner(5, per_class=4, ratio=3.0, robot_share=0.5, source=src, seed=1)
    assert p.source_windows == 50 and p.stored == 0
    q = np.zeros(4, np.int8)
    for _ in range(10):
        p.add(q, 2)
    assert p.stored == 4  # reservoir of 4 per class
    draws = [d for _ in range(2000) for d in p.draw()]
    assert len(draws) == 6000  # ratio 3 per call
    labels = np.bincount([d.label for d in draws], minlength=5) / len(draws)
    assert np.allclose(labels, 0.2, atol=0.02)
    robot = [d for d in draws if d.label == 2 and d.q is q]
    share = len(robot) / sum(d.label == 2 for d in draws)
    assert 0.45 < share < 0.55
    # Same seed, same draws: deterministic.
    a = ReplayPlanner(5, 4, 1.5, 0.3, src, seed=7)
    b = ReplayPlanner(5, 4, 1.5, 0.3, src, seed=7)
    for _ in range(20):
        a.add(q, 1)
        b.add(q, 1)
    da = [(d.label, d.q.tobytes()) for _ in range(50) for d in a.draw()]
    assert da == [(d.label, d.q.tobytes()) for _ in range(50) for d in b.draw()]


def test_replay_without_source_or_robot_windows():
    p = ReplayPlanner(3, per_class=2, ratio=1.0, robot_share=0.0)
    assert p.draw() == []  # nothing stored yet
    p.add(np.ones(2, np.int8), 0)
    assert [d.label for d in p.draw()] == [0]  # robot windows are used when there is no source
    off = ReplayPlanner(3, per_class=0, ratio=2.0, robot_share=1.0)
    off.add(np.ones(2, np.int8), 0)
    assert off.stored == 0 and off.draw() == []
    with pytest.raises(ValueError):
        ReplayPlanner(3, 1, 1.0, robot_share=1.5)
    half = ReplayPlanner(3, 2, ratio=0.5, robot_share=1.0)
    half.add(np.ones(2, np.int8), 1)
    assert sum(len(half.draw()) for _ in range(10)) == 5  # credit carries over


def test_holdout_takes_whole_blocks():
    h = Holdout(2, share=0.25, block=3, per_class=100)
    taken = [h.take(np.zeros(1, np.int8), i % 2) for i in range(24)]
    assert [i for i, t in enumerate(taken) if t] == [9, 10, 11, 21, 22, 23]
    assert h.held == 6 and len(h.snapshot()) == 6
    capped = Holdout(1, share=0.5, block=1, per_class=3)
    assert sum(capped.take(np.zeros(1, np.int8), 0) for _ in range(40)) == 20
    assert capped.held == 3
    none = Holdout(2, share=0.0, block=8)
    assert not any(none.take(np.zeros(1, np.int8), 0) for _ in range(100))
    with pytest.raises(ValueError):
        Holdout(2, share=1.0, block=1)


def test_score_weights_and_balance():
    # Robot part: class-balanced (class 0: 1/1, class 1: 1/3 -> 2/3).
    assert score([0, 1, 0, 0], [0, 1, 1, 1], [], [], 0.5) == pytest.approx(2 / 3)
    assert score([], [], [1, 1], [1, 0], 0.5) == pytest.approx(0.5)
    s = score([0], [0], [1, 1], [1, 0], 0.25)
    assert s == pytest.approx(0.25 * 0.5 + 0.75 * 1.0)
    assert score([], [], [], [], 0.5) is None


def test_guard_rule():
    g = Guard(every=2, tolerance=0.05, source_weight=0.5)
    assert not g.due()
    g.since_check = 2
    assert g.due()
    assert g.judge(0.5)  # nothing accepted yet to compare with
    g.best_score = 0.8
    assert g.judge(0.76) and not g.judge(0.74)
    assert g.checks == 3 and g.since_check == 0
    assert not Guard(every=0, tolerance=0, source_weight=0).due()


def test_source_windows_file_round_trip_and_errors(tmp_path: Path):
    w = _windows(10, 3, length=6)
    f = tmp_path / "w.npz"
    crc = save_source_windows(f, (w.replay_x, w.replay_y), (w.val_x, w.val_y))
    back = load_source_windows(f, 6, 3, crc)
    assert np.array_equal(back.replay_x, w.replay_x) and np.array_equal(back.val_y, w.val_y)
    with pytest.raises(SourceWindowsError, match="CRC"):
        load_source_windows(f, 6, 3, crc ^ 1)
    with pytest.raises(SourceWindowsError, match=r"int8 \(n, 7\)"):
        load_source_windows(f, 7, 3)
    with pytest.raises(SourceWindowsError, match="labels < 2"):
        load_source_windows(f, 6, 2)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(SourceWindowsError, match="not a windows file"):
        load_source_windows(tmp_path / "junk.npz", 6, 3)
    with pytest.raises(SourceWindowsError, match="No such file"):
        load_source_windows(tmp_path / "missing.npz", 6, 3)
    with pytest.raises(ValueError, match="int8"):
        save_source_windows(f, (w.replay_x.astype(np.int16), w.replay_y), (w.val_x, w.val_y))


def test_sidecar_naming_a_bad_source_windows_file_is_refused(tmp_path: Path):
    side = json.loads(SIDECAR.read_text())
    shutil.copy(BLOB, tmp_path / BLOB.name)
    side["source_windows"] = {"file": "missing.npz", "crc32": "0x00000000"}
    (tmp_path / "m.json").write_text(json.dumps(side))
    with pytest.raises(ModelFileError, match="source_windows"):
        load_model_files(tmp_path / "m.json", tmp_path / BLOB.name)
    side["source_windows"] = {"crc32": "0x00000000"}
    (tmp_path / "m.json").write_text(json.dumps(side))
    with pytest.raises(ModelFileError, match="source_windows: field 'file'"):
        load_model_files(tmp_path / "m.json", tmp_path / BLOB.name)


# ---------------------------------------------------------------------------------------------
# The bridge's check against the emulator (synchronous mode: no threads, deterministic)


def _rig(
    emu_bin: Path, tmp_path: Path, labels_of, n: int, **cfg
) -> tuple[BridgeCore, list, np.ndarray, np.ndarray]:
    """A synchronous bridge whose source validation windows are inputs the pretrained model
    classifies as `val_y` (its own predictions), trained on `n` windows labelled `labels_of(q)`."""
    model = load_model_files(SIDECAR, BLOB)
    qm = QModel.from_blob(BLOB.read_bytes())
    rng = np.random.default_rng(3)
    side = model.sidecar["input"]["standardization"]
    mean, scale = np.asarray(side["mean"]), np.asarray(side["scale"])
    feats = mean + scale * rng.normal(size=(n + 60, mean.size))
    q = model.quantize(feats)
    pre = qm.predict_batch(q).argmax(axis=1)
    src = SourceWindows(q[:0], pre[:0], q[n:], pre[n:])
    model = dataclasses.replace(model, source=src)
    out: list[Outcome] = []
    base = {
        "baud_rate": 0,
        "learning_rate": 0.05,
        "rehearsal_per_class": 0,
        "rehearsal_ratio": 0.0,
        "validation_share": 0.0,
        "checkpoint_every": 10,
        "rollback_tolerance": 0.0,
        "validation_source_weight": 1.0,
    }
    base.update(cfg)
    ctx = emulator(emu_bin, model=BLOB, flash=tmp_path / "flash.bin", tcp_port=0)
    emu = ctx.__enter__()
    core = BridgeCore(BridgeConfig(url=emu.url, **base), model, out.append, synchronous=True)
    core.start()
    t = 100.0
    for i in range(n):
        name = model.class_names[labels_of(int(pre[i]))]
        core.on_label(t, name)
        core.on_label(t + 0.4, name)
        core.on_features(t, t + 0.4, feats[i])
        t += 0.5
    core.on_label(t, None)
    core.finish()
    core._ctx = ctx  # type: ignore[attr-defined]
    return core, out, q[n:], pre[n:]


def _device_predictions(core: BridgeCore, q: np.ndarray) -> np.ndarray:
    assert core._client is not None
    return np.array([core._client.infer(x).predicted for x in q])


def test_training_that_hurts_the_validation_windows_is_rolled_back(emu_bin: Path, tmp_path):
    """Labels that contradict what the model knows (every window called the class after its
    prediction), at a high learning rate: each check sees the validation score fall and uploads
    the accepted (here: pretrained) model again, so the device ends exactly where it started."""
    core, out, vq, vy = _rig(emu_bin, tmp_path, lambda p: (p + 1) % 5, 40)
    try:
        g = core.guard
        assert g.checks == 4 and g.rollbacks == 4 and g.accepted == 0
        assert g.best_score == pytest.approx(1.0)  # the pretrained model on its own predictions
        assert np.array_equal(_device_predictions(core, vq), vy)
        snap = core.snapshot()["finetune"]
        assert snap["rollbacks"] == 4 and snap["source_validation_windows"] == 60
        assert len(out) == 40 and all(o.kind == "train" for o in out)
        c = core.counters()
        assert c["trained"] == 40 and c["labelled"] == 40
    finally:
        core.close()
        core._ctx.__exit__(None, None, None)  # type: ignore[attr-defined]


def test_training_that_keeps_the_validation_score_is_accepted(emu_bin: Path, tmp_path):
    """Labels equal to the model's own predictions (at a small rate) keep the score: accepted."""
    core, _, _, _ = _rig(
        emu_bin, tmp_path, lambda p: p, 30, learning_rate=0.001, rollback_tolerance=0.05
    )
    try:
        assert core.guard.checks == 3 and core.guard.rollbacks == 0 and core.guard.accepted == 3
    finally:
        core.close()
        core._ctx.__exit__(None, None, None)  # type: ignore[attr-defined]


def test_held_out_windows_are_predicted_never_trained(emu_bin: Path, tmp_path):
    core, out, _, _ = _rig(
        emu_bin, tmp_path, lambda p: p, 40, validation_share=0.25, validation_block=4,
        checkpoint_every=0,
    )  # fmt: skip
    try:
        c = core.counters()
        assert c["labelled"] == 40 and c["held_out"] == 8 and c["trained"] == 32
        assert (
            c["labelled"]
            == c["trained"] + c["held_out"] + c["failed"] + c["dropped"] + c["pending"]
        )
        held = [o for o in out if o.kind == "heldout"]
        assert len(held) == 8 and all(o.label_name is not None for o in held)
        assert [round((o.t_start - 100.0) / 0.5) for o in held] == [12, 13, 14, 15, 28, 29, 30, 31]
        core.refresh_stats()
        assert core.snapshot()["trainer"]["train_steps"] == 32
    finally:
        core.close()
        core._ctx.__exit__(None, None, None)  # type: ignore[attr-defined]


def test_error_share_replays_robot_windows_of_the_classes_the_model_gets_wrong():
    src = _windows(40, 2)
    p = ReplayPlanner(
        2, per_class=8, ratio=1.0, robot_share=1.0, source=src, seed=2, error_share=0.2
    )
    q = np.ones(4, np.int8)
    for _ in range(5):
        p.add(q, 0)
        p.add(q, 1)
    for i in range(10):
        p.record(0, True)  # class 0: always right on this robot
        p.record(1, i % 2 == 0)  # class 1: wrong half the time
    assert p.share(0) == 0.0 and p.share(1) == 1.0
    draws = [d for _ in range(400) for d in p.draw()]
    robot = [d for d in draws if d.q is q]
    assert robot and all(d.label == 1 for d in robot)  # class 0 replays come from the source
    p.record(0, False)  # one mistake in 11: 9 % error, below the 20 % of full share
    assert p.share(0) == pytest.approx((1 / 11) / 0.2)
    assert ReplayPlanner(2, 8, 1.0, 0.7).share(0) == 0.7  # off: the same share for all
