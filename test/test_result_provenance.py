"""Result files record where they came from (issue 12 item 7), no QEMU or long runs needed.

* `tools/bench_mcu.py` fails (non-zero exit, clear message) when an integer-only image links or
  calls a soft-float helper, instead of only listing the symbols in the JSON.
* The scripts that write `bench/results/*.json` refuse to run from a dirty work tree unless
  given `--allow-dirty`, and then record the diff (hash and stat) next to the revision.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tools import bench_mcu, provenance

# ------------------------------------------------------------------ soft float in bench_mcu


def test_soft_float_symbol_in_int_image_fails() -> None:
    with pytest.raises(bench_mcu.SoftFloatError, match="__aeabi_fadd"):
        bench_mcu.check_int_image(
            "thumbv6m-none-eabi",
            symbols=["__aeabi_fadd", "__aeabi_lmul"],
            calls=[],
            control_symbols=16,
        )


def test_soft_float_call_in_int_image_fails() -> None:
    with pytest.raises(bench_mcu.SoftFloatError, match="__addsf3"):
        bench_mcu.check_int_image(
            "riscv32imc-unknown-none-elf", symbols=[], calls=["__addsf3"], control_symbols=16
        )


def test_soft_float_check_without_positive_control_fails() -> None:
    # The full image links the f32 baseline: finding nothing there means the check is broken.
    with pytest.raises(bench_mcu.SoftFloatError, match="control"):
        bench_mcu.check_int_image("thumbv6m-none-eabi", symbols=[], calls=[], control_symbols=0)


def test_clean_int_image_passes() -> None:
    # (integer helpers such as __aeabi_lmul never reach the lists: see the next test)
    bench_mcu.check_int_image("thumbv6m-none-eabi", symbols=[], calls=[], control_symbols=16)


def test_soft_float_symbols_are_recognised() -> None:
    names = ["__aeabi_fmul", "__aeabi_d2iz", "__mulsf3", "__fixsfsi", "__aeabi_lmul", "memcpy"]
    found = [n for n in names if bench_mcu.SOFT_FLOAT_RE.match(n)]
    assert found == ["__aeabi_fmul", "__aeabi_d2iz", "__mulsf3", "__fixsfsi"]


def test_bench_mcu_exits_non_zero_on_soft_float(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_bench_target(*_args: Any, **_kwargs: Any) -> Any:
        bench_mcu.check_int_image(
            "thumbv6m-none-eabi", symbols=["__aeabi_fadd"], calls=[], control_symbols=16
        )

    monkeypatch.setattr(bench_mcu, "bench_target", fake_bench_target)
    monkeypatch.setattr(bench_mcu, "run", lambda *_a, **_k: "")
    monkeypatch.setattr(bench_mcu.shutil, "which", lambda _tool: "/bin/true")
    monkeypatch.setattr(bench_mcu.provenance, "record", lambda *_a, **_k: {"git": "0000000"})
    out = tmp_path / "mcu.json"
    rc = bench_mcu.main(["--skip-build", "--targets", "thumbv6m-none-eabi", "--out", str(out)])
    assert rc != 0
    assert "soft-float" in capsys.readouterr().out
    assert not out.exists()


# ------------------------------------------------------------------ dirty work trees


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    (r / "bench" / "results").mkdir(parents=True)
    (r / "src.py").write_text("x = 1\n")
    (r / "bench" / "results" / "old.json").write_text("{}\n")
    git(r, "init", "-q")
    git(r, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git(r, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    return r


def test_clean_tree_records_the_revision(repo: Path) -> None:
    out = repo / "bench" / "results" / "x.json"
    rec = provenance.record(repo, outputs=[out], allow_dirty=False)
    assert rec["git"] == git(repo, "rev-parse", "--short", "HEAD").strip()
    assert "git_diff" not in rec


def test_dirty_tree_is_refused(repo: Path) -> None:
    (repo / "src.py").write_text("x = 2\n")
    out = repo / "bench" / "results" / "x.json"
    with pytest.raises(SystemExit) as exc:
        provenance.record(repo, outputs=[out], allow_dirty=False)
    assert exc.value.code not in (0, None)
    assert "dirty" in str(exc.value.code) and "src.py" in str(exc.value.code)
    assert "--allow-dirty" in str(exc.value.code)


def test_untracked_source_makes_the_tree_dirty(repo: Path) -> None:
    (repo / "new.py").write_text("y = 1\n")
    with pytest.raises(SystemExit):
        provenance.record(repo, outputs=[repo / "bench" / "results" / "x.json"], allow_dirty=False)


def test_own_outputs_do_not_count_as_dirty(repo: Path) -> None:
    # A script that merge-updates its own result file (e.g. after another experiment wrote it).
    (repo / "bench" / "results" / "old.json").write_text('{"a": 1}\n')
    rec = provenance.record(
        repo, outputs=[repo / "bench" / "results" / "old.json"], allow_dirty=False
    )
    assert "git_diff" not in rec


def test_other_results_do_not_count_as_dirty(repo: Path) -> None:
    # `make eval-laps` writes laps.json, then runs the next study into another file.
    (repo / "bench" / "results" / "old.json").write_text('{"a": 2}\n')
    (repo / "bench" / "results" / "new.json").write_text("{}\n")
    (repo / "docs").mkdir()
    (repo / "docs" / "RESULTS.md").write_text("# results\n")
    rec = provenance.record(
        repo, outputs=[repo / "bench" / "results" / "x.json"], allow_dirty=False
    )
    assert "git_diff" not in rec


def test_allow_dirty_records_the_diff(repo: Path) -> None:
    (repo / "src.py").write_text("x = 2\n")
    (repo / "new.py").write_text("y = 1\n")
    rec = provenance.record(repo, outputs=[repo / "bench" / "results" / "x.json"], allow_dirty=True)
    head = git(repo, "rev-parse", "--short", "HEAD").strip()
    assert rec["git"] == f"{head}-dirty"
    diff = rec["git_diff"]
    assert len(diff["sha256"]) == 64
    assert "src.py" in diff["stat"]
    assert diff["untracked"] == ["new.py"]
    json.dumps(rec)  # JSON-serialisable


def test_outputs_outside_the_tree_are_not_checked(repo: Path, tmp_path: Path) -> None:
    # Smoke runs into build/ or elsewhere are not recorded results.
    (repo / "src.py").write_text("x = 2\n")
    rec = provenance.record(repo, outputs=[repo / "build" / "quick.json"], allow_dirty=False)
    assert rec["git"].endswith("-dirty")
    rec = provenance.record(repo, outputs=[tmp_path / "elsewhere.json"], allow_dirty=False)
    assert "git_diff" in rec


def test_bench_mcu_refuses_a_dirty_tree(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "src.py").write_text("x = 2\n")
    monkeypatch.setattr(bench_mcu, "ROOT", repo)
    called: list[str] = []
    monkeypatch.setattr(bench_mcu, "run", lambda cmd, **_k: called.append(cmd[0]) or "")
    out = repo / "bench" / "results" / "mcu.json"
    with pytest.raises(SystemExit) as exc:
        bench_mcu.main(["--skip-build", "--out", str(out)])
    assert exc.value.code not in (0, None)
    assert not called  # refused before building or running anything
    assert not out.exists()


@pytest.mark.parametrize(
    ("module", "extra"),
    [
        ("exp_standard", []),
        ("exp_features", []),
        ("eval_laps", []),
        ("sim_closed_loop", []),
        ("bench_link", []),
        ("exp_trainer_choices", []),
        ("bench_ros", []),
    ],
)
def test_experiment_scripts_refuse_a_dirty_tree(
    module: str, extra: list[str], repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    pytest.importorskip("sklearn")
    mod = importlib.import_module(f"tools.{module}")
    (repo / "src.py").write_text("x = 2\n")
    monkeypatch.setattr(mod, "ROOT", repo)
    out = repo / "bench" / "results" / "out.json"
    if module in ("exp_standard", "exp_trainer_choices"):
        args = ["--json", str(out), "--md", str(repo / "docs" / "RESULTS.md"), *extra]
    elif module == "sim_closed_loop":
        args = ["--summary", str(out), *extra]
    else:
        args = ["--out", str(out), *extra]
    with pytest.raises(SystemExit) as exc:
        mod.main(args)
    assert exc.value.code not in (0, None)
    assert "dirty" in str(exc.value.code)
    assert not out.exists()
