"""Checks of saved weights shared by training checkpoints (:mod:`mgic_geo.training.fault`), the
inference loader (:mod:`mgic_geo.inference.checkpoint`) and released weights
(:mod:`mgic_geo.models.weights`), without importing Lightning: what a failed
``torch.load(weights_only=True)`` means (one message on every path), tensors that are non-finite or
claim more elements than the file stores, hyperparameters that do not fit the weights, keys or
shapes that do not fit, and the mode of a newly written file."""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import torch

#: the most classes a checkpoint's hyperparameters may ask for: the task modules keep two
#: ``num_classes x num_classes`` confusion matrices, so the number sets their memory before any weight is read
MAX_NUM_CLASSES = 4096
_ADVICE = re.compile(r"weights.only|Weights only load failed|Re-running|trusted source|Please file an issue|"
                     r"Check the documentation|safe_globals|allowlist", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TORCH_HINTS = re.compile(r"\. (?:This is an internal|If you are seeing|The file might be)")


def _file_head(path: Any, size: int = 4) -> bytes | None:
    """The first ``size`` bytes of the local file ``path``; ``None`` where it cannot be read."""
    try:
        with open(os.fspath(path), "rb") as file:
            return file.read(size)
    except (OSError, TypeError, ValueError):
        return None


def _torch_reason(error: BaseException) -> str:
    """The line of ``error``'s message that says what ``torch.load`` found, without PyTorch's advice
    (never the advice to load with ``weights_only=False``, which would run an untrusted file's code)."""
    lines = [_ANSI.sub("", line).strip() for line in str(error).splitlines()]
    for line in lines:
        if not line or _ADVICE.search(line):
            continue
        line = re.sub(r"^WeightsUnpickler error:\s*", "", line)
        return _TORCH_HINTS.split(line, maxsplit=1)[0].rstrip(".")
    return ""


def load_error_message(path: Any, error: BaseException, *, kind: str, plural: str, head: bytes | None = None) -> str:
    """One line naming ``path`` and what ``torch.load(weights_only=True)`` found wrong with the file, the
    same on every path that loads weights (the CLI, ``load_from_checkpoint``, ``load_classifier``,
    released weights). It never repeats PyTorch's advice to load with ``weights_only=False``.

    Args:
        path (Any): the file, as named in the message.
        error (BaseException): what ``torch.load`` raised.
        kind (str): what the file should be, e.g. ``"checkpoint"``, ``"weights file"``.
        plural (str): how such files are named in the message, e.g. ``"checkpoints"``.
        head (bytes | None): the file's first bytes where ``path`` is not a local file (e.g. bytes in memory).
    """
    safe = f"({plural} are read with torch.load(weights_only=True))"
    refused = re.search(r"GLOBAL ([\w.]+)", str(error))
    if refused:
        return (f"{path}: refused to load: the file holds a pickled reference to {refused.group(1)}, which is "
                f"neither weights nor plain data, and unpickling it could run code {safe}")
    head = _file_head(path) if head is None else head
    reason = _torch_reason(error)
    detail = f"{type(error).__name__}: {reason}" if reason else type(error).__name__
    zipped = head is not None and head.startswith(b"PK")
    if isinstance(error, pickle.UnpicklingError) and not zipped:
        if head is not None and head.startswith(b"\x80"):
            return (f"{path}: refused to load: a raw pickle, not a zip archive as torch.save writes, with pickle "
                    f"features that torch.load(weights_only=True) does not accept ({detail}); it was not unpickled, "
                    f"as that could run code {safe}")
        return (f"{path}: not a readable {kind}: neither a zip archive as torch.save writes nor plain data "
                f"that torch.load(weights_only=True) accepts ({detail})")
    if head == b"":
        return f"{path}: not a readable {kind} (the file is empty)"
    if zipped or isinstance(error, (EOFError, IndexError)) or "EOF" in reason:
        return f"{path}: not a readable {kind} ({detail}; the file is damaged or truncated)"
    return f"{path}: not a readable {kind} ({detail})"


def nonfinite_tensors(state_dict: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` holding NaN or inf."""
    return [name for name, value in state_dict.items()
            if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())]


def expanded_tensors(state_dict: Mapping[str, Any]) -> list[str]:
    """Names of the tensors of ``state_dict`` with more elements than their storage holds (views with
    zero strides): a small file can so describe a huge tensor, which a network built to fit it would
    allocate for real."""
    return [name for name, value in state_dict.items()
            if torch.is_tensor(value) and value.numel() > value.untyped_storage().nbytes() // value.element_size()]


def _listed(names: list[str], shown: int = 5) -> str:
    return f"{', '.join(names[:shown])}{', ...' if len(names) > shown else ''}"


def unusable_weights(path: Any, state_dict: Mapping[str, Any]) -> str | None:
    """One line naming ``path`` and the tensors of ``state_dict`` that must not be loaded (claiming
    more elements than the file stores, or holding NaN or inf); ``None`` when all are usable."""
    expanded = expanded_tensors(state_dict)  # first: isfinite would allocate the tensors' full size
    if expanded:
        return (f"{path}: refused: {len(expanded)} tensor(s) claim more elements than the file stores for them: "
                f"{_listed([f'{n} {list(state_dict[n].shape)}' for n in expanded])}")
    bad = nonfinite_tensors(state_dict)
    if bad:
        return f"{path}: refused: {len(bad)} tensor(s) hold NaN or inf: {_listed(bad)}"
    return None


def class_count_problem(hparams: Mapping[str, Any]) -> str | None:
    """What is wrong with ``hparams["num_classes"]`` (a checkpoint's) as a size; ``None`` when it is an
    integer from 2 to :data:`MAX_NUM_CLASSES` or not given."""
    if "num_classes" not in hparams:
        return None
    value = hparams["num_classes"]
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= MAX_NUM_CLASSES:
        return (f"its hyperparameters give num_classes={value!r}, expected an integer from 2 to {MAX_NUM_CLASSES}; "
                "nothing was built")
    return None


def hparams_shape_problem(hparams: Mapping[str, Any], state_dict: Mapping[str, Any], *,
                          prefix: str = "net.", strict: bool = True) -> str | None:
    """What keeps ``state_dict`` from fitting the registry network ``hparams`` describe (``model``,
    ``num_classes``, ``model_kwargs``), found by building that network on the ``meta`` device, which
    allocates nothing: a checkpoint whose hyperparameters ask for a bigger network than its weights is
    so refused before anything is built (:func:`state_dict_mismatch`'s text). ``None`` when it fits, or
    when the hyperparameters name no registry model or do not build one (the caller's own checks then
    name the problem).

    Args:
        hparams (Mapping[str, Any]): the hyperparameters the network would be built from.
        state_dict (Mapping[str, Any]): the checkpoint's weights (anything with a ``shape`` per key).
        prefix (str): the prefix of the network's keys in ``state_dict`` (a task module's ``net.``).
        strict (bool): whether missing and unexpected keys count too (else only shapes that differ, which
            a non-strict ``load_state_dict`` refuses as well).
    """
    from mgic_geo.models import create_model, list_models

    model, kwargs = hparams.get("model"), hparams.get("model_kwargs") or {}
    if not isinstance(model, str) or model not in list_models() or not isinstance(kwargs, Mapping):
        return None
    arguments = dict(kwargs)
    if "num_classes" in hparams:
        arguments["num_classes"] = hparams["num_classes"]
    try:
        with torch.device("meta"):
            network = create_model(model, **arguments)
    except Exception:  # noqa: BLE001  bad arguments: the real build raises them, named by the caller
        return None
    expected = {prefix + key: value for key, value in network.state_dict().items()}
    if not strict:
        expected = {key: value for key, value in expected.items() if key in state_dict}
        state_dict = {key: value for key, value in state_dict.items() if key in expected}
    return state_dict_mismatch(expected, state_dict)


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


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask sets it for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(fd: int) -> None:
    """Give the open file ``fd`` (made by ``tempfile.mkstemp``, mode 0600) the mode a plain ``open``
    would have given it: ``0666`` less the process's umask, as ``torch.save`` to a path does."""
    os.fchmod(fd, 0o666 & ~_umask())
