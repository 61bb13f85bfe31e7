"""The `ros2 launch` files (launch/*.launch.py) against the graph definition, without ROS launch.

These run without `launch` and `launch_ros` installed (test_ros2_launch.py runs the real
`ros2 launch`, when make setup installed it), so minimal stand-ins that record their
constructor arguments (with the real keyword-only signatures, so a misspelt keyword fails) are
put in `sys.modules`; each launch file is imported from its path, `generate_launch_description()`
is called, and its entities are run the way `ros2 launch` runs them: launch arguments set from
the command line or their defaults, in order, then each `OpaqueFunction` with a context holding
the launch configurations. `ament_index_python` is the real one, pointed at a prefix that holds
what setup.py's `data_files` install, so the launch files' default paths must be installed files.

The nodes themselves are started with rclpy (factory of each `NodeSpec`) to check that they
declare exactly the graph's parameters, with its defaults and descriptions.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from terrain_odt import ament_layout
from terrain_odt.ros import graph, launch_description
from terrain_odt.ros.graph import NODES, TOOL_NODES, NodeSpec
from terrain_odt.ros.launch_description import OVERRIDE_ARGUMENTS

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "setup.py"
LAUNCH_FILES = {
    "robot": ROOT / "launch" / "robot.launch.py",
    "replay": ROOT / "launch" / "replay.launch.py",
}
PACKAGE = "terrain_odt"


# ---- stand-ins for launch / launch_ros ---------------------------------------------------------


class Recorded:
    """Base of the stand-ins: the keyword arguments it was built with."""

    kwargs: dict[str, Any]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kwargs})"


class LaunchDescription(Recorded):
    def __init__(self, initial_entities: Sequence[Any] | None = None) -> None:
        self.entities = list(initial_entities or [])
        self.kwargs = {"initial_entities": self.entities}


class DeclareLaunchArgument(Recorded):
    def __init__(
        self,
        name: str,
        *,
        default_value: str | None = None,
        description: str | None = None,
        choices: list[str] | None = None,
    ) -> None:
        # What launch itself checks when the argument is declared.
        assert isinstance(name, str) and name
        assert default_value is None or isinstance(default_value, str), default_value
        if choices is not None and default_value is not None:
            assert default_value in choices, f"{name}: default {default_value!r} not in choices"
        self.name = name
        self.kwargs = {"default_value": default_value, "description": description}
        self.kwargs["choices"] = choices


class OpaqueFunction(Recorded):
    def __init__(
        self,
        *,
        function: Callable[..., Any],
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.function = function
        self.args = list(args or [])
        self.fn_kwargs = dict(kwargs or {})
        self.kwargs = {"function": function, "args": self.args, "kwargs": self.fn_kwargs}


class ExecuteProcess(Recorded):
    def __init__(
        self,
        *,
        cmd: Sequence[Any],
        name: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        output: str = "log",
    ) -> None:
        self.kwargs = {"cmd": list(cmd), "name": name, "cwd": cwd, "env": env, "output": output}


class TimerAction(Recorded):
    def __init__(self, *, period: float | str, actions: Sequence[Any]) -> None:
        self.kwargs = {"period": period, "actions": list(actions)}


class Node(Recorded):
    def __init__(
        self,
        *,
        executable: str,
        package: str | None = None,
        name: str | None = None,
        namespace: str | None = None,
        exec_name: str | None = None,
        parameters: Sequence[Any] | None = None,
        remappings: Sequence[tuple[str, str]] | None = None,
        ros_arguments: Sequence[str] | None = None,
        arguments: Sequence[str] | None = None,
        output: str = "log",
    ) -> None:
        self.kwargs = {
            "executable": executable,
            "package": package,
            "name": name,
            "namespace": namespace,
            "parameters": list(parameters or []),
            "remappings": remappings,
            "ros_arguments": list(ros_arguments or []),
            "arguments": arguments,
            "output": output,
        }


class LaunchConfigurationError(Exception):
    """A launch argument without default was not given (what `ros2 launch` refuses)."""


class FakeContext:
    """What the launch files' `OpaqueFunction`s use of `launch.LaunchContext`."""

    def __init__(self, launch_configurations: dict[str, str]) -> None:
        self.launch_configurations = launch_configurations


def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


@pytest.fixture
def fake_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Install the stand-ins in `sys.modules` (removed again after the test)."""
    actions = _module(
        "launch.actions",
        DeclareLaunchArgument=DeclareLaunchArgument,
        OpaqueFunction=OpaqueFunction,
        ExecuteProcess=ExecuteProcess,
        TimerAction=TimerAction,
    )
    description = _module("launch.launch_description", LaunchDescription=LaunchDescription)
    launch = _module(
        "launch",
        LaunchDescription=LaunchDescription,
        actions=actions,
        launch_description=description,
        __path__=[],
    )
    ros_actions = _module("launch_ros.actions", Node=Node)
    launch_ros = _module("launch_ros", actions=ros_actions, __path__=[])
    for name, mod in {
        "launch": launch,
        "launch.actions": actions,
        "launch.launch_description": description,
        "launch_ros": launch_ros,
        "launch_ros.actions": ros_actions,
    }.items():
        monkeypatch.setitem(sys.modules, name, mod)


# ---- a fake install of the package (what setup.py's data_files put in share/) ------------------


def _setup_call() -> tuple[dict[str, Any], dict[str, ast.expr]]:
    """setup.py's module-level string constants and the keyword arguments of its setup() call."""
    tree = ast.parse(SETUP.read_text())
    consts: dict[str, Any] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    consts[target.id] = stmt.value.value
    call = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "setup"
    )
    return consts, {k.arg: k.value for k in call.keywords if k.arg}


def _data_files() -> list[tuple[str, list[str]]]:
    """What setup.py installs besides the package (terrain_odt/ament_layout.py defines it)."""
    _, kw = _setup_call()
    assert ast.unparse(kw["data_files"]) == "LAYOUT['data_files'](HERE)"
    return ament_layout.data_files(ROOT)


def _console_scripts() -> dict[str, str]:
    _, kw = _setup_call()
    entry_points = ast.literal_eval(kw["entry_points"])
    out = {}
    for line in entry_points["console_scripts"]:
        name, _, target = line.partition("=")
        out[name.strip()] = target.strip()
    return out


@pytest.fixture(scope="module")
def install_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prefix = tmp_path_factory.mktemp("install")
    for dest, files in _data_files():
        for f in files:
            target = prefix / dest / Path(f).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(ROOT / f)
    return prefix


@pytest.fixture
def share(install_prefix: Path, monkeypatch: pytest.MonkeyPatch, fake_launch: None) -> Path:
    """The fake install's share/terrain_odt, found through the real ament_index_python."""
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(install_prefix))
    from ament_index_python.packages import get_package_share_directory

    assert Path(get_package_share_directory(PACKAGE)) == install_prefix / "share" / PACKAGE
    return install_prefix / "share" / PACKAGE


# ---- running a launch file ---------------------------------------------------------------------


@dataclasses.dataclass
class Launched:
    arguments: dict[str, DeclareLaunchArgument]
    configurations: dict[str, str]
    nodes: list[Node]
    processes: list[ExecuteProcess]
    timers: list[TimerAction]
    #: The actions of the timers (started later: the bag player).
    delayed: list[Any]

    def node(self, name: str) -> Node:
        (node,) = [n for n in self.nodes if n.kwargs["name"] == name]
        return node


def _load(which: str) -> types.ModuleType:
    path = LAUNCH_FILES[which]
    spec = importlib.util.spec_from_file_location(f"_launch_file_{which}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launch(which: str, **cli: str) -> Launched:
    """`ros2 launch terrain_odt <which>.launch.py name:=value ...`, as far as these files use it."""
    desc = _load(which).generate_launch_description()
    assert isinstance(desc, LaunchDescription)
    configs = dict(cli)
    out = Launched({}, configs, [], [], [], [])
    pending = list(desc.entities)
    while pending:
        entity = pending.pop(0)
        if isinstance(entity, DeclareLaunchArgument):
            assert entity.name not in out.arguments, f"{entity.name} declared twice"
            out.arguments[entity.name] = entity
            default, choices = entity.kwargs["default_value"], entity.kwargs["choices"]
            if entity.name not in configs:
                if default is None:
                    raise LaunchConfigurationError(entity.name)
                configs[entity.name] = default
            elif choices is not None and configs[entity.name] not in choices:
                raise ValueError(f"{entity.name}: {configs[entity.name]!r} not in {choices}")
        elif isinstance(entity, OpaqueFunction):
            ctx = FakeContext(configs)
            pending[:0] = entity.function(ctx, *entity.args, **entity.fn_kwargs) or []
        elif isinstance(entity, TimerAction):
            out.timers.append(entity)
            out.delayed += entity.kwargs["actions"]
        elif isinstance(entity, Node):
            out.nodes.append(entity)
        elif isinstance(entity, ExecuteProcess):
            out.processes.append(entity)
        else:
            raise AssertionError(f"unexpected launch entity {entity!r}")
    unknown = set(cli) - set(out.arguments)
    assert not unknown, f"not launch arguments of {which}: {unknown}"
    return out


def _overrides(node: Node) -> dict[str, Any]:
    """The parameter dict after the files (the launch file's overrides and use_sim_time)."""
    dicts = [p for p in node.kwargs["parameters"] if isinstance(p, dict)]
    assert len(dicts) == 1, node.kwargs["parameters"]
    return dicts[0]


def _files(node: Node) -> list[str]:
    return [p for p in node.kwargs["parameters"] if not isinstance(p, dict)]


# ---- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("which", list(LAUNCH_FILES))
def test_one_node_per_graph_entry(which: str, share: Path) -> None:
    run = launch(which)
    assert [n.kwargs["name"] for n in run.nodes] == [s.name for s in NODES]
    for node, spec in zip(run.nodes, NODES, strict=True):
        assert node.kwargs["package"] == PACKAGE
        assert node.kwargs["executable"] == spec.executable
        assert node.kwargs["output"] == "screen"
        assert node.kwargs["namespace"] is None
        # The parameter files come first, so the dict (overrides) wins.
        assert isinstance(node.kwargs["parameters"][-1], dict)


@pytest.mark.parametrize("which", list(LAUNCH_FILES))
def test_a_node_added_to_the_graph_is_launched(
    which: str, share: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = dataclasses.replace(graph.IMU_FEATURES, name="imu_features_rear")
    monkeypatch.setattr(graph, "NODES", (*NODES, extra))
    run = launch(which)
    assert [n.kwargs["name"] for n in run.nodes] == [s.name for s in graph.NODES]


def test_robot_defaults(share: Path) -> None:
    run = launch("robot")
    params_file = share / "config" / "terrain_odt.yaml"
    assert run.configurations["params_file"] == str(params_file)
    assert params_file.is_file()
    assert run.configurations["use_sim_time"] == "false"
    for node in run.nodes:
        assert _files(node) == [str(params_file)]
        # Nothing the user did not set: the files' values (e.g. serial_port) stay in force.
        assert _overrides(node) == {"use_sim_time": False}
        assert node.kwargs["ros_arguments"] == ["--log-level", "info"]


def test_robot_overrides_only_when_set(share: Path, tmp_path: Path) -> None:
    mine = tmp_path / "my_robot.yaml"
    mine.write_text("odt_bridge:\n  ros__parameters:\n    serial_port: /dev/ttyACM0\n")
    run = launch(
        "robot",
        params_file=str(mine),
        serial_port="/dev/ttyUSB1",
        baud_rate="115200",
        model_blob="",
        use_sim_time="True",  # as users type it
        log_level="debug",
    )
    bridge = run.node("odt_bridge")
    assert _files(bridge) == [str(mine)]
    assert _overrides(bridge) == {
        "use_sim_time": True,
        "serial_port": "/dev/ttyUSB1",
        "baud_rate": 115200,  # typed from the graph, not the string "115200"
    }
    assert type(_overrides(bridge)["baud_rate"]) is int
    for name in ("imu_features", "terrain_labeler"):
        assert _overrides(run.node(name)) == {"use_sim_time": True}
    assert all(n.kwargs["ros_arguments"] == ["--log-level", "debug"] for n in run.nodes)


@pytest.mark.parametrize(
    ("cli", "match"),
    [
        ({"baud_rate": "fast"}, r"launch argument 'baud_rate': parameter 'baud_rate' must be"),
        ({"baud_rate": "-1"}, r"parameter 'baud_rate' must be >= 0"),
        ({"baud_rate": "[1"}, r"launch argument 'baud_rate'"),
        ({"use_sim_time": "maybe"}, r"launch argument 'use_sim_time' must be true or false"),
        ({"params_file": "/nonexistent/params.yaml"}, r"params_file.*not found"),
    ],
)
def test_robot_bad_arguments_are_clear_errors(share: Path, cli: dict[str, str], match: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        launch("robot", **cli)


@pytest.mark.parametrize("which", list(LAUNCH_FILES))
def test_override_arguments_declared_empty(which: str, share: Path) -> None:
    run = launch(which)
    for arg in OVERRIDE_ARGUMENTS:
        declared = run.arguments[arg.name]
        assert declared.kwargs["default_value"] == "", arg.name
        # The description is the graph's, and names the graph default.
        assert arg.spec.description in declared.kwargs["description"]
        assert graph.node_spec(arg.node).param(arg.param) is arg.spec
    for declared in run.arguments.values():
        assert declared.kwargs["description"], f"{declared.name} has no description"
    assert run.arguments["log_level"].kwargs["default_value"] == "info"


def test_replay_defaults(share: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch_description, "ros2_bag_available", lambda: False)
    run = launch("replay")
    main, demo = share / "config" / "terrain_odt.yaml", share / "config" / "demo.yaml"
    assert main.is_file() and demo.is_file()
    for node in run.nodes:
        assert _files(node) == [str(main), str(demo)]  # demo.yaml after, so it wins
        assert _overrides(node) == {"use_sim_time": True}
    assert "use_sim_time" not in run.arguments  # always on: the bag is the clock

    # No `ros2 bag` (pip-only): the package's own player, on wall time.
    (timer,) = run.timers
    assert float(timer.kwargs["period"]) > 0
    (player,) = run.delayed
    assert isinstance(player, Node)
    assert player.kwargs["package"] == PACKAGE
    assert player.kwargs["executable"] == graph.BAG_PLAYER.executable == "bag_player"
    assert player.kwargs["output"] == "screen"
    (params,) = player.kwargs["parameters"]
    bag = share / "data" / "demo" / "borealtc_demo.mcap"
    assert bag.is_file()
    assert params == {
        "bag": str(bag),
        "rate": 1.0,
        "clock_rate_hz": 100.0,
        "truth_as_operator": False,
        "playback_duration_s": 0.0,
        "use_sim_time": False,
    }
    assert set(params) - {"use_sim_time"} <= {p.name for p in graph.BAG_PLAYER.params}


@pytest.mark.parametrize("player", ["ros2_bag", "auto"])
def test_replay_with_ros2_bag(share: Path, player: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch_description, "ros2_bag_available", lambda: True)
    run = launch("replay", player=player)
    (proc,) = run.delayed
    assert isinstance(proc, ExecuteProcess)
    assert proc.kwargs["output"] == "screen"
    cmd = proc.kwargs["cmd"]
    bag = share / "data" / "demo" / "borealtc_demo.mcap"
    assert cmd[:4] == ["ros2", "bag", "play", str(bag)]
    assert cmd[cmd.index("--clock") + 1] == "100"
    assert float(cmd[cmd.index("--rate") + 1]) == 1.0
    assert "--remap" not in cmd and "--playback-duration" not in cmd


def test_replay_arguments(share: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bag = tmp_path / "drive.mcap"
    bag.write_bytes(b"")
    args = {
        "bag": str(bag),
        "rate": "2.5",
        "extra_params_file": "",
        "serial_port": "socket://127.0.0.1:5760",
        "truth_as_operator": "true",
        "playback_duration": "30",
    }
    run = launch("replay", player="ros2_bag", **args)
    for node in run.nodes:
        assert _files(node) == [str(share / "config" / "terrain_odt.yaml")]
    assert _overrides(run.node("odt_bridge")) == {
        "use_sim_time": True,
        "serial_port": "socket://127.0.0.1:5760",
    }
    cmd = run.delayed[0].kwargs["cmd"]
    assert cmd[3] == str(bag) and "--clock" in cmd
    assert float(cmd[cmd.index("--rate") + 1]) == 2.5
    assert float(cmd[cmd.index("--playback-duration") + 1]) == 30.0
    assert cmd[cmd.index("--remap") + 1] == "/terrain/label_truth:=/terrain/operator_label"
    (params,) = launch("replay", player="terrain_odt", **args).delayed[0].kwargs["parameters"]
    assert params["rate"] == 2.5 and params["playback_duration_s"] == 30.0
    assert params["truth_as_operator"] is True and params["bag"] == str(bag)


@pytest.mark.parametrize(
    ("cli", "match"),
    [
        ({"rate": "0"}, "launch argument 'rate' must be a number > 0"),
        ({"rate": "x"}, "launch argument 'rate' must be a number > 0"),
        ({"bag": "/nonexistent.mcap"}, "launch argument 'bag': /nonexistent.mcap not found"),
        ({"truth_as_operator": "2"}, "launch argument 'truth_as_operator' must be true or false"),
        ({"extra_params_file": "/nonexistent.yaml"}, "extra_params_file.*not found"),
        ({"playback_duration": "-1"}, "launch argument 'playback_duration' must be a number"),
        ({"player": "vlc"}, "player: 'vlc' not in"),
    ],
)
def test_replay_bad_arguments(share: Path, cli: dict[str, str], match: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        launch("replay", **cli)


def test_launch_files_are_installed() -> None:
    installed = {
        Path(f).name for dest, files in _data_files() for f in files if dest.endswith("/launch")
    }
    # sim.launch.py (Gazebo) needs launch actions these stand-ins lack; test_sim.py checks it.
    assert installed == {p.name for p in LAUNCH_FILES.values()} | {"sim.launch.py"}


# ---- executables and node classes --------------------------------------------------------------


@pytest.mark.parametrize("spec", (*NODES, *TOOL_NODES), ids=lambda s: s.name)
def test_executable_is_a_console_script_of_the_factory_module(spec: NodeSpec) -> None:
    scripts = _console_scripts()
    assert spec.executable in scripts, f"setup.py has no console script {spec.executable}"
    module, _, func = scripts[spec.executable].partition(":")
    factory_module, _, cls = spec.factory.partition(":")
    # `ros2 launch` runs the same class the one-process launcher instantiates.
    assert module == factory_module
    mod = importlib.import_module(module)
    assert callable(getattr(mod, func))
    assert isinstance(getattr(mod, cls), type)


@pytest.fixture
def rclpy_context() -> Iterator[Any]:
    import rclpy

    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    try:
        yield context
    finally:
        if context.ok():
            rclpy.shutdown(context=context)


#: Parameters set for the node test: nothing listens on port 1 (the bridge keeps retrying),
#: and a short connect timeout keeps close() fast.
TEST_OVERRIDES: dict[str, dict[str, Any]] = {
    "odt_bridge": {"serial_port": "socket://127.0.0.1:1", "connect_timeout_s": 0.2},
    "bag_player": {"bag": str(ROOT / "data" / "demo" / "borealtc_demo.mcap")},
}


@pytest.mark.parametrize("spec", (*NODES, *TOOL_NODES), ids=lambda s: s.name)
def test_node_declares_exactly_the_graph_parameters(spec: NodeSpec, rclpy_context: Any) -> None:
    from rclpy.node import Node as RclpyNode
    from rclpy.parameter import Parameter

    overrides = TEST_OVERRIDES.get(spec.name, {})
    module, _, cls = spec.factory.partition(":")
    factory = getattr(importlib.import_module(module), cls)
    probe = RclpyNode("probe", context=rclpy_context)
    node = factory(
        context=rclpy_context,
        parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
    )
    try:
        assert node.get_name() == spec.name
        builtin = set(probe.list_parameters([], 0).names)  # use_sim_time, ...
        declared = set(node.list_parameters([], 0).names) - builtin
        assert declared == {p.name for p in spec.params}
        names = [p.name for p in spec.params]
        for p, value, desc in zip(
            spec.params,
            node.get_parameters(names),
            node.describe_parameters(names),
            strict=True,
        ):
            expected = overrides.get(p.name, p.default)
            got = value.value
            got = list(got) if isinstance(p.default, list) else got
            assert got == expected, f"{spec.name}.{p.name}"
            assert desc.description == p.description, f"{spec.name}.{p.name}"
            assert desc.read_only
    finally:
        close = getattr(node, "close", None)
        if close is not None:
            close()
        node.destroy_node()
        probe.destroy_node()
