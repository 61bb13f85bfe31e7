"""Helpers shared by the nodes: parameters from the graph definition, diagnostics, `main`."""

from __future__ import annotations

import sys
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

from ..graph import NodeSpec, ParamValue

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
    factory: Callable[..., Node], args: Sequence[str] | None = None, executor: str = "single"
) -> int:
    """`main` of a node executable: init, spin, clean shutdown; clear errors, no traceback.

    `executor`: "single" (least overhead per message: rclpy's executors cost far more per
    callback than the nodes' own work) or "multi" (for a node whose service callbacks wait on
    a device, so its topics keep flowing meanwhile).
    """
    rclpy.init(args=list(sys.argv if args is None else args))
    node: Node | None = None
    try:
        node = factory()
        ex = MultiThreadedExecutor() if executor == "multi" else SingleThreadedExecutor()
        ex.add_node(node)
        spin(ex, log=node.get_logger())
    except ParamError as exc:
        print(f"[ERROR] {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
