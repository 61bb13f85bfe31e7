"""Closed loop in simulation (`make sim`) -> bench/results/sim.json.

The MuJoCo rover drives the world's route (config/sim_world.yaml: five terrain patches, a
stadium route driven twice) and the terrain_odt logic fine-tunes the co-processor's model from
map-region labels, starting from a model pretrained on a drive of the same world under other
settings. Every step is a `terrain-odt` command (run in this process; each is printed):

1. `terrain-odt sim --bag pretrain.mcap --set ...`: the pretraining drive, other settings
   (PRETRAIN_SET: another terrain realisation (seed), 0.6 m/s instead of 1.0, the IMU mounted
   turned by 90° about z).
2. `terrain-odt sim --write-params params.yaml --no-wheels --model pretrained`: the nodes'
   parameters for this world: class names, the patches as map regions in the odom frame, the
   200 Hz IMU decimated to the 100 Hz features (`input_decimation: 2`), IMU-only features,
   the model.
3. `terrain-odt dataset pretrain.mcap` + `terrain-odt convert`: windows labelled from the
   pretraining drive's ground truth, an MLP pretrained, quantized and exported.
4. `terrain-odt sim --bag drive.mcap`: the deployment drive (the world as described), lap
   start times in its summary.
5. `terrain-odt evaluate drive.mcap --params-file params.yaml --evaluate-from L2
   --labels-until L2`: labels from the map regions only (terrain_labeler `regions`, gated on
   steady motion), during lap 1; lap 2 is predicted only and scored window by window, before
   (training off) and after (training on). Also reported: the same with region labels on lap 2
   too (`regions_both_laps`: lap 2 then scores each window before it is trained on), and
   with IMU + wheel features (`imu_and_wheel_features`, 110 inputs, the same co-processor).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from terrain_odt import cli  # noqa: E402
from tools import provenance  # noqa: E402

PRETRAIN_SET = ("seed=2", "route.speed_mps=0.6", "imu.mount_rpy_deg=[0,0,90]")


def run(argv: Sequence[str], quiet: bool) -> str:
    """`terrain-odt ARGV` in this process; its output (printed unless `quiet`)."""
    print("$ terrain-odt " + " ".join(argv), flush=True)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(list(argv))
    out = buf.getvalue()
    if not quiet:
        print(out, end="", flush=True)
    if rc != 0:
        print(out, end="")
        raise SystemExit(f"terrain-odt {argv[0]} failed ({rc})")
    return out


def closed_loop(
    out_dir: Path,
    *,
    world: str = "config/sim_world.yaml",
    world_set: Sequence[str] = (),
    pretrain_set: Sequence[str] = PRETRAIN_SET,
    coprocessor: str = "emulator",
    wheels_variant: bool = True,
    quiet: bool = True,
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    w = ["--world", world, *(x for s in world_set for x in ("--set", s))]
    pre, drive = out_dir / "pretrain.mcap", out_dir / "drive.mcap"
    model, params = out_dir / "pretrained", out_dir / "params.yaml"
    run(
        ["sim", *w, *(x for s in pretrain_set for x in ("--set", s)), "--bag", str(pre), "-f"],
        quiet,
    )
    run(["sim", *w, "--write-params", str(params), "--no-wheels", "--model", str(model)], quiet)
    npz = out_dir / "pretrain.npz"
    run(
        [
            "dataset",
            str(pre),
            "-o",
            str(npz),
            "--params-file",
            str(params),
            "-q",
            "--group-by",
            "stretch",
        ],
        quiet,
    )
    run(["convert", str(npz), "-o", f"{model}.odtm", "--hidden", "64,32", "-q"], quiet)
    run(["sim", *w, "--bag", str(drive), "-f"], quiet)
    drive_sum = json.loads(drive.with_suffix(".sim.json").read_text())
    pre_sum = json.loads(pre.with_suffix(".sim.json").read_text())
    starts = drive_sum["lap_starts_s"]
    if len(starts) < 2:
        raise SystemExit(f"the drive has {len(starts)} lap(s); the closed loop needs two")
    lap2 = float(starts[1])
    results = {}
    for name, extra in (
        ("lap1_labels", ["--labels-until", str(lap2)]),
        ("regions_both_laps", []),
    ):
        summ = out_dir / f"eval_{name}.json"
        run(
            [
                "evaluate",
                str(drive),
                "--params-file",
                str(params),
                "--evaluate-from",
                str(lap2),
                *extra,
                "--coprocessor",
                coprocessor,
                "--out-dir",
                str(out_dir / f"eval_{name}"),
                "--summary-json",
                str(summ),
                "-q",
            ],
            quiet=False,
        )
        results[name] = json.loads(summ.read_text())
    wheels: dict[str, Any] | None = None
    if wheels_variant:
        # IMU + wheel features (110 inputs) on the same co-processor as the IMU-only run.
        wmodel, wparams = out_dir / "pretrained_wheels", out_dir / "params_wheels.yaml"
        run(["sim", *w, "--write-params", str(wparams), "--model", str(wmodel)], quiet)
        wnpz = out_dir / "pretrain_wheels.npz"
        run(
            ["dataset", str(pre), "-o", str(wnpz), "--params-file", str(wparams), "-q",
             "--group-by", "stretch"],
            quiet,
        )  # fmt: skip
        run(["convert", str(wnpz), "-o", f"{wmodel}.odtm", "--hidden", "64,32", "-q"], quiet)
        summ = out_dir / "eval_wheels.json"
        run(
            ["evaluate", str(drive), "--params-file", str(wparams), "--evaluate-from", str(lap2),
             "--labels-until", str(lap2), "--coprocessor", coprocessor, "--out-dir",
             str(out_dir / "eval_wheels"), "--summary-json", str(summ), "-q"],
            quiet=False,
        )  # fmt: skip
        ws = json.loads(summ.read_text())
        wside = json.loads(Path(f"{wmodel}.json").read_text())
        wheels = {
            "acc_before": ws["acc_before"],
            "acc_after": ws["acc_after"],
            "samples_trained": ws["samples_trained"],
            "model_shape": [wside["input_len"], 64, 32, wside["output_len"]],
            "coprocessor": "odt-emu" if coprocessor == "emulator" else "qnn (in-process reference)",
        }
    side = json.loads(Path(f"{model}.json").read_text())
    head = results["lap1_labels"]
    both = results["regions_both_laps"]

    def pts(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(100 * (a - b), 1)

    return {
        "engine": "mujoco",
        "engine_version": drive_sum["engine_version"],
        "acc_before": head["acc_before"],
        "acc_after": head["acc_after"],
        "gain_points": pts(head["acc_after"], head["acc_before"]),
        "samples_trained": head["samples_trained"],
        "sim_speed_x_realtime": drive_sum["sim_speed_x_realtime"],
        "odom_distance_error": drive_sum["odom_distance_error"],
        "odom_distance_m": drive_sum["odom_distance_m"],
        "truth_distance_m": drive_sum["truth_distance_m"],
        "odom_final_position_error_m": drive_sum["odom_final_position_error_m"],
        "evaluated_windows": head["evaluated_windows"],
        "per_class": head["per_class"],
        "labels": "map regions only (terrain_labeler regions, steady-motion gating), lap 1; "
        "lap 2 predicted only and scored",
        "lap2_starts_s": lap2,
        "drive_sim_s": drive_sum["sim_s"],
        "coprocessor": "odt-emu" if coprocessor == "emulator" else "qnn (in-process reference)",
        "model": {
            "shape": [side["input_len"], 64, 32, side["output_len"]],
            "classes": side["classes"]["names"],
            "pretrain_test_accuracy": side["metrics"].get("test", {}).get("int8_acc"),
        },
        "pretraining_drive": {
            "overrides": list(pretrain_set),
            "sim_s": pre_sum["sim_s"],
            "sim_speed_x_realtime": pre_sum["sim_speed_x_realtime"],
            "odom_distance_error": pre_sum["odom_distance_error"],
        },
        "regions_both_laps": {
            "acc_before": both["acc_before"],
            "acc_after": both["acc_after"],
            "samples_trained": both["samples_trained"],
            "note": "region labels on lap 2 too: each lap-2 window is predicted just before "
            "it is trained on (test-then-train)",
        },
        "imu_and_wheel_features": wheels,
        "wall_s": round(time.monotonic() - t0, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", default="config/sim_world.yaml")
    ap.add_argument("--set", action="append", default=[], help="world override (both drives)")
    ap.add_argument("--out-dir", default="build/sim")
    ap.add_argument("--summary", default="bench/results/sim.json")
    ap.add_argument("--coprocessor", choices=("emulator", "qnn"), default="emulator")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--allow-dirty", action="store_true", help=provenance.ALLOW_DIRTY_HELP)
    args = ap.parse_args(argv)
    git = provenance.record(ROOT, [Path(args.summary)], args.allow_dirty)
    res = closed_loop(
        Path(args.out_dir),
        world=args.world,
        world_set=args.set,
        coprocessor=args.coprocessor,
        quiet=not args.verbose,
    )
    out = Path(args.summary)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"tool": "tools/sim_closed_loop.py", **git, **res}, indent=2) + "\n")
    print(
        f"sim closed loop ({res['engine']} {res['engine_version']}, {res['coprocessor']}): "
        f"lap 2 accuracy {100 * res['acc_before']:.1f} % -> {100 * res['acc_after']:.1f} % "
        f"({res['samples_trained']} labelled windows trained), simulated at "
        f"{res['sim_speed_x_realtime']}x real time, odometry distance error "
        f"{100 * res['odom_distance_error']:.2f} %; {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
