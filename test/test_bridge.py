"""terrain_odt.pipeline.bridge.BridgeCore (all logic of the odt_bridge node, no ROS) against the
real
co-processor emulator (firmware/odt-emu over TCP) and the in-process fake co-processor.

Shown: labelled windows train (prequential "train" outcomes), unlabelled ones infer; bad labels
and malformed windows are refused and counted; the sample accounting
`labelled == trained + held_out + failed + dropped + pending` holds at every moment; nothing
labelled is lost silently when the co-processor is unplugged mid-run, absent at start or runs
another model; the commands answer (ok, message); rehearsal replays are counted apart and never
emitted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_coprocessor import FakeCoprocessor
from polling import wait_for

from terrain_odt.link.emulator import Emulator, free_port
from terrain_odt.pipeline.bridge import (
    BridgeConfig,
    BridgeCore,
    ModelFileError,
    ModelFiles,
    Outcome,
    load_model_files,
)

ROOT = Path(__file__).resolve().parent.parent
# The IMU-only model (the emulator runs any shape; these tests need no wheels).
SIDECAR = ROOT / "models" / "borealtc_imu_mlp.json"
BLOB = ROOT / "models" / "borealtc_imu_mlp.odtm"
OTHER_SIDECAR = ROOT / "models" / "borealtc_mlp.json"
OTHER_BLOB = ROOT / "models" / "borealtc_mlp.odtm"
ACCOUNTED = ("trained", "held_out", "failed", "dropped", "pending")


@pytest.fixture(scope="module")
def model() -> ModelFiles:
    return load_model_files(SIDECAR, BLOB)


def balanced(c: dict[str, int]) -> bool:
    return c["labelled"] == sum(c[k] for k in ACCOUNTED)


class Rig:
    """A BridgeCore, the outcomes it emits, and windows on a clock of their own with the label
    records the node would make (the labeler re-publishes every 0.1 s; here at each window's
    start and end, which the 1 s hold of the bridge's label timeline bridges)."""

    def __init__(self, core: BridgeCore, seed: int = 0) -> None:
        self.core = core
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        side = core.model.sidecar["input"]["standardization"]
        self.mean = np.asarray(side["mean"])
        self.scale = np.asarray(side["scale"])
        self.rng = np.random.default_rng(seed)
        self.t = 1000.0
        self.fed: list[tuple[float, str | None]] = []

    def emit(self, o: Outcome) -> None:
        with self._lock:
            self.outcomes.append(o)

    def features(self) -> np.ndarray:
        return self.mean + self.scale * self.rng.normal(size=self.mean.size)

    def window(self, label: str | None, x: np.ndarray | None = None) -> float:
        t0 = self.t
        t1 = t0 + 0.4
        self.t += 0.5
        assert self.core.on_label(t0, label) is None
        assert self.core.on_label(t1, label) is None
        self.core.on_features(t0, t1, self.features() if x is None else x)
        self.fed.append((t0, label))
        return t0

    def of(self, kind: str) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.kind == kind]

    def labelled_starts(self) -> list[float]:
        return [t for t, lab in self.fed if lab]

    def counters(self) -> dict[str, int]:
        c = self.core.counters()
        assert balanced(c), c
        return c


@contextlib.contextmanager
def rig(
    url: str,
    model: ModelFiles,
    *,
    seed: int = 0,
    client_factory: Any = None,
    start: bool = True,
    **cfg: Any,
) -> Iterator[Rig]:
    cfg.setdefault("baud_rate", 0)
    cfg.setdefault("connect_timeout_s", 1.0)
    # Accounting and link tests: every labelled window trains (held-out validation windows and
    # accept/rollback checks have tests of their own below).
    cfg.setdefault("validation_share", 0.0)
    cfg.setdefault("checkpoint_every", 0)
    cfg.setdefault("rehearsal_ratio", 1.0)
    cfg.setdefault("source_replay", False)  # replays only of this robot's windows
    cfg.setdefault("stats_period_s", 0.1)
    holder: list[Rig] = []
    kw = {"client_factory": client_factory} if client_factory is not None else {}
    core = BridgeCore(BridgeConfig(url=url, **cfg), model, lambda o: holder[0].emit(o), **kw)
    r = Rig(core, seed)
    holder.append(r)
    if start:
        core.start()
    try:
        yield r
    finally:
        core.close()


@contextlib.contextmanager
def emulator_at(emu_bin: Path, tmp_path: Path, blob: Path = BLOB, **kw: Any) -> Iterator[Emulator]:
    kw.setdefault("flash", tmp_path / "flash.bin")
    kw.setdefault("tcp_port", 0)
    emu = Emulator(emu_bin, model=blob, **kw)
    try:
        yield emu
    finally:
        emu.stop()


def trainer_steps(core: BridgeCore) -> int:
    return int(core.snapshot().get("trainer", {}).get("train_steps", -1))


# ---------------------------------------------------------------------------------------------
# model files


def test_load_model_files_cross_checks(model: ModelFiles, tmp_path: Path):
    assert model.input_len == 102 and len(model.class_names) == 5
    assert model.class_index("ice") == model.class_index(" ICE ") == 2
    assert model.class_index("GRAVEL") is None
    with pytest.raises(ModelFileError, match="does not match"):
        load_model_files(SIDECAR, OTHER_BLOB)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model_files(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not readable JSON"):
        load_model_files(tmp_path / "bad.json")


# ---------------------------------------------------------------------------------------------
# against the emulator


def test_labelled_windows_train_unlabelled_infer(emu_bin: Path, model: ModelFiles, tmp_path):
    labels = ["ICE", "SNOW", "asphalt", "ICE", "FLOORING", "SANDY_LOAM"] * 2
    with (
        emulator_at(emu_bin, tmp_path) as emu,
        rig(emu.url, model, rehearsal_per_class=0) as r,
    ):
        wait_for(lambda: r.core.configured, what="session")
        for lab in labels:
            r.window(lab)
        assert r.core.wait_idle(20)
        unlabelled = []
        for _ in range(3):  # one at a time: an inference request waiting too long is skipped
            unlabelled.append(r.window(None))
            assert r.core.wait_idle(20)

        train, infer = r.of("train"), r.of("infer")
        assert [o.t_start for o in train] == r.labelled_starts()
        assert [o.label_name for o in train] == [lab.upper() for lab in labels]
        for o in train:
            assert o.t_end == pytest.approx(o.t_start + 0.4)
            assert o.predicted_name in model.class_names
            assert o.predicted_name == model.class_names[o.predicted]
            assert o.label == model.class_index(o.label_name)
            assert o.confidence is None and o.loss is not None and o.loss >= 0
        assert [o.t_start for o in infer] == unlabelled
        for o in infer:
            assert o.label is None and o.correct is None
            assert o.predicted_name in model.class_names
            assert o.confidence is not None and 1 / 5 <= o.confidence <= 1.0

        c = r.counters()
        assert (c["windows"], c["labelled"], c["trained"], c["inferred"]) == (15, 12, 12, 3)
        assert c["failed"] == c["dropped"] == c["pending"] == 0
        assert c["updates"] == 12  # training is on: every sample updated the weights
        correct = sum(bool(o.correct) for o in train)
        assert r.core.accuracy() == pytest.approx(correct / 12)
        assert int(r.core.confusion.sum()) == 12
        assert int(np.trace(r.core.confusion)) == correct
        # The co-processor's own count: exactly one training step per labelled window.
        wait_for(lambda: trainer_steps(r.core) == 12, 5, "trainer stats")
        snap = r.core.snapshot()
        assert snap["connected"] and snap["model_ok"] and snap["model_problem"] == ""
        assert snap["coprocessor"]["model_id"] == f"0x{model.model_id:08x}"


def test_bad_labels_and_malformed_windows_refused_and_counted(
    emu_bin: Path, model: ModelFiles, tmp_path
):
    with emulator_at(emu_bin, tmp_path) as emu, rig(emu.url, model, rehearsal_per_class=0) as r:
        core = r.core
        wait_for(lambda: core.configured, what="session")
        # An unknown class name: an error text, counted, and the window counts as unlabelled.
        t0 = r.t
        err = core.on_label(t0, "GRAVEL")
        assert err is not None and "GRAVEL" in err
        assert all(n in err for n in model.class_names)
        assert core.on_label(t0 + 0.4, "gravel") is not None
        core.on_features(t0, t0 + 0.4, r.features())
        r.t += 0.5
        assert core.wait_idle(20)
        c = r.counters()
        assert c["unknown_labels"] == 2 and c["labelled"] == 0 and c["windows"] == 1
        # Wrong lengths and non-finite values: ValueError, counted, nothing queued.
        good = r.features()
        for bad in (good[:-1], np.append(good, 0.0), np.empty(0), np.stack([good, good])):
            with pytest.raises(ValueError, match="102"):
                core.on_features(r.t, r.t + 0.4, bad)
        for k, v in ((0, np.nan), (50, np.inf), (101, -np.inf)):
            x = good.copy()
            x[k] = v
            with pytest.raises(ValueError, match="finite"):
                core.on_features(r.t, r.t + 0.4, x)
        with pytest.raises(ValueError, match="finite"):
            core.on_features(np.nan, r.t + 0.4, good)
        with pytest.raises(ValueError, match="finite"):
            core.on_features(r.t, np.inf, good)
        c = r.counters()
        assert c["windows_wrong_length"] == 4
        assert c["windows_nonfinite"] == 5
        assert c["windows"] == 1 and c["labelled"] == 0  # refused windows are not windows
        # Nothing crashed: the worker still trains and infers.
        r.window("SNOW")
        r.window(None)
        assert core.wait_idle(20)
        assert [o.label_name for o in r.of("train")] == ["SNOW"]
        assert len(r.of("infer")) >= 1
        assert core._thread is not None and core._thread.is_alive()
        assert core.connected and r.counters()["trained"] == 1


class CheckedLock:
    """A lock that, each time it is released, checks the bridge's accounting (so a moment at
    which the counters do not add up cannot slip between two polls)."""

    def __init__(self, core: BridgeCore, violations: list[dict[str, int]]) -> None:
        self._lock = threading.Lock()
        self._core = core
        self._violations = violations
        self._checking = threading.local()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()
        if getattr(self._checking, "on", False):
            return
        self._checking.on = True
        try:
            c = self._core.counters()
            if not balanced(c):
                self._violations.append(c)
        finally:
            self._checking.on = False

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_accounting_invariant_at_all_times(emu_bin: Path, model: ModelFiles, tmp_path):
    """Checked at every release of the bridge's lock and by a thread polling `counters()`
    while 400 labelled windows (with rehearsal replays) and some unlabelled ones stream in."""
    violations: list[dict[str, int]] = []
    polls = 0
    stop = threading.Event()
    with emulator_at(emu_bin, tmp_path) as emu, rig(emu.url, model, start=False) as r:
        core = r.core
        core._lock = CheckedLock(core, violations)  # type: ignore[assignment]
        core._cond = threading.Condition(core._lock)  # type: ignore[arg-type]
        core.start()

        def poll() -> None:
            nonlocal polls
            while not stop.is_set():
                c = core.counters()
                polls += 1
                if not balanced(c):
                    violations.append(c)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        names = model.class_names
        for i in range(400):
            r.window(names[(i // 40) % len(names)] if i % 10 else None)
        assert core.wait_idle(30)
        stop.set()
        poller.join(5)
        c = r.counters()
        assert c["labelled"] == 360 and c["trained"] == 360 and c["pending"] == 0
        assert c["replays_trained"] > 0
        assert polls > 100
        assert violations == []


def test_coprocessor_unplugged_mid_run(emu_bin: Path, model: ModelFiles, tmp_path):
    """Kill the emulator while samples stream (an unplugged board), keep feeding, restart it on
    the same port with the same flash: every labelled sample is trained exactly once (none
    failed, dropped or lost), and the bridge reconnects by itself."""
    flash = tmp_path / "flash.bin"
    emu = Emulator(emu_bin, model=BLOB, flash=flash, tcp_port=0)
    try:
        with rig(emu.url, model, seed=3) as r:
            core = r.core
            wait_for(lambda: core.configured, what="session")
            names = model.class_names
            for i in range(60):
                r.window(names[i % 5])
                r.counters()
            wait_for(lambda: r.counters()["trained"] >= 30, what="training")
            assert core.save() == (True, "model saved to co-processor flash")
            emu.kill()  # power cut / unplugged, possibly with frames in flight
            for i in range(80):
                r.window(names[(i // 7) % 5])
                r.counters()  # balanced at every step
            wait_for(lambda: not core.connected, 10, "the bridge to notice the unplug")
            c = r.counters()
            assert c["pending"] > 0 and c["failed"] == c["dropped"] == 0
            assert core.save()[0] is False  # commands fail cleanly while away
            emu = Emulator(emu_bin, model=BLOB, flash=flash, tcp_port=emu.port)
            for i in range(20):
                r.window(names[i % 5])
                r.counters()
            wait_for(lambda: core.configured, 20, "reconnection")
            assert core.wait_idle(30)
            c = r.counters()
            assert c["labelled"] == 160
            assert c["trained"] == 160 and c["failed"] == c["dropped"] == c["pending"] == 0
            starts = [o.t_start for o in r.of("train")]
            assert len(starts) == len(set(starts)) == 160  # each exactly once
            assert sorted(starts) == r.labelled_starts()
            snap = core.snapshot()
            assert snap["link"]["reconnects"] >= 1
            assert snap["link"]["coprocessor_resets"] >= 1
            assert snap["coprocessor"]["boot_count"] == 2
    finally:
        emu.stop()


def test_accounting_across_a_coprocessor_kill_while_a_label_is_held(
    emu_bin: Path, model: ModelFiles, tmp_path
):
    """Issue 12: one terrain label held the whole time, held-out validation windows and
    accept/rollback checks on, the co-processor killed and restarted: the accounting
    `labelled == trained + held_out + failed + dropped + pending` holds at every lock release
    and every poll, and ends with nothing pending, failed or dropped."""
    violations: list[dict[str, int]] = []
    stop = threading.Event()
    flash = tmp_path / "flash.bin"
    emu = Emulator(emu_bin, model=BLOB, flash=flash, tcp_port=0)
    try:
        with rig(
            emu.url, model, start=False, validation_share=0.2, validation_block=4,
            checkpoint_every=10, rehearsal_ratio=2.0,
        ) as r:  # fmt: skip
            core = r.core
            core._lock = CheckedLock(core, violations)  # type: ignore[assignment]
            core._cond = threading.Condition(core._lock)  # type: ignore[arg-type]
            core.start()

            def poll() -> None:
                while not stop.is_set():
                    if not balanced(core.counters()):
                        violations.append(core.counters())

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            wait_for(lambda: core.configured, what="session")
            for _ in range(40):
                r.window("SNOW")
            emu.kill()
            for _ in range(40):
                r.window("SNOW")  # the label is still in force: these wait for the link
            wait_for(lambda: not core.connected, 10, "the bridge to notice the kill")
            emu = Emulator(emu_bin, model=BLOB, flash=flash, tcp_port=emu.port)
            for _ in range(20):
                r.window("SNOW")
            wait_for(lambda: core.configured, 20, "reconnection")
            assert core.wait_idle(30)
            stop.set()
            poller.join(5)
            c = r.counters()
            assert c["labelled"] == 100 and c["held_out"] > 0
            assert c["trained"] + c["held_out"] == 100
            assert c["failed"] == c["dropped"] == c["pending"] == 0
            assert violations == []
    finally:
        stop.set()
        emu.stop()


def test_no_coprocessor_at_start_queues_then_trains(emu_bin: Path, model: ModelFiles, tmp_path):
    """Nothing listening at start: the bridge keeps running, holds up to max_pending_samples
    labelled windows, counts the rest as dropped, and trains the held ones once the
    co-processor appears."""
    port = free_port()
    with rig(
        f"socket://127.0.0.1:{port}",
        model,
        max_pending_samples=30,
        connect_timeout_s=0.3,
        rehearsal_per_class=0,
    ) as r:
        core = r.core
        for i in range(50):
            r.window(model.class_names[i % 5])
            r.counters()
        for _ in range(3):
            r.window(None)
        c = r.counters()
        assert (c["labelled"], c["pending"], c["dropped"], c["trained"]) == (50, 30, 20, 0)
        assert c["windows"] == 53
        assert not core.connected and not core.configured
        ok, msg = core.save()
        assert not ok and "not connected" in msg
        ok, msg = core.set_training(True)
        assert ok and "when the co-processor connects" in msg
        assert core._thread is not None and core._thread.is_alive()
        assert not core.wait_idle(0.2)  # held, not silently discarded
        with emulator_at(emu_bin, tmp_path, tcp_port=port):
            wait_for(lambda: core.configured, 20, "connection to the late co-processor")
            assert core.wait_idle(30)
            c = r.counters()
            assert (c["trained"], c["dropped"], c["pending"], c["failed"]) == (30, 20, 0, 0)
            # The held windows are the first 30, in order; the later 20 were dropped.
            assert [o.t_start for o in r.of("train")] == r.labelled_starts()[:30]
            wait_for(lambda: trainer_steps(core) == 30, 5, "trainer stats")


def test_full_queue_sheds_rehearsal_copies_before_new_samples(model: ModelFiles):
    """No co-processor: rehearsal copies in the hold queue make way for new samples first."""
    with rig(
        f"socket://127.0.0.1:{free_port()}",
        model,
        max_pending_samples=12,
        connect_timeout_s=0.3,
        rehearsal_per_class=8,
    ) as r:
        for _ in range(5):
            r.window("ICE")
        for _ in range(10):
            r.window("SNOW")  # each also queues one ICE replay
        c = r.counters()
        assert c["labelled"] == 15
        assert c["replays_shed"] > 0
        assert c["pending"] == 12 and c["dropped"] == 3
        core = r.core
    c = core.counters()  # after close: what never reached a co-processor is dropped
    assert balanced(c) and c["pending"] == 0 and c["dropped"] == 15


def test_model_mismatch_not_used(emu_bin: Path, model: ModelFiles, tmp_path):
    """The co-processor runs another model than the sidecar describes: it is not used (no
    training, no inference), the problem is stated, labelled windows are held up to the limit
    and the rest counted as dropped; with upload_model the right model is uploaded instead."""
    with emulator_at(emu_bin, tmp_path, blob=OTHER_BLOB) as emu:
        with rig(emu.url, model, max_pending_samples=10, rehearsal_per_class=0) as r:
            core = r.core
            wait_for(lambda: core.snapshot()["model_problem"].startswith("co-processor runs"))
            snap = core.snapshot()
            assert snap["connected"] and not snap["model_ok"] and not core.configured
            problem = snap["model_problem"]
            other = load_model_files(OTHER_SIDECAR)
            assert f"0x{other.model_id:08x}" in problem and f"0x{model.model_id:08x}" in problem
            assert "upload_model" in problem
            for i in range(15):
                r.window(model.class_names[i % 5])
            r.window(None)
            assert not core.wait_idle(0.5)
            c = r.counters()
            assert (c["pending"], c["dropped"], c["trained"], c["sent"]) == (10, 5, 0, 0)
            assert c["inferred"] == 0 and r.outcomes == []
            wait_for(lambda: "trainer" in core.snapshot(), 5, "trainer stats")
            assert trainer_steps(core) == 0
            ok, msg = core.set_training(False)
            assert ok and msg.startswith("training off (not sent: co-processor runs model")
        c = core.counters()
        assert balanced(c) and c["dropped"] == 15 and c["pending"] == 0
        # The same co-processor with upload_model: the sidecar's blob is uploaded and used.
        with rig(emu.url, model, upload_model=True, rehearsal_per_class=0) as r:
            wait_for(lambda: r.core.configured, 20, "upload and configuration")
            assert r.core.snapshot()["coprocessor"]["model_id"] == f"0x{model.model_id:08x}"
            for i in range(5):
                r.window(model.class_names[i])
            assert r.core.wait_idle(20)
            assert r.counters()["trained"] == 5 and len(r.of("train")) == 5


def test_commands_return_ok_and_message(emu_bin: Path, model: ModelFiles, tmp_path):
    with emulator_at(emu_bin, tmp_path) as emu, rig(emu.url, model, rehearsal_per_class=0) as r:
        core = r.core
        wait_for(lambda: core.configured, what="session")
        ok, msg = core.restore()
        assert not ok and "NO_SAVED_MODEL" in msg  # nothing saved yet on this flash
        x0 = r.features()

        def infer_x0() -> tuple[int | None, float | None]:
            n = len(r.of("infer"))
            r.window(None, x0)
            assert core.wait_idle(20)
            o = r.of("infer")[n]
            return o.predicted, o.confidence

        pretrained = infer_x0()
        for i in range(40):
            r.window(model.class_names[i % 5])
        assert core.wait_idle(20)
        assert core.save() == (True, "model saved to co-processor flash")
        trained = infer_x0()
        assert trained != pretrained  # 40 steps changed the model
        assert core.reset_pretrained() == (True, "pretrained model restored")
        assert infer_x0() == pretrained
        assert core.restore() == (True, "last saved model restored")
        assert infer_x0() == trained

        updates = r.counters()["updates"]
        assert core.set_training(False) == (True, "training off")
        assert not core.training_enabled
        for i in range(5):
            r.window(model.class_names[i])
        assert core.wait_idle(20)
        c = r.counters()
        assert c["trained"] == 45 and c["updates"] == updates  # predicted, not learned
        assert infer_x0() == trained
        assert core.set_training(True) == (True, "training on")
        r.window("ICE")
        assert core.wait_idle(20)
        assert r.counters()["updates"] == updates + 1
    # After close (no link): commands fail cleanly.
    ok, msg = core.save()
    assert not ok and "not connected" in msg
    ok, msg = core.reset_pretrained()
    assert not ok and "not connected" in msg


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_rehearsal_replays_counted_apart_never_emitted(
    emu_bin: Path, model: ModelFiles, tmp_path, ratio: float
):
    with (
        emulator_at(emu_bin, tmp_path) as emu,
        rig(emu.url, model, rehearsal_per_class=8, rehearsal_ratio=ratio) as r,
    ):
        core = r.core
        wait_for(lambda: core.configured, what="session")
        for _ in range(10):
            r.window("ICE")
        for _ in range(10):
            r.window("SNOW")  # each new window draws `ratio` replays on average
        assert core.wait_idle(20)
        c = r.counters()
        n_replays = int(20 * ratio)
        assert c["labelled"] == c["trained"] == 20
        assert c["replays_sent"] == c["replays_trained"] == n_replays
        assert c["rehearsal_stored"] == 16  # 8 per class kept
        train = r.of("train")
        starts = [o.t_start for o in train]
        assert len(train) == 20 and starts == r.labelled_starts()  # no replay among them
        assert [o.label_name for o in train] == ["ICE"] * 10 + ["SNOW"] * 10
        assert int(r.core.confusion.sum()) == 20  # replays are not in the accuracy either
        wait_for(lambda: trainer_steps(core) == 20 + n_replays, 5, "trainer stats")


# ---------------------------------------------------------------------------------------------
# against the fake co-processor (failures the emulator does not produce on demand)


def test_rejected_samples_count_as_failed(model: ModelFiles):
    """The co-processor refuses some samples (BAD_LABEL): counted failed, no outcome, the rest
    trains; a co-processor with a different class count is not used."""
    fake_model = dataclasses.replace(model, model_id=0x42)  # the fake's model id
    with (
        FakeCoprocessor(input_len=102, classes=5, reject_labels=frozenset({4})) as fake,
        rig(fake.url, fake_model, rehearsal_per_class=0) as r,
    ):
        wait_for(lambda: r.core.configured, what="session")
        for i in range(20):
            r.window(model.class_names[i % 5])
            r.counters()
        assert r.core.wait_idle(20)
        c = r.counters()
        assert (c["labelled"], c["trained"], c["failed"]) == (20, 16, 4)
        assert all(o.label_name != "SNOW" for o in r.of("train"))
        assert len(r.of("train")) == 16
        assert len(fake.applied) == 16
    with FakeCoprocessor(input_len=102, classes=3) as fake, rig(fake.url, fake_model) as r:
        wait_for(lambda: r.core.snapshot()["model_problem"].startswith("co-processor model"))
        assert "3 classes" in r.core.snapshot()["model_problem"]
        assert not r.core.configured


def test_close_while_unplugged_accounts_for_everything(emu_bin: Path, model: ModelFiles, tmp_path):
    """Closing with samples in flight and held while the co-processor is gone: each one ends up
    failed (in flight at close) or dropped (never sent), none vanishes."""
    with emulator_at(emu_bin, tmp_path) as emu, rig(emu.url, model) as r:
        wait_for(lambda: r.core.configured, what="session")
        for i in range(20):
            r.window(model.class_names[i % 5])
        assert r.core.wait_idle(20)
        emu.kill()
        for i in range(30):
            r.window(model.class_names[i % 5])
        wait_for(lambda: not r.core.connected, 10, "the unplug to be noticed")
        core = r.core
    c = core.counters()
    assert balanced(c) and c["pending"] == 0
    assert c["labelled"] == 50 and c["trained"] == 20
    assert c["failed"] + c["dropped"] == 30
