"""Writing results as tables: one markdown table and one CSV, printed and saved side by side.

Shared by the experiments (``mgic-geo experiment ...``, ``mgic-geo table ...``) and the benchmarks
(``mgic-geo bench ...``).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence


def format_value(value) -> str:
    """A table cell: floats to 4 significant digits (whole numbers from 1,000 up), the rest as ``str``."""
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table of ``rows`` (dicts sharing the keys ``columns``)."""
    if not rows:
        raise ValueError("cannot write a table without rows")
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(format_value(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def prepare_output_dir(out: str | Path) -> Path:
    """Create ``out`` (and parents); refuse a path that exists and is not a directory."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`--out` {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_table(
    rows: Sequence[dict],
    out: str | Path,
    name: str,
    *,
    title: str,
    notes: Sequence[str] = (),
    columns: Sequence[str] | None = None,
) -> tuple[Path, Path, str]:
    """Write ``<out>/<name>.md`` (title, table, notes) and ``<out>/<name>.csv``.
    Returns both paths and the markdown text."""
    out = prepare_output_dir(out)
    columns = list(columns or rows[0].keys())
    text = f"## {title}\n\n{markdown_table(rows, columns)}\n"
    if notes:
        text += "\n" + "\n".join(f"- {note}" for note in notes) + "\n"
    md_path, csv_path = out / f"{name}.md", out / f"{name}.csv"
    md_path.write_text(text)
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return md_path, csv_path, text
