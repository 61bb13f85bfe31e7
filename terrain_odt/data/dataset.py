"""Your own labelled bags → a training set (`terrain-odt dataset BAG... -o features.npz`).

The windows are made by the feature node's logic (`terrain_odt.evaluation.evaluate.front_end`: the
same
extractor, parameters from the same files), so a model trained on them (`terrain-odt convert`)
sees on the robot exactly what it was trained on. Labels per window:

* `truth` (default): the class in force over the whole window on a `std_msgs/String` topic
  (`--truth-topic`, default `/terrain/label_truth`); windows with a change inside are skipped;
* `labeler`: what the robot's own `terrain_labeler` logic put in force over the whole window
  (operator topic, joystick, map regions, odometry gating), as the bridge would train on.

`groups` names where each window comes from: the bag (default) or the bag and the stretch of
one label without a break in the windows (`--group-by stretch`, e.g. each run of a drive cut
from several runs), so
`terrain-odt convert` holds out whole groups, never single windows. The `.npz` also carries the
feature configuration (`feature_config`, JSON), which convert writes into the model's sidecar.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.evaluate import EvalConfig, EvalError, front_end
from ..pipeline.labeling import LabelTimeline
from ..pipeline.node_config import ConfigError, effective_params, stream_config
from ..signals.features import feature_names

__all__ = ["build_dataset"]


def build_dataset(
    cfg: EvalConfig,
    out: Path,
    labels: str = "truth",
    group_by: str = "bag",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write the `.npz`; returns a summary (windows per class and group)."""
    if labels not in ("truth", "labeler"):
        raise EvalError(f"labels must be 'truth' or 'labeler', got {labels!r}")
    if group_by not in ("bag", "stretch"):
        raise EvalError(f"group_by must be 'bag' or 'stretch', got {group_by!r}")
    from ..ros.launcher import LaunchError, resolve_param_files

    try:
        files = resolve_param_files(cfg.param_files)
        scfg = stream_config(effective_params("imu_features", files, cfg.overrides))
    except (LaunchError, ConfigError) as exc:
        raise EvalError(str(exc)) from exc
    cfg = replace(cfg, operator_until=None, require_truth=labels == "truth")
    front = front_end(cfg, log)
    xs: list[np.ndarray] = []
    ys: list[str] = []
    groups: list[str] = []
    t0s: list[float] = []
    t1s: list[float] = []
    wi = 0
    for bag, events in zip(cfg.bags, front.events, strict=True):
        timeline = LabelTimeline(max_hold_s=1.0)
        stretch, last, last_t = 0, None, -1e300
        gap = 2.0 * scfg.features.hop_s
        for e in events:
            if e[0] == "label":
                timeline.record(e[1], e[2] or None)
                continue
            w = front.windows[wi]
            wi += 1
            name = w.truth if labels == "truth" else timeline.label_over(e[1], e[2])
            if not name:
                continue
            if name != last or e[1] - last_t > gap:
                stretch += last is not None
                last = name
            last_t = e[1]
            xs.append(np.asarray(e[3], dtype=np.float32))
            ys.append(str(name))
            groups.append(bag.stem if group_by == "bag" else f"{bag.stem}#{stretch:03d}")
            t0s.append(e[1])
            t1s.append(e[2])
    if not xs:
        raise EvalError(
            "no labelled windows: " + ("no truth over any window" if labels == "truth" else
                                       "the labeler never had a label in force over a window")
        )  # fmt: skip
    classes = sorted(set(ys))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        X=np.stack(xs),
        y=np.asarray(ys),
        groups=np.asarray(groups),
        t_start=np.asarray(t0s),
        t_end=np.asarray(t1s),
        class_names=np.asarray(classes),
        feature_names=np.asarray(feature_names(scfg.features)),
        feature_config=np.asarray(json.dumps(scfg.features.to_dict())),
    )
    per_class = {c: ys.count(c) for c in classes}
    summary = {
        "windows": len(xs),
        "features": int(xs[0].size),
        "classes": per_class,
        "groups": len(set(groups)),
        "feature_config": scfg.features.describe(),
    }
    log(
        f"wrote {out}: {len(xs)} windows x {xs[0].size} features, classes {per_class}, "
        f"{len(set(groups))} groups"
    )
    return summary
