"""Deterministic evaluation: bags through the nodes' logic in bag order, one process, no DDS.

    terrain-odt evaluate data/demo/borealtc_demo.mcap --operator-until 180

The same logic the three nodes run (`streaming.FeatureStream` for `imu_features`,
`labeling.Labeler` for `terrain_labeler`, `bridge.BridgeCore` for `odt_bridge`, configured from
the same parameters by `terrain_odt.pipeline.node_config`) is fed the bag's messages in log-time
order.
Nothing depends on timing: the labeler's periodic re-publication happens at exact multiples of
`1 / publish_rate_hz` of bag time, and the bridge runs synchronously (every window's training
frames, replays, checks and inference are done and answered before the next message). So the
same bags and parameters give bit-identical reports on any machine under any load.

A *pass* is a fresh co-processor (`odt-emu` with the model's pretrained blob and an empty flash,
or a real device reset to its pretrained model first) and a fresh bridge; the feature windows
and labels are computed once and fed to every pass. Passes: **before** (training off: the
pretrained model's predictions) and **after** (training on). Each pass runs in a process of its
own, fed the front end's events as they are produced (the passes mostly wait on their
co-processors, so the evaluation takes about the front end's time); `parallel=False`
(`--sequential`, and always with a device) runs them one after the other: the same report. Both
are scored on exactly the same windows (`terrain_odt.evaluation.scoring`): truth is the class in
force over each window's span on the truth topic, the evaluated part is the windows starting
`operator_until` seconds or more into the playback (or `evaluate_from` seconds, when given: e.g.
the second lap of a drive labelled from map regions, without an operator; with `labels_until`,
the bridge gets no label from then on, whatever the cues say, so that part is predicted only).
With `operator_until`, the evaluation acts as the operator: it gives the truth on the operator
cue until then and clears it at that time.

Several bags play back to back as one session (the co-processor keeps its training); each bag
has its own clock (window ids carry the bag's index), `operator_until` counts playback seconds
from the start of the first bag.

Outputs: `report.json` (deterministic: every number derived from the data), `windows.json` (each
evaluated window with its truth and the prediction of every pass), `run.json` (wall time,
speed, link statistics: these vary from run to run), PNG plots, and the summary.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.cdr import CdrError, imu_sample
from ..paths import resolve
from ..pipeline.bridge import BridgeCore, ModelFileError, Outcome, load_model_files
from ..pipeline.labeling import Labeler, UnknownLabel
from ..pipeline.node_config import (
    ConfigError,
    bridge_config,
    effective_params,
    labeler_config,
    stream_config,
    wheel_joints,
)
from ..ros.graph import NODES, ParamValue
from ..signals.feature_msg import description_from_label, pack_features, parse_features
from ..signals.streaming import FeatureStream, joint_wheel_sample
from .scoring import (
    Answer,
    TruthTimeline,
    Window,
    plot_confusions,
    prequential,
    score_passes,
    window_key,
)

__all__ = ["EvalConfig", "EvalError", "EvalInterrupted", "evaluate", "front_end", "summary"]

TRUTH_TOPIC = "/terrain/label_truth"
OPERATOR_TOPIC = "/terrain/operator_label"
IMU_TOPIC = "/imu/data"
ODOM_TOPIC = "/odom"
CMD_TOPIC = "/cmd_vel"
JOY_TOPIC = "/joy"
JOINT_TOPIC = "/joint_states"
#: Keys of the summary that depend on the machine and its load (everything else does not).
TIMING_KEYS = ("speed_x_realtime", "wall_s")


class EvalError(RuntimeError):
    """The evaluation could not run (bad bag, parameters, model, co-processor); says why."""


class EvalInterrupted(EvalError):
    """Ctrl-C (SIGINT) during `evaluate`: it stopped between two messages, passes closed."""


class _Stop:
    """SIGINT during `evaluate` (main thread): a flag the loops check between messages, so
    the evaluation unwinds by `EvalInterrupted` at a known point, its pass processes and
    emulators closed, instead of by a KeyboardInterrupt raised anywhere."""

    requested = False

    def __init__(self) -> None:
        self._old: Any = None

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def _handle(self, _sig: int, _frame: object) -> None:
        if self.requested:  # the second Ctrl-C: do not wait for the loops
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise EvalInterrupted("interrupted")


#: The evaluation's SIGINT flag while one runs (checked by the front end and the passes).
_stop: _Stop | None = None


def _check_stop() -> None:
    if _stop is not None:
        _stop.check()


@dataclass(frozen=True)
class EvalConfig:
    bags: tuple[Path, ...]
    param_files: tuple[Path, ...] = ()
    overrides: Mapping[str, Mapping[str, ParamValue]] = field(default_factory=dict)
    #: `None`: a fresh `odt-emu` per pass; else a device or URL (reset to pretrained per pass).
    serial_port: str | None = None
    #: "emulator" (odt-emu, or the device of `serial_port`) or "qnn": the bit-exact reference
    #: in-process (`terrain_odt.model.qnn_coprocessor`, for experiments that run many evaluations).
    coprocessor: str = "emulator"
    #: Emulated UART speed (0: unthrottled, the default: timing does not change any result).
    emulator_baud: int = 0
    truth_topic: str = TRUTH_TOPIC
    operator_until: float | None = None
    #: The evaluated part starts this many playback seconds in (default: `operator_until`, or
    #: the whole playback without it); for labels from map regions, which need no operator.
    evaluate_from: float | None = None
    #: From this many playback seconds on the bridge gets no label (every cue ignored), so
    #: the part after it is predicted only, as after `operator_until`; default: no limit.
    labels_until: float | None = None
    compare_frozen: bool = True
    #: Run each pass in a process of its own, fed as the front end goes (same report; not
    #: with `serial_port`: one device runs one pass at a time).
    parallel: bool = True
    #: A bag without the truth topic is an error (evaluation); `terrain-odt dataset` with
    #: labeler labels needs no truth.
    require_truth: bool = True


def bridge_input(
    t_start: float, t_end: float, features: np.ndarray, description: str
) -> tuple[float, float, list[float], str | None]:
    """A window as odt_bridge receives it from imu_features: packed and parsed by the
    /terrain/features layout (`feature_msg`), description included."""
    p = pack_features(t_start, t_end, features, description)
    t0, t1, x = parse_features(p.data, p.data_offset)
    return t0, t1, x, description_from_label(p.label)


# ---------------------------------------------------------------------------------------------
# Reading the bags: the front end (features + labels) runs once


@dataclass
class _Front:
    """What the feature and labeler logic produced, in order: bridge inputs per bag."""

    #: per bag: ("label", t, name) and ("window", t_start, t_end, features) in order
    events: list[list[tuple[Any, ...]]] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    bag_info: list[dict[str, Any]] = field(default_factory=list)
    features: dict[str, Any] = field(default_factory=dict)
    labeler: dict[str, Any] = field(default_factory=dict)
    bag_seconds: float = 0.0
    #: What the features are (`FeatureConfig.describe()`), as the node sends it.
    description: str = ""


def _typestore() -> Any:
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED) if hasattr(Stores, "ROS2_KILTED") else None


def _messages(bag: Path) -> Iterator[tuple[str, int, bytes, Any]]:
    """(topic, log time ns, raw CDR, deserialize) of every message, in log-time order."""
    from rosbags.highlevel import AnyReader

    if not bag.exists():
        raise EvalError(f"bag {bag} does not exist")
    try:
        with AnyReader([bag], default_typestore=_typestore()) as reader:
            for conn, t_ns, raw in reader.messages():
                yield (
                    conn.topic,
                    int(t_ns),
                    bytes(raw),
                    lambda raw=raw, t=conn.msgtype: reader.deserialize(raw, t),
                )
    except EvalError:
        raise
    except Exception as exc:  # rosbags raises several unrelated types for bad files
        raise EvalError(f"cannot read bag {bag}: {exc}") from exc


def _front_end(
    cfg: EvalConfig,
    params: Mapping[str, Mapping[str, ParamValue]],
    log: Callable[[str], None],
    sink: Callable[[int, tuple[Any, ...]], None] | None = None,
) -> _Front:
    """The front end over every bag; `sink(bag index, event)` (when given) gets each bridge
    input as it is produced, in order, besides `front.events`."""
    front = _Front()
    scfg = stream_config(params["imu_features"])
    lcfg = labeler_config(params["terrain_labeler"])
    left, right = wheel_joints(params["imu_features"])
    radius = float(params["imu_features"]["wheel_radius_m"])  # type: ignore[arg-type]
    front.description = scfg.features.describe()
    receipt = params["imu_features"]["stamp_source"] == "receipt"
    period = 1.0 / float(params["terrain_labeler"]["publish_rate_hz"])  # type: ignore[arg-type]
    stream = FeatureStream(scfg)
    labeler = Labeler(lcfg)
    bad_imu = 0
    bad_joints = 0
    playback0 = 0.0  # playback seconds at the start of the current bag
    for seg, bag in enumerate(cfg.bags):
        stream.restart()
        labeler.reset()
        ev: list[tuple[Any, ...]] = []
        add = ev.append if sink is None else _tee(ev, sink, seg)
        truth: list[tuple[float, str]] = []
        windows: list[tuple[float, float]] = []
        counts: dict[str, int] = {}
        first_ns: int | None = None
        last_ns = 0
        published: str | None = None
        next_tick: float | None = None
        op_state: str | None = None
        until: float | None = None
        labels_off: float | None = None

        def publish(t: float, force: bool = False) -> None:
            nonlocal published
            data = labeler.state(t).data
            if labels_off is not None and t >= labels_off:  # noqa: B023 (this iteration only)
                data = ""
            if force or data != published:
                add(("label", t, data))  # noqa: B023 (called in this iteration only)
                published = data

        for topic, t_ns, raw, des in _messages(bag):
            _check_stop()
            counts[topic] = counts.get(topic, 0) + 1
            if first_ns is None:
                first_ns = t_ns
                if cfg.operator_until is not None:
                    until = first_ns * 1e-9 + cfg.operator_until - playback0
                if cfg.labels_until is not None:
                    labels_off = first_ns * 1e-9 + cfg.labels_until - playback0
            last_ns = t_ns
            t = t_ns * 1e-9
            # The labeler's timer: re-publish at every multiple of the period up to now.
            if next_tick is None:
                next_tick = math.ceil(t / period) * period
            while next_tick <= t:
                if labels_off is not None and published and next_tick > labels_off:
                    publish(labels_off)  # the label ends exactly there
                publish(next_tick, force=True)
                next_tick = (round(next_tick / period) + 1) * period
            if until is not None and op_state and t >= until:
                labeler.operator(until, None)
                op_state = None
                publish(until)
            if topic == IMU_TOPIC:
                try:
                    ts, *sample = imu_sample(raw)
                except CdrError:
                    bad_imu += 1
                    continue
                for w in stream.push(t if receipt else ts, sample):
                    if w.features is not None:
                        add(("window", w.t_start, w.t_end, w.features))
                        windows.append((w.t_start, w.t_end))
            elif topic == JOINT_TOPIC and scfg.features.wheels:
                m = des()
                stamp = m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
                try:
                    wheel = joint_wheel_sample(
                        list(m.name), list(m.velocity), list(m.effort), left, right, radius
                    )
                except ValueError:
                    bad_joints += 1
                    continue
                if wheel is not None:
                    for w in stream.push_wheels(t if receipt else stamp, wheel):
                        if w.features is not None:
                            add(("window", w.t_start, w.t_end, w.features))
                            windows.append((w.t_start, w.t_end))
            elif topic == ODOM_TOPIC:
                m = des()
                pos, tw = m.pose.pose.position, m.twist.twist
                labeler.odom(t, pos.x, pos.y, tw.linear.x, tw.angular.z)
                publish(t)
            elif topic == CMD_TOPIC:
                m = des()
                labeler.cmd_vel(t, m.linear.x, m.angular.z)
                publish(t)
            elif topic == JOY_TOPIC:
                labeler.joy(t, list(des().buttons))
                publish(t)
            elif topic == OPERATOR_TOPIC and until is None:
                with contextlib.suppress(UnknownLabel):
                    labeler.operator(t, str(des().data))
                publish(t)
            if topic == cfg.truth_topic:
                name = str(des().data)
                truth.append((t, name))
                if until is not None and t < until and name != op_state:
                    try:
                        labeler.operator(t, name)
                        op_state = name
                    except UnknownLabel:
                        op_state = None
                    publish(t)
        if first_ns is None:
            raise EvalError(f"bag {bag} has no messages")
        if IMU_TOPIC not in counts:
            raise EvalError(f"bag {bag} has no {IMU_TOPIC}")
        if not truth and cfg.require_truth:
            raise EvalError(
                f"bag {bag} has no {cfg.truth_topic} (std_msgs/String ground truth): nothing "
                "to evaluate against"
            )
        if until is not None and op_state:
            t_end = last_ns * 1e-9
            labeler.operator(max(until, t_end), None)
            publish(max(until, t_end))
        tl = TruthTimeline(truth)
        bag_t0 = first_ns * 1e-9
        eval_from = cfg.evaluate_from if cfg.evaluate_from is not None else cfg.operator_until
        for t0, t1 in windows:
            tr = tl.over(t0, t1)
            in_eval = eval_from is None or (t0 - bag_t0 + playback0) >= eval_from
            front.windows.append(
                Window(
                    window_key(t1, seg),
                    t0,
                    t1,
                    tr,
                    in_eval,
                    mixed=tr is None and tl.at(t0) is not None,
                )
            )
        duration = (last_ns - first_ns) * 1e-9
        front.events.append(ev)
        front.bag_info.append(
            {
                "bag": bag.name,
                "duration_s": round(duration, 6),
                "messages": dict(sorted(counts.items())),
                "windows": len(windows),
            }
        )
        log(
            f"bag {bag}: {sum(counts.values())} messages, {duration:.1f} s, "
            f"{len(windows)} feature windows"
        )
        playback0 += duration
    front.bag_seconds = playback0
    front.features = {
        "samples": stream.samples,
        "windows_accepted": stream.accepted,
        "windows_rejected": {k.value: v for k, v in sorted(stream.rejected.items())},
        "samples_dropped": {k.value: v for k, v in sorted(stream.dropped_samples.items())},
        "clock_resets": stream.time_resets,
        "pauses": stream.buffer.pauses,
        "undecodable_messages": bad_imu,
        "wheel_samples": stream.wheel_samples,
        "wheel_samples_dropped": stream.wheel_dropped,
        "bad_joint_messages": bad_joints,
    }
    front.labeler = dict(labeler.counters)
    return front


def _tee(
    ev: list[tuple[Any, ...]], sink: Callable[[int, tuple[Any, ...]], None], seg: int
) -> Callable[[tuple[Any, ...]], None]:
    def add(e: tuple[Any, ...]) -> None:
        ev.append(e)
        sink(seg, e)

    return add


def front_end(cfg: EvalConfig, log: Callable[[str], None] = print) -> _Front:
    """The windows (with truth) and bridge inputs of `cfg`'s bags, by the nodes' logic."""
    from ..ros.launcher import LaunchError, resolve_param_files

    try:
        files = resolve_param_files(cfg.param_files)
        params = {n.name: effective_params(n, files, cfg.overrides) for n in NODES}
        return _front_end(cfg, params, log)
    except (LaunchError, ConfigError) as exc:
        raise EvalError(str(exc)) from exc


# ---------------------------------------------------------------------------------------------
# One pass


@dataclass
class _Pass:
    name: str
    answers: dict[int, Answer]
    bridge: dict[str, Any]
    link: dict[str, Any]
    wall_s: float
    training: bool


def _events(front: _Front) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """Every bridge input of `front`: (bag index, event), in order."""
    for i, events in enumerate(front.events):
        for e in events:
            yield i, e


def _run_pass(
    cfg: EvalConfig,
    name: str,
    training: bool,
    events: Iterable[tuple[int, tuple[Any, ...]]],
    description: str,
    params: Mapping[str, Mapping[str, ParamValue]],
    log: Callable[[str], None],
    binary: Path | None,
) -> _Pass:
    """One pass: a fresh co-processor and bridge fed `events` ((bag index, event) in order)."""
    from ..link.emulator import EmulatorError, emulator

    bp = dict(params["odt_bridge"])
    bp["training_enabled"] = training
    bp["autosave_period_s"] = 0.0
    try:
        model = load_model_files(
            resolve(str(bp["model_sidecar"])) if bp["model_sidecar"] else "",
            resolve(str(bp["model_blob"])) if bp["model_blob"] else None,
        )
    except ModelFileError as exc:
        raise EvalError(f"odt_bridge: parameter model_sidecar / model_blob: {exc}") from exc
    answers: dict[int, Answer] = {}
    seg = [0]

    def emit(o: Outcome) -> None:
        answers[window_key(o.t_end, seg[0])] = Answer(
            o.t_start, o.t_end, o.kind, o.predicted_name, o.label_name, o.confidence
        )

    t_wall = time.monotonic()
    factory: Any = None
    with contextlib.ExitStack() as stack:
        if cfg.coprocessor == "qnn":
            from ..model.qnn_coprocessor import factory as qnn_factory

            if model.blob is None:
                raise EvalError("the in-process co-processor needs odt_bridge.model_blob")
            factory = qnn_factory(model.blob)
            url, baud = "qnn://in-process", 0
        elif cfg.serial_port is None:
            assert binary is not None
            if model.blob is None:
                raise EvalError("the emulator needs odt_bridge.model_blob (the pretrained model)")
            try:
                emu = stack.enter_context(
                    emulator(
                        binary,
                        baud=cfg.emulator_baud,
                        model=resolve(str(bp["model_blob"])),
                    )
                )
            except EmulatorError as exc:
                raise EvalError(str(exc)) from exc
            url, baud = emu.url, cfg.emulator_baud
        else:
            url, baud = cfg.serial_port, int(bp["baud_rate"])  # type: ignore[arg-type]
        bp["baud_rate"] = baud
        try:
            bcfg = bridge_config(bp, url=url)
        except ConfigError as exc:
            raise EvalError(str(exc)) from exc
        kw = {"client_factory": factory} if factory is not None else {}
        core = BridgeCore(bcfg, model, emit, log=_QuietLog(log), synchronous=True, **kw)
        try:
            core.start()
        except Exception as exc:
            raise EvalError(f"co-processor at {url}: {exc}") from exc
        # On the way out after an error or Ctrl-C the link may be gone: do not wait long.
        stack.callback(core.close, False, 1.0)
        if cfg.serial_port is not None:
            ok, msg = core.reset_pretrained()
            if not ok:
                raise EvalError(f"co-processor at {url}: reset to the pretrained model: {msg}")
        if not core.configured:
            raise EvalError(f"co-processor at {url}: {core.snapshot()['model_problem']}")
        for i, e in events:
            _check_stop()
            seg[0] = i
            if e[0] == "label":
                core.on_label(e[1], e[2])
            else:
                try:
                    t0, t1, x, desc = bridge_input(e[1], e[2], e[3], description)
                    core.on_features(t0, t1, x, description=desc)
                except ValueError as exc:  # the features do not fit the model
                    raise EvalError(f"odt_bridge: {exc}") from exc
        core.finish()
        core.refresh_stats()
        snap = core.snapshot()
        core.close(save=False)
    wall = time.monotonic() - t_wall
    link = snap.pop("link", {})
    snap.pop("url", None)
    snap.pop("coprocessor", None)
    return _Pass(name, answers, _jsonable(snap), _jsonable(link), wall, training)


#: Events per message to a pass process: few messages, yet the passes follow the front end
#: closely (32 events are about 10 s of a drive).
_BATCH = 32


class _PassProcess:
    """A pass in a process of its own (fork), fed the front end's events as they are produced.

    The passes mostly wait on their co-processors while the front end computes, so on two
    cores the evaluation takes about the front end's time instead of the sum. The report is
    the same as with sequential passes: every pass gets the same events in the same order and
    nothing in a pass depends on timing (test_evaluate checks both ways give identical
    reports)."""

    def __init__(
        self,
        cfg: EvalConfig,
        name: str,
        training: bool,
        description: str,
        params: Mapping[str, Mapping[str, ParamValue]],
        binary: Path | None,
        others: Sequence[_PassProcess],
    ) -> None:
        ctx = multiprocessing.get_context("fork")
        self.name = name
        self._conn, child = ctx.Pipe()
        self._batch: list[tuple[int, tuple[Any, ...]]] = []
        # The child closes the parent's ends it inherits (its own and the earlier passes'),
        # so that closing them here reaches it as end of file.
        inherited = [self._conn, *(o._conn for o in others)]
        self._proc = ctx.Process(
            target=_pass_main,
            args=(child, inherited, cfg, name, training, description, params, binary),
            name=f"terrain-odt evaluate: pass {name}",
            daemon=True,
        )
        self._proc.start()
        child.close()

    def send(self, seg: int, event: tuple[Any, ...]) -> None:
        self._batch.append((seg, event))
        if len(self._batch) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._conn.poll():  # the pass ended early: only a failure does that
            self._raise(self._conn.recv())
        if self._batch:
            self._conn.send(self._batch)
            self._batch = []

    def _raise(self, out: tuple[str, Any, list[str]]) -> None:
        kind, value, _ = out
        raise EvalError(value if kind == "error" else f"pass '{self.name}' ended early")

    def result(self, log: Callable[[str], None]) -> _Pass:
        """Send the rest, wait for the pass to finish; its log lines go to `log`."""
        self._flush()
        self._conn.send(None)
        try:
            while not self._conn.poll(0.1):
                _check_stop()
            out = self._conn.recv()
        except EOFError:
            self._proc.join(10)
            raise EvalError(
                f"pass '{self.name}': its process ended without a result "
                f"(exit code {self._proc.exitcode})"
            ) from None
        for m in out[2]:
            log(m)
        if out[0] != "ok":
            self._raise(out)
        return out[1]  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the pass if it still runs (it sees end of file and closes its co-processor)."""
        self._conn.close()
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join()


def _pass_main(
    conn: Any,
    inherited: Sequence[Any],
    cfg: EvalConfig,
    name: str,
    training: bool,
    description: str,
    params: Mapping[str, Mapping[str, ParamValue]],
    binary: Path | None,
) -> None:
    """A pass process: events from `conn` until `None`, then `("ok", _Pass, log lines)` or
    `("error", message, log lines)` back."""
    # Ctrl-C reaches the whole process group: the parent stops the passes by closing the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for c in inherited:
        c.close()
    lines: list[str] = []
    done = False

    def events() -> Iterator[tuple[int, tuple[Any, ...]]]:
        nonlocal done
        while True:
            try:
                batch = conn.recv()
            except EOFError:
                raise EvalError("the evaluation stopped") from None
            if batch is None:
                done = True
                return
            yield from batch

    out: tuple[str, Any, list[str]]
    try:
        out = (
            "ok",
            _run_pass(cfg, name, training, events(), description, params, lines.append, binary),
            lines,
        )
    except EvalError as exc:
        out = ("error", str(exc), lines)
    except Exception as exc:  # reported to the parent, which raises it
        out = ("error", f"pass '{name}': {type(exc).__name__}: {exc}", lines)
    try:
        conn.send(out)
        while not done:  # drain the events still coming, so the parent never blocks
            done = conn.recv() is None
    except (EOFError, OSError):
        pass


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


class _QuietLog:
    """The bridge's log during an evaluation: warnings and errors through `log`."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        self._log(f"bridge: {msg}")

    def error(self, msg: str) -> None:
        self._log(f"bridge: error: {msg}")


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    return v


# ---------------------------------------------------------------------------------------------
# The whole evaluation


def evaluate(
    cfg: EvalConfig, out_dir: Path | None = None, log: Callable[[str], None] = print
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the passes; returns (deterministic report, run facts: wall time, speed, link).

    Ctrl-C (in the main thread) stops it between two messages: `EvalInterrupted`."""
    global _stop
    with _Stop() as stop:
        _stop = stop
        try:
            return _evaluate(cfg, out_dir, log)
        except EvalInterrupted:
            raise
        except Exception:
            # Ctrl-C in a terminal also reaches the emulators (same process group), so a
            # link or pass failing after it (e.g. while a session opens) is the interruption.
            if stop.requested:
                raise EvalInterrupted("interrupted") from None
            raise
        finally:
            _stop = None


def _evaluate(
    cfg: EvalConfig, out_dir: Path | None, log: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    from ..ros.launcher import LaunchError, resolve_param_files

    if not cfg.bags:
        raise EvalError("no bag given")
    t0 = time.monotonic()
    try:
        files = resolve_param_files(cfg.param_files)
        params = {n.name: effective_params(n, files, cfg.overrides) for n in NODES}
        description = stream_config(params["imu_features"]).features.describe()
    except (LaunchError, ConfigError) as exc:
        raise EvalError(str(exc)) from exc
    binary = None
    if cfg.coprocessor not in ("emulator", "qnn"):
        raise EvalError(f"coprocessor must be 'emulator' or 'qnn', got {cfg.coprocessor!r}")
    if cfg.serial_port is None and cfg.coprocessor == "emulator":
        from ..link.emulator import EmulatorError, find_emulator

        try:
            binary = find_emulator(build=True, log=log)
        except (EmulatorError, OSError, subprocess.CalledProcessError) as exc:
            raise EvalError(f"odt-emu: {exc}") from exc
        if binary is None:
            raise EvalError("odt-emu not found and cannot be built (is cargo installed?)")
    plan = ([("before", False)] if cfg.compare_frozen else []) + [("after", True)]
    passes: list[_Pass] = []
    # One device cannot run two passes at once; fresh emulators (or the reference) can.
    if cfg.parallel and cfg.serial_port is None and _can_fork():
        workers: list[_PassProcess] = []
        try:
            for name, training in plan:
                workers.append(
                    _PassProcess(cfg, name, training, description, params, binary, workers)
                )

            def sink(seg: int, e: tuple[Any, ...]) -> None:
                for w in workers:
                    w.send(seg, e)

            front = _front_end(cfg, params, log, sink)
            passes = [w.result(log) for w in workers]
        except ConfigError as exc:
            raise EvalError(str(exc)) from exc
        finally:
            for w in workers:
                w.close()
    else:
        try:
            front = _front_end(cfg, params, log)
        except ConfigError as exc:
            raise EvalError(str(exc)) from exc
        for name, training in plan:
            passes.append(
                _run_pass(cfg, name, training, _events(front), description, params, log, binary)
            )
    for p in passes:
        sent = p.bridge["counters"].get("trained", 0)
        log(
            f"pass '{p.name}' (training {'on' if p.training else 'off'}): "
            f"{len(p.answers)} windows answered, {sent} labelled windows "
            f"{'trained' if p.training else 'predicted only (no training step)'}, "
            f"{p.wall_s:.2f} s"
        )
    classes = list(passes[-1].bridge["class_names"])
    scores = score_passes(front.windows, {p.name: p.answers for p in passes}, classes)
    rows = scores.pop("rows")
    report: dict[str, Any] = {
        "tool": "terrain-odt evaluate",
        "bags": front.bag_info,
        "bag_seconds": round(front.bag_seconds, 6),
        "operator_until_s": cfg.operator_until,
        "labels_until_s": cfg.labels_until,
        "evaluate_from_s": (
            cfg.evaluate_from if cfg.evaluate_from is not None else cfg.operator_until
        ),
        "truth_topic": cfg.truth_topic,
        "co_processor": (
            "qnn (in-process reference)"
            if cfg.coprocessor == "qnn"
            else "odt-emu"
            if cfg.serial_port is None
            else "device"
        ),
        "parameters": params,
        "windows": scores["counts"],
        "classes": classes,
        "evaluated": {k: v for k, v in scores.items() if k not in ("counts", "classes")},
        "features": front.features,
        "labeler": front.labeler,
        "passes": {},
    }
    for p in passes:
        report["passes"][p.name] = {
            "answers": len(p.answers),
            # On the stream being trained on (labelled windows): a diagnostic, not the headline.
            **prequential(p.answers),
            "samples": p.bridge.get("counters", {}),
            "trainer": p.bridge.get("trainer", {}),
            "finetune": p.bridge.get("finetune", {}),
        }
    wall = time.monotonic() - t0
    run = {
        "wall_s": round(wall, 3),
        "speed_x_realtime": round(front.bag_seconds / wall, 1) if wall > 0 else None,
        "pass_wall_s": {p.name: round(p.wall_s, 3) for p in passes},
        "link": {p.name: p.link for p in passes},
        "python": sys.version.split()[0],
    }
    report = _jsonable(report)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (out_dir / "windows.json").write_text(json.dumps(_jsonable(rows), indent=0) + "\n")
        (out_dir / "run.json").write_text(json.dumps(run, indent=1) + "\n")
        run["plots"] = [str(x) for x in plots(report, rows, front, out_dir)]
    return report, run


def summary(report: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    """The headline numbers (`--summary-json`, `bench/results/demo.json`). Everything but
    `TIMING_KEYS` is identical for identical bags and parameters."""
    ba = report["evaluated"].get("before_after") or {}
    after = report["passes"].get("after", {})
    acc_after = report["evaluated"]["passes"].get("after", {}).get("accuracy")
    return {
        "acc_before": ba.get("acc_before"),
        "acc_after": ba.get("acc_after", acc_after),
        "gain": ba.get("gain"),
        "evaluated_windows": report["windows"]["evaluated"],
        "windows_fixed": ba.get("windows_fixed"),
        "windows_broken": ba.get("windows_broken"),
        "per_class": ba.get("per_class"),
        "samples_trained": after.get("samples", {}).get("trained", 0),
        "samples_held_out": after.get("samples", {}).get("held_out", 0),
        # Weight updates on the co-processor: labelled windows plus replays.
        "training_steps": after.get("trainer", {}).get("train_steps"),
        "checks": after.get("finetune", {}).get("checks"),
        "rollbacks": after.get("finetune", {}).get("rollbacks"),
        # Named as what it is: accuracy on the labelled stream just before each window trained.
        "prequential_accuracy": after.get("prequential_accuracy"),
        "bag_seconds": report["bag_seconds"],
        "speed_x_realtime": run.get("speed_x_realtime"),
        "wall_s": run.get("wall_s"),
    }


def plots(
    report: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], front: _Front, out_dir: Path
) -> list[Path]:
    """PNG plots: per-window correctness over time (running mean of 40), confusion matrices."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths: list[Path] = []
    names = list(report["evaluated"]["passes"])
    if rows:
        t0 = min(w.t_start for w in front.windows) if front.windows else 0.0
        fig, ax = plt.subplots(figsize=(9, 4))
        t = np.array([r["t_start"] for r in rows]) - t0
        for n in names:
            hit = np.array([r[n] == r["truth"] for r in rows], dtype=float)
            k = min(40, len(hit))
            run = np.convolve(hit, np.ones(k) / k, mode="valid")
            ax.plot(t[k - 1 :], 100 * run, label=f"{n}: last {k} evaluated windows")
        ax.set_xlabel("bag time (s)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=8, loc="lower right")
        ax.set_title("accuracy on the evaluated windows (same windows in every pass)")
        fig.tight_layout()
        paths.append(out_dir / "accuracy.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    ev = report["evaluated"]["passes"]
    paths.append(out_dir / "confusion.png")
    plot_confusions(
        plt,
        paths[-1],
        report["classes"],
        [(n, ev[n]["confusion"], ev[n]["accuracy"]) for n in names],
    )
    return paths
