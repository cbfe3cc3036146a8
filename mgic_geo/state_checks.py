"""Checks of saved weights shared by training checkpoints (:mod:`mgic_geo.training.fault`) and
released weights (:mod:`mgic_geo.models.weights`), without importing Lightning: what a failed
``torch.load(weights_only=True)`` means, non-finite tensors, and keys or shapes that do not fit."""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch


def load_error_message(path: Any, error: BaseException, *, kind: str, plural: str) -> str:
    """One line naming ``path`` and what ``torch.load(weights_only=True)`` found wrong with the file
    (``kind``: ``"checkpoint"``, ``"weights file"``; ``plural``: how such files are named in the message)."""
    text = str(error)
    refused = re.search(r"GLOBAL ([\w.]+)", text)
    if refused:
        return (f"{path}: refused to load: the file holds a pickled reference to {refused.group(1)}, which is "
                f"neither weights nor plain data, and unpickling it could run code ({plural} are read with "
                "torch.load(weights_only=True))")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{path}: not a readable {kind} ({type(error).__name__}: {first})"


def nonfinite_tensors(state_dict: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` holding NaN or inf."""
    return [name for name, value in state_dict.items()
            if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())]


def state_dict_mismatch(expected: Mapping[str, Any], given: Mapping[str, Any], shown: int = 3, *,
                        source: str = "the checkpoint") -> str | None:
    """What keeps ``given`` (a saved ``state_dict``, from ``source``) from loading into a model whose
    ``state_dict()`` is ``expected``: counts of missing keys, unexpected keys and shape mismatches,
    the first ``shown`` of each named; ``None`` when it fits."""
    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    shapes = [f"{key} {list(given[key].shape)} in {source} vs {list(expected[key].shape)} in the model"
              for key in expected if key in given and hasattr(given[key], "shape")
              and tuple(given[key].shape) != tuple(expected[key].shape)]

    def listing(items: list[str], what: str) -> str:
        more = f", ... ({len(items) - shown} more)" if len(items) > shown else ""
        return f"{len(items)} {what} ({', '.join(items[:shown])}{more})"

    parts = [listing(items, what) for items, what in ((missing, "missing keys"), (unexpected, "unexpected keys"),
                                                      (shapes, "shape mismatches")) if items]
    return "; ".join(parts) or None
