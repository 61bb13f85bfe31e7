"""The graph definition (`terrain_odt.ros.graph`): parameter checking, and the files generated from
it
(config/terrain_odt.yaml, the README's ROS interface section) and written against it
(config/demo.yaml) staying in sync."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from terrain_odt.ros import graph
from terrain_odt.ros.graph import NODES, ParamSpec, node_spec

ROOT = Path(__file__).resolve().parent.parent
README_BEGIN = "<!-- ros-interface:begin -->\n"
README_END = "<!-- ros-interface:end -->"


# ---- ParamSpec.check ---------------------------------------------------------------------------


def test_double_accepts_int_and_float() -> None:
    p = ParamSpec("rate", 1.5, "d", min=0.0)
    assert p.check(2) == 2.0
    assert isinstance(p.check(2), float)
    assert p.check(0.25) == 0.25


def test_int_accepts_integral_float_only() -> None:
    p = ParamSpec("n", 3, "d")
    assert p.check(7) == 7
    out = p.check(4.0)
    assert out == 4 and isinstance(out, int)
    with pytest.raises(ValueError, match=r"parameter 'n' must be a int"):
        p.check(4.5)


@pytest.mark.parametrize("value", [1, 0, "true", 1.0, [True]])
def test_bool_is_strict(value: Any) -> None:
    p = ParamSpec("flag", True, "d")
    with pytest.raises(ValueError, match=r"parameter 'flag' must be a bool"):
        p.check(value)


def test_bool_accepts_bools() -> None:
    p = ParamSpec("flag", True, "d")
    assert p.check(False) is False
    assert p.check(True) is True


@pytest.mark.parametrize(
    ("default", "value"),
    [
        (1.0, True),  # a bool is not a number here
        (1.0, "1.0"),
        (3, True),
        (3, "3"),
        ("text", 5),
        ("text", ["a"]),
        (["a"], "a"),  # a string is not a list of strings
        (["a"], [1]),
        ([1.0], ["x"]),
        ([1.0], [True]),
        ([1], [1.5]),
    ],
)
def test_wrong_type_names_the_parameter(default: Any, value: Any) -> None:
    p = ParamSpec("the_param", default, "d")
    with pytest.raises(ValueError, match=r"parameter 'the_param' must be a "):
        p.check(value)


def test_nan_rejected() -> None:
    with pytest.raises(ValueError, match="parameter 'x' must not be NaN"):
        ParamSpec("x", 1.0, "d").check(math.nan)


def test_range() -> None:
    p = ParamSpec("window", 8, "d", min=1, max=16)
    assert p.check(1) == 1
    assert p.check(16) == 16
    with pytest.raises(ValueError, match=r"parameter 'window' must be >= 1"):
        p.check(0)
    with pytest.raises(ValueError, match=r"parameter 'window' must be <= 16"):
        p.check(17)
    lr = ParamSpec("lr", 0.003, "d", min=1e-9, max=1.0)
    with pytest.raises(ValueError, match="parameter 'lr' must be >= "):
        lr.check(0)


def test_choices() -> None:
    p = ParamSpec("src", "header", "d", choices=("header", "receipt"))
    assert p.check("receipt") == "receipt"
    with pytest.raises(ValueError, match=r"parameter 'src' must be one of header, receipt"):
        p.check("Header")


def test_lists() -> None:
    strings = ParamSpec("names", ["A", "B"], "d")
    assert strings.type_name == "string[]"
    assert strings.check(("X",)) == ["X"]
    assert strings.check([]) == []
    floats = ParamSpec("gains", [1.0], "d")
    assert floats.type_name == "double[]"
    assert floats.check([1, 2.5]) == [1.0, 2.5]
    assert all(isinstance(v, float) for v in floats.check([1, 2]))
    ints = ParamSpec("ids", [], "d", item_type=int)
    assert ints.type_name == "int[]"
    assert ints.check([3, 4]) == [3, 4]
    empty_strings = ParamSpec("regions", [], "d")
    assert empty_strings.type_name == "string[]"
    with pytest.raises(ValueError, match="parameter 'regions'"):
        empty_strings.check([1])


@pytest.mark.parametrize("default", [1.0, 3, True, "s", ["a"], []])
def test_none_is_the_default(default: Any) -> None:
    assert ParamSpec("p", default, "d").check(None) == default


# ---- the graph itself --------------------------------------------------------------------------


def test_names_unique() -> None:
    assert len({n.name for n in NODES}) == len(NODES)
    assert len({n.executable for n in NODES}) == len(NODES)
    for n in NODES:
        names = [p.name for p in n.params]
        assert len(set(names)) == len(names), f"{n.name} declares a parameter twice"
        assert node_spec(n.name) is n
    with pytest.raises(KeyError, match="no node 'nope'"):
        node_spec("nope")


@pytest.mark.parametrize("spec", NODES, ids=lambda n: n.name)
def test_defaults_pass_their_own_check(spec: graph.NodeSpec) -> None:
    for p in spec.params:
        assert p.description, f"{spec.name}.{p.name} has no description"
        assert p.check(p.default) == p.default, f"{spec.name}.{p.name}: default fails its check"
        assert type(p.check(p.default)) is type(p.default)


# ---- generated and hand-written files ----------------------------------------------------------


def test_yaml_config_is_generated_from_the_graph() -> None:
    text = (ROOT / "config" / "terrain_odt.yaml").read_text()
    assert text == graph.yaml_config(), (
        "config/terrain_odt.yaml is out of date with terrain_odt/ros/graph.py; regenerate with "
        "python -m terrain_odt.ros.graph --yaml > config/terrain_odt.yaml"
    )


def test_yaml_config_loads_to_the_defaults_with_their_types() -> None:
    data = yaml.safe_load(graph.yaml_config())
    assert list(data) == [n.name for n in NODES]
    for n in NODES:
        values = data[n.name]["ros__parameters"]
        assert values == n.defaults()
        for name, v in values.items():
            # 1.0 must stay a double in YAML (a bare 1 would declare an int parameter).
            assert type(v) is type(n.param(name).default), f"{n.name}.{name}: {v!r}"


def test_demo_params_only_name_graph_parameters() -> None:
    data = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    assert isinstance(data, dict) and data
    for node, section in data.items():
        spec = node_spec(node.lstrip("/"))  # KeyError names the unknown node
        assert set(section) == {"ros__parameters"}, f"demo.yaml: {node} has {sorted(section)}"
        for name, value in section["ros__parameters"].items():
            p = spec.param(name)  # KeyError names the unknown parameter
            p.check(value)  # right type and range


def test_readme_ros_interface_is_generated_from_the_graph() -> None:
    text = (ROOT / "README.md").read_text()
    assert text.count(README_BEGIN) == 1 and text.count(README_END) == 1, "README markers"
    section = text[text.index(README_BEGIN) + len(README_BEGIN) : text.index(README_END)]
    assert section == graph.markdown_tables(), (
        "README.md's ROS interface section is out of date with terrain_odt/ros/graph.py: replace "
        f"the lines between '{README_BEGIN.strip()}' and '{README_END}' with the output of "
        "python -m terrain_odt.ros.graph --markdown"
    )


def test_cli_prints_the_generated_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert graph.main(["--yaml"]) == 0
    assert capsys.readouterr().out == graph.yaml_config()
    assert graph.main(["--markdown"]) == 0
    assert capsys.readouterr().out == graph.markdown_tables()
