"""Shared by the result scripts: replace a generated section of docs/RESULTS.md."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_MD = ROOT / "docs" / "RESULTS.md"


def merge_section(name: str, body: str, path: Path = RESULTS_MD) -> None:
    """Put `body` between `<!-- NAME:begin -->` and `<!-- NAME:end -->` (appended if the markers
    are not there yet, before the first other generated section otherwise kept in order)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    section = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Results\n\n"
    i, j = text.find(begin), text.find(end)
    if i >= 0 and j > i:
        text = text[:i] + section + text[j + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")
