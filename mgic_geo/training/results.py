"""``test_results.json``: what a ``mgic-geo test`` run measured, one file per run.

Written by the task modules (:class:`~mgic_geo.training.module.PointCloudClassifier`,
:class:`~mgic_geo.training.images.ImageClassifier`, :class:`~mgic_geo.training.images.ImageSegmenter`)
at the end of a test run (global rank 0 only) into the trainer's log dir, i.e.
``<default_root_dir>/logs/version_<N>/test_results.json``. Readers such as ``mgic-geo table 6`` scan a
results tree recursively: :func:`collect_test_results`.

Keys (accuracies and IoUs are fractions in [0, 1], not percent):

- the metrics of the task: ``overall_accuracy`` (micro) and ``mean_class_accuracy`` (macro over
  classes) for point clouds; ``top1_accuracy`` and ``top5_accuracy`` (``null`` with fewer than 6
  classes) for image classification; ``mean_iou`` (macro over classes, ``ignore_index`` pixels left
  out) and ``pixel_accuracy`` for segmentation;
- ``per_class_accuracy`` or ``per_class_iou`` ({class: value}), ``num_test_samples``;
- ``task`` (the module's class name), ``model``, ``model_kwargs``, ``params`` (trainable parameters of
  the network), ``epochs`` (training epochs finished in the tested checkpoint), ``global_step``,
  ``checkpoint`` (its absolute path), ``optimizer`` (the recipe);
- the data module's ``num_points`` (point clouds), ``source`` (as configured, e.g. ``auto``), ``root``,
  ``data_seed`` (its ``seed``), ``batch_size`` and ``data`` (all its hyperparameters);
- ``seed`` (the global seed of ``seed_everything``), ``device``, ``precision``, ``world_size``,
  ``date`` (UTC, ISO 8601), ``mgic_geo_version``, ``schema`` (1).
"""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

RESULTS_FILENAME = "test_results.json"
SCHEMA_VERSION = 1


def _data_attr(datamodule: Any, name: str, default: Any = None) -> Any:
    if datamodule is None:
        return default
    value = getattr(datamodule, name, None)
    if value is None:
        hparams = getattr(datamodule, "hparams", None) or {}
        value = hparams.get(name, None) if hasattr(hparams, "get") else None
    return default if value is None else value


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _device_name(device) -> str:
    import torch

    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def build_test_results(trainer, module, *, metrics: dict[str, float | None], per_class: list[float] | None = None,
                       per_class_key: str = "per_class_accuracy", num_test_samples: int | None = None) -> dict:
    """The ``test_results.json`` record of a finished test run (see the module docstring for the keys):
    ``metrics`` and ``per_class`` (one value per class, named by the data module's ``class_names``
    when it has them) plus what the run was."""
    from mgic_geo import __version__

    datamodule = getattr(trainer, "datamodule", None)
    if getattr(trainer, "ckpt_path", None) and module.epochs_trained is not None:
        epochs, global_step = module.epochs_trained, module.checkpoint_global_step
    else:  # testing the in-memory model, e.g. right after fit in the same process
        epochs, global_step = int(trainer.current_epoch), int(trainer.global_step)
    class_names = _data_attr(datamodule, "class_names")
    per_class_record = None
    if per_class is not None:
        names = list(class_names) if class_names is not None and len(class_names) == len(per_class) else None
        names = names or [str(i) for i in range(len(per_class))]
        per_class_record = dict(zip(names, per_class))
    seed = os.environ.get("PL_GLOBAL_SEED")
    recipe = ("optimizer", "lr", "min_lr", "weight_decay", "label_smoothing", "scheduler", "step_size", "gamma")
    return _jsonable({
        "schema": SCHEMA_VERSION,
        "task": type(module).__name__,
        "model": module.hparams.model,
        "model_kwargs": dict(module.hparams.model_kwargs or {}),
        "params": module.num_parameters,
        **metrics,
        per_class_key: per_class_record,
        "num_test_samples": num_test_samples,
        "epochs": epochs,
        "global_step": global_step,
        "checkpoint": os.path.abspath(trainer.ckpt_path) if getattr(trainer, "ckpt_path", None) else None,
        "num_points": _data_attr(datamodule, "num_points"),
        "source": _data_attr(datamodule, "source"),
        "root": _data_attr(datamodule, "root"),
        "data_seed": _data_attr(datamodule, "seed"),
        "seed": int(seed) if seed is not None and seed.lstrip("-").isdigit() else seed,
        "batch_size": _data_attr(datamodule, "batch_size"),
        "data": {k: v for k, v in dict(getattr(datamodule, "hparams", None) or {}).items() if not k.startswith("_")},
        "optimizer": {k: module.hparams[k] for k in recipe if k in module.hparams},
        "device": _device_name(module.device),
        "precision": str(trainer.precision),
        "world_size": int(trainer.world_size),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mgic_geo_version": __version__,
    })


def write_test_results(trainer, module, *, log_dir: str | os.PathLike | None = None, **metrics) -> Path:
    """Write ``test_results.json`` into ``log_dir`` (default: ``trainer.log_dir``, which under DDP is a
    collective that every process must call, or ``default_root_dir``); returns its path."""
    record = build_test_results(trainer, module, **metrics)
    log_dir = Path(log_dir or trainer.log_dir or trainer.default_root_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / RESULTS_FILENAME
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"mgic-geo: test results written to {path}")
    return path


def collect_test_results(root: str | os.PathLike = "outputs/modelnet10") -> list[dict]:
    """Every ``test_results.json`` under ``root`` (recursively), oldest first, each with its ``path``."""
    records = []
    for path in sorted(Path(root).rglob(RESULTS_FILENAME)):
        record = json.loads(path.read_text())
        record["path"] = str(path)
        records.append(record)
    records.sort(key=lambda r: (r.get("date") or "", r["path"]))
    return records
