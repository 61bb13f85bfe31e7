"""The laps report's spread over seeds (tools/eval_laps.py, pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from tools.eval_laps import markdown, seed_spread


def _row(a: int, gains: list[float]) -> dict[str, Any]:
    return {
        "arrangement": a,
        "lap1": ["SNOW/01:0-60"],
        "lap2": ["SNOW/02:0-90"],
        "evaluated_windows": 100,
        "acc_before": 0.5,
        "acc_after": 0.5 + gains[0],
        "gain": gains[0],
        "per_class": {},
        "samples_trained": 10,
        "training_steps": 40,
        "rollbacks": 0,
        "prequential_accuracy": 0.9,
        "by_seed": [
            {"seed": s, "acc_after": 0.5 + g, "gain": g, "rollbacks": 0}
            for s, g in zip((0, 1, 2), gains, strict=True)
        ],
    }


def test_seed_spread_per_seed_and_per_arrangement_mean() -> None:
    rows = [_row(0, [0.10, 0.04, 0.07]), _row(1, [-0.025, -0.007, -0.025])]
    m = seed_spread(rows)
    assert [b["seed"] for b in m["by_seed"]] == [0, 1, 2]
    assert m["by_seed"][0]["gain"] == pytest.approx(0.0375)
    assert m["by_seed"][0]["min_gain"] == pytest.approx(-0.025)
    assert [b["arrangements_worse_than_minus_2_points"] for b in m["by_seed"]] == [1, 0, 1]
    assert m["seed_mean_min_gain"] == pytest.approx(-0.019)
    assert m["seed_mean_arrangements_worse_than_minus_2_points"] == 0
    assert seed_spread([{k: v for k, v in rows[0].items() if k != "by_seed"}]) == {}


def test_markdown_shows_every_seed() -> None:
    rows = [_row(0, [0.10, 0.04, 0.07])]
    out = {
        "protocol": {"lap1": "l1", "lap2": "l2", "model": "m", "features": "wheels",
                     "evaluation": "e"},
        "arrangements": rows,
        "mean": {"acc_before": 0.5, "acc_after": 0.6, "gain": 0.1, "min_gain": 0.1,
                 "max_gain": 0.1, "arrangements_worse_than_minus_2_points": 0,
                 **seed_spread(rows)},
    }  # fmt: skip
    md = markdown(out)
    assert "seed 1: +4.0 (min +4.0, 0 below −2)" in md
    assert "| +10.0 | +10.0 +4.0 +7.0 |" in md
    header = next(line for line in md.splitlines() if line.startswith("| # |"))
    sep = next(line for line in md.splitlines() if line.startswith("|---"))
    assert header.count("|") == sep.count("|")
