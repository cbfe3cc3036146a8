"""``mgic-geo release-weights``: strip a training checkpoint into a release file, with metadata.

    mgic-geo release-weights --ckpt outputs/modelnet10/mgic_diffgcn/checkpoints/last.ckpt \\
        --test-results outputs/modelnet10/mgic_diffgcn/logs/version_1/test_results.json \\
        --config experiments/modelnet10/mgic_diffgcn.yaml \\
        --out mgic_geo/models/released/mgic_diffgcn_modelnet10.pt [--meta-json extra.json]

This writes two files: ``<out>`` (a ``.pt`` file) and ``<out>`` with a ``.json`` suffix (the
metadata, with the file's sha256). It prints the metadata. The release file keeps only what
``mgic-geo test --ckpt_path`` and :meth:`~mgic_geo.models.weights.Weights.get_state_dict` need:
``state_dict``, ``hyper_parameters`` (and the data module's), ``pytorch-lightning_version``,
``epoch``, ``global_step``, and the metadata under ``"mgic_geo_weights"``. It drops the optimiser
and scheduler states, the loops, the callbacks (with the random-generator states), the data
module's shuffle state and anything else (:data:`KEPT`).

Where the metadata come from (:mod:`mgic_geo.models.weights` lists the keys):

- the checkpoint, read with ``torch.load(weights_only=True)``: the model, its arguments, the
  classes, the parameter count, the epochs and steps, the optimiser recipe, and the data module's
  settings (points per cloud, batch size, augmentation, source);
- ``--test-results``, the ``test_results.json`` of ``mgic-geo test`` on that same checkpoint (its
  ``checkpoint`` entry must be the same file): the accuracies, the split they were measured on
  (``test``), the class names and the seed;
- ``--config``: the training config file, recorded by name;
- ``--meta-json``: a JSON object merged last (objects such as ``recipe`` and ``metrics`` key by key).
  Use it for what the files above do not tell, e.g. ``{"training_data": "ModelNet-10 ..."}``. It
  cannot change what the weights themselves fix (``model``, ``model_kwargs``, ``num_classes``,
  ``num_params``, ``epochs``, ``global_step``) or what is computed from the file.

Refused: a checkpoint with NaN or inf weights, weights that do not fit the model named in the
hyperparameters, test results of another checkpoint, and metadata missing a required key. The
error names the key and where to give it. After writing, the file is loaded back through
``create_model(..., weights=...)``.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import inspect
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from mgic_geo.models.weights import (
    META_KEY,
    NET_PREFIX,
    SCHEMA,
    Weights,
    WeightsError,
    check_meta,
    nonfinite_tensors,
    sha256_of,
    state_dict_mismatch,
)
from mgic_geo.state_checks import follow_umask

# what a release file keeps of a Lightning checkpoint
KEPT = ("epoch", "global_step", "pytorch-lightning_version", "state_dict", "hparams_name", "hyper_parameters",
        "datamodule_hparams_name", "datamodule_hyper_parameters")
# metadata fixed by the weights: --meta-json may not change them
FIXED = ("schema", "model", "model_kwargs", "num_classes", "num_params", "epochs", "global_step", "sha256", "file",
         "size")
RECIPE = ("optimizer", "lr", "min_lr", "momentum", "weight_decay", "label_smoothing", "scheduler", "step_size",
          "gamma", "power")


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``, objects merged key by key."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _training_data(data: Mapping[str, Any]) -> str | None:
    """A description of the training data from the data module's hyperparameters, if there are any."""
    if not data:
        return None
    name = str(data.get("_class_path", "data")).rsplit(".", 1)[-1]
    source = data.get("source")
    if source == "synthetic":
        what = "synthetic stand-in shapes (mgic_geo.data.write_synthetic_modelnet), not ModelNet-10"
    else:
        what = "the ModelNet-10 training split" if "ModelNet10" in name else "the training split"
    details = [f"{name}(source={source!r}, root={data.get('root')!r})"]
    if data.get("num_points") is not None:
        details.append(f"{data['num_points']} points per shape")
    if data.get("val_fraction"):
        details.append(f"less a stratified {data['val_fraction']:g} of it held out for validation "
                       f"(split_seed={data.get('split_seed')!r}) unless the root has val/ folders")
    if "augment" in data:
        details.append("DGCNN's augmentation (anisotropic scaling, translation, point shuffle)" if data["augment"]
                       else "no augmentation")
    return f"{what}: {', '.join(details)}"


def _read_test_results(path: str | os.PathLike, checkpoint_path: Path | None, model: str) -> dict[str, Any]:
    """The metadata a ``test_results.json`` gives, checked to be of ``checkpoint_path`` and ``model``."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise WeightsError(f"{path}: cannot read the test results ({error})") from None
    if not isinstance(results, dict) or "overall_accuracy" not in results:
        raise WeightsError(f"{path}: not a test_results.json of mgic-geo test (no overall_accuracy)")
    tested = results.get("checkpoint")
    if checkpoint_path is not None and (not tested or Path(tested).resolve() != checkpoint_path.resolve()):
        raise WeightsError(f"{path}: these test results are of the checkpoint {tested}, not of {checkpoint_path}; "
                           f"run mgic-geo test --ckpt_path {checkpoint_path} and give its test_results.json")
    if results.get("model") != model:
        raise WeightsError(f"{path}: these test results are of model {results.get('model')!r}, not {model!r}")
    meta: dict[str, Any] = {"metrics": {
        "overall_accuracy": results["overall_accuracy"],
        "mean_class_accuracy": results.get("mean_class_accuracy"),
        "split": "test",  # what mgic-geo test measures
        "num_samples": results.get("num_test_samples"),
        "precision": results.get("precision"),
    }}
    per_class = results.get("per_class_accuracy")
    if isinstance(per_class, dict) and not all(name.isdigit() for name in per_class):
        meta["categories"] = list(per_class)
    if results.get("num_points") is not None:
        meta["num_points"] = results["num_points"]
    if results.get("seed") is not None:
        meta["recipe"] = {"seed": results["seed"]}
    return meta


def release_weights(ckpt: str | os.PathLike | Mapping[str, Any], out: str | os.PathLike, *,
                    test_results: str | os.PathLike | None = None, config: str | None = None,
                    meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write the release file ``out`` (``.pt``) and its metadata ``out`` with a ``.json`` suffix,
    from the training checkpoint ``ckpt``. Returns the metadata (module docstring).

    Args:
        ckpt (str | os.PathLike | Mapping[str, Any]): a Lightning checkpoint of a registry task (``mgic-geo fit``'s
            ``last.ckpt``), as a path (read with ``torch.load(weights_only=True)``) or as the loaded dict.
        test_results (str | os.PathLike | None): the ``test_results.json`` of ``mgic-geo test`` on ``ckpt``.
        config (str | None): the training config file, recorded as ``recipe.config``.
        meta (Mapping[str, Any] | None): metadata merged last (what the files above do not tell).

    Raises:
        ValueError: (a :class:`~mgic_geo.models.weights.WeightsError` or
            :class:`~mgic_geo.training.fault.CheckpointError`) naming the problem and the file.

    Example (an untrained network standing in for a fit's checkpoint)::

        >>> import tempfile, lightning, torch
        >>> from mgic_geo.models import Weights, create_model
        >>> from mgic_geo.models.release import release_weights
        >>> from mgic_geo.training import PointCloudClassifier
        >>> task = PointCloudClassifier(model="mgic_diffgcn")
        >>> checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
        ...               "pytorch-lightning_version": lightning.__version__, "epoch": 0, "global_step": 0}
        >>> out = f"{tempfile.mkdtemp()}/untrained.pt"
        >>> meta = release_weights(checkpoint, out, config="none (untrained)", meta={
        ...     "metrics": {"overall_accuracy": 0.1, "split": "test"}, "num_points": 1024,
        ...     "categories": [f"class{i}" for i in range(10)], "training_data": "none (untrained)"})
        >>> meta["model"], meta["num_classes"], meta["num_params"], len(meta["sha256"])
        ('mgic_diffgcn', 10, 91306, 64)
        >>> model = create_model("mgic_diffgcn", weights=Weights.from_file(out)).eval()
        >>> all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), task.net.state_dict().values()))
        True
    """
    from mgic_geo.models.registry import _BUILDERS, create_model, effective_mgic, fold_legacy_mgic, list_models
    from mgic_geo.training.base import epochs_in_checkpoint
    from mgic_geo.training.fault import read_checkpoint

    out = Path(out)
    if out.suffix != ".pt":
        raise WeightsError(f"{out}: the release file's name must end in .pt (its metadata goes to "
                           f"{out.with_suffix('.json').name})")
    checkpoint_path = None if isinstance(ckpt, Mapping) else Path(ckpt)
    where = "the checkpoint" if checkpoint_path is None else str(checkpoint_path)
    checkpoint = dict(ckpt) if checkpoint_path is None else read_checkpoint(checkpoint_path, map_location="cpu")
    hp = checkpoint.get("hyper_parameters")
    if not isinstance(hp, dict) or "model" not in hp or "num_classes" not in hp:
        raise WeightsError(f"{where}: no hyper_parameters with 'model' and 'num_classes' (not a checkpoint of an "
                           "mgic_geo training task)")
    model = hp["model"]
    if model not in _BUILDERS:
        raise WeightsError(f"{where}: unknown model {model!r}; available: {', '.join(list_models())}")
    for key in ("pytorch-lightning_version", "epoch", "global_step"):
        if key not in checkpoint:
            raise WeightsError(f"{where}: no {key!r} entry (mgic-geo test needs it)")

    state = {}
    for key, value in checkpoint["state_dict"].items():
        if not torch.is_tensor(value):
            raise WeightsError(f"{where}: state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
        state[key] = value.detach().to("cpu", copy=True).contiguous()
    bad = nonfinite_tensors(state)
    if bad:
        raise WeightsError(f"{where}: refused to release: {len(bad)} weight tensor(s) hold NaN or inf "
                           f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''})")

    given_kwargs = fold_legacy_mgic(_BUILDERS[model], dict(hp.get("model_kwargs") or {}))
    network = create_model(model, num_classes=hp["num_classes"], **given_kwargs)
    net_state = {key[len(NET_PREFIX):]: value for key, value in state.items() if key.startswith(NET_PREFIX)}
    problem = state_dict_mismatch(network.state_dict(), net_state)
    if problem:
        raise WeightsError(f"{where}: the weights under {NET_PREFIX!r} do not fit {model!r} built with "
                           f"{given_kwargs}: {problem}")
    parameters = inspect.signature(_BUILDERS[model]).parameters
    model_kwargs = {name: given_kwargs.get(name, parameter.default) for name, parameter in parameters.items()
                    if name != "num_classes"}
    if getattr(_BUILDERS[model], "default_mgic", None) is not None:  # the whole setting, as plain JSON fields
        model_kwargs["mgic"] = dataclasses.asdict(effective_mgic(_BUILDERS[model], model_kwargs["mgic"]))
    epochs = epochs_in_checkpoint(checkpoint)
    data = dict(checkpoint.get("datamodule_hyper_parameters") or {})

    derived: dict[str, Any] = {
        "schema": SCHEMA,
        "model": model,
        "model_kwargs": model_kwargs,
        "num_classes": int(hp["num_classes"]),
        "num_params": sum(p.numel() for p in network.parameters() if p.requires_grad),
        "epochs": int(epochs if epochs is not None else 0),
        "global_step": int(checkpoint["global_step"]),
        "recipe": {"config": config, **{key: hp[key] for key in RECIPE if key in hp},
                   **{key: data[key] for key in ("batch_size", "augment", "val_fraction") if key in data},
                   **({"data_seed": data["seed"]} if "seed" in data else {})},
        "task": hp.get("_class_path"),
        "versions": {"mgic_geo": _version(), "torch": torch.__version__.split("+")[0],
                     "lightning": checkpoint["pytorch-lightning_version"]},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source_checkpoint": None if checkpoint_path is None else str(checkpoint_path),
    }
    if data.get("num_points") is not None:
        derived["num_points"] = data["num_points"]
    if _training_data(data):
        derived["training_data"] = _training_data(data)
    if "ModelNet10" in str(data.get("_class_path", "")) and derived["num_classes"] == 10:
        from mgic_geo.data.layout import CLASSES

        derived["categories"] = list(CLASSES)
    if test_results is not None:
        derived = _merge(derived, _read_test_results(test_results, checkpoint_path, model))
    if meta:
        if not isinstance(meta, Mapping):
            raise WeightsError(f"the extra metadata must be a JSON object, got {type(meta).__name__}")
        fixed = sorted(set(meta) & set(FIXED))
        if fixed:
            raise WeightsError(f"the extra metadata may not set {', '.join(fixed)}: the weights fix them")
        derived = _merge(derived, meta)
    try:
        check_meta(derived, "release", released=False)
    except WeightsError as error:
        raise WeightsError(f"{error} (give --test-results for the metrics and categories, --config for "
                           "recipe.config, and --meta-json for anything else)") from None

    release = {key: checkpoint[key] for key in KEPT if key in checkpoint}
    release.update(state_dict=state, epoch=max(derived["epochs"] - 1, 0), **{META_KEY: derived})
    _write_atomically(out, lambda file: torch.save(release, file))
    final = {**derived, "file": out.name, "size": out.stat().st_size, "sha256": sha256_of(out)}
    text = json.dumps(final, indent=2) + "\n"
    _write_atomically(out.with_suffix(".json"), lambda file: file.write(text.encode()))
    # the release loads as users will load it
    create_model(model, weights=Weights.from_file(out))
    return final


def _version() -> str:
    from mgic_geo import __version__

    return __version__


def _write_atomically(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        follow_umask(handle)  # mkstemp makes it 0600; a plain open follows the umask
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


# -- command line -------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="the training checkpoint (e.g. RUN/checkpoints/last.ckpt)")
    parser.add_argument("--out", required=True,
                        help="the release file to write, ending in .pt (e.g. mgic_geo/models/released/"
                             "mgic_diffgcn_modelnet10.pt); its metadata goes beside it as .json")
    parser.add_argument("--test-results", help="test_results.json of `mgic-geo test --ckpt_path <the same checkpoint>`"
                                               ": accuracies, split, class names")
    parser.add_argument("--config", help="the training config file, recorded in the metadata (recipe.config)")
    parser.add_argument("--meta-json", help="a JSON file of extra metadata merged last (e.g. training_data)")


def run(args: argparse.Namespace) -> int:
    extra = None
    if args.meta_json:
        try:
            extra = json.loads(Path(args.meta_json).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise WeightsError(f"{args.meta_json}: cannot read the extra metadata ({error})") from None
    meta = release_weights(args.ckpt, args.out, test_results=args.test_results, config=args.config, meta=extra)
    out = Path(args.out)
    print(json.dumps(meta, indent=2))
    print(f"mgic-geo: wrote {out} ({meta['size']} bytes) and {out.with_suffix('.json')}")
    print(f"sha256 {meta['sha256']}  {out}")
    return 0
