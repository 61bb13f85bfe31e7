"""Shared setup of the result scripts (`tools/exp_*.py`, `tools/gen_golden.py`).

Importing this module puts the repository root on `sys.path`, so that a script run as
`python tools/<name>.py` imports `terrain_odt` and `tools.*` as it does when imported (by the
tests) as `tools.<name>`. A script starts with

    try:
        from tools import _common as common
    except ModuleNotFoundError:  # run as `python tools/<name>.py`: the root is not on sys.path yet
        import _common as common

    ROOT = common.ROOT

and then takes from here its command-line parser (with `--allow-dirty`, for `tools/provenance.py`),
its log function and the JSON writing. Provenance itself stays `provenance.record(ROOT, ...)`
with the script's own `ROOT` (tests point it at a scratch repository).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import provenance  # noqa: E402


def logger(tool: str) -> Callable[[str], None]:
    """A `log(msg)` that prints `[tool] msg` at once (long runs are followed live)."""

    def log(msg: str) -> None:
        print(f"[{tool}] {msg}", flush=True)

    return log


def parser(doc: str | None, *, allow_dirty: bool = True) -> argparse.ArgumentParser:
    """The script's argument parser: described by the first line of its docstring `doc`, with
    `--allow-dirty` (see `tools/provenance.py`) unless `allow_dirty` is False."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    if allow_dirty:
        ap.add_argument("--allow-dirty", action="store_true", help=provenance.ALLOW_DIRTY_HELP)
    return ap


def rounded(obj: Any, digits: int) -> Any:
    """`obj` with every float rounded to `digits` significant digits (a smaller JSON), numpy
    integers as Python ints; NaN stays NaN."""
    import numpy as np

    if isinstance(obj, float):
        return obj if obj != obj else float(f"{obj:.{digits}g}")
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [rounded(v, digits) for v in obj]
    return obj


def write_text(path: Path, text: str, *, atomic: bool = False) -> None:
    """Write `text` to `path`, creating its directory; `atomic`: through a temporary file next to
    it, so that a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if atomic:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    else:
        path.write_text(text)


def write_json(path: Path, obj: Any, *, atomic: bool = False) -> None:
    """`obj` as JSON indented by one space, with a final newline (see `write_text`)."""
    write_text(path, json.dumps(obj, indent=1) + "\n", atomic=atomic)


__all__ = ["ROOT", "logger", "parser", "rounded", "write_json", "write_text"]
