#!/usr/bin/env python3
"""IMU only vs IMU + wheels: int8 accuracy on BorealTC runs never trained on (issue 10).

    python tools/exp_features.py [--seeds 10] [--out bench/results/features.json]

Per seed: the runs of each class are split (stratified, by run, never by window) into 75 %
training and 25 % test runs (`borealtc.split_by_run`); for each feature set a model is made with
the shipped recipe (`tools/make_models.py`: MLP 64-32, float pretraining, int8 quantization) on
the training runs, and scored window by window, in int8 (the bit-exact reference of the
co-processor, `terrain_odt.qnn`), on the test runs. The same split serves both feature sets.
The JSON gives per seed and in the mean the int8 and float accuracy per feature set and the
paired difference. (With on-device fine-tuning: `tools/eval_laps.py`, bench/results/laps.json.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from terrain_odt import borealtc  # noqa: E402
from terrain_odt.features import FeatureConfig  # noqa: E402
from terrain_odt.toolbox import convert  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "features.json"
SETS = {"imu": FeatureConfig(wheels=False), "imu_wheels": FeatureConfig(wheels=True)}


def log(msg: str) -> None:
    print(f"[exp_features] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--test-frac", type=float, default=0.25)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    runs = borealtc.load_runs()
    names = np.asarray(borealtc.CLASSES)
    windows = {k: borealtc.windows_by_run(runs, cfg) for k, cfg in SETS.items()}
    rows: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        # The split is of runs; both feature sets use the same runs (the wheel set may reject a
        # few windows without wheel samples, scored on what it has).
        ids = windows["imu"].run_ids
        _tr, te = borealtc.split_by_run(ids, windows["imu"].labels, args.test_frac, seed)
        test_runs = sorted(set(ids[te].tolist()))
        row: dict[str, Any] = {"seed": seed, "test_runs": test_runs}
        for k, w in windows.items():
            test = np.isin(w.run_ids, test_runs)
            res = convert(
                w.features[~test],
                names[w.labels[~test]],
                x_test=w.features[test],
                y_test=names[w.labels[test]],
                seed=seed,
                source_windows=False,
            )
            ev = res.report["test"]
            row[k] = {"int8": ev["int8_acc"], "float": ev["float_acc"], "windows": ev["n"]}
        row["int8_gain_wheels"] = row["imu_wheels"]["int8"] - row["imu"]["int8"]
        rows.append(row)
        log(
            f"seed {seed}: IMU int8 {100 * row['imu']['int8']:.1f} %, IMU + wheels int8 "
            f"{100 * row['imu_wheels']['int8']:.1f} % ({len(test_runs)} test runs)"
        )

    def stat(vals: list[float]) -> dict[str, float]:
        a = np.asarray(vals)
        return {"mean": float(a.mean()), "min": float(a.min()), "max": float(a.max())}

    out = {
        "tool": "tools/exp_features.py",
        "protocol": f"{args.seeds} seeds, per class {args.test_frac:.0%} of the runs held out "
        "(split by run), shipped recipe, scored per window",
        "per_seed": rows,
        "mean": {
            k: {
                "int8": stat([r[k]["int8"] for r in rows]),
                "float": stat([r[k]["float"] for r in rows]),
            }
            for k in SETS
        },
        "int8_gain_wheels": stat([r["int8_gain_wheels"] for r in rows]),
        "wall_s": round(time.monotonic() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    m = out["mean"]
    log(
        f"mean over {args.seeds} seeds: IMU int8 {100 * m['imu']['int8']['mean']:.1f} %, "
        f"IMU + wheels int8 {100 * m['imu_wheels']['int8']['mean']:.1f} %; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
