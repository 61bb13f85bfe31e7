"""`terrain-odt` command line: a small dispatcher, one `cmd_*` function per subcommand.

Add a subcommand by writing `cmd_name(args) -> int` plus an `_add_name(subparsers)` that
registers its arguments, and listing the latter in `_SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------
# bag-from-borealtc


def _add_bag_from_borealtc(sub: argparse._SubParsersAction) -> None:
    from .data.bagconv import DEFAULT_BASE_EPOCH_S, TRACK_WIDTH_M

    p = sub.add_parser(
        "bag-from-borealtc",
        help="convert BorealTC runs into one rosbag2 drive (MCAP)",
        description=(
            "Concatenate BorealTC run segments into one drive and write /imu/data (Imu), "
            "/odom (Odometry, differential drive from wheel speeds) and /terrain/label_truth "
            "(String, 1 Hz). OUT ending in .mcap gives a single file, else a rosbag2 directory."
        ),
    )
    p.add_argument(
        "segments",
        nargs="+",
        metavar="CLASS/NN[:START-END]",
        help="run segments in drive order, seconds from the run's start (e.g. SNOW/06:30-65)",
    )
    p.add_argument("-o", "--out", required=True, help="output .mcap file or bag directory")
    p.add_argument("--root", default=None, help="BorealTC directory (default: see borealtc.py)")
    p.add_argument(
        "--base-epoch",
        type=float,
        default=DEFAULT_BASE_EPOCH_S,
        help="Unix time of drive time 0 (default %(default).0f)",
    )
    p.add_argument(
        "--gap", type=float, default=1.0, help="pause between segments, s (default %(default)s)"
    )
    p.add_argument(
        "--track-width",
        type=float,
        default=TRACK_WIDTH_M,
        help="wheel track for odometry, m (default %(default)s: Husky A200, an assumption)",
    )
    p.add_argument("-f", "--force", action="store_true", help="overwrite OUT")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_bag_from_borealtc)


def cmd_bag_from_borealtc(args: argparse.Namespace) -> int:
    from .data.bagconv import Segment, convert

    try:
        segments = [Segment.parse(s) for s in args.segments]
    except ValueError as exc:
        print(f"terrain-odt bag-from-borealtc: {exc}", file=sys.stderr)
        return 2
    kwargs = {"progress": None} if args.quiet else {}
    convert(
        segments,
        args.out,
        root=args.root,
        base_epoch_s=args.base_epoch,
        gap_s=args.gap,
        track_width_m=args.track_width,
        overwrite=args.force,
        **kwargs,
    )
    return 0


def _add_bag_from_csv(sub: argparse._SubParsersAction) -> None:
    from .data.bagconv import DEFAULT_BASE_EPOCH_S

    p = sub.add_parser(
        "bag-from-csv",
        help="convert your own CSV recordings (any classes, rates, column order) into a bag",
        description=(
            "ROOT holds <CLASS>/imu_<RUN>.csv (time, wx, wy, wz, ax, ay, az; header names the "
            "columns, any order) and optionally <CLASS>/pro_<RUN>.csv (time, curL, curR, velL, "
            "velR: effort and wheel ground speed per side). The segments are laid end to end "
            "into one drive: /imu/data, and with wheel files /odom and /joint_states, plus "
            "/terrain/label_truth (the segment's class). See terrain_odt/data/csvdata.py."
        ),
    )
    p.add_argument("root", help="directory with one folder per class")
    p.add_argument(
        "segments",
        nargs="*",
        metavar="CLASS/RUN[:START-END]",
        help="recordings in drive order, seconds from the recording's start (default: all)",
    )
    p.add_argument("-o", "--out", required=True, help="output .mcap file or bag directory")
    p.add_argument(
        "--columns",
        default="",
        metavar="FIELD=COLUMN,...",
        help="header names for fields the known spellings do not find, e.g. wx=gyro0,time=t_s",
    )
    p.add_argument("--time-scale", type=float, default=1.0, help="time column unit in s")
    p.add_argument(
        "--base-epoch", type=float, default=DEFAULT_BASE_EPOCH_S, help="Unix time of drive time 0"
    )
    p.add_argument("--gap", type=float, default=1.0, help="pause between segments, s")
    p.add_argument("--track-width", type=float, default=0.555, help="wheel track, m (odometry)")
    p.add_argument(
        "--wheel-radius",
        type=float,
        default=0.1651,
        help="wheel radius, m: /joint_states velocity = ground speed / radius (set the same "
        "value as imu_features.wheel_radius_m)",
    )
    p.add_argument("-f", "--force", action="store_true", help="overwrite OUT")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_bag_from_csv)


def cmd_bag_from_csv(args: argparse.Namespace) -> int:
    from .data.bagconv import Segment, convert
    from .data.csvdata import CsvError, list_recordings, load_recording

    root = Path(args.root)
    try:
        cmap: dict[str, str] = {}
        for item in filter(None, (x.strip() for x in args.columns.split(","))):
            k, sep, v = item.partition("=")
            if not sep or not k or not v:
                raise CsvError(f"--columns: {item!r} is not FIELD=COLUMN")
            cmap[k] = v
        specs = args.segments or [f"{c}/{r}" for c, r in list_recordings(root)]
        if not specs:
            raise CsvError(f"{root}: no <CLASS>/imu_<RUN>.csv recordings")
        segments = [Segment.parse(x, classes=None) for x in specs]
        runs = {}
        for x, seg in zip(specs, segments, strict=True):
            key = (seg.terrain, seg.number)
            if key not in runs:
                run = x.strip().split("/", 1)[1].split(":", 1)[0]
                runs[key] = load_recording(root, seg.terrain, run, cmap, args.time_scale)
        convert(
            segments,
            args.out,
            runs=runs,
            classes=None,
            base_epoch_s=args.base_epoch,
            gap_s=args.gap,
            track_width_m=args.track_width,
            wheel_radius_m=args.wheel_radius,
            overwrite=args.force,
            source=f"CSV recordings under {root.name}",
            **({"progress": None} if args.quiet else {}),
        )
    except (CsvError, ValueError, FileExistsError) as exc:
        print(f"terrain-odt bag-from-csv: {exc}", file=sys.stderr)
        return 2
    return 0


def _add_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dataset",
        help="labelled bags -> features .npz (windows, labels, groups) for terrain-odt convert",
        description=(
            "Extract feature windows from bags with the imu_features logic and parameters, "
            "label them from the truth topic or the labeler's cues, and write X, y, groups, "
            "class_names and the feature configuration (see terrain_odt/data/dataset.py)."
        ),
    )
    from .ros.launcher import add_parameter_args

    p.add_argument("bags", nargs="+", metavar="BAG")
    p.add_argument("-o", "--out", required=True, help="output .npz")
    add_parameter_args(p)
    p.add_argument("--labels", choices=("truth", "labeler"), default="truth")
    p.add_argument("--truth-topic", default="/terrain/label_truth")
    p.add_argument("--group-by", choices=("bag", "stretch"), default="bag")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_dataset)


def cmd_dataset(args: argparse.Namespace) -> int:
    from .data.dataset import build_dataset
    from .evaluation.evaluate import EvalConfig, EvalError
    from .ros.launcher import DEFAULT_PARAMS, LaunchError, parse_overrides

    try:
        cfg = EvalConfig(
            bags=tuple(Path(b) for b in args.bags),
            param_files=tuple(Path(f) for f in (args.params_file or [DEFAULT_PARAMS])),
            overrides=parse_overrides(args.param),
            truth_topic=args.truth_topic,
        )
        build_dataset(
            cfg,
            Path(args.out),
            labels=args.labels,
            group_by=args.group_by,
            log=(lambda m: None) if args.quiet else (lambda m: print(f"[dataset] {m}")),
        )
    except (EvalError, LaunchError) as exc:
        print(f"terrain-odt dataset: error: {exc}", file=sys.stderr)
        return 2
    return 0


# ---------------------------------------------------------------------------------------------
# Model toolbox: convert, import-tflite, inspect (terrain_odt.model.toolbox,
# terrain_odt.model.tflite_import)


class _CliError(Exception):
    """A user error: printed as `terrain-odt CMD: message`, exit status 2."""


def _progress(quiet: bool) -> Callable[[str], None] | None:
    """Progress lines for the toolbox: a tqdm bar over pretraining epochs when tqdm is
    installed, plain lines otherwise; None when quiet."""
    if quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return lambda msg: print(msg, flush=True)
    bar: list[Any] = []

    def report(msg: str) -> None:
        if msg.startswith("pretrain epoch "):
            done, total = (int(v) for v in msg.split()[2].split("/"))
            if not bar:
                bar.append(tqdm(total=total, desc="pretrain", unit="epoch", leave=False))
            bar[0].update(done - bar[0].n)
            bar[0].set_postfix_str(msg.split(" ", 3)[3])
            return
        if bar:
            bar[0].close()
            print(f"pretrain: {bar[0].n} epochs, {bar[0].postfix}", flush=True)
            bar.clear()
        print(msg, flush=True)

    return report


def _int_list(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return vals


def _model_id(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer (e.g. 0x1234), got {text!r}"
        ) from None
    if not 0 <= v < 1 << 32:
        raise argparse.ArgumentTypeError("model id must fit in u32")
    return v


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--out", required=True, help="blob path; the sidecar is OUT.json")
    p.add_argument("--model-id", type=_model_id, help="u32 model id (default: CRC-32)")
    p.add_argument("--storage", choices=("i8", "i16"), default="i8", help="firmware weights")
    p.add_argument("--name", default="TerrainModel", help="struct name in the odt_model! text")
    p.add_argument("--batch", type=int, default=1, help="batch size for the RAM estimate")


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="pretrain an MLP on a features .npz, quantize it, write blob + sidecar",
        description=(
            "FEATURES is an .npz with either X_train, y_train, X_test, y_test (a split you "
            "chose) or X, y and optionally groups (e.g. the run of each window: whole groups "
            "are held out per class, never single windows). With X, y and no groups the "
            "accuracy is reported on the training data. Optional: class_names."
        ),
    )
    p.add_argument("features", help="features .npz")
    _export_args(p)
    p.add_argument("--hidden", type=_int_list, default=(64, 32), help="e.g. 64,32 (default)")
    p.add_argument("--seed", type=int, default=0, help="pretraining / split seed")
    p.add_argument("--epochs", type=int, default=200, help="at most this many epochs")
    p.add_argument(
        "--percentile",
        type=float,
        default=None,
        help="calibration percentile for input/hidden ranges (e.g. 99.99; default min/max)",
    )
    p.add_argument("--test-frac", type=float, default=0.25, help="fraction of groups held out")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_convert)


def _load_features(path: str, test_frac: float, seed: int) -> dict[str, Any]:
    import numpy as np

    from .model.toolbox import group_split

    f = Path(path)
    if not f.is_file():
        raise _CliError(f"{f}: no such file")
    try:
        with np.load(f, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise _CliError(f"{f}: not a readable .npz ({exc})") from exc
    names = [str(v) for v in d["class_names"]] if "class_names" in d else None
    if {"X_train", "y_train", "X_test", "y_test"} <= d.keys():
        out = {k: d[k] for k in ("X_train", "y_train", "X_test", "y_test")}
    elif {"X", "y"} <= d.keys():
        x, y = d["X"], d["y"]
        if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
            raise _CliError(f"{f}: X must be (N, F) and y (N,), got {x.shape} and {y.shape}")
        out = {"X_train": x, "y_train": y, "X_test": None, "y_test": None}
        if "groups" in d:
            g = d["groups"]
            if g.shape != y.shape:
                raise _CliError(f"{f}: groups {g.shape} do not match y {y.shape}")
            try:
                tr, te = group_split(g, test_frac, seed, labels=y)
            except ValueError as exc:
                raise _CliError(f"{f}: {exc}") from exc
            out = {"X_train": x[tr], "y_train": y[tr], "X_test": x[te], "y_test": y[te]}
            out["split"] = {"by": "groups", "test_groups": sorted(set(g[te].tolist()))}
    else:
        raise _CliError(f"{f}: needs arrays X, y (and groups) or X_train, y_train, X_test, y_test")
    for a, b in (("X_train", "y_train"), ("X_test", "y_test")):
        if out[a] is not None and (out[a].ndim != 2 or len(out[a]) != len(out[b])):
            raise _CliError(f"{f}: {a} {out[a].shape} and {b} {out[b].shape} do not match")
    out["class_names"] = names
    out["features"] = None
    if "feature_config" in d:
        import json

        try:
            fc = json.loads(str(d["feature_config"]))
            from .signals.features import FeatureConfig

            FeatureConfig.describe_dict(fc)
        except ValueError as exc:
            raise _CliError(f"{f}: feature_config: {exc}") from exc
        if int(fc.get("n_features", -1)) != out["X_train"].shape[1]:
            raise _CliError(
                f"{f}: feature_config describes {fc.get('n_features')} features, X has "
                f"{out['X_train'].shape[1]}"
            )
        out["features"] = fc
    return out


def cmd_convert(args: argparse.Namespace) -> int:
    from .model.toolbox import convert

    try:
        d = _load_features(args.features, args.test_frac, args.seed)
        res = convert(
            d["X_train"],
            d["y_train"],
            x_test=d["X_test"],
            y_test=d["y_test"],
            out=args.out,
            hidden=args.hidden,
            seed=args.seed,
            percentile=args.percentile,
            class_names=d["class_names"],
            model_id=args.model_id,
            storage=args.storage,
            name=args.name,
            batch=args.batch,
            progress=_progress(args.quiet),
            epochs=args.epochs,
            features=d["features"],
        )
    except (_CliError, ValueError) as exc:
        print(f"terrain-odt convert: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"model_id 0x{res.qmodel.meta.model_id:08x}")
    return 0


def _add_import_tflite(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-tflite",
        help="convert an int8 .tflite model to blob + sidecar",
        description="Supported operators: see terrain_odt/model/tflite_import.py.",
    )
    p.add_argument("model", help=".tflite file (int8, full-integer quantized)")
    _export_args(p)
    p.add_argument("--class-names", help="comma-separated names of the outputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary output")
    p.set_defaults(func=cmd_import_tflite)


def cmd_import_tflite(args: argparse.Namespace) -> int:
    from .model.tflite_import import TFLiteImportError, read_tflite
    from .model.toolbox import export

    try:
        r = read_tflite(args.model, model_id=args.model_id, storage=args.storage)
        names = args.class_names.split(",") if args.class_names else None
        extra = {
            "source": {
                "tflite": str(args.model),
                "float_input": r.float_input,
                "operators": r.ops,
                "notes": r.notes,
            }
        }
        blob, side = export(
            r.qmodel, args.out, class_names=names, name=args.name, batch=args.batch, extra=extra
        )
    except (TFLiteImportError, ValueError) as exc:
        print(f"terrain-odt import-tflite: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        kinds = ", ".join(f"{o['index']}:{o['op']}" for o in r.ops)
        print(f"imported {len(r.ops)} operators ({kinds}) -> {len(r.qmodel.layers)} layers")
        print(f"wrote {blob} and {side}")
    return 0


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect", help="print a blob's architecture, quantization and memory estimate"
    )
    p.add_argument("blob", help="model blob")
    p.add_argument("--batch", type=int, default=1, help="batch size for the RAM estimate")
    p.add_argument("--storage", choices=("i8", "i16"), default="i8", help="firmware weights")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    from .model.blob import BlobError, error_name
    from .model.toolbox import describe_blob

    f = Path(args.blob)
    try:
        if not f.is_file():
            raise _CliError(f"{f}: no such file")
        text = describe_blob(f.read_bytes(), batch=args.batch, storage=args.storage)
    except BlobError as exc:
        print(f"terrain-odt inspect: {f}: {error_name(exc)}: {exc}", file=sys.stderr)
        return 2
    except _CliError as exc:
        print(f"terrain-odt inspect: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


def _add_launch(sub: argparse._SubParsersAction) -> None:
    from .ros.launcher import build_parser as launch_parser

    p = sub.add_parser(
        "launch",
        help="run the ROS graph (imu_features, terrain_labeler, odt_bridge) in one process",
        description="Run the graph of robot.launch.py in one process (no ros2 launch needed).",
    )
    launch_parser(p)
    p.set_defaults(func=cmd_launch)


def cmd_launch(args: argparse.Namespace) -> int:
    from .ros.launcher import run

    return run(args)


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="evaluate: play a rosbag2 through the nodes with /clock, write a report",
        description=(
            "Play a rosbag2 (mcap or sqlite3) through the real nodes at --rate x real time, "
            "with the co-processor emulator (default) or a real device (--serial-port), and "
            "report accuracy before (training off) and after (training on) on-device "
            "fine-tuning, prequential accuracy, confusion matrices and link statistics."
        ),
    )
    from .ros.launcher import add_parameter_args

    p.add_argument("bag", help="rosbag2 directory or .mcap/.db3 file")
    add_parameter_args(p)
    p.add_argument("--rate", type=float, default=20.0, help="times real time (default 20)")
    p.add_argument(
        "--serial-port",
        help="use this co-processor (device or socket:// URL) instead of the emulator",
    )
    p.add_argument("--baud", type=int, default=921600, help="emulated UART speed")
    p.add_argument(
        "--operator-until",
        type=float,
        default=None,
        metavar="S",
        help="act as the operator: publish the bag's truth on /terrain/operator_label for the "
        "first S seconds; accuracy is evaluated after S",
    )
    p.add_argument("--truth-topic", default="/terrain/label_truth", help="ground truth topic")
    p.add_argument("--no-before", action="store_true", help="skip the training-off (before) pass")
    p.add_argument("--out-dir", default="build/replay", help="report JSON and PNG plots")
    p.add_argument("--summary-json", help="also write the headline numbers here")
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    import json

    from .evaluation.replay import ReplayConfig, ReplayError, replay, summary
    from .ros.launcher import DEFAULT_PARAMS, LaunchError, parse_overrides

    try:
        cfg = ReplayConfig(
            bag=Path(args.bag),
            param_files=tuple(Path(f) for f in (args.params_file or [DEFAULT_PARAMS])),
            overrides=parse_overrides(args.param),
            rate=args.rate,
            serial_port=args.serial_port,
            emulator_baud=args.baud,
            truth_topic=args.truth_topic,
            operator_until=args.operator_until,
            compare_frozen=not args.no_before,
        )
        out = Path(args.out_dir)
        rep = replay(cfg, out_dir=out, log=lambda m: print(f"[replay] {m}", flush=True))
    except (ReplayError, LaunchError) as exc:
        print(f"terrain-odt replay: error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rep, indent=1) + "\n")
    head = summary(rep)
    if args.summary_json:
        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary_json).write_text(json.dumps(head, indent=2) + "\n")

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f} %"

    print(f"accuracy before fine-tuning: {pct(head['acc_before'])}")
    print(f"accuracy after fine-tuning:  {pct(head['acc_after'])}")
    print(
        f"samples trained on the co-processor: {head['samples_trained']}, replay speed "
        f"{head['replay_speed']}x real time; report: {out / 'report.json'}"
    )
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="deterministic evaluation: bags through the nodes' logic in bag order, no DDS",
        description=(
            "Feed rosbag2 files (mcap or sqlite3, played back to back as one session) through "
            "the logic of imu_features, terrain_labeler and odt_bridge in bag order, without "
            "DDS, against a fresh co-processor emulator per pass (or a device, reset to its "
            "pretrained model per pass), and score the windows of the evaluated part before "
            "(training off) and after (training on) on-device fine-tuning, window by window. "
            "The same bags and parameters give identical reports on any machine."
        ),
    )
    from .ros.launcher import add_parameter_args

    p.add_argument("bags", nargs="+", metavar="BAG", help="rosbag2 directory or .mcap/.db3 file")
    add_parameter_args(p)
    p.add_argument(
        "--operator-until",
        type=float,
        default=None,
        metavar="S",
        help="act as the operator: the truth is the operator cue for the first S seconds of "
        "the playback; the windows starting after S are evaluated (default: no operator, "
        "every window evaluated)",
    )
    p.add_argument(
        "--evaluate-from",
        type=float,
        default=None,
        metavar="S",
        help="evaluate the windows starting S seconds or more into the playback (default: "
        "--operator-until, or every window); for labels from map regions or other cues that "
        "need no operator",
    )
    p.add_argument(
        "--labels-until",
        type=float,
        default=None,
        metavar="S",
        help="the bridge gets no label from S seconds into the playback on (every cue "
        "ignored): that part is predicted only (default: labels throughout)",
    )
    p.add_argument("--truth-topic", default="/terrain/label_truth", help="ground truth topic")
    p.add_argument(
        "--serial-port",
        help="evaluate on this co-processor (device or socket:// URL) instead of the emulator; "
        "its model is reset to the pretrained one before each pass",
    )
    p.add_argument(
        "--emulator-baud",
        type=int,
        default=0,
        help="emulated UART speed (default 0: unthrottled; results do not depend on it)",
    )
    p.add_argument("--no-before", action="store_true", help="skip the training-off (before) pass")
    p.add_argument(
        "--coprocessor",
        choices=("emulator", "qnn"),
        default="emulator",
        help="emulator: odt-emu (or --serial-port); qnn: the bit-exact reference in-process "
        "(faster, for experiments; checked against the emulator by the tests)",
    )
    p.add_argument(
        "--sequential",
        action="store_true",
        help="run the passes one after the other after the front end, in this process "
        "(default: each pass in a process of its own, fed as the front end goes; the same "
        "report, in less time; always sequential with --serial-port)",
    )
    p.add_argument("--out-dir", default="build/evaluate", help="report, windows, plots")
    p.add_argument("--summary-json", help="also write the headline numbers here")
    p.add_argument("-q", "--quiet", action="store_true", help="only the result lines")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .evaluation.evaluate import EvalConfig, EvalError, EvalInterrupted, evaluate, summary
    from .ros.launcher import DEFAULT_PARAMS, LaunchError, parse_overrides

    try:
        cfg = EvalConfig(
            bags=tuple(Path(b) for b in args.bags),
            param_files=tuple(Path(f) for f in (args.params_file or [DEFAULT_PARAMS])),
            overrides=parse_overrides(args.param),
            serial_port=args.serial_port,
            emulator_baud=args.emulator_baud,
            truth_topic=args.truth_topic,
            operator_until=args.operator_until,
            evaluate_from=args.evaluate_from,
            labels_until=args.labels_until,
            compare_frozen=not args.no_before,
            coprocessor=args.coprocessor,
            parallel=not args.sequential,
        )
        out = Path(args.out_dir)
        log = (lambda m: None) if args.quiet else (lambda m: print(f"[evaluate] {m}", flush=True))
        rep, run = evaluate(cfg, out_dir=out, log=log)
    except EvalInterrupted:  # Ctrl-C: the passes and their emulators are closed
        print("terrain-odt evaluate: interrupted", file=sys.stderr)
        return 130
    except (EvalError, LaunchError) as exc:
        print(f"terrain-odt evaluate: error: {exc}", file=sys.stderr)
        return 2
    head = summary(rep, run)
    if args.summary_json:
        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary_json).write_text(json.dumps(head, indent=2) + "\n")

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f} %"

    n = head["evaluated_windows"]
    print(f"accuracy before fine-tuning: {pct(head['acc_before'])} ({n} evaluated windows)")
    print(f"accuracy after fine-tuning:  {pct(head['acc_after'])} (the same windows)")
    print(
        f"labelled windows trained: {head['samples_trained']} ({head['training_steps']} "
        f"training steps with replays, {head['rollbacks']} rollbacks); prequential accuracy "
        f"on the trained stream {pct(head['prequential_accuracy'])} (a diagnostic)"
    )
    print(f"{head['speed_x_realtime']}x real time; report: {out / 'report.json'}")
    return 0


# ---------------------------------------------------------------------------------------------
# sim (terrain_odt.sim): MuJoCo drive to a bag or live on ROS; Gazebo export


def _add_sim(sub: argparse._SubParsersAction) -> None:
    from .sim.world import DEFAULT_WORLD

    p = sub.add_parser(
        "sim",
        help="simulate the terrain world (MuJoCo): a bag, a live ROS node, or a Gazebo export",
        description=(
            "Simulate a 4-wheel skid-steer rover driving the world's route over terrain patches "
            "(terrain_odt/sim/world.py describes the world file). With --bag: write the drive "
            "to a rosbag2 (/imu/data, /odom, /joint_states, /cmd_vel, /terrain/label_truth) as "
            "fast as it simulates, deterministically. With --export-gazebo DIR: write the gz "
            "sim world and robot SDF, the ros_gz_bridge configuration and the nodes' parameters "
            "for the same world. With --write-params FILE: only the nodes' parameters. With "
            "none of these: a ROS node publishing /imu/data, /odom, /joint_states and /clock, "
            "following /cmd_vel (over the route while /cmd_vel is recent)."
        ),
    )
    p.add_argument("--world", default=DEFAULT_WORLD, help="world file (default %(default)s)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a world field (YAML value), e.g. route.speed_mps=0.6 or "
        "imu.mount_rpy_deg=[0,0,90] (repeatable)",
    )
    p.add_argument("--bag", metavar="OUT", help="offline: write the drive to this .mcap / bag dir")
    p.add_argument("--duration", type=float, default=None, help="stop after S simulated seconds")
    p.add_argument("--record-clock", action="store_true", help="also record /clock in the bag")
    p.add_argument(
        "--summary-json",
        help="drive summary (odometry check, lap times, speed); default: OUT with .sim.json",
    )
    p.add_argument("--export-gazebo", metavar="DIR", help="write the Gazebo files to DIR")
    p.add_argument("--write-params", metavar="FILE", help="write the nodes' parameter file")
    p.add_argument(
        "--model",
        default=None,
        help="with --write-params / --export-gazebo: the model (blob path without .odtm)",
    )
    p.add_argument(
        "--no-wheels",
        action="store_true",
        help="with --write-params / --export-gazebo: IMU-only features (no wheel joints)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=1.0,
        help="live: times real time (default 1; 0 = as fast as it simulates)",
    )
    p.add_argument(
        "--drive",
        choices=("route", "cmd_vel"),
        default="route",
        help="live: follow the route unless /cmd_vel is recent (default), or /cmd_vel only",
    )
    p.add_argument("-f", "--force", action="store_true", help="overwrite OUT")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_sim)


def cmd_sim(args: argparse.Namespace) -> int:
    import json

    import yaml

    from .sim.world import WorldError, load_world

    try:
        world = load_world(args.world, args.set)
        done = False
        if args.write_params:
            f = Path(args.write_params)
            f.parent.mkdir(parents=True, exist_ok=True)
            params = world.node_params(wheels=not args.no_wheels, model=args.model)
            f.write_text(
                f"# terrain_odt parameters for the simulated world '{world.name}' "
                "(terrain-odt sim --write-params)\n" + yaml.safe_dump(params, sort_keys=False)
            )
            done = True
        if args.export_gazebo:
            from .sim.gazebo import export_gazebo

            files = export_gazebo(
                world, Path(args.export_gazebo), wheels=not args.no_wheels, model=args.model
            )
            if not args.quiet:
                for x in files:
                    print(f"wrote {x}")
            done = True
        if args.bag:
            from .sim.record import record_drive

            summary = record_drive(
                world,
                args.bag,
                duration_s=args.duration,
                record_clock=args.record_clock,
                overwrite=args.force,
                progress=None if args.quiet else (lambda m: print(f"[sim] {m}", flush=True)),
            )
            out = Path(args.summary_json or Path(args.bag).with_suffix(".sim.json"))
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(summary, indent=1) + "\n")
            done = True
        if done:
            return 0
    except (WorldError, FileExistsError, ValueError) as exc:
        print(f"terrain-odt sim: {exc}", file=sys.stderr)
        return 2
    from .nodes.sim_node import run_live

    return run_live(world, rate=args.rate, drive=args.drive, duration_s=args.duration)


# ---------------------------------------------------------------------------------------------

_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_bag_from_borealtc,
    _add_bag_from_csv,
    _add_convert,
    _add_dataset,
    _add_evaluate,
    _add_import_tflite,
    _add_inspect,
    _add_launch,
    _add_replay,
    _add_sim,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="terrain-odt", description="terrain_odt tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
