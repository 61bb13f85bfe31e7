"""End to end through DDS (the integration path; `terrain-odt evaluate` is the measurement): the
shipped demo bag through the three real nodes (the one-process launcher in a child process,
`use_sim_time`, /clock from the player), the bridge on the odt-emu co-processor over an emulated
921600-baud UART, training on the first lap's operator labels, accuracy measured window by
window on the second lap with training off (before) and on (after).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from terrain_odt.cli import main as cli_main
from terrain_odt.evaluation.replay import ReplayConfig, ReplayError, replay, summary

ROOT = Path(__file__).resolve().parent.parent
BAG = ROOT / "data" / "demo" / "borealtc_demo.mcap"
PARAMS = (ROOT / "config" / "terrain_odt.yaml",)


@pytest.fixture(scope="module")
def demo_report(emu_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    cfg = ReplayConfig(bag=BAG, param_files=PARAMS, rate=20.0, operator_until=180.0)
    out = tmp_path_factory.mktemp("replay")
    rep = replay(cfg, out_dir=out, log=print)
    rep["_out"] = str(out)
    return rep


def test_fine_tuning_on_the_coprocessor_beats_the_pretrained_model(demo_report: dict) -> None:
    head = summary(demo_report)
    before, after = head["acc_before"], head["acc_after"]
    assert before is not None and after is not None
    # Scored on the windows both passes answered (the same windows); `terrain-odt evaluate`
    # gives the exact figures, this path only has to agree roughly.
    assert after > before + 0.05, head
    assert head["samples_trained"] >= 50
    assert head["evaluated_windows"] >= 0.8 * 335


def test_every_window_answered_and_no_labelled_sample_lost(demo_report: dict) -> None:
    w = demo_report["windows"]
    assert w["mixed_truth"] == w["no_truth"] == 0
    for name, p in demo_report["passes"].items():
        s = p["samples"]
        assert (
            s["labelled"]
            == s["trained"] + s["held_out"] + s["failed"] + s["dropped"] + s["pending"]
        ), name
        assert s["failed"] == 0 and s["dropped"] == 0 and s["pending"] == 0, (name, s)
        # Answers carry their window: each matches a window the bag produces.
        assert w["answers_without_window"][name] == 0, name
        # Under load a few inference requests are skipped (stale); most windows are answered.
        assert p["windows_unmatched"] <= 0.2 * (w["evaluated"] + p["windows_unmatched"]), name
        # The player's IMU reaches the feature node (losses only under heavy CPU contention).
        assert p["imu_lost"] <= 0.2 * p["messages_published"]["/imu/data"], name
        assert p["link"]["crc_errors"] == 0 and p["link"]["samples_failed"] == 0


def test_report_has_confusion_matrices_series_and_plots(demo_report: dict) -> None:
    for p in demo_report["passes"].values():
        cm = p["confusion_eval"]
        assert len(cm) == len(demo_report["classes"]) == 5
        assert sum(map(sum, cm)) == p["windows_eval"] == demo_report["windows"]["evaluated"]
    assert demo_report["passes"]["after"]["trainer"]["train_steps"] > 0
    assert not demo_report["passes"]["before"]["training"]
    for png in demo_report["plots"]:
        assert Path(png).stat().st_size > 1000
    assert demo_report["series"]["after"]["prequential_accuracy"]


def test_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["replay", str(tmp_path / "missing.mcap")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(b"not a bag at all")
    assert cli_main(["replay", str(bad)]) == 2
    assert "cannot read bag" in capsys.readouterr().err
    with pytest.raises(ReplayError, match="rate"):
        replay(ReplayConfig(bag=BAG, param_files=PARAMS, rate=0.0))


def test_summary_json_written_by_the_cli(emu_bin: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    rc = cli_main(
        [
            "replay",
            str(BAG),
            "--params-file",
            str(PARAMS[0]),
            "--rate",
            "40",
            "--no-before",
            "--out-dir",
            str(tmp_path / "r"),
            "--summary-json",
            str(out),
        ]
    )
    assert rc == 0
    head = json.loads(out.read_text())
    assert set(head) >= {"acc_before", "acc_after", "replay_speed", "samples_trained"}
    assert head["acc_before"] is None  # no before pass asked for
    assert head["replay_speed"] > 5
