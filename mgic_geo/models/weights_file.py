"""The release file of a network's weights and its JSON metadata: reading and checking them.

A release file (``mgic-geo release-weights``, :mod:`mgic_geo.models.release`) is a stripped Lightning
checkpoint holding the metadata under :data:`META_KEY`; a JSON file of the same name beside it holds
the same metadata plus ``sha256``, ``file`` and ``size`` (:func:`check_meta` lists the keys). Every
problem is a :class:`WeightsError` naming the file. :mod:`mgic_geo.models.weights` builds the
torchvision-style weights enums on these.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from mgic_geo.state_checks import load_error_message, unusable_weights

META_KEY = "mgic_geo_weights"  # the metadata inside the release file (everything but sha256, file, size)
NET_PREFIX = "net."  # the task module's attribute holding the network (mgic_geo.training.RegistryTask.net)
SCHEMA = 1
# metadata that must be the same in the file and in its JSON
EMBEDDED_KEYS = ("model", "model_kwargs", "num_classes", "categories")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class WeightsError(ValueError):
    """Released weights that cannot be used: missing, changed since release, not plain data, non-finite,
    inconsistent metadata, or weights for another model."""


# -- metadata -----------------------------------------------------------------------------------
def check_meta(meta: Any, where: str, *, released: bool = True) -> dict[str, Any]:
    """``meta`` if it has every key of the module docstring with a usable value; else
    :class:`WeightsError` naming ``where`` and every problem. ``released=False`` leaves out the keys
    known only once the file is written (``sha256``, ``file``, ``size``)."""
    if not isinstance(meta, dict):
        raise WeightsError(f"{where}: the metadata must be a JSON object, got {type(meta).__name__}")
    problems = []

    def need(key: str, ok: Callable[[Any], bool], what: str, inside: Mapping[str, Any] = meta,
             prefix: str = "") -> None:
        if key not in inside:
            problems.append(f"{prefix}{key} is missing ({what})")
        elif not ok(inside[key]):
            problems.append(f"{prefix}{key} must be {what}, got {inside[key]!r}")

    def is_int(value: Any, minimum: int = 0) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= minimum

    def fraction(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0

    need("model", lambda v: isinstance(v, str) and bool(v), "a registry model name")
    need("model_kwargs", lambda v: isinstance(v, dict), "an object of builder arguments")
    need("num_classes", lambda v: is_int(v, 2), "an integer >= 2")
    need("categories", lambda v: isinstance(v, list) and all(isinstance(c, str) and c for c in v),
         "a list of class names")
    if is_int(meta.get("num_classes"), 2) and isinstance(meta.get("categories"), list) \
            and len(meta["categories"]) != meta["num_classes"]:
        problems.append(f"categories has {len(meta['categories'])} names for num_classes={meta['num_classes']}")
    need("num_params", lambda v: is_int(v, 1), "a positive integer")
    need("num_points", lambda v: v is None or is_int(v, 1), "the points per training cloud (an integer, or null)")
    need("epochs", is_int, "the training epochs finished (an integer)")
    need("training_data", lambda v: isinstance(v, str) and bool(v.strip()), "a description of the training data")
    need("metrics", lambda v: isinstance(v, dict), "an object with overall_accuracy and split")
    if isinstance(meta.get("metrics"), dict):
        need("overall_accuracy", fraction, "a fraction in [0, 1]", meta["metrics"], "metrics.")
        need("split", lambda v: isinstance(v, str) and bool(v), "the split the accuracy was measured on",
             meta["metrics"], "metrics.")
        if meta["metrics"].get("mean_class_accuracy") is not None:
            need("mean_class_accuracy", fraction, "a fraction in [0, 1]", meta["metrics"], "metrics.")
    need("recipe", lambda v: isinstance(v, dict), "an object with at least the config file")
    if isinstance(meta.get("recipe"), dict):
        need("config", lambda v: isinstance(v, str) and bool(v), "the training config file", meta["recipe"], "recipe.")
    if released:
        need("sha256", lambda v: isinstance(v, str) and bool(_SHA256.fullmatch(v)), "64 lower-case hex digits")
        need("file", lambda v: isinstance(v, str) and bool(v), "the weights file's name")
        need("size", is_int, "the file's size in bytes")
    if problems:
        raise WeightsError(f"{where}: incomplete metadata: {'; '.join(problems)}")
    return meta


_META_CACHE: dict[tuple[str, int, int], dict[str, Any]] = {}


def read_meta(path: str | Path) -> dict[str, Any]:
    """The checked metadata JSON at ``path`` (cached while the file is unchanged)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as error:
        raise WeightsError(f"{path}: cannot read the weights' metadata ({error.strerror or error})") from None
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _META_CACHE:
        try:
            meta = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise WeightsError(f"{path}: not readable JSON metadata ({error})") from None
        _META_CACHE[key] = check_meta(meta, str(path))
    return json.loads(json.dumps(_META_CACHE[key]))  # a copy: callers may change theirs


# -- reading a release file ----------------------------------------------------------------------
def sha256_of(path: str | Path) -> str:
    """Hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_release_bytes(data: bytes, path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a release file's ``data``, checked to hold a ``state_dict``
    of finite tensors (none claiming more elements than the file stores); :class:`WeightsError` naming ``path``
    otherwise."""
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  anything torch.load raises is about the file
        raise WeightsError(load_error_message(path, error, kind="weights file", plural="weights",
                                              head=data[:4])) from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsError(f"{path}: not a release file (expected a dict whose 'state_dict' maps names to tensors)")
    problem = unusable_weights(path, state)  # NaN or inf, or more elements than the file stores
    if problem:
        raise WeightsError(problem)
    return checkpoint
