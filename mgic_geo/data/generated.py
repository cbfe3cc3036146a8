"""Roots that the package writes itself (synthetic meshes, synthetic images), guarded by a marker file.

A generator may write into a missing or empty root, or into one its own earlier run made with the same
parameters (recorded in the marker); anything else is refused, so user data is never overwritten.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from mgic_geo.data.layout import is_empty
from mgic_geo.validation import check_int


def write_atomically(path: Path, text: str) -> None:
    """Write ``path`` atomically, so an interrupted run never leaves a half-written file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def claim_generated_root(root: Path, marker_name: str, wanted: dict, *, what: str, writer: str) -> None:
    """Make ``root`` ready for a generator run with parameters ``wanted``, or refuse it.

    ``what`` names the generated things in messages ("synthetic shapes"), ``writer`` the generator.
    """
    marker = root / marker_name
    if marker.is_file():
        try:
            found = json.loads(marker.read_text())
        except ValueError:
            found = marker.read_text()[:200]
        if found != wanted:
            raise ValueError(f"{marker} records synthetic data written with {found}, but {wanted} was asked for; "
                             "nothing was changed: pick another root (or delete that one yourself)")
    elif not is_empty(root):
        raise ValueError(f"refusing to write {what} into {str(root)!r}: it already holds files not written by "
                         f"{writer} (no {marker_name}); pick an empty or new folder")
    else:
        root.mkdir(parents=True, exist_ok=True)
        write_atomically(marker, json.dumps(wanted, indent=2) + "\n")


def check_count_pair(name: str, value) -> tuple[int, int]:
    """``value`` as a ``(train, test)`` pair of counts (e.g. synthetic shapes per class); a ``ValueError``
    naming ``name`` unless it is a tuple or list of two positive integers."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"`{name}` must be a (train, test) pair of positive integers, got {value!r}")
    return check_int(f"{name}[0]", value[0]), check_int(f"{name}[1]", value[1])
