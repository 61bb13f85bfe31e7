"""The package's install layout in an ament prefix, defined once (setup.py, `make setup`, tests).

`ros2 launch` / `ros2 run` / `launch_ros` find a package through the ament index: a marker file
`<prefix>/share/ament_index/resource_index/packages/terrain_odt` in one of the prefixes listed
in `AMENT_PREFIX_PATH`; its launch and config files under `<prefix>/share/terrain_odt`; its
node executables in `<prefix>/lib/terrain_odt`. The three ways of installing provide them so:

- **colcon** (`colcon build`, a ROS install): setup.py's `data_files`, and setup.cfg puts the
  console scripts in `lib/terrain_odt`; `setup.bash` sets `AMENT_PREFIX_PATH`.
- **`pip install .`** (wheel): the same `data_files` land under the environment's data prefix
  (a venv: the venv). pip ignores setup.cfg's `install_scripts` and puts console scripts in
  `bin/`, so `lib/terrain_odt` gets small launchers (`resource/libexec/*`, generated from the
  graph: `python -m terrain_odt.ament_layout write-libexec`) that exec `../../bin/<node>`, or
  run the node's module with `python3` where there is none (colcon). A `.pth` file in
  site-packages adds the prefix to `AMENT_PREFIX_PATH` when Python starts (if the marker is
  there and the prefix is not listed yet), so `ros2 launch terrain_odt ...` works without
  sourcing anything.
- **editable** (`pip install -e .`, what `make setup` does): the editable wheel installs no
  data files at all, so `make setup` then runs `python -m terrain_odt.ament_layout dev-install`,
  which makes the same layout in the venv as symbolic links into the source tree (edits to launch
  and config files take effect at once; one link per file, because `ros2 launch` walks `share/`
  without following directory links) and writes the `.pth`.

This file is also run by setup.py (`runpy`), so it imports nothing from the package and only
the standard library at module level.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

PACKAGE = "terrain_odt"
MARKER_DIR = "share/ament_index/resource_index/packages"
LIBEXEC_DIR = f"lib/{PACKAGE}"
#: Source folder of the `lib/terrain_odt` launchers (one per node executable).
LIBEXEC_SOURCE = "resource/libexec"
#: Put in site-packages; processed by `site` at interpreter start (after the editable finder's
#: `__editable__*.pth`, which sorts first, so the package imports in both install modes).
PTH_NAME = "terrain_odt_ament_prefix.pth"
PTH_LINE = f"import {PACKAGE}.ament_layout as _m; _m.add_prefix_to_ament_path()\n"
ENV = "AMENT_PREFIX_PATH"


def data_files(root: str | os.PathLike[str] = ".") -> list[tuple[str, list[str]]]:
    """setup.py's `data_files`: (install dir relative to the prefix, files relative to `root`)."""
    base = Path(root)

    def glob(pattern: str) -> list[str]:
        return sorted(p.relative_to(base).as_posix() for p in base.glob(pattern) if p.is_file())

    return [
        # Marker that makes the package visible to ament_index (ros2 pkg, launch).
        (MARKER_DIR, [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        # Generated from the simulation world description (terrain_odt.sim): Gazebo world and
        # robot SDF, ros_gz_bridge configuration, MuJoCo model.
        (f"share/{PACKAGE}/sim", glob("sim/*")),
        # Shipped pretrained models (blob + JSON sidecar) and the demo bag.
        (f"share/{PACKAGE}/models", glob("models/*.odtm") + glob("models/*.json")),
        (f"share/{PACKAGE}/data/demo", glob("data/demo/*.mcap")),
        # Node launchers where launch_ros and `ros2 run` look (see the module docstring).
        (LIBEXEC_DIR, glob(f"{LIBEXEC_SOURCE}/*")),
    ]


# ---- AMENT_PREFIX_PATH -------------------------------------------------------------------------


def install_prefix() -> Path:
    """Where pip puts data files for this interpreter (a venv: the venv; Debian: /usr/local)."""
    return Path(sysconfig.get_path("data"))


def add_prefix_to_ament_path(
    environ: dict[str, str] | os._Environ[str] | None = None, prefix: Path | None = None
) -> bool:
    """Append `prefix` (default: `install_prefix()`) to `AMENT_PREFIX_PATH` if terrain_odt is
    installed there and it is not listed yet. Returns whether it changed the variable.

    Run at interpreter start by the installed `.pth`; never raises (a broken `.pth` line would
    print a traceback at every Python start).
    """
    env = os.environ if environ is None else environ
    try:
        pfx = prefix or install_prefix()
        if not (pfx / MARKER_DIR / PACKAGE).exists():
            return False
        parts = [p for p in env.get(ENV, "").split(os.pathsep) if p]
        real = os.path.realpath(pfx)
        if any(os.path.realpath(p) == real for p in parts):
            return False
        env[ENV] = os.pathsep.join([*parts, str(pfx)])
        return True
    except Exception:
        return False


# ---- lib/terrain_odt launchers -----------------------------------------------------------------


def libexec_script(executable: str, module: str) -> str:
    """The `lib/terrain_odt/<executable>` launcher of a node whose `main` is in `module`."""
    return f"""#!/bin/sh
# {executable}: a terrain_odt node, where `ros2 run` and `ros2 launch` look for it
# (<prefix>/lib/{PACKAGE}). Generated by `python -m terrain_odt.ament_layout write-libexec`.
# pip puts the console script (with the right interpreter) in <prefix>/bin; colcon installs
# its own in this folder instead, replaced by this file: then python3 from PATH runs the module.
exe="$(dirname "$0")/../../bin/{executable}"
if [ -x "$exe" ]; then exec "$exe" "$@"; fi
exec python3 -m {module} "$@"
"""


def libexec_scripts() -> dict[str, str]:
    """File name → text of every launcher: one per node of the graph and per tool node."""
    graph = importlib.import_module(f"{PACKAGE}.graph")
    out = {}
    for spec in (*graph.NODES, *graph.TOOL_NODES):
        module = spec.factory.partition(":")[0]
        out[spec.executable] = libexec_script(spec.executable, module)
    return out


def write_libexec(root: Path) -> list[Path]:
    """(Re)write `resource/libexec/*` from the graph; removes launchers of nodes that are gone."""
    folder = root / LIBEXEC_SOURCE
    folder.mkdir(parents=True, exist_ok=True)
    scripts = libexec_scripts()
    for stale in folder.iterdir():
        if stale.name not in scripts:
            stale.unlink()
    written = []
    for name, text in scripts.items():
        path = folder / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        path.chmod(0o755)
        written.append(path)
    return written


# ---- editable (development) install ------------------------------------------------------------


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return
        if link.is_dir() and not link.is_symlink():
            raise FileExistsError(f"{link} is a directory, not a file of {PACKAGE}")
        link.unlink()
    link.symlink_to(target)


def dev_install(
    root: Path, prefix: Path | None = None, site_packages: Path | None = None
) -> list[Path]:
    """Make the ament layout of `data_files(root)` in `prefix` as links into `root`, remove
    links into `root` that no file matches any more, and write the `.pth`. Returns the links."""
    root = root.resolve()
    prefix = prefix or install_prefix()
    site = site_packages or Path(sysconfig.get_path("purelib"))
    made: list[Path] = []
    for dest, files in data_files(root):
        for f in files:
            link = prefix / dest / Path(f).name
            _link(root / f, link)
            made.append(link)
    wanted = set(made)
    for folder in {link.parent for link in made} | {prefix / LIBEXEC_DIR}:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.is_symlink() and p not in wanted and str(os.readlink(p)).startswith(str(root)):
                p.unlink()
    site.mkdir(parents=True, exist_ok=True)
    (site / PTH_NAME).write_text(PTH_LINE)
    return made


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m terrain_odt.ament_layout", description=__doc__.split("\n\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    dev = sub.add_parser("dev-install", help="link the layout into this environment's prefix")
    dev.add_argument("--root", default=None, help="source tree (default: this checkout)")
    dev.add_argument("--prefix", default=None, help="default: this interpreter's data prefix")
    w = sub.add_parser("write-libexec", help="regenerate resource/libexec from the graph")
    w.add_argument("--root", default=None, help="source tree (default: this checkout)")
    args = ap.parse_args(argv)
    root = Path(args.root) if args.root else Path(__file__).resolve().parent.parent
    if not (root / "package.xml").is_file():
        print(f"{root} is not a terrain_odt source tree (no package.xml)", file=sys.stderr)
        return 2
    if args.cmd == "write-libexec":
        for p in write_libexec(root):
            print(p.relative_to(root))
        return 0
    prefix = Path(args.prefix) if args.prefix else install_prefix()
    made = dev_install(root, prefix)
    print(
        f"{PACKAGE}: {len(made)} files linked into {prefix} (share/{PACKAGE}, {LIBEXEC_DIR}, "
        f"ament index); {PTH_NAME} adds it to {ENV}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
