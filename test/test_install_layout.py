"""The install layout (terrain_odt/ament_layout.py, terrain_odt/ament_env.py) without ROS: the
node launchers and the .pth match what is generated, the AMENT_PREFIX_PATH rule, the editable
dev install's links. test_ros2_launch.py runs `ros2 launch` on both install modes."""

from __future__ import annotations

import os
from pathlib import Path

from terrain_odt import ament_env, ament_layout
from terrain_odt.ros import graph

ROOT = Path(__file__).resolve().parent.parent


def test_libexec_launchers_are_generated_from_the_graph() -> None:
    folder = ROOT / ament_layout.LIBEXEC_SOURCE
    expected = ament_layout.libexec_scripts()
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected), (
        "run: python -m terrain_odt.ament_layout write-libexec"
    )
    for name, text in expected.items():
        path = folder / name
        assert path.read_text() == text, f"{path} is stale: python -m terrain_odt.ament_layout"
        assert os.access(path, os.X_OK), path
    for spec in (*graph.NODES, *graph.TOOL_NODES):
        module = spec.factory.partition(":")[0]
        assert f"python3 -m {module} " in expected[spec.executable]
        assert f'/../../bin/{spec.executable}"' in expected[spec.executable]


def test_pth_file_is_the_one_line() -> None:
    text = (ROOT / "resource" / ament_layout.PTH_NAME).read_text()
    assert text == ament_layout.PTH_LINE
    assert text.startswith("import ") and text.count("\n") == 1  # what `site` executes
    assert f"{ament_layout.MARKER_DIR}/{ament_layout.PACKAGE}" == ament_env.MARKER


def test_prefix_added_to_ament_path_once_and_only_if_installed(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    assert not ament_env.add_prefix_to_ament_path(env, tmp_path)  # no marker: nothing
    assert env == {}
    (tmp_path / ament_env.MARKER).parent.mkdir(parents=True)
    (tmp_path / ament_env.MARKER).touch()
    assert ament_env.add_prefix_to_ament_path(env, tmp_path)
    assert env == {"AMENT_PREFIX_PATH": str(tmp_path)}
    assert not ament_env.add_prefix_to_ament_path(env, tmp_path)  # already listed
    ros = {"AMENT_PREFIX_PATH": "/opt/ros/kilted"}
    assert ament_env.add_prefix_to_ament_path(ros, tmp_path)
    assert ros["AMENT_PREFIX_PATH"] == f"/opt/ros/kilted{os.pathsep}{tmp_path}"  # ROS first


def test_dev_install_links_every_data_file(tmp_path: Path) -> None:
    prefix, site = tmp_path / "prefix", tmp_path / "site"
    stale = prefix / "share" / "terrain_odt" / "config" / "removed.yaml"
    stale.parent.mkdir(parents=True)
    stale.symlink_to(ROOT / "config" / "removed.yaml")  # a file since deleted from the tree
    made = ament_layout.dev_install(ROOT, prefix, site)
    assert not stale.is_symlink()
    for dest, files in ament_layout.data_files(ROOT):
        for f in files:
            link = prefix / dest / Path(f).name
            assert link.is_symlink() and link.resolve() == (ROOT / f).resolve()
    assert (prefix / ament_env.MARKER).exists()
    assert (prefix / "share/terrain_odt/launch/robot.launch.py") in made
    assert (site / ament_layout.PTH_NAME).read_text() == ament_layout.PTH_LINE
    assert ament_layout.dev_install(ROOT, prefix, site) == made  # idempotent
