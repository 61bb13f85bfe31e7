"""Where the package's shared files are: config, models, demo data.

Installed with colcon or pip, they live in `<prefix>/share/terrain_odt`; in a source checkout,
at the repository root. `resolve` finds a relative path in the current directory first, then in
those places, so parameter files can say `models/borealtc_mlp.json` in both cases.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

__all__ = ["resolve", "share_dirs"]

PACKAGE = "terrain_odt"
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_dirs() -> list[Path]:
    """Candidate roots of the package's data, most specific first."""
    dirs: list[Path] = []
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )

        with contextlib.suppress(PackageNotFoundError, ValueError, LookupError, OSError):
            dirs.append(Path(get_package_share_directory(PACKAGE)))
    except ImportError:
        pass
    dirs.append(Path(sys.prefix) / "share" / PACKAGE)
    if (_SOURCE_ROOT / "package.xml").is_file():
        dirs.append(_SOURCE_ROOT)
    return dirs


def resolve(path: str | Path) -> Path:
    """An existing file for `path` (absolute, relative to the cwd, or to a share dir).

    Returns `path` unchanged when nothing exists, so the caller's error names what was asked.
    """
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    for d in share_dirs():
        if (d / p).exists():
            return d / p
    return p
