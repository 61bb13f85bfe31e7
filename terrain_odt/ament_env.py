"""Run at interpreter start by the `.pth` that `pip install .` and `make setup` put in
site-packages (see `terrain_odt.ament_layout`): adds the environment's prefix to
`AMENT_PREFIX_PATH` when terrain_odt's ament index marker is there, so `ros2 launch terrain_odt`
finds the package without sourcing anything. Standard library only, and it never raises.
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import MutableMapping
from pathlib import Path

ENV = "AMENT_PREFIX_PATH"
MARKER = "share/ament_index/resource_index/packages/terrain_odt"


def add_prefix_to_ament_path(
    environ: MutableMapping[str, str] | None = None, prefix: Path | None = None
) -> bool:
    """Append `prefix` (default: where pip puts this interpreter's data files, e.g. the venv) to
    `AMENT_PREFIX_PATH` if terrain_odt is installed there and it is not listed yet. Returns
    whether it changed the variable. A sourced ROS setup's entries stay first."""
    env = os.environ if environ is None else environ
    try:
        pfx = prefix or Path(sysconfig.get_path("data"))
        if not (pfx / MARKER).exists():
            return False
        parts = [p for p in env.get(ENV, "").split(os.pathsep) if p]
        real = os.path.realpath(pfx)
        if any(os.path.realpath(p) == real for p in parts):
            return False
        env[ENV] = os.pathsep.join([*parts, str(pfx)])
        return True
    except Exception:  # a failing .pth line would print a traceback at every Python start
        return False
