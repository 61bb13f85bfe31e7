"""Node settings from the graph's parameters: one translation, used by the nodes and `evaluate`.

`terrain_odt.ros.graph` declares every parameter once; a node (or the deterministic evaluation,
`terrain_odt.evaluation.evaluate`, which runs the same logic without ROS) gets its effective values
from
`effective_params` (defaults < parameter files < overrides, each checked against its
`ParamSpec`) and turns them into the plain-Python configuration of its logic here. No ROS import:
the nodes call these with the values rclpy handed them.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..ros.graph import NodeSpec, ParamValue, node_spec
from ..signals.features import FeatureConfig
from ..signals.streaming import StreamConfig
from .bridge import BridgeConfig
from .labeling import LabelerConfig, parse_joy_mapping, parse_regions

__all__ = [
    "ConfigError",
    "bridge_config",
    "effective_params",
    "labeler_config",
    "stream_config",
    "wheel_joints",
]

Params = Mapping[str, ParamValue]


class ConfigError(ValueError):
    """A parameter value the logic refuses; the message names the node and the parameter."""


def effective_params(
    spec: NodeSpec | str,
    files: Sequence[Path] = (),
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, ParamValue]:
    """Every parameter of a node as the node sees it: default < `files` (in order, the
    `node:`, `/node:` and `/**:` sections of ROS parameter files) < `overrides[node]`; each
    value checked by its `ParamSpec` (`ConfigError` naming the parameter otherwise)."""
    spec = node_spec(spec) if isinstance(spec, str) else spec
    values: dict[str, Any] = spec.defaults()
    for f in files:
        data = yaml.safe_load(Path(f).read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"parameter file {f}: not a mapping of node sections")
        for key in ("/**", spec.name, f"/{spec.name}"):
            section = data.get(key) or {}
            params = section.get("ros__parameters") if isinstance(section, dict) else None
            if isinstance(params, dict):
                values.update({k: v for k, v in params.items() if k in values})
    for k, v in ((overrides or {}).get(spec.name) or {}).items():
        if k not in values:
            raise ConfigError(f"{spec.name}: no parameter '{k}'")
        values[k] = v
    out: dict[str, ParamValue] = {}
    errors = []
    for p in spec.params:
        try:
            out[p.name] = p.check(values[p.name])
        except ValueError as exc:
            errors.append(str(exc))
    if errors:
        raise ConfigError(f"{spec.name}: " + "; ".join(errors))
    return out


def same_named(cls: type, p: Params, skip: Sequence[str] = ()) -> dict[str, Any]:
    """The fields of dataclass `cls` that a parameter of the same name sets, converted to the
    field's type (the parameter's `ParamSpec` already checked it): one definition per setting,
    the graph's, not a copy per node."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in p and f.name not in skip:
            v, t = p[f.name], hints.get(f.name)
            out[f.name] = t(v) if t in (int, float, bool, str) else v
    return out


def stream_config(p: Params) -> StreamConfig:
    """`imu_features` parameters → `StreamConfig` (`ConfigError` naming the parameters)."""
    edges = [float(e) for e in p["bands"]]  # type: ignore[union-attr]
    left, right = wheel_joints(p)
    try:
        if len(edges) == 1 or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError(f"bands must be at least two increasing edges, got {edges}")
        if bool(left) != bool(right):
            raise ValueError(
                "wheel_joints_left and wheel_joints_right must both name joints (wheel "
                "features) or both be empty (IMU only)"
            )
        fcfg = FeatureConfig(
            sample_rate_hz=float(p["sample_rate_hz"]),  # type: ignore[arg-type]
            window_s=float(p["window_s"]),  # type: ignore[arg-type]
            hop_s=float(p["hop_s"]),  # type: ignore[arg-type]
            bands=tuple(itertools.pairwise(edges)) if edges else None,
            max_gap_samples=int(p["max_gap_samples"]),  # type: ignore[arg-type]
            rate_tolerance=float(p["rate_tolerance"]),  # type: ignore[arg-type]
            wheels=bool(left),
            min_wheel_samples=int(p["min_wheel_samples"]),  # type: ignore[arg-type]
        )
        return StreamConfig(
            fcfg,
            int(p["input_decimation"]),  # type: ignore[arg-type]
            float(p["time_jump_reset_s"]),  # type: ignore[arg-type]
            wheel_timeout_s=float(p["wheel_timeout_s"]),  # type: ignore[arg-type]
        )
    except ValueError as exc:
        raise ConfigError(
            "imu_features: parameters sample_rate_hz / window_s / hop_s / bands / "
            f"input_decimation / wheel_joints_*: {exc}"
        ) from exc


def wheel_joints(p: Params) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The left and right wheel joint names of the `imu_features` parameters."""
    return (
        tuple(str(n) for n in p["wheel_joints_left"]),  # type: ignore[union-attr]
        tuple(str(n) for n in p["wheel_joints_right"]),  # type: ignore[union-attr]
    )


def labeler_config(p: Params) -> LabelerConfig:
    """`terrain_labeler` parameters → `LabelerConfig` (`ConfigError` naming the parameter)."""
    names = [str(n) for n in p["class_names"]]  # type: ignore[union-attr]

    def parsed(param: str, parse: Any) -> Any:
        try:
            return parse(list(p[param]), names)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"parameter '{param}': {exc}") from None

    try:
        return LabelerConfig(
            **same_named(LabelerConfig, p, skip=("class_names", "regions")),
            class_names=tuple(names),
            regions=parsed("regions", parse_regions),
            joy_mapping=parsed("joy_buttons", parse_joy_mapping),
        )
    except ValueError as exc:
        raise ConfigError(f"terrain_labeler: {exc}") from exc


def bridge_config(p: Params, url: str | None = None) -> BridgeConfig:
    """`odt_bridge` parameters → `BridgeConfig` (`url` overrides `serial_port`)."""
    kwargs: dict[str, Any] = same_named(BridgeConfig, p, skip=("url",))
    kwargs["url"] = str(p["serial_port"]) if url is None else url
    kwargs["stats_period_s"] = float(p["diagnostics_period_s"])  # type: ignore[arg-type]
    try:
        return BridgeConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"odt_bridge: {exc}") from exc
