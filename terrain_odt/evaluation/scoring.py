"""Window-by-window scoring of before/after passes: one definition for `evaluate` and `replay`.

A pass answers feature windows; each answer names its window by its end time (`t_end`, the
window's id in the stream: the feature extractor's grid makes end times unique and identical in
every pass over the same input). Truth is taken **at the window**: the class in force over its
whole span `[t_start, t_end]` on the truth timeline (a `std_msgs/String` topic in the bag); a
window whose span sees a truth change is *mixed* and not scored. Before and after are scored on
exactly the same windows: those of the evaluated part (starting at or after `eval_from`) that
have a truth and an answer in every pass. Accuracy on those windows is the headline; the
prequential accuracy (a labelled window predicted just before it trains) is a diagnostic of the
stream being trained on and is reported apart, named as such.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Answer",
    "TruthTimeline",
    "Window",
    "WindowKey",
    "confusion",
    "prequential",
    "score_passes",
    "window_key",
]

WindowKey = int
"""A window's id: its end time in integer nanoseconds (plus `segment << 64` when several bags,
each on its own clock, are evaluated in a row)."""


def window_key(t_end: float, segment: int = 0) -> WindowKey:
    """The id of the window ending at `t_end` (s) in bag `segment`; robust to float round-trips
    through ROS messages (float64 carries the stamps to well under a nanosecond)."""
    return (segment << 64) + round(t_end * 1e9)


@dataclass(frozen=True)
class Window:
    """A window the stream produced: id, span, truth over the span (None: none or mixed, see
    `TruthTimeline.over`), and whether it lies in the evaluated part."""

    key: WindowKey
    t_start: float
    t_end: float
    truth: str | None
    evaluated: bool
    mixed: bool = False


@dataclass(frozen=True)
class Answer:
    """The co-processor's answer for one window in one pass."""

    t_start: float
    t_end: float
    #: "train" (labelled window, predicted before it trained), "heldout" or "infer"
    kind: str
    predicted: str | None
    #: The label the robot had for the window (train / heldout), else None.
    label: str | None = None
    confidence: float | None = None


class TruthTimeline:
    """Ground truth as (time s, class) changes; `over(t0, t1)` is the class in force over the
    whole span, or `None` (no truth yet, or it changes inside the span)."""

    def __init__(self, points: Sequence[tuple[float, str]]) -> None:
        pts = sorted(points, key=lambda p: p[0])
        self.t = [p[0] for p in pts]
        self.c = [p[1] for p in pts]

    def at(self, t: float) -> str | None:
        i = bisect.bisect_right(self.t, t)
        return self.c[i - 1] if i else None

    def over(self, t0: float, t1: float) -> str | None:
        i = bisect.bisect_right(self.t, t0)
        if i == 0:
            return None
        c = self.c[i - 1]
        j = bisect.bisect_right(self.t, t1)
        if any(x != c for x in self.c[i:j]):
            return None
        return c

    def __len__(self) -> int:
        return len(self.t)


def confusion(
    truth: Sequence[str], pred: Sequence[str | None], classes: Sequence[str]
) -> np.ndarray:
    """Rows = truth, columns = prediction (a prediction outside `classes` counts nowhere)."""
    idx = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(truth, pred, strict=True):
        if t in idx and p in idx:
            m[idx[t], idx[p]] += 1
    return m


def _acc(m: np.ndarray) -> float | None:
    n = int(m.sum())
    return float(np.trace(m)) / n if n else None


def score_passes(
    windows: Sequence[Window],
    passes: Mapping[str, Mapping[WindowKey, Answer]],
    classes: Sequence[str],
) -> dict[str, Any]:
    """Score every pass on the same windows (see the module doc).

    `windows`: every window the stream produced (the expected set), in stream order;
    `passes`: per pass name, its answers by window id.
    """
    counts: dict[str, Any] = {
        "windows": len(windows),
        "before_eval_part": 0,
        "no_truth": 0,
        "mixed_truth": 0,
    }
    unmatched = dict.fromkeys(passes, 0)
    rows: list[Window] = []
    for w in windows:
        if not w.evaluated:
            counts["before_eval_part"] += 1
            continue
        if w.truth is None:
            counts["mixed_truth" if w.mixed else "no_truth"] += 1
            continue
        missing = [name for name, ans in passes.items() if w.key not in ans]
        for name in missing:
            unmatched[name] += 1
        if missing:
            continue
        rows.append(w)
    counts["evaluated"] = len(rows)
    counts["unanswered"] = unmatched
    expected = {w.key for w in windows}
    counts["answers_without_window"] = {
        name: sum(1 for k in ans if k not in expected) for name, ans in passes.items()
    }
    y = [str(r.truth) for r in rows]
    out: dict[str, Any] = {"classes": list(classes), "counts": counts, "passes": {}}
    preds: dict[str, list[str | None]] = {}
    for name, ans in passes.items():
        p = [ans[r.key].predicted for r in rows]
        preds[name] = p
        cm = confusion(y, p, classes)
        per = {}
        for i, c in enumerate(classes):
            n = int(cm[i].sum())
            per[c] = {"n": n, "accuracy": float(cm[i, i]) / n if n else None}
        out["passes"][name] = {
            "accuracy": _acc(cm),
            "correct": int(np.trace(cm)),
            "confusion": cm.tolist(),
            "per_class": per,
        }
    if "before" in preds and "after" in preds:
        b, a = preds["before"], preds["after"]
        fixed = sum(1 for t, pb, pa in zip(y, b, a, strict=True) if pb != t and pa == t)
        broken = sum(1 for t, pb, pa in zip(y, b, a, strict=True) if pb == t and pa != t)
        pb_ = out["passes"]["before"]["per_class"]
        pa_ = out["passes"]["after"]["per_class"]
        per_class = {}
        for c in classes:
            bb, aa = pb_[c]["accuracy"], pa_[c]["accuracy"]
            per_class[c] = {
                "n": pb_[c]["n"],
                "before": bb,
                "after": aa,
                "gain": None if bb is None or aa is None else aa - bb,
                # Forgetting: what a class lost (0 when it did not lose).
                "forgetting": None if bb is None or aa is None else max(0.0, bb - aa),
            }
        ab, aa = out["passes"]["before"]["accuracy"], out["passes"]["after"]["accuracy"]
        out["before_after"] = {
            "acc_before": ab,
            "acc_after": aa,
            "gain": None if ab is None or aa is None else aa - ab,
            "windows_fixed": fixed,
            "windows_broken": broken,
            "per_class": per_class,
        }
    out["rows"] = [
        {
            "t_start": r.t_start,
            "t_end": r.t_end,
            "truth": r.truth,
            **{n: preds[n][i] for n in preds},
        }
        for i, r in enumerate(rows)
    ]
    return out


def prequential(answers: Mapping[WindowKey, Answer]) -> dict[str, Any]:
    """Prequential accuracy of one pass: labelled windows predicted just before they trained
    (the stream being trained on; a diagnostic, not a measure of generalisation)."""
    tr = [a for a in answers.values() if a.kind == "train" and a.label is not None]
    held = [a for a in answers.values() if a.kind == "heldout" and a.label is not None]

    def acc(xs: Sequence[Answer]) -> float | None:
        return sum(a.predicted == a.label for a in xs) / len(xs) if xs else None

    return {
        "prequential_accuracy": acc(tr),
        "prequential_windows": len(tr),
        "heldout_accuracy": acc(held),
        "heldout_windows": len(held),
    }


def plot_confusions(
    plt: Any, path: Any, classes: Sequence[str], passes: Sequence[tuple[str, Any, float | None]]
) -> None:
    """One confusion matrix per pass (name, matrix, accuracy) side by side, saved to `path`
    (`plt`: matplotlib.pyplot, imported by the caller with its backend chosen)."""
    fig, axes = plt.subplots(1, len(passes), figsize=(4.6 * len(passes), 4.2), squeeze=False)
    for ax, (name, matrix, acc) in zip(axes[0], passes, strict=True):
        cm = np.asarray(matrix)
        ax.imshow(cm, cmap="Blues")
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_title(f"{name}: {100 * acc:.1f} %" if acc is not None else name, fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("truth")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
