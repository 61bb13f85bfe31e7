"""Helpers shared by the nodes: parameters from the graph definition, diagnostics, `main`."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.context import Context
from rclpy.executors import (
    Executor,
    ExternalShutdownException,
    MultiThreadedExecutor,
    SingleThreadedExecutor,
)
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from ..ros.graph import NodeSpec, ParamValue

OK: bytes = DiagnosticStatus.OK
WARN: bytes = DiagnosticStatus.WARN
ERROR: bytes = DiagnosticStatus.ERROR


class ParamError(ValueError):
    """A parameter has a wrong type or value (the message names it)."""


def declare_params(node: Node, spec: NodeSpec) -> dict[str, ParamValue]:
    """Declare every parameter of `spec` on `node` (read-only, described) and return the values.

    Parameters are declared dynamically typed and checked here, so `-p min_speed:=1` (an
    integer for a double) works and a wrong type is one clear `ParamError` instead of an rclpy
    traceback.
    """
    values: dict[str, ParamValue] = {}
    errors: list[str] = []
    for p in spec.params:
        desc = ParameterDescriptor(
            description=p.description,
            additional_constraints=(f"one of {', '.join(p.choices)}" if p.choices else ""),
            read_only=True,
            dynamic_typing=True,
        )
        value = node.declare_parameter(p.name, p.default, desc).value
        try:
            values[p.name] = p.check(value)
        except ValueError as exc:
            errors.append(str(exc))
    if errors:
        raise ParamError(f"{spec.name}: " + "; ".join(errors))
    return values


def status(
    node: Node, name: str, level: bytes, message: str, values: Mapping[str, Any]
) -> DiagnosticStatus:
    """One `DiagnosticStatus` with `values` as key/value strings."""
    return DiagnosticStatus(
        level=level,
        name=f"{node.get_name()}: {name}",
        message=message,
        hardware_id=node.get_fully_qualified_name(),
        values=[KeyValue(key=k, value=_fmt(v)) for k, v in values.items()],
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def counts(prefix: str, items: Iterable[tuple[Any, int]]) -> dict[str, int]:
    """`{prefix + key: n}` for counters keyed by enums or strings."""
    return {f"{prefix}{getattr(k, 'value', k)}": int(n) for k, n in items}


def spin(executor: Executor, context: Context | None = None, log: Any = None) -> None:
    """`executor.spin()` that survives a failing callback.

    rclpy's `spin` re-raises a callback's exception and stops every node of the executor; on
    a robot one bad message must not take the graph down, so the exception is logged (with its
    traceback, at most once per 10 s per callback site) and spinning goes on.
    """
    import time
    import traceback

    ctx = context or executor.context
    last: dict[str, float] = {}
    while ctx.ok():
        try:
            # spin(), not spin_once(timeout): rclpy builds a timeout timer per spin_once call,
            # which costs more than a cheap callback.
            executor.spin()
            return
        except (ExternalShutdownException, KeyboardInterrupt):
            raise
        except Exception as exc:
            if not ctx.ok():
                break
            tb = traceback.extract_tb(exc.__traceback__)
            where = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else "?"
            now = time.monotonic()
            if now - last.get(where, -1e9) >= 10.0:
                last[where] = now
                text = "".join(traceback.format_exception(exc)).rstrip()
                if log is not None:
                    log.error(f"callback failed (the node keeps running): {text}")
                else:
                    print(
                        f"[ERROR] callback failed (the node keeps running): {text}", file=sys.stderr
                    )


def run_node(
    factory: Callable[..., Node],
    args: Sequence[str] | None = None,
    executor: str = "single",
    work: Callable[[Any, threading.Event], int | None] | None = None,
) -> int:
    """`main` of a node executable: init, spin, clean shutdown; clear errors, no traceback.

    `executor`: "single" (least overhead per message: rclpy's executors cost far more per
    callback than the nodes' own work) or "multi" (for a node whose service callbacks wait on
    a device, so its topics keep flowing meanwhile).

    SIGINT and SIGTERM (Ctrl-C, `ros2 launch` forwarding a Ctrl-C, `timeout`, or a signal to
    the whole process group, which reaches the node twice) only *request* a stop: the node
    spins in a thread, the main thread waits for the request, then closes the node (the bridge
    flushes and saves), destroys it and shuts rclpy down; signals arriving meanwhile are
    ignored, so there is no KeyboardInterrupt half way through the cleanup. Exit status 0.

    `work(node, stop)`: for a node that has a job to finish (a player): runs in the main thread
    while the node spins, must return soon after `stop` is set; the node exits when it returns
    (its result, if an int, is the exit status).
    """
    stop = threading.Event()

    def request_stop(_signum: int, _frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)
    context = rclpy.Context()
    try:
        rclpy.init(
            args=list(sys.argv if args is None else args),
            context=context,
            signal_handler_options=SignalHandlerOptions.NO,
        )
    except RuntimeError as exc:  # RCLError: e.g. a parameter file rcl cannot parse
        print(f"[ERROR] cannot initialise ROS: {exc}", file=sys.stderr)
        return 2
    node: Node | None = None
    ex: Executor | None = None
    spinner: threading.Thread | None = None
    rc = 0
    try:
        node = factory(context=context)
        ex = (
            MultiThreadedExecutor(context=context)
            if executor == "multi"
            else SingleThreadedExecutor(context=context)
        )
        ex.add_node(node)
        spinner = threading.Thread(
            target=_spin_until_shutdown,
            args=(ex, context, node.get_logger()),
            name="ros-executor",
            daemon=True,
        )
        spinner.start()
        if work is not None:
            rc = int(work(node, stop) or 0)
        else:
            while not stop.wait(0.25):
                if not spinner.is_alive():  # the context was shut down from elsewhere
                    break
    except ParamError as exc:
        print(f"[ERROR] {exc}", file=sys.stderr)
        rc = 2
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    print(f"[ERROR] closing {node.get_name()}: {exc}", file=sys.stderr)
                    rc = rc or 1
        if ex is not None:
            ex.shutdown(timeout_sec=5.0)
        if spinner is not None:
            # A daemon thread still inside rclpy's C++ code when the interpreter exits is
            # unwound there and aborts the process ("terminate called without an active
            # exception"): wait until it has left the executor.
            spinner.join(timeout=5.0)
        if node is not None:
            node.destroy_node()
        if context.ok():
            rclpy.shutdown(context=context)
        # Exiting anyway: a late signal must not kill the interpreter while it finalizes
        # (Python restores the default handlers then, except for ignored signals).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    return rc


def _spin_until_shutdown(executor: Executor, context: Context, log: Any) -> None:
    with contextlib.suppress(ExternalShutdownException):
        spin(executor, context, log=log)
