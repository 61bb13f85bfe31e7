"""One-process launcher: the graph of `terrain_odt.ros.graph` in one process (an executor thread per
node by default).

`ros2 launch terrain_odt robot.launch.py` starts each node as its own process; this launcher
brings up the same nodes, with the same parameter files, where `launch`/`ros2` are not installed
(pip-only machines, CI, the replay evaluation):

    terrain-odt launch --params-file config/terrain_odt.yaml -p odt_bridge.serial_port:=/dev/ttyUSB0
    terrain-odt launch --emulator            # with the co-processor emulator instead of a board

Parameter precedence is the usual one: defaults < `--params-file` files (in order) < `-p`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import resource
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..paths import resolve
from .graph import NODES, NodeSpec, ParamValue, node_spec

__all__ = ["Graph", "LaunchError", "parse_overrides", "running_graph"]

DEFAULT_PARAMS = "config/terrain_odt.yaml"


class LaunchError(RuntimeError):
    """The graph could not start (bad parameter, missing file, ...); the message says why."""


def parse_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`NODE.PARAM:=VALUE` strings (VALUE in YAML) → `{node: {param: value}}`."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, text = item.partition(":=")
        node, dot, param = key.partition(".")
        if not sep or not dot or not node or not param:
            raise LaunchError(f"override '{item}' is not NODE.PARAM:=VALUE")
        try:
            spec = node_spec(node)
            spec.param(param)
        except KeyError as exc:
            raise LaunchError(str(exc.args[0])) from None
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError as exc:
            raise LaunchError(f"override '{item}': bad YAML value: {exc}") from None
        out.setdefault(node, {})[param] = value
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item") and callable(v.item):  # numpy scalars
        return _jsonable(v.item())
    return v


def _load_factory(spec: NodeSpec) -> Any:
    module, _, cls = spec.factory.partition(":")
    return getattr(importlib.import_module(module), cls)


def resolve_param_files(files: Sequence[str | Path]) -> list[Path]:
    """Resolve and check parameter files (`LaunchError` if missing or not YAML)."""
    out = []
    for f in files:
        p = resolve(f)
        if not p.is_file():
            raise LaunchError(f"parameter file {f} not found")
        try:
            yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise LaunchError(f"parameter file {p} is not valid YAML: {exc}") from None
        out.append(p)
    return out


@dataclass
class Graph:
    """The running nodes of one launch (by node name) and their executor(s)."""

    nodes: dict[str, Any]
    mode: str
    context: Any
    executors: list[Any] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    extra: list[Any] = field(default_factory=list)
    closed: bool = False

    def attach(self, node: Any) -> None:
        """Add `node` to the executor (per-node mode: to a new one)."""
        from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

        if not self.executors or self.mode == "per-node":
            cls = MultiThreadedExecutor if self.mode == "multi" else SingleThreadedExecutor
            self.executors.append(cls(context=self.context))
            if self.threads:  # already spinning: spin the new one too
                self._start(self.executors[-1])
        self.executors[-1].add_node(node)

    def add(self, node: Any) -> None:
        """Spin an extra node (a player, a recorder) with the graph."""
        self.extra.append(node)
        self.attach(node)

    def _start(self, ex: Any) -> None:
        t = threading.Thread(
            target=_spin, args=(ex, self.context), name="ros-executor", daemon=True
        )
        t.start()
        self.threads.append(t)

    def start(self) -> None:
        for ex in self.executors:
            self._start(ex)

    def shutdown(self) -> None:
        for ex in self.executors:
            ex.shutdown(timeout_sec=5.0)
        for t in self.threads:
            t.join(timeout=5.0)

    def close_nodes(self) -> None:
        """Call every node's `close` (the bridge flushes and saves if configured), once."""
        if self.closed:
            return
        self.closed = True
        for node in reversed(list(self.nodes.values())):
            close = getattr(node, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    print(f"[launcher] closing {node.get_name()}: {exc}", file=sys.stderr)

    def stats(self) -> dict[str, Any]:
        """Every node's `diagnostics()` (JSON-friendly)."""
        out = {}
        for name, node in self.nodes.items():
            diag = getattr(node, "diagnostics", None)
            if diag is not None:
                out[name] = _jsonable(diag())
        return out


EXECUTORS = ("multi", "single", "per-node")


@contextlib.contextmanager
def running_graph(
    param_files: Sequence[str | Path] = (DEFAULT_PARAMS,),
    overrides: Mapping[str, Mapping[str, ParamValue]] | None = None,
    *,
    use_sim_time: bool = False,
    nodes: Sequence[NodeSpec] = NODES,
    spin: bool = True,
    executor: str = "per-node",
    domain_id: int | None = None,
) -> Iterator[Graph]:
    """Create the graph's nodes in a fresh rclpy context and spin them in background threads.

    `executor`: "multi" (one `MultiThreadedExecutor` for all nodes), "single" (one
    `SingleThreadedExecutor`) or "per-node" (a `SingleThreadedExecutor` and thread per node:
    each wake-up only scans its own node's entities, which is what keeps a 2 kHz IMU stream
    cheap in rclpy). On exit the nodes are closed (the bridge flushes and, if configured,
    saves), destroyed, and the context shut down.
    """
    import rclpy
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions

    from ..nodes.common import ParamError

    if executor not in EXECUTORS:
        raise LaunchError(f"executor must be one of {', '.join(EXECUTORS)}; got {executor!r}")
    files = resolve_param_files(param_files)
    args = ["terrain_odt_launch", "--ros-args"]
    for f in files:
        args += ["--params-file", str(f)]
    context = rclpy.Context()
    # The caller owns SIGINT/SIGTERM: shutdown must close the nodes (flush, save) in order.
    try:
        rclpy.init(
            args=args,
            context=context,
            domain_id=domain_id,
            signal_handler_options=SignalHandlerOptions.NO,
        )
    except RuntimeError as exc:  # RCLError: e.g. a parameter file rcl cannot parse
        raise LaunchError(f"cannot initialise ROS: {exc}") from None
    created: dict[str, Any] = {}
    graph = Graph(created, executor, context)
    try:
        for spec in nodes:
            ov = [Parameter("use_sim_time", value=use_sim_time)]
            for k, v in (overrides or {}).get(spec.name, {}).items():
                try:
                    ov.append(Parameter(k, value=v))
                except TypeError as exc:  # e.g. a list of mixed types, a mapping
                    raise LaunchError(f"{spec.name}: parameter '{k}': {exc}") from None
            try:
                node = _load_factory(spec)(context=context, parameter_overrides=ov)
            except ParamError as exc:
                raise LaunchError(str(exc)) from None
            created[spec.name] = node
            graph.attach(node)
        if spin:
            graph.start()
        yield graph
    finally:
        graph.close_nodes()
        graph.shutdown()
        for node in [*graph.extra, *created.values()]:
            node.destroy_node()
        if context.ok():
            rclpy.shutdown(context=context)


def _spin(executor: Any, context: Any) -> None:
    from rclpy.executors import ExternalShutdownException

    from ..nodes.common import spin

    with contextlib.suppress(ExternalShutdownException):
        spin(executor, context)


def add_parameter_args(p: argparse.ArgumentParser) -> None:
    """`--params-file` and `-p NODE.PARAM:=VALUE`: how every command takes graph parameters."""
    p.add_argument(
        "--params-file",
        action="append",
        default=None,
        help=f"ROS parameter file (repeatable; default {DEFAULT_PARAMS})",
    )
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NODE.PARAM:=VALUE",
        help="override one parameter (YAML value), e.g. odt_bridge.serial_port:=/dev/ttyUSB0",
    )


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="terrain-odt launch", description=__doc__)
    add_parameter_args(p)
    p.add_argument("--use-sim-time", action="store_true", help="follow /clock")
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="per-node",
        help="rclpy executor(s): per-node (default) = a SingleThreadedExecutor and thread per "
        "node, so nodes run concurrently like separate processes; multi = one "
        "MultiThreadedExecutor for all (rclpy's multi-threaded executor stalled callbacks "
        "for more than 0.5 s under load here, see the README); single = one "
        "SingleThreadedExecutor",
    )
    p.add_argument(
        "--stats-out",
        metavar="JSON",
        help="on exit, write every node's final counters (diagnostics) to this file",
    )
    p.add_argument(
        "--emulator",
        action="store_true",
        help="start the co-processor emulator (odt-emu) with the bridge's model_blob and "
        "point odt_bridge.serial_port at it",
    )
    return p


def param_value(
    files: Sequence[Path], ov: Mapping[str, Mapping[str, Any]], node: str, name: str
) -> Any:
    """A parameter's effective value: default < files (in order) < overrides `ov`."""
    value = node_spec(node).param(name).default
    for f in files:
        data = yaml.safe_load(f.read_text()) or {}
        for key in (node, f"/{node}", "/**"):
            section = (data.get(key) or {}).get("ros__parameters") or {}
            if name in section:
                value = section[name]
    return ov.get(node, {}).get(name, value)


class EmulatorSupervisor:
    """`terrain-odt launch --emulator`'s co-processor: an `odt-emu` on a fixed TCP port with a
    flash file of its own, restarted when it dies (as a board that resets: it boots from its
    flash, the bridge reconnects to the same URL), never stopping the graph. `restarts` and
    the last exit status go to /diagnostics (`status()`)."""

    def __init__(self, binary: Path, baud: int, model: Path | None, flash: Path) -> None:
        from ..link.emulator import free_port

        self.binary, self.baud, self.model, self.flash = binary, baud, model, flash
        self.port = free_port()
        self.restarts = 0
        self.last_exit: int | None = None
        self.emu: Any = None
        self._start()
        self.url = self.emu.url

    def _start(self) -> None:
        from ..link.emulator import Emulator

        self.emu = Emulator(
            self.binary, baud=self.baud, model=self.model, flash=self.flash, tcp_port=self.port
        )

    def check(self) -> str | None:
        """Restart a dead emulator; returns a message when it did (or could not)."""
        from ..link.emulator import EmulatorError

        if self.emu is not None and self.emu.alive:
            return None
        if self.emu is not None:
            self.last_exit = self.emu.proc.returncode
        try:
            self._start()
        except EmulatorError as exc:
            self.emu = None
            return f"emulator exited ({self.last_exit}); restart failed: {exc}"
        self.restarts += 1
        return f"emulator exited (status {self.last_exit}): restarted ({self.restarts})"

    def status(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "alive": bool(self.emu is not None and self.emu.alive),
            "restarts": self.restarts,
            "last_exit_status": "" if self.last_exit is None else self.last_exit,
        }

    def stop(self) -> None:
        if self.emu is not None:
            self.emu.stop()


def _diagnostics_node(graph: Graph, sup: EmulatorSupervisor) -> Any:
    """A small node publishing the emulator's health on /diagnostics (level WARN once it had to
    be restarted, ERROR while it is down)."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rclpy.node import Node

    node = Node("terrain_odt_emulator", context=graph.context)
    pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def publish() -> None:
        st = sup.status()
        if not st["alive"]:
            level, text = DiagnosticStatus.ERROR, "emulator down"
        elif st["restarts"]:
            level, text = DiagnosticStatus.WARN, f"running; restarted {st['restarts']} times"
        else:
            level, text = DiagnosticStatus.OK, "running"
        arr = DiagnosticArray()
        arr.header.stamp = node.get_clock().now().to_msg()
        arr.status = [
            DiagnosticStatus(
                level=level,
                name="terrain_odt_emulator: co-processor emulator",
                message=text,
                hardware_id="odt-emu",
                values=[KeyValue(key=k, value=str(v)) for k, v in st.items()],
            )
        ]
        pub.publish(arr)

    node.create_timer(1.0, publish)
    return node


def run(args: argparse.Namespace) -> int:
    """Run until Ctrl-C (the `terrain-odt launch` command)."""
    import tempfile

    from ..link.emulator import EmulatorError, find_emulator

    t_start = time.monotonic()
    try:
        files = resolve_param_files(args.params_file or [DEFAULT_PARAMS])
        overrides = parse_overrides(args.param)
        sup: EmulatorSupervisor | None = None
        with contextlib.ExitStack() as stack:
            if args.emulator:
                blob = param_value(files, overrides, "odt_bridge", "model_blob")
                baud = int(param_value(files, overrides, "odt_bridge", "baud_rate"))
                binary = find_emulator(build=True, log=lambda m: print(f"[launcher] {m}"))
                if binary is None:
                    raise LaunchError("odt-emu not found and cannot be built (cargo missing?)")
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="odt-emu-")))
                sup = EmulatorSupervisor(
                    binary, baud, resolve(blob) if blob else None, tmp / "flash.bin"
                )
                stack.callback(sup.stop)
                overrides.setdefault("odt_bridge", {})["serial_port"] = sup.url
                print(f"[launcher] co-processor emulator on {sup.url} ({baud} baud)")
            stop = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            graph = stack.enter_context(
                running_graph(
                    files, overrides, use_sim_time=args.use_sim_time, executor=args.executor
                )
            )
            if sup is not None:
                graph.add(_diagnostics_node(graph, sup))
            print(f"[launcher] running {', '.join(n.name for n in NODES)}; Ctrl-C stops")
            bridge = graph.nodes.get("odt_bridge")
            ready = bridge is None
            while not stop.wait(0.05):
                if not ready and bridge.core.connected and bridge.core.configured:
                    ready = True
                    print("[launcher] ready: co-processor connected", flush=True)
                if sup is not None:
                    msg = sup.check()
                    if msg:
                        print(f"[launcher] {msg}", file=sys.stderr, flush=True)
            if args.stats_out:
                # Close first (the bridge flushes its queue), then record the final counters.
                graph.close_nodes()
                stats = graph.stats()
                ru = resource.getrusage(resource.RUSAGE_SELF)
                stats["process"] = {
                    "cpu_s": ru.ru_utime + ru.ru_stime,
                    "wall_s": time.monotonic() - t_start,
                    "max_rss_kb": ru.ru_maxrss,
                }
                if sup is not None:
                    stats["emulator"] = sup.status()
                Path(args.stats_out).write_text(json.dumps(stats, indent=1) + "\n")
    except (LaunchError, EmulatorError) as exc:
        print(f"terrain-odt launch: error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
