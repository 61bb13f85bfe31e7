#!/usr/bin/env python3
"""Cross-run laps: does on-robot fine-tuning help on the ground driven next, on runs never seen?

    python tools/eval_laps.py [--arrangements 10] [--out bench/results/laps.json]   (make eval-laps)

Per arrangement `a` (from BorealTC in ../shared/data, nothing here is shipped):

* **lap 1**: one run per terrain, the operator labels it. The run is a *labelable* one (at least
  `MIN_MOVING` windows of steady driving, wheel speed >= 0.1 m/s: the labeler only labels while
  the robot moves), the `a`-th such run of the class in recording order; at most `LAP1_S` seconds
  of it, the stretch with the most steady driving.
* **lap 2**: for each terrain, the *next* run in recording order after the lap-1 run (whatever it
  is: slow, turning, short), its first `LAP2_S` seconds: scored, never labelled.
* **model**: pretrained on every other run (neither lap's runs), with the recipe of the shipped
  models (`tools/make_models.py`: `toolbox.convert`, MLP 102-64-32-5, int8, source windows), seed
  `a`.

The two laps are cut into one bag (`terrain-odt bag-from-borealtc`, terrains in an order rotated
per arrangement) and run through `terrain-odt evaluate` with the emulator, the operator until
lap 2 starts, with the shipped parameters (`config/terrain_odt.yaml`) and only the model paths
changed. The JSON gives per arrangement: runs, windows, accuracy before/after on lap 2, the gain,
per-class accuracy and forgetting (what a class lost), samples trained, checks and rollbacks; and
the mean, min and max gain. Deterministic: the same data and code give the same file (apart from
`wall_s`). With `--seeds 0 1 2` (`make eval-laps`, laps.json) each arrangement is fine-tuned once
per `odt_bridge.seed` (replay draws, held-back blocks, co-processor rounding): the rows are the
first seed's, and the spread over the draws is given per arrangement and per seed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from terrain_odt.data import bagconv, borealtc  # noqa: E402
from terrain_odt.signals.features import FeatureConfig  # noqa: E402
from tools import provenance  # noqa: E402
from tools.make_models import SOURCE_VAL_FRAC, pretrain  # noqa: E402
from tools.results_md import RESULTS_MD, merge_section  # noqa: E402

LAP1_S = 60.0
LAP2_S = 90.0
MIN_MOVING = 40
STEADY_SPEED = 0.1
MAX_YAW = 1.0
DEFAULT_OUT = ROOT / "bench" / "results" / "laps.json"


def log(msg: str) -> None:
    print(f"[eval_laps] {msg}", flush=True)


def steady(run: borealtc.Run, t: np.ndarray) -> np.ndarray:
    """Whether the robot drives steadily at times `t` (run clock): wheel odometry as the bag
    has it (v = mean wheel speed, yaw rate from the track width)."""
    p = run.pro
    v = 0.5 * (p[:, 3] + p[:, 4])
    w = (p[:, 4] - p[:, 3]) / bagconv.TRACK_WIDTH_M
    return (np.abs(np.interp(t, p[:, 0], v)) >= STEADY_SPEED) & (
        np.abs(np.interp(t, p[:, 0], w)) <= MAX_YAW
    )


def moving_windows(run: borealtc.Run) -> int:
    t0 = run.imu[0, 0]
    starts = np.arange(t0, run.imu[-1, 0] - 1.7, 0.5)
    return int(sum(steady(run, np.linspace(s, s + 1.7, 8)).all() for s in starts))


def best_stretch(run: borealtc.Run, length: float) -> tuple[float, float]:
    """(start, end) s from the run's start: the `length` s with the most steady driving."""
    dur = run.duration_s
    if dur <= length:
        return 0.0, dur
    t = run.imu[0, 0] + np.arange(0.0, dur, 0.1)
    ok = steady(run, t).astype(float)
    n = round(length / 0.1)
    score = np.convolve(ok, np.ones(n), mode="valid")[::50]  # candidate starts every 5 s
    s = 5.0 * int(np.argmax(score))
    return s, s + length


def arrangements(runs: list[borealtc.Run], n: int, step: int = 1) -> list[dict[str, Any]]:
    """`step` 1: lap 2 is the next run in recording order (the protocol); -1: the previous one
    (other pairs of runs, for choosing settings without looking at the protocol's results)."""
    by_class = {c: [r for r in runs if r.terrain == c] for c in borealtc.CLASSES}
    usable = {c: [r for r in rs if moving_windows(r) >= MIN_MOVING] for c, rs in by_class.items()}
    out = []
    for a in range(n):
        lap1, lap2 = [], []
        for c in borealtc.CLASSES:
            r1 = usable[c][a % len(usable[c])]
            rs = by_class[c]
            r2 = rs[(rs.index(r1) + step) % len(rs)]  # the next run in recording order
            s0, s1 = best_stretch(r1, LAP1_S)
            lap1.append(bagconv.Segment(c, r1.number, s0, s1))
            lap2.append(bagconv.Segment(c, r2.number, 0.0, min(LAP2_S, r2.duration_s)))
        k = a % len(lap1)  # rotate the drive order per arrangement
        out.append({"index": a, "lap1": lap1[k:] + lap1[:k], "lap2": lap2[k:] + lap2[:k]})
    return out


def recipe_hash() -> str:
    import hashlib

    h = hashlib.sha256()
    for f in (
        "signals/features.py",
        "model/toolbox.py",
        "model/quantize.py",
        "data/borealtc.py",
        "pipeline/finetune.py",
    ):
        h.update((ROOT / "terrain_odt" / f).read_bytes())
    h.update((ROOT / "tools" / "make_models.py").read_bytes())
    return h.hexdigest()[:16]


def run_id(seg: bagconv.Segment) -> str:
    return f"{seg.terrain}/{seg.number:02d}"


def seed_spread(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """With several seeds: per seed the mean and worst gain, and per arrangement the gain
    averaged over the seeds (its worst and how many are below -2 points)."""
    if not rows or "by_seed" not in rows[0]:
        return {}
    seeds = [b["seed"] for b in rows[0]["by_seed"]]
    g = np.array([[b["gain"] for b in r["by_seed"]] for r in rows])  # arrangement x seed
    per_arr = g.mean(axis=1)
    return {
        "by_seed": [
            {
                "seed": seed,
                "gain": float(g[:, k].mean()),
                "min_gain": float(g[:, k].min()),
                "arrangements_worse_than_minus_2_points": int((g[:, k] < -0.02).sum()),
            }
            for k, seed in enumerate(seeds)
        ],
        "seed_mean_gain": float(per_arr.mean()),
        "seed_mean_min_gain": float(per_arr.min()),
        "seed_mean_arrangements_worse_than_minus_2_points": int((per_arr < -0.02).sum()),
    }


def pct(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "–"
    return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}"


def markdown(out: dict[str, Any]) -> str:
    """The docs/RESULTS.md section of a laps.json."""
    p, m = out["protocol"], out["mean"]
    lines = [
        "## On-robot fine-tuning across runs: the laps protocol (the product's path)"
        + (", IMU-only model" if p.get("features") == "imu" else "")
        + ("" if p.get("shift", "none") == "none" else f", IMU mounted otherwise ({p['shift']})"),
        "",
        "Generated by `tools/eval_laps.py` (`make eval-laps`) from `bench/results/laps.json`: "
        f"{len(out['arrangements'])} arrangements of BorealTC runs, each through "
        f"`terrain-odt evaluate` ({p['evaluation']}; the same bridge, replay, held-out "
        "validation and accept/rollback logic the robot runs, nothing else).",
        "",
        f"- **Lap 1** (labelled by the operator): {p['lap1']}.",
        f"- **Lap 2** (scored, never labelled): {p['lap2']}.",
        f"- **Model**: {p['model']}; features: {p['features']}."
        + (
            ""
            if p.get("shift", "none") == "none"
            else f" The robot's IMU is mounted otherwise ({p['shift']}: rotation, gain, bias "
            "and noise of tools/shifts.py, on both laps); the model was "
            "pretrained on the runs as recorded."
        ),
        "- Accuracy per window on lap 2, before = the pretrained model (training off), after = "
        "fine-tuned on lap 1; the same windows. Forgetting = what a class lost (0 when not).",
        "",
        f"Mean over the arrangements: **{pct(m['acc_before'])} % → {pct(m['acc_after'])} %, "
        f"gain {pct(m['gain'], True)} points** (min {pct(m['min_gain'], True)}, max "
        f"{pct(m['max_gain'], True)}); arrangements worse than −2 points: "
        f"{m['arrangements_worse_than_minus_2_points']}.",
        "",
    ]
    seeded = "by_seed" in m
    if seeded:
        first = m["by_seed"][0]["seed"]
        per = "; ".join(
            f"seed {b['seed']}: {pct(b['gain'], True)} (min {pct(b['min_gain'], True)}, "
            f"{b['arrangements_worse_than_minus_2_points']} below −2)"
            for b in m["by_seed"]
        )
        lines += [
            f"**Over the draws** (`odt_bridge.seed`: replay draws, held-back blocks, rounding; "
            f"the table shows seed {first}{', the default' if first == 0 else ''}): {per}. Each "
            "arrangement's gain averaged over the seeds: mean "
            f"{pct(m['seed_mean_gain'], True)}, worst {pct(m['seed_mean_min_gain'], True)}, "
            f"{m['seed_mean_arrangements_worse_than_minus_2_points']} below −2 points. Column "
            "'per seed': the gain with each seed.",
            "",
        ]
    lines += [
        "| # | lap 1 runs | lap 2 runs | windows | before % | after % | gain pts | "
        + ("per seed | " if seeded else "")
        + "classes that lost (pts) | trained | steps | rollbacks | prequential % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if seeded else ""),
    ]
    for r in out["arrangements"]:
        lost = ", ".join(
            f"{c} {-100 * v['forgetting']:.0f}"
            for c, v in r["per_class"].items()
            if v["forgetting"] and v["forgetting"] >= 0.005
        )
        lines.append(
            f"| {r['arrangement']} | {' '.join(s.split(':')[0] for s in r['lap1'])} | "
            f"{' '.join(s.split(':')[0] for s in r['lap2'])} | {r['evaluated_windows']} | "
            f"{pct(r['acc_before'])} | {pct(r['acc_after'])} | {pct(r['gain'], True)} | "
            + (
                " ".join(pct(b["gain"], True) for b in r["by_seed"]) + " | "
                if "by_seed" in r
                else ""
            )
            + f"{lost or '–'} | {r['samples_trained']} | {r['training_steps']} | "
            f"{r['rollbacks']} | {pct(r['prequential_accuracy'])} |"
        )
    lines += [
        "",
        "Prequential accuracy (a labelled lap-1 window predicted just before it trains) is a "
        "diagnostic of the stream being trained on, not a measure of the next runs.",
    ]
    return "\n".join(lines)


def evaluate_once(
    args: argparse.Namespace, d: Path, bag: Path, model: Path, until: float, tag: str, seed: int
) -> dict[str, Any] | None:
    """One `terrain-odt evaluate` of an arrangement's bag with `odt_bridge.seed` = `seed`."""
    summary = d / f"summary{tag}.json"
    cmd = [
        sys.executable, "-m", "terrain_odt.cli", "evaluate", str(bag), "-q",
        "--params-file", str(ROOT / "config" / "terrain_odt.yaml"),
        "-p", f"odt_bridge.model_sidecar:={model.with_suffix('.json')}",
        "-p", f"odt_bridge.model_blob:={model}",
        "-p", f"odt_bridge.seed:={seed}",
        "--operator-until", f"{until:.3f}",
        "--out-dir", str(d / f"evaluate{tag}"), "--summary-json", str(summary),
    ]  # fmt: skip
    if args.features == "imu":
        cmd += ["-p", "imu_features.wheel_joints_left:=[]"]
        cmd += ["-p", "imu_features.wheel_joints_right:=[]"]
    cmd += ["--coprocessor", args.coprocessor]
    for p in args.param:
        cmd += ["-p", p]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        log(f"{d.name}: terrain-odt evaluate failed:\n{res.stdout}\n{res.stderr}")
        return None
    return dict(json.loads(summary.read_text()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arrangements", type=int, default=10)
    ap.add_argument("--root", type=Path, default=None, help="BorealTC directory")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "laps")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NODE.PARAM:=VALUE",
        help="passed on to terrain-odt evaluate (for studies; the committed file uses none)",
    )
    ap.add_argument("--only", type=int, nargs="*", help="run only these arrangements")
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="odt_bridge.seed values (replay draws, held-back blocks, co-processor rounding): "
        "each arrangement is fine-tuned once per seed; the first seed's results are the "
        "arrangement's row, the others give the spread over the draws",
    )
    ap.add_argument("--md", action="store_true", help="also write the docs/RESULTS.md section")
    ap.add_argument(
        "--shift",
        choices=("none", "mount-mild", "mount-severe"),
        default="none",
        help="the robot's IMU is mounted otherwise than the pretraining robot's (rotation, "
        "gain, bias, noise: tools/shifts.py), applied to both laps' IMU; the "
        "models are pretrained on the runs as recorded",
    )
    ap.add_argument(
        "--features",
        choices=("wheels", "imu"),
        default="wheels",
        help="the model kind: IMU + wheels (the default shipped model) or IMU only",
    )
    ap.add_argument("--source-val-frac", type=float, default=SOURCE_VAL_FRAC)
    ap.add_argument(
        "--coprocessor",
        choices=("emulator", "qnn"),
        default="emulator",
        help="passed to terrain-odt evaluate (the committed file: the emulator)",
    )
    ap.add_argument(
        "--tuning",
        action="store_true",
        help="the tuning arrangements instead: lap 2 = the previous run in recording order "
        "(settings are chosen on these, never on the protocol's own arrangements)",
    )
    ap.add_argument("--allow-dirty", action="store_true", help=provenance.ALLOW_DIRTY_HELP)
    args = ap.parse_args(argv)
    # laps.json = the default model kind as recorded; other kinds and shifts get their own file
    # and docs/RESULTS.md section (laps_imu.json, laps_mount-mild.json, laps_imu_mount-mild.json).
    variant = "_".join(
        v
        for v in (
            "imu" if args.features == "imu" else "",
            "" if args.shift == "none" else args.shift,
        )
        if v
    )
    if variant and args.out == DEFAULT_OUT:
        args.out = DEFAULT_OUT.with_name(f"laps_{variant}.json")
    git = provenance.record(
        ROOT, [args.out, RESULTS_MD] if args.md else [args.out], args.allow_dirty
    )
    t_start = time.monotonic()
    runs = borealtc.load_runs(args.root)
    byid = {r.run_id: r for r in runs}
    arrs = arrangements(runs, args.arrangements, -1 if args.tuning else 1)
    bag_runs = byid
    if args.shift != "none":
        from tools.shifts import MOUNTS, mounted_runs

        mount = next(m for m in MOUNTS if m.name == args.shift)
        bag_runs = {r.run_id: r for r in mounted_runs(runs, mount, seed=0)}
    if args.tuning:
        args.work = args.work / "tuning"
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for arr in arrs:
        a = arr["index"]
        if args.only and a not in args.only:
            continue
        held = {run_id(s) for s in arr["lap1"] + arr["lap2"]}
        d = args.work / args.features / f"arrangement_{a:02d}"
        d.mkdir(parents=True, exist_ok=True)
        model = d / "model.odtm"
        meta = d / "pretrain.json"
        # Pretrained models are cached per held-out set and the code that makes them.
        fcfg = FeatureConfig(wheels=args.features == "wheels")
        key = [*sorted(held), recipe_hash(), args.features, args.source_val_frac]
        if not (model.exists() and meta.exists() and json.loads(meta.read_text()) == key):
            src = [r for r in runs if r.run_id not in held]
            log(
                f"arrangement {a}: pretraining on {len(src)} runs "
                f"(held out: {', '.join(sorted(held))})"
            )
            pretrain(src, fcfg, model, 0x0D3E1000 + a, seed=a, source_val_frac=args.source_val_frac)
            meta.write_text(json.dumps(key))
        bag = d / ("laps.mcap" if args.shift == "none" else f"laps_{args.shift}.mcap")
        segs = arr["lap1"] + arr["lap2"]
        stats = bagconv.convert(
            segs, bag, runs={(r.terrain, r.number): r for r in map(bag_runs.get, held) if r},
            overwrite=True, progress=None,
        )  # fmt: skip
        until = stats.segments[len(arr["lap1"])][1] - 0.5
        per_seed: list[dict[str, Any]] = []
        for k, seed in enumerate(args.seeds):
            tag = ("" if args.shift == "none" else f"_{args.shift}") + (f"_seed{seed}" if k else "")
            s_k = evaluate_once(args, d, bag, model, until, tag, seed)
            if s_k is None:
                return 1
            per_seed.append({"seed": seed, **s_k})
        s = per_seed[0]
        rows.append(
            {
                "arrangement": a,
                "lap1": [str(x) for x in arr["lap1"]],
                "lap2": [str(x) for x in arr["lap2"]],
                "pretrained_on_runs": len(runs) - len(held),
                "evaluated_windows": s["evaluated_windows"],
                "acc_before": s["acc_before"],
                "acc_after": s["acc_after"],
                "gain": s["gain"],
                "windows_fixed": s["windows_fixed"],
                "windows_broken": s["windows_broken"],
                "per_class": s["per_class"],
                "samples_trained": s["samples_trained"],
                "samples_held_out": s["samples_held_out"],
                "training_steps": s["training_steps"],
                "checks": s["checks"],
                "rollbacks": s["rollbacks"],
                "prequential_accuracy": s["prequential_accuracy"],
            }
        )
        if len(per_seed) > 1:
            rows[-1]["by_seed"] = [
                {k: r[k] for k in ("seed", "acc_after", "gain", "rollbacks")} for r in per_seed
            ]
        log(
            f"arrangement {a}: {100 * s['acc_before']:.1f} % -> {100 * s['acc_after']:.1f} % "
            f"({100 * s['gain']:+.1f} pts, {s['evaluated_windows']} windows, "
            f"{s['samples_trained']} trained, {s['rollbacks']} rollbacks)"
        )
    gains = [r["gain"] for r in rows]
    out: dict[str, Any] = {
        "tool": "tools/eval_laps.py",
        **git,
        "protocol": {
            "lap1": f"one labelable run per terrain, the {LAP1_S:g} s with the most steady "
            "driving, labelled by the operator (the bag's truth)",
            "lap2": f"the next run in recording order per terrain, its first {LAP2_S:g} s, scored",
            "model": "pretrained on all other runs, recipe of tools/make_models.py, seed = index",
            "features": args.features,
            "shift": args.shift,
            "source_val_frac": args.source_val_frac,
            "evaluation": f"terrain-odt evaluate, {args.coprocessor}, config/terrain_odt.yaml",
            "extra_parameters": args.param,
            "seeds": args.seeds,
            "tuning_arrangements": args.tuning,
        },
        "arrangements": rows,
        "mean": {
            "acc_before": float(np.mean([r["acc_before"] for r in rows])),
            "acc_after": float(np.mean([r["acc_after"] for r in rows])),
            "gain": float(np.mean(gains)),
            "min_gain": float(np.min(gains)),
            "max_gain": float(np.max(gains)),
            "arrangements_worse_than_minus_2_points": int(sum(g < -0.02 for g in gains)),
            **seed_spread(rows),
        },
        "wall_s": round(time.monotonic() - t_start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    if args.md:
        merge_section(f"laps-{variant.replace('_', '-')}" if variant else "laps", markdown(out))
    m = out["mean"]
    log(
        f"mean {100 * m['acc_before']:.1f} % -> {100 * m['acc_after']:.1f} % "
        f"({100 * m['gain']:+.1f} pts; min {100 * m['min_gain']:+.1f}, max "
        f"{100 * m['max_gain']:+.1f}); wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
