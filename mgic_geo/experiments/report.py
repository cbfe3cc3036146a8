"""Reading what ``mgic-geo test`` wrote, for the tables of the paper beside ours.

Tables are written with :mod:`mgic_geo.tables`.
"""
from __future__ import annotations

import json
from pathlib import Path


def read_test_results(results: str | Path) -> list[dict]:
    """Every ``test_results.json`` (what ``mgic-geo test`` writes) under ``results``, oldest first,
    each with its ``path``; none when the folder does not exist."""
    root = Path(results)
    if not root.is_dir():
        return []
    records = []
    for path in sorted(root.rglob("test_results.json"), key=lambda p: p.stat().st_mtime):
        try:
            record = json.loads(path.read_text())
            record["model"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a test_results.json written by `mgic-geo test` ({error})") from None
        records.append(record | {"path": str(path)})
    return records
