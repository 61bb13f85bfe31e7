"""Replay evaluation: a rosbag2 through the real nodes, with `/clock`, at N times real time.

    terrain-odt replay data/demo/borealtc_demo.mcap --emulator --operator-until 180

One *pass* = a fresh graph (the three nodes of `terrain_odt.ros.graph`, as the one-process launcher
starts them, `use_sim_time` on) + a co-processor (a fresh `odt-emu` with the model's pretrained
blob, or a real device) + a player that publishes the bag's messages as recorded (raw CDR) and
`/clock`, paced to `rate` × real time, + a recorder of what the graph publishes.

Evaluation needs ground truth: a `std_msgs/String` topic with the terrain in force
(`/terrain/label_truth` in the bags `terrain-odt bag-from-borealtc` writes). Optionally the player
also acts as the operator: it republishes the truth on `/terrain/operator_label` until
`operator_until` seconds into the bag and clears it then, so the robot is told the terrain for
the first part of the drive and predicts the rest on its own.

Two passes make the report: **before** (training off: the pretrained model; with
`compare_frozen`) and **after** (training on). Scoring is window by window, as in the
deterministic `terrain-odt evaluate` (`terrain_odt.evaluation.scoring`): every answer arrives on
`/terrain/prediction_window` with its window's stamps, the windows the bag should produce are
computed offline by the same feature logic, truth is taken over each window's span, and before
and after are scored on exactly the windows answered in both passes; the report says how many
windows each pass left unanswered (lost or late under load). This replay is the integration
path (real nodes, DDS, timing); `evaluate` is the measurement. Outputs: a JSON report and PNG
plots (prequential accuracy over time, confusion matrices before and after).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.bagplay import (
    OPERATOR_TOPIC,
    TRUTH_TOPIC,
    BagData,
    BagError,
    BagPlayer,
    read_bag,
    truth_at,
)
from ..ros.graph import ParamValue
from ..ros.launcher import LaunchError
from ..signals.feature_msg import KIND_CODES, PREDICTION_WINDOW_TOPIC, parse_prediction_window
from .scoring import Answer, Window, plot_confusions, prequential, score_passes, window_key

__all__ = [
    "OPERATOR_TOPIC",
    "TRUTH_TOPIC",
    "PassResult",
    "ReplayConfig",
    "ReplayError",
    "replay",
    "run_pass",
    "truth_at",
]

#: `imu_features.imu_poll_hz` during replays, unless the parameters set one.
REPLAY_POLL_HZ = 500.0


class ReplayError(RuntimeError):
    """The replay could not run (bad bag, missing topics, no co-processor); says why."""


@dataclass(frozen=True)
class ReplayConfig:
    bag: Path
    param_files: tuple[Path, ...]
    overrides: Mapping[str, Mapping[str, ParamValue]] = field(default_factory=dict)
    rate: float = 20.0
    #: `None`: start `odt-emu` with the model blob; else a device or URL for the bridge.
    serial_port: str | None = None
    emulator_baud: int = 921600
    truth_topic: str = TRUTH_TOPIC
    #: Publish the truth as operator labels until this many seconds into the bag (None: never).
    operator_until: float | None = None
    compare_frozen: bool = True
    #: Give up waiting for the graph to finish after the bag ended (s).
    drain_timeout: float = 30.0
    #: `/clock` messages per second of wall time (`ros2 bag play --clock` uses 40). Every node
    #: runs a callback per /clock message, so publishing one per IMU sample would cost more than
    #: the IMU itself. The clock is also published right before every operator label.
    clock_rate_hz: float = 100.0
    domain_id: int | None = None
    #: Executor of the graph process (`terrain-odt launch --executor`).
    executor: str = "per-node"


@dataclass
class PassResult:
    """What one pass recorded."""

    name: str
    training: bool
    wall_s: float
    bag_s: float
    #: (sim time, predicted class, truth class or None)
    predictions: list[tuple[float, str, str | None]]
    #: Answers by window id (from /terrain/prediction_window).
    answers: dict[int, Answer]
    #: (sim time, prequential accuracy)
    accuracy: list[tuple[float, float]]
    messages_published: dict[str, int]
    imu_received: int
    bridge: dict[str, Any]
    features: dict[str, Any]
    graph_process: dict[str, Any] = field(default_factory=dict)
    #: Wall time from the last message played until the graph went quiet (s).
    drain_s: float = 0.0

    @property
    def speed(self) -> float:
        return self.bag_s / self.wall_s if self.wall_s > 0 else math.nan


# ---------------------------------------------------------------------------------------------
# Bag access: terrain_odt.data.bagplay (the player is shared with the bag_player node)


def _read_bag(bag: Path, truth_topic: str) -> BagData:
    try:
        return read_bag(bag, truth_topic)
    except BagError as exc:
        raise ReplayError(str(exc)) from exc


# ---------------------------------------------------------------------------------------------
# One pass


def _progress(total: float, desc: str) -> Any:
    try:
        from tqdm import tqdm

        return tqdm(
            total=round(total, 1),
            desc=desc,
            unit="s",
            unit_scale=False,
            bar_format=(
                "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of bag "
                "[{elapsed}<{remaining}]"
            ),
            file=sys.stderr,
            disable=not sys.stderr.isatty() and os.environ.get("TERRAIN_ODT_PROGRESS") != "1",
        )
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None


def _graph_command(
    cfg: ReplayConfig, overrides: Mapping[str, Mapping[str, Any]], stats_out: Path
) -> list[str]:
    cmd = [sys.executable, "-m", "terrain_odt.ros.launcher", "--use-sim-time"]
    cmd += ["--executor", cfg.executor]
    for f in cfg.param_files:
        cmd += ["--params-file", str(f)]
    for node, params in overrides.items():
        for k, v in params.items():
            cmd += ["-p", f"{node}.{k}:={json.dumps(v)}"]
    return [*cmd, "--stats-out", str(stats_out)]


class _GraphProcess:
    """The graph under test, started by the one-process launcher in a child process (its own
    interpreter and GIL: the player must not slow the nodes down)."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Callable[[str], None]) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.log = log
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            del self.lines[:-400]
            if "[launcher] ready" in line:
                self.ready.set()

    def tail(self, n: int = 25) -> str:
        return "\n".join(self.lines[-n:])

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def run_pass(
    cfg: ReplayConfig,
    name: str,
    training: bool,
    bag_data: BagData,
    log: Callable[[str], None],
) -> PassResult:
    """Play the bag once through a fresh graph (child process) and co-processor."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions
    from std_msgs.msg import Float32, Float64MultiArray, String

    from ..link.emulator import Emulator, EmulatorError, find_emulator
    from ..paths import resolve
    from ..ros.launcher import param_value, resolve_param_files

    truth = bag_data.truth
    files = resolve_param_files(cfg.param_files)
    overrides: dict[str, dict[str, Any]] = {k: dict(v) for k, v in cfg.overrides.items()}
    feat_ov = overrides.setdefault("imu_features", {})
    if not param_value(files, overrides, "imu_features", "imu_poll_hz"):
        # At 20x a callback per IMU message costs rclpy more than the nodes' own work and the
        # stream overflows: replays always poll.
        feat_ov["imu_poll_hz"] = REPLAY_POLL_HZ
    # A queue of 2 s of bag time at the replay rate rides out a busy machine.
    depth = int(param_value(files, overrides, "imu_features", "qos_depth"))
    feat_ov["qos_depth"] = max(depth, int(2 * 100 * cfg.rate))
    bridge_ov = overrides.setdefault("odt_bridge", {})
    bridge_ov["training_enabled"] = training
    bridge_ov["save_on_shutdown"] = False
    bridge_ov["autosave_period_s"] = 0.0
    env = dict(os.environ)
    if cfg.domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(cfg.domain_id)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    with contextlib.ExitStack() as stack:
        if cfg.serial_port is None:
            binary = find_emulator(build=True, log=log)
            if binary is None:
                raise ReplayError("odt-emu not found and cannot be built (is cargo installed?)")
            blob = param_value(files, overrides, "odt_bridge", "model_blob")
            if not blob:
                raise ReplayError("the emulator needs odt_bridge.model_blob (the pretrained model)")
            try:
                emu = stack.enter_context(
                    Emulator(binary, baud=cfg.emulator_baud, model=resolve(str(blob)))
                )
            except EmulatorError as exc:
                raise ReplayError(str(exc)) from exc
            bridge_ov["serial_port"] = emu.url
            bridge_ov["baud_rate"] = cfg.emulator_baud
        else:
            bridge_ov["serial_port"] = cfg.serial_port
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="terrain-odt-")))
        stats_path = tmp / "stats.json"
        graph = _GraphProcess(_graph_command(cfg, overrides, stats_path), env, log)
        stack.callback(graph.stop)

        context = rclpy.Context()
        rclpy.init(
            context=context,
            domain_id=cfg.domain_id,
            signal_handler_options=SignalHandlerOptions.NO,
        )
        stack.callback(lambda: context.ok() and rclpy.shutdown(context=context))
        player = Node("terrain_odt_player", context=context)
        stack.callback(player.destroy_node)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(player)
        spin = threading.Thread(target=_spin_quietly, args=(executor,), daemon=True)
        spin.start()
        stack.callback(executor.shutdown)

        bag_player = BagPlayer(
            player,
            bag_data,
            rate=cfg.rate,
            clock_rate_hz=cfg.clock_rate_hz,
            truth_topic=cfg.truth_topic,
            operator_until_s=cfg.operator_until,
            log=log,
        )
        pubs = bag_player.pubs
        op_pubs = [] if bag_player.operator_pub is None else [bag_player.operator_pub]
        preds: list[tuple[float, str, str | None]] = []
        accs: list[tuple[float, float]] = []
        last_msg = [time.monotonic()]
        lock = threading.Lock()
        sim_now = [0]  # the /clock value last published (ns): exact, unlike a clock subscription

        def on_pred(m: String) -> None:
            t = sim_now[0] * 1e-9
            with lock:
                preds.append((t, m.data, truth_at(truth, sim_now[0])))
                last_msg[0] = time.monotonic()

        kinds = {v: k for k, v in KIND_CODES.items()}
        answers: dict[int, Answer] = {}
        names: list[str] = []

        def on_window(m: Float64MultiArray) -> None:
            try:
                f = parse_prediction_window(m)
            except ValueError:
                return
            ci, li = int(f["class_index"]), int(f["label_index"])
            conf = f["confidence"]
            with lock:
                answers[window_key(f["t_end"])] = Answer(
                    f["t_start"],
                    f["t_end"],
                    kinds.get(f["kind"], "?"),
                    names[ci] if 0 <= ci < len(names) else None,
                    names[li] if 0 <= li < len(names) else None,
                    None if math.isnan(conf) else conf,
                )

        def on_acc(m: Float32) -> None:
            with lock:
                accs.append((sim_now[0] * 1e-9, float(m.data)))

        player.create_subscription(String, "/terrain/prediction", on_pred, 1000)
        player.create_subscription(Float32, "/terrain/accuracy", on_acc, 1000)
        player.create_subscription(Float64MultiArray, PREDICTION_WINDOW_TOPIC, on_window, 1000)
        names.extend(_model_classes(files, overrides))

        # Wait until the graph is up, connected, and listens to what we play.
        deadline = time.monotonic() + 60.0
        while not graph.ready.wait(0.05):
            if graph.proc.poll() is not None or time.monotonic() > deadline:
                raise ReplayError(
                    "the graph did not start (no co-processor session?):\n" + graph.tail()
                )
        wanted = [p for t, p in pubs.items() if t in ("/imu/data", "/odom")] + op_pubs
        deadline = time.monotonic() + 20.0
        while any(p.get_subscription_count() == 0 for p in wanted):
            if time.monotonic() > deadline:
                raise ReplayError("the graph did not subscribe to /imu/data and /odom in 20 s")
            time.sleep(0.02)
        sub_pred = [s for s in player.subscriptions if s.topic_name == "/terrain/prediction"]
        while sub_pred and sub_pred[0].get_publisher_count() == 0:
            if time.monotonic() > deadline:
                raise ReplayError("the graph does not publish /terrain/prediction")
            time.sleep(0.02)

        bag_s = bag_data.duration_s
        bar = _progress(bag_s, f"{name} pass")

        def on_clock(t_ns: int) -> None:
            sim_now[0] = t_ns

        def on_progress(t_s: float) -> None:
            if bar is not None:
                bar.n = round(t_s, 1)
                bar.refresh()

        played = bag_player.play(on_clock=on_clock, on_progress=on_progress)
        played_at = time.monotonic()
        counts = played.counts
        play_wall = played.wall_s
        if bar is not None:
            bar.n = round(bag_s, 1)
            bar.close()
        # Let the last windows through: advance the clock a little, wait until the answers stop.
        bag_player.tick_past_end(on_clock)
        deadline = time.monotonic() + cfg.drain_timeout
        while time.monotonic() < deadline:
            with lock:
                quiet = time.monotonic() - last_msg[0]
            if quiet > 1.0:
                break
            time.sleep(0.05)
        drain_wall = time.monotonic() - played_at
        rc = graph.stop()
        time.sleep(0.3)  # answers flushed while the bridge closed
        if rc != 0 or not stats_path.exists():
            raise ReplayError(f"the graph exited with status {rc}:\n" + graph.tail())
        stats = json.loads(stats_path.read_text())
        with lock:
            result = PassResult(
                name=name,
                training=training,
                wall_s=play_wall,
                bag_s=bag_s,
                drain_s=drain_wall,
                predictions=list(preds),
                answers=dict(answers),
                accuracy=list(accs),
                messages_published=counts,
                imu_received=int(stats.get("imu_features", {}).get("samples", 0)),
                bridge=stats.get("odt_bridge", {}),
                features=stats.get("imu_features", {}),
                graph_process=stats.get("process", {}),
            )
    return result


def _spin_quietly(executor: Any) -> None:
    with contextlib.suppress(Exception):
        executor.spin()


# ---------------------------------------------------------------------------------------------
# Report


def _running(
    rows: Sequence[tuple[float, str, str | None]], width: int = 40
) -> list[tuple[float, float]]:
    """Accuracy of the last `width` predictions with a truth, over time."""
    out, hits = [], []
    for t, pred, tr in rows:
        if tr is None:
            continue
        hits.append(pred == tr)
        hits = hits[-width:]
        out.append((t, sum(hits) / len(hits)))
    return out


def _model_classes(files: Sequence[Path], overrides: Mapping[str, Mapping[str, Any]]) -> list[str]:
    from ..paths import resolve
    from ..pipeline.bridge import ModelFileError, load_model_files
    from ..ros.launcher import param_value

    side = param_value(files, overrides, "odt_bridge", "model_sidecar")
    try:
        return list(load_model_files(resolve(str(side))).class_names)
    except ModelFileError as exc:
        raise ReplayError(f"odt_bridge.model_sidecar: {exc}") from exc


def expected_windows(cfg: ReplayConfig) -> list[Window]:
    """The windows the bag produces, with truth over each, by the feature logic the node runs
    (`terrain_odt.evaluation.evaluate`'s front end): what each pass should answer."""
    from .evaluate import EvalConfig, EvalError, front_end

    ecfg = EvalConfig(
        bags=(cfg.bag,),
        param_files=cfg.param_files,
        overrides=cfg.overrides,
        truth_topic=cfg.truth_topic,
        operator_until=cfg.operator_until,
    )
    try:
        return front_end(ecfg, log=lambda _m: None).windows
    except EvalError as exc:
        raise ReplayError(str(exc)) from exc


def report(
    cfg: ReplayConfig,
    passes: Sequence[PassResult],
    classes: Sequence[str],
    t0_s: float,
    windows: Sequence[Window],
) -> dict[str, Any]:
    scores = score_passes(windows, {p.name: p.answers for p in passes}, classes)
    scores.pop("rows")
    out: dict[str, Any] = {
        "bag": str(cfg.bag),
        "rate": cfg.rate,
        "operator_until_s": cfg.operator_until,
        "evaluated_from_s": cfg.operator_until or 0.0,
        "classes": list(classes),
        # Windows of the evaluated part, and how many each pass left unanswered (unmatched).
        "windows": scores["counts"],
        "evaluated": {k: v for k, v in scores.items() if k not in ("counts", "classes")},
        "passes": {},
    }
    for p in passes:
        ev = scores["passes"][p.name]
        lost = p.messages_published.get("/imu/data", 0) - p.imu_received
        out["passes"][p.name] = {
            "training": p.training,
            "accuracy_eval": ev["accuracy"],
            "windows_eval": scores["counts"]["evaluated"],
            "windows_unmatched": scores["counts"]["unanswered"][p.name],
            "predictions_total": len(p.predictions),
            "windows_answered": len(p.answers),
            "confusion_eval": ev["confusion"],
            "wall_s": round(p.wall_s, 3),
            "drain_s": round(p.drain_s, 3),
            "bag_s": round(p.bag_s, 3),
            "replay_speed": round(p.speed, 2),
            "messages_published": p.messages_published,
            "imu_received": p.imu_received,
            "imu_lost": lost,
            # On the labelled stream being trained on: a diagnostic, not the headline.
            **prequential(p.answers),
            "prequential_accuracy_final": p.accuracy[-1][1] if p.accuracy else None,
            "samples": p.bridge.get("counters", {}),
            "link": p.bridge.get("link", {}),
            "trainer": p.bridge.get("trainer", {}),
            "finetune": p.bridge.get("finetune", {}),
            "features": p.features,
            "graph_process": p.graph_process,
        }
    return out


def plots(
    passes: Sequence[PassResult], rep: dict[str, Any], out_dir: Path, t0_s: float
) -> list[Path]:
    """PNG plots: accuracy over time (both passes), confusion matrices. Needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(9, 4))
    for p in passes:
        run = _running(p.predictions)
        if run:
            t = np.array([r[0] for r in run]) - t0_s
            ax.plot(t, 100 * np.array([r[1] for r in run]), label=f"{p.name}: last 40 predictions")
        if p.accuracy:
            t = np.array([a[0] for a in p.accuracy]) - t0_s
            ax.plot(
                t,
                100 * np.array([a[1] for a in p.accuracy]),
                "--",
                alpha=0.7,
                label=f"{p.name}: prequential (/terrain/accuracy)",
            )
    if rep.get("operator_until_s") is not None:
        ax.axvline(rep["operator_until_s"], color="k", lw=0.8)
        ax.text(rep["operator_until_s"], 2, " operator labels end", fontsize=8)
    ax.set_xlabel("bag time (s)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("terrain prediction accuracy during the replay")
    fig.tight_layout()
    paths.append(out_dir / "replay_accuracy.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    paths.append(out_dir / "replay_confusion.png")
    plot_confusions(
        plt,
        paths[-1],
        rep["classes"],
        [(name, pr["confusion_eval"], pr["accuracy_eval"]) for name, pr in rep["passes"].items()],
    )
    return paths


def replay(
    cfg: ReplayConfig, out_dir: Path | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the passes and build the report (and plots under `out_dir`)."""
    if not cfg.rate > 0:
        raise ReplayError(f"rate must be > 0, got {cfg.rate}")
    data = _read_bag(cfg.bag, cfg.truth_topic)
    msgs, types, truth = data.messages, data.types, data.truth
    if not truth:
        raise ReplayError(
            f"bag {cfg.bag} has no {cfg.truth_topic} (std_msgs/String ground truth): nothing "
            "to evaluate against"
        )
    if "/imu/data" not in types:
        raise ReplayError(f"bag {cfg.bag} has no /imu/data")
    t0_s = msgs[0].t_ns * 1e-9
    log(
        f"bag {cfg.bag}: {len(msgs)} messages, {(msgs[-1].t_ns - msgs[0].t_ns) * 1e-9:.1f} s, "
        f"topics {', '.join(sorted(types))}"
    )
    windows = expected_windows(cfg)
    passes: list[PassResult] = []
    plan = ([("before", False)] if cfg.compare_frozen else []) + [("after", True)]
    for name, training in plan:
        log(f"pass '{name}': training {'on' if training else 'off'}, {cfg.rate:g}x real time")
        try:
            p = run_pass(cfg, name, training, data, log)
        except LaunchError as exc:
            raise ReplayError(str(exc)) from exc
        rep_p = report(cfg, [p], _classes(p), t0_s, windows)["passes"][name]
        acc = rep_p["accuracy_eval"]
        log(
            f"pass '{name}': {len(p.answers)} windows answered ({rep_p['windows_unmatched']} of "
            f"the evaluated part unanswered), accuracy on the evaluated part "
            f"{'n/a' if acc is None else f'{100 * acc:.1f} %'}, "
            f"{rep_p['samples'].get('trained', 0)} labelled windows sent "
            f"({'trained on' if training else 'predicted only, training off'}), "
            f"{p.speed:.1f}x real time, "
            f"{rep_p['imu_lost']} IMU messages lost"
        )
        passes.append(p)
    classes = _classes(passes[-1])
    rep = report(cfg, passes, classes, t0_s, windows)
    if out_dir is not None:
        rep["plots"] = [str(x) for x in plots(passes, rep, out_dir, t0_s)]
        rep["series"] = {
            p.name: {
                "prequential_accuracy": [(round(t - t0_s, 3), a) for t, a in p.accuracy],
                "predictions": [(round(t - t0_s, 3), pr, tr) for t, pr, tr in p.predictions],
            }
            for p in passes
        }
    return rep


def _classes(p: PassResult) -> list[str]:
    names = p.bridge.get("class_names")
    if names:
        return list(names)
    seen = sorted({tr for _, _, tr in p.predictions if tr} | {pr for _, pr, _ in p.predictions})
    return seen


def summary(rep: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers."""
    ps = rep["passes"]
    after = ps.get("after", {})
    ba = rep["evaluated"].get("before_after") or {}
    return {
        "acc_before": ba.get("acc_before"),
        "acc_after": ba.get("acc_after", after.get("accuracy_eval")),
        "evaluated_windows": rep["windows"]["evaluated"],
        "windows_unmatched": rep["windows"]["unanswered"],
        "replay_speed": after.get("replay_speed"),
        "samples_trained": after.get("samples", {}).get("trained", 0),
        # Weight updates on the co-processor: the labelled windows plus replays.
        "training_steps": after.get("trainer", {}).get("train_steps"),
        "rollbacks": after.get("finetune", {}).get("rollbacks"),
        "imu_lost": {k: v.get("imu_lost") for k, v in ps.items()},
        "graph_cpu_s": {k: v.get("graph_process", {}).get("cpu_s") for k, v in ps.items()},
        # On the stream being trained on: a diagnostic.
        "prequential_accuracy": after.get("prequential_accuracy"),
    }
