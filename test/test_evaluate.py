"""`terrain-odt evaluate` on the shipped demo bag: the nodes' logic in bag order with the real
co-processor emulator. Shown: two runs give identical reports (bit for bit; the summary differs
only in its timing keys), also with the passes run sequentially; before and after are scored on
the same windows, every window of the evaluated part answered in both passes; fine-tuning from
the default model helps on the second lap; nothing labelled is lost; several bags play as one
session; bad input is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from terrain_odt.cli import main as cli_main
from terrain_odt.evaluation.evaluate import TIMING_KEYS

ROOT = Path(__file__).resolve().parent.parent
BAG = ROOT / "data" / "demo" / "borealtc_demo.mcap"
PARAMS = ROOT / "config" / "terrain_odt.yaml"


def run(tmp: Path, *extra: str, bags: tuple[Path, ...] = (BAG,)) -> tuple[int, Path]:
    out = tmp / "out"
    rc = cli_main(
        [
            "evaluate",
            *map(str, bags),
            "--params-file",
            str(PARAMS),
            "--out-dir",
            str(out),
            "--summary-json",
            str(tmp / "summary.json"),
            "-q",
            *extra,
        ]
    )
    return rc, out


@pytest.fixture(scope="module")
def twice(emu_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    dirs = []
    for i in range(2):
        d = tmp_path_factory.mktemp(f"eval{i}")
        rc, _ = run(d, "--operator-until", "180")
        assert rc == 0
        dirs.append(d)
    return dirs


def test_two_runs_give_identical_reports(twice: list[Path]) -> None:
    a, b = twice
    for name in ("report.json", "windows.json"):
        assert (a / "out" / name).read_bytes() == (b / "out" / name).read_bytes(), name
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in twice)
    assert set(TIMING_KEYS) <= set(sa)
    for k in TIMING_KEYS:
        sa.pop(k)
        sb.pop(k)
    assert sa == sb
    assert {"acc_before", "acc_after", "evaluated_windows", "samples_trained"} <= set(sa)
    assert {"training_steps"} <= set(sa)


def test_sequential_passes_give_the_same_report(twice: list[Path], tmp_path: Path) -> None:
    """The default runs each pass in its own process as the front end goes: the same report
    as running them one after the other."""
    rc, out = run(tmp_path, "--operator-until", "180", "--sequential")
    assert rc == 0
    for name in ("report.json", "windows.json"):
        assert (out / name).read_bytes() == (twice[0] / "out" / name).read_bytes(), name


def test_same_windows_before_and_after_and_fine_tuning_helps(twice: list[Path]) -> None:
    rep = json.loads((twice[0] / "out" / "report.json").read_text())
    w = rep["windows"]
    # The second lap: 5 segments of 35 s, 67 windows each; all answered in both passes.
    assert w["evaluated"] == 335 and w["unanswered"] == {"before": 0, "after": 0}
    assert w["mixed_truth"] == w["no_truth"] == 0
    ba = rep["evaluated"]["before_after"]
    assert ba["acc_after"] > ba["acc_before"] + 0.05, ba
    assert rep["passes"]["before"]["samples"]["trained"] > 0  # predicted, training off
    rows = json.loads((twice[0] / "out" / "windows.json").read_text())
    assert len(rows) == 335
    assert sum(r["after"] == r["truth"] for r in rows) == round(ba["acc_after"] * 335)
    # The headline is not the prequential accuracy (on the labelled lap), reported apart.
    after = rep["passes"]["after"]
    assert after["prequential_windows"] == after["samples"]["trained"]
    s = after["samples"]
    assert s["labelled"] == s["trained"] + s["held_out"] + s["failed"] + s["dropped"] + s["pending"]
    assert s["failed"] == s["dropped"] == s["pending"] == 0
    assert after["trainer"]["train_steps"] > s["trained"]  # replays trained too
    assert after["finetune"]["checks"] > 0
    assert (twice[0] / "out" / "accuracy.png").stat().st_size > 1000


def test_several_bags_are_one_session(emu_bin: Path, tmp_path: Path) -> None:
    rc, out = run(tmp_path, "--operator-until", "180", "--no-before", bags=(BAG, BAG))
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    # Windows of both bags (the same stamps, told apart by the bag index); the second bag is
    # entirely after the operator stopped.
    assert rep["windows"]["windows"] == 2 * 670
    assert rep["windows"]["evaluated"] == 335 + 670
    assert len(rep["bags"]) == 2


def test_bad_input_is_a_clear_error(
    emu_bin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _ = run(tmp_path, bags=(tmp_path / "missing.mcap",))
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(b"not a bag")
    rc, _ = run(tmp_path, bags=(bad,))
    assert rc == 2 and "cannot read bag" in capsys.readouterr().err
    rc, _ = run(tmp_path, "-p", "odt_bridge.learning_rate:=5.0")
    err = capsys.readouterr().err
    assert rc == 2 and "learning_rate" in err
    rc, _ = run(tmp_path, "-p", "odt_bridge.model_sidecar:=nothing.json")
    err = capsys.readouterr().err
    assert rc == 2 and "model_sidecar" in err and "does not exist" in err
    rc, _ = run(tmp_path, "--truth-topic", "/no/such/topic")
    assert rc == 2 and "nothing to evaluate against" in capsys.readouterr().err
    rc, _ = run(tmp_path, "-p", "imu_features.window_s:=0.05")
    assert rc == 2 and "window_s" in capsys.readouterr().err


def test_a_failure_after_ctrl_c_is_the_interruption(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C reaches the emulators too (same process group): a link failing after it, e.g.
    while a session still opens (seen in CI: 'could not open port'), reports the interruption,
    while the same failure without Ctrl-C stays an error."""
    from terrain_odt.evaluation import evaluate as ev

    def fails(interrupted: bool) -> object:
        def run(*_: object) -> object:
            if interrupted:
                assert ev._stop is not None
                ev._stop.requested = True  # what the SIGINT handler sets
            raise ev.EvalError("co-processor not reachable: could not open port")

        return run

    cfg = ev.EvalConfig(bags=(BAG,))
    monkeypatch.setattr(ev, "_evaluate", fails(True))
    with pytest.raises(ev.EvalInterrupted):
        ev.evaluate(cfg)
    monkeypatch.setattr(ev, "_evaluate", fails(False))
    with pytest.raises(ev.EvalError, match="could not open port") as err:
        ev.evaluate(cfg)
    assert not isinstance(err.value, ev.EvalInterrupted)


@pytest.mark.parametrize(
    ("extra", "procs"),
    [([], 2), (["--sequential"], 1)],  # emulators running at once
)
def test_ctrl_c_stops_the_passes_and_their_emulators(
    emu_bin: Path, tmp_path: Path, extra: list[str], procs: int
) -> None:
    """Ctrl-C (SIGINT to the process group) while the passes run: exit 130 with one line, no
    traceback, and no pass process or emulator left behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "terrain_odt.cli", "evaluate", str(BAG), str(BAG), str(BAG)]
    cmd += ["--params-file", str(PARAMS), "--out-dir", str(tmp_path), "-q", *extra]
    p = subprocess.Popen(
        cmd,
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )

    def group(*only: str) -> list[str]:
        cmd = ["pgrep", "-g", str(p.pid), *(("-f", only[0]) if only else ())]
        return subprocess.run(cmd, capture_output=True, text=True).stdout.split()

    deadline = time.monotonic() + 60
    while len(group("odt-emu")) < procs and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.poll() is None, "the evaluation ended before it could be interrupted"
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    deadline = time.monotonic() + 10
    while group() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert group() == []
