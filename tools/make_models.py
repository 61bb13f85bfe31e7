#!/usr/bin/env python3
"""Pretrained models the package ships (`models/`), regenerated from BorealTC by one command.

    python tools/make_models.py [--root ../shared/data/borealtc] [--out models]

Both are MLPs 102-64-32-5 (the firmware's compiled `TerrainMlp`), pretrained in float and
quantized with `terrain_odt.toolbox.convert`, on every BorealTC run **except the ten runs the
demo bag is cut from** (`data/demo/README.md`), so the demo replays data the models never saw:

* `borealtc_mlp.odtm` (+ `.json` sidecar): the IMU as recorded. The starting point for a Husky-
  like robot with the IMU mounted as in BorealTC.
* `demo_mount_shift.odtm` (+ `.json`): the same runs seen through a different IMU mounting
  (`--mount`, default `mount-mild` of `tools/exp_learning.py`: 20° pitch, gain, bias, noise):
  a model trained "on another robot". The demo (`make demo`) starts from it and fine-tunes it
  on the co-processor while replaying the real (unrotated) demo bag.

The held-out accuracy printed (and stored in each sidecar's `metrics`) is on the demo runs, as
recorded; it is the unadapted accuracy the demo starts from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from terrain_odt import borealtc  # noqa: E402
from terrain_odt.bagconv import Segment  # noqa: E402
from terrain_odt.toolbox import convert  # noqa: E402
from tools.exp_learning import MOUNTS, mounted_runs  # noqa: E402

MODEL_IDS = {"borealtc_mlp": 0x0D3E0001, "demo_mount_shift": 0x0D3E0002}


def demo_run_ids() -> set[str]:
    """Run ids (`CLASS/NN`) of the demo bag's segments, from the Makefile's segment list."""
    text = (ROOT / "Makefile").read_text()
    start = text.index("DEMO_BAG_SEGMENTS =")
    block = text[start : text.index("\n\n", start)].replace("\\\n", " ")
    specs = block.split("=", 1)[1].split()
    out = set()
    for spec in specs:
        seg = Segment.parse(spec)
        out.add(f"{seg.terrain}/{seg.number:02d}")
    return out


def log(msg: str) -> None:
    print(f"[make_models] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=None, help="BorealTC directory")
    ap.add_argument("--out", type=Path, default=ROOT / "models")
    ap.add_argument("--mount", default="mount-mild", choices=[m.name for m in MOUNTS])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    runs = borealtc.load_runs(args.root)
    demo = demo_run_ids()
    train_runs = [r for r in runs if r.run_id not in demo]
    test_runs = [r for r in runs if r.run_id in demo]
    if len(test_runs) != len(demo):
        raise SystemExit(f"demo runs missing from the data set: {sorted(demo)}")
    log(f"{len(train_runs)} training runs, {len(test_runs)} demo runs held out")
    test = borealtc.windows_by_run(test_runs)
    mount = next(m for m in MOUNTS if m.name == args.mount)
    for name, source in (
        ("borealtc_mlp", train_runs),
        ("demo_mount_shift", mounted_runs(train_runs, mount, seed=args.seed)),
    ):
        log(f"{name}: features of {len(source)} runs")
        tr = borealtc.windows_by_run(source)
        res = convert(
            tr.features,
            np.asarray(borealtc.CLASSES)[tr.labels],
            x_test=test.features,
            y_test=np.asarray(borealtc.CLASSES)[test.labels],
            out=args.out / f"{name}.odtm",
            seed=args.seed,
            class_names=None,
            model_id=MODEL_IDS[name],
            name="TerrainMlp",
            progress=lambda m, name=name: log(f"{name}: {m}") if "epoch" not in m else None,
        )
        ev = res.report["test"]
        log(
            f"{name}: demo runs (as recorded) float {100 * ev['float_acc']:.1f} %, "
            f"int8 {100 * ev['int8_acc']:.1f} %"
        )
    if mount:
        log(f"demo_mount_shift source mounting: {mount.name}: {mount.describe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
