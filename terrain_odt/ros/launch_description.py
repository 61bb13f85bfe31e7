"""Building blocks of the `ros2 launch` files (`launch/robot.launch.py`, `launch/replay.launch.py`).

Both launch files declare their arguments with `declare_graph_arguments` and start the nodes
with `graph_node_actions` (from an `OpaqueFunction`), which makes one `launch_ros` `Node` per
entry of `terrain_odt.ros.graph.NODES`: a node added to the graph is started by every launcher
without touching the launch files, and a launch file cannot name a node the graph does not have.

Override arguments (`serial_port:=...`, `model_sidecar:=...`) default to empty, which means "the
parameter files' value": a robot's own `params_file` is never silently overridden by a launch
default. A value that is set is converted to the parameter's type and checked against the graph
(`ParamSpec.check`) at launch time, so `baud_rate:=fast` fails with a message naming it.

`launch`, `launch_ros` and `ament_index_python` are imported inside the functions that need
them: this module, and its pure helpers (`node_overrides`, `node_action_kwargs`,
`bag_play_command`), import on machines without a ROS install.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from . import graph
from .graph import NodeSpec, ParamSpec, ParamValue

if TYPE_CHECKING:
    from launch.actions import DeclareLaunchArgument, TimerAction
    from launch.launch_context import LaunchContext
    from launch_ros.actions import Node

__all__ = [
    "LOG_LEVELS",
    "OVERRIDE_ARGUMENTS",
    "PACKAGE",
    "PLAYERS",
    "OverrideArgument",
    "bag_play_command",
    "bag_player_actions",
    "bag_player_node_kwargs",
    "declare_graph_arguments",
    "graph_node_actions",
    "node_action_kwargs",
    "node_overrides",
    "parse_bool",
    "share_path",
]

PACKAGE = "terrain_odt"
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
#: The bag player starts this long after the nodes, so the first windows are not lost, s.
PLAYER_START_DELAY_S = 2.0
#: `/clock` rate of the bag player, Hz.
CLOCK_RATE_HZ = 100
TRUTH_TOPIC = "/terrain/label_truth"
OPERATOR_TOPIC = "/terrain/operator_label"


@dataclass(frozen=True)
class OverrideArgument:
    """A launch argument that sets one node parameter when given (empty: the files' value)."""

    name: str
    node: str
    param: str

    @property
    def spec(self) -> ParamSpec:
        return graph.node_spec(self.node).param(self.param)


OVERRIDE_ARGUMENTS: tuple[OverrideArgument, ...] = tuple(
    OverrideArgument(p, "odt_bridge", p)
    for p in ("serial_port", "baud_rate", "model_sidecar", "model_blob")
)
"""Launch arguments that override a parameter of the parameter files (all optional)."""


def share_path(*parts: str) -> str:
    """A path in the installed package's share directory (`ament_index`)."""
    from ament_index_python.packages import get_package_share_directory

    return os.path.join(get_package_share_directory(PACKAGE), *parts)


def parse_bool(name: str, text: str) -> bool:
    """A boolean launch argument (`true`/`false`, as `ros2 launch` users write them)."""
    t = text.strip().lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"launch argument '{name}' must be true or false, got {text!r}")


def _typed(arg: OverrideArgument, text: str) -> ParamValue:
    spec = arg.spec
    # A string parameter takes the text as is (a port named "1" stays a string); other types
    # are read as YAML, like `ros2 run ... -p name:=value`, then checked against the graph.
    try:
        value: Any = text if isinstance(spec.default, str) else yaml.safe_load(text)
        return spec.check(value)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"launch argument '{arg.name}': {exc}") from None


def node_overrides(configs: Mapping[str, str]) -> dict[str, dict[str, ParamValue]]:
    """`{node: {param: value}}` for the override arguments that are set (non-empty) in `configs`."""
    out: dict[str, dict[str, ParamValue]] = {}
    for arg in OVERRIDE_ARGUMENTS:
        text = configs.get(arg.name, "").strip()
        if text:
            out.setdefault(arg.node, {})[arg.param] = _typed(arg, text)
    return out


def node_action_kwargs(
    spec: NodeSpec,
    *,
    params_files: Sequence[str],
    overrides: Mapping[str, ParamValue] | None = None,
    use_sim_time: bool = False,
    log_level: str = "info",
) -> dict[str, Any]:
    """Keyword arguments of the `launch_ros.actions.Node` that runs `spec`'s executable.

    Parameters: the files in order, then `use_sim_time` and the overrides (later wins).
    """
    unknown = sorted(set(overrides or {}) - {p.name for p in spec.params})
    if unknown:
        raise ValueError(f"{spec.name} has no parameter {', '.join(unknown)}")
    return {
        "package": PACKAGE,
        "executable": spec.executable,
        "name": spec.name,
        "parameters": [*params_files, {"use_sim_time": use_sim_time, **(overrides or {})}],
        "ros_arguments": ["--log-level", log_level],
        "output": "screen",
    }


def declare_graph_arguments(*, params_file: str) -> list[DeclareLaunchArgument]:
    """The launch arguments every graph launch file has: params_file, overrides, log_level."""
    from launch.actions import DeclareLaunchArgument

    args = [
        DeclareLaunchArgument(
            "params_file",
            default_value=params_file,
            description="ROS parameter file of the nodes (all parameters: "
            "python -m terrain_odt.ros.graph --yaml)",
        )
    ]
    for arg in OVERRIDE_ARGUMENTS:
        spec = arg.spec
        args.append(
            DeclareLaunchArgument(
                arg.name,
                default_value="",
                description=f"{arg.node}.{arg.param}: {spec.description} "
                f"(empty = the parameter files' value; the graph's default is "
                f"{spec.default!r})",
            )
        )
    args.append(
        DeclareLaunchArgument(
            "log_level", default_value="info", choices=list(LOG_LEVELS), description="log level"
        )
    )
    return args


def _params_files(configs: Mapping[str, str], names: Sequence[str]) -> list[str]:
    files = []
    for name in names:
        path = configs.get(name, "").strip()
        if not path:
            continue
        if not os.path.isfile(path):
            raise FileNotFoundError(f"launch argument '{name}': parameter file {path} not found")
        files.append(path)
    return files


def graph_node_actions(
    context: LaunchContext,
    *,
    params_file_args: Sequence[str] = ("params_file",),
    use_sim_time: bool | None = None,
) -> list[Node]:
    """One `Node` per entry of `terrain_odt.ros.graph.NODES` (the `OpaqueFunction` of the launch
    files).

    `params_file_args`: launch arguments naming parameter files, loaded in this order (empty
    ones are skipped). `use_sim_time`: fixed, or None to read the `use_sim_time` argument.
    """
    from launch_ros.actions import Node

    configs: Mapping[str, str] = context.launch_configurations
    if use_sim_time is None:
        use_sim_time = parse_bool("use_sim_time", configs.get("use_sim_time", "false"))
    files = _params_files(configs, params_file_args)
    overrides = node_overrides(configs)
    log_level = configs.get("log_level", "info")
    return [
        Node(
            **node_action_kwargs(
                spec,
                params_files=files,
                overrides=overrides.get(spec.name),
                use_sim_time=use_sim_time,
                log_level=log_level,
            )
        )
        # graph.NODES read at launch time, not bound at import: the graph is the one list.
        for spec in graph.NODES
    ]


PLAYERS = ("auto", "ros2_bag", "terrain_odt")
"""Values of replay.launch.py's `player` argument: `ros2 bag play`, the project's own
`bag_player` node (`terrain_odt.data.bagplay`), or auto = `ros2 bag` when it is installed."""


def ros2_bag_available() -> bool:
    """Whether `ros2 bag` can run here: the `ros2bag` CLI extension and `ros2` on PATH (it is C++
    underneath and has no pip wheel, so pip-only machines never have it)."""
    import importlib.util
    import shutil

    return importlib.util.find_spec("ros2bag") is not None and shutil.which("ros2") is not None


def _positive_rate(rate: str) -> float:
    try:
        r = float(rate)
    except ValueError:
        r = float("nan")
    if not r > 0.0:
        raise ValueError(f"launch argument 'rate' must be a number > 0, got {rate!r}")
    return r


def _duration(text: str) -> float:
    try:
        d = float(text)
    except ValueError:
        d = float("nan")
    if not d >= 0.0:
        raise ValueError(
            f"launch argument 'playback_duration' must be a number >= 0 (s; 0 = all), got {text!r}"
        )
    return d


def bag_play_command(
    bag: str, rate: str, *, truth_as_operator: bool = False, duration: str = "0"
) -> list[str]:
    """`ros2 bag play` with `/clock` for `bag` at `rate` × real time."""
    r = _positive_rate(rate)
    d = _duration(duration)
    if not os.path.exists(bag):
        raise FileNotFoundError(f"launch argument 'bag': {bag} not found")
    cmd = ["ros2", "bag", "play", bag, "--clock", str(CLOCK_RATE_HZ), "--rate", str(r)]
    if d > 0:
        cmd += ["--playback-duration", str(d)]
    if truth_as_operator:
        cmd += ["--remap", f"{TRUTH_TOPIC}:={OPERATOR_TOPIC}"]
    return cmd


def bag_player_node_kwargs(
    bag: str, rate: str, *, truth_as_operator: bool = False, duration: str = "0"
) -> dict[str, Any]:
    """Keyword arguments of the `launch_ros` `Node` running the project's `bag_player`."""
    r = _positive_rate(rate)
    d = _duration(duration)
    if not os.path.exists(bag):
        raise FileNotFoundError(f"launch argument 'bag': {bag} not found")
    spec = graph.BAG_PLAYER
    params = {
        "bag": bag,
        "rate": r,
        "clock_rate_hz": float(CLOCK_RATE_HZ),
        "truth_as_operator": truth_as_operator,
        "playback_duration_s": d,
    }
    for k, v in params.items():
        spec.param(k).check(v)
    return {
        "package": PACKAGE,
        "executable": spec.executable,
        "name": spec.name,
        # The player is the clock: it runs on wall time.
        "parameters": [{**params, "use_sim_time": False}],
        "output": "screen",
    }


def bag_player_actions(context: LaunchContext) -> list[TimerAction]:
    """The bag player of replay.launch.py (arguments bag, rate, truth_as_operator,
    playback_duration, player), started `PLAYER_START_DELAY_S` after the nodes."""
    from launch.actions import ExecuteProcess, TimerAction

    configs: Mapping[str, str] = context.launch_configurations
    which = configs.get("player", "auto")
    if which not in PLAYERS:
        raise ValueError(f"launch argument 'player' must be one of {', '.join(PLAYERS)}")
    if which == "auto":
        which = "ros2_bag" if ros2_bag_available() else "terrain_odt"
    args = (configs["bag"], configs.get("rate", "1.0"))
    kw = {
        "truth_as_operator": parse_bool(
            "truth_as_operator", configs.get("truth_as_operator", "false")
        ),
        "duration": configs.get("playback_duration", "0"),
    }
    player: Any
    if which == "ros2_bag":
        player = ExecuteProcess(
            cmd=bag_play_command(*args, **kw), name="bag_player", output="screen"
        )
    else:
        from launch_ros.actions import Node

        player = Node(**bag_player_node_kwargs(*args, **kw))
    return [TimerAction(period=PLAYER_START_DELAY_S, actions=[player])]
