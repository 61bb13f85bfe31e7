"""Where a result file came from: the git revision, and never a dirty tree by accident.

Every script that writes recorded results (`bench/results/*.json`, `docs/*.md`) calls
`record()` before it starts working:

* clean tree: returns `{"git": "<short HEAD>"}`;
* dirty tree (modified, staged or untracked files, other than recorded results: the script's
  own outputs, `bench/results/`, `docs/RESULTS.md`): exits
  with a message naming the changes, unless the script was given `--allow-dirty`; then it returns
  `{"git": "<short HEAD>-dirty", "git_diff": {"sha256", "stat", "untracked"}}` so that the result
  file says exactly which uncommitted changes produced it.

Outputs outside the work tree or under `build/` (smoke runs) are not recorded results: for them
a dirty tree is only noted, never refused.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ALLOW_DIRTY_HELP = (
    "run from a work tree with uncommitted changes; the result records the diff (hash, stat)"
)


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout


def _rel(root: Path, p: Path) -> str | None:
    try:
        return p.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


#: Recorded results of every script: products of runs, never inputs of one, so changes to them
#: (a make target that writes several, one after the other) do not make the tree dirty.
RESULTS = ("bench/results/", "docs/RESULTS.md")


def _excluded(path: str, outputs: Sequence[str]) -> bool:
    return any(path == o or path.startswith(o.rstrip("/") + "/") for o in outputs)


def record(root: Path, outputs: Sequence[Path], allow_dirty: bool) -> dict[str, Any]:
    """The git fields of a result file; refuses (SystemExit) a dirty tree unless `allow_dirty`.

    `outputs` are the files or directories the script writes: changes to them are products of
    earlier runs, not inputs, and do not make the tree dirty.
    """
    try:
        rev = _git(root, "rev-parse", "--short", "HEAD").strip()
    except (OSError, subprocess.CalledProcessError):
        return {"git": "unknown"}
    own = [r for r in (_rel(root, Path(o)) for o in outputs) if r is not None]
    status = _git(root, "status", "--porcelain", "--untracked-files=all").splitlines()
    changed = [ln[3:].split(" -> ")[-1].strip('"') for ln in status if ln.strip()]
    changed = [p for p in changed if not _excluded(p, [*own, *RESULTS])]
    if not changed:
        return {"git": rev}
    recorded = [r for r in own if not r.startswith("build/")]
    if recorded and not allow_dirty:
        listing = "\n  ".join(changed[:20]) + ("\n  ..." if len(changed) > 20 else "")
        raise SystemExit(
            f"refusing to write {', '.join(recorded)} from a dirty work tree (HEAD {rev}); "
            f"uncommitted changes:\n  {listing}\n"
            "Commit them first, or pass --allow-dirty to record the diff in the result."
        )
    exclude = [f":(exclude){o}" for o in own]
    diff = subprocess.run(
        ["git", "diff", "--binary", "HEAD", "--", ".", *exclude],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    stat = _git(root, "diff", "--stat", "HEAD", "--", ".", *exclude).strip()
    untracked = [
        p
        for p in _git(root, "ls-files", "--others", "--exclude-standard").splitlines()
        if not _excluded(p, own)
    ]
    return {
        "git": f"{rev}-dirty",
        "git_diff": {
            "sha256": hashlib.sha256(diff).hexdigest(),
            "stat": stat,
            "untracked": untracked,
        },
    }
