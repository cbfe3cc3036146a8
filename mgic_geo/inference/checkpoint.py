"""Loading a trained point-cloud classifier from a Lightning checkpoint, safely (tensors only)."""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import torch
from torch import nn

from mgic_geo.state_checks import class_count_problem, hparams_shape_problem, load_error_message, unusable_weights


def load_classifier(checkpoint_path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """A :class:`~mgic_geo.training.PointCloudClassifier` from a Lightning checkpoint, in eval mode.

    The file is read with ``torch.load(..., weights_only=True)`` only (tensors and plain
    containers, never arbitrary pickled objects); the network is rebuilt from the checkpoint's
    hyperparameters and its weights loaded strictly.

    Args:
        checkpoint_path (str | os.PathLike): a ``.ckpt`` written by ``mgic-geo fit`` (or any Lightning checkpoint of
            a PointCloudClassifier).
        map_location (str | torch.device): where the tensors go (``torch.load``'s ``map_location``).

    Raises:
        ValueError: naming the path, for a missing file, a file ``torch.load`` cannot read
            with ``weights_only=True`` (:func:`~mgic_geo.state_checks.load_error_message`), a checkpoint
            that is not a PointCloudClassifier's (another LightningModule, an image network, no
            hyperparameters or weights, weights of another shape), weights holding NaN or inf (named), or
            hyperparameters asking for more classes than :data:`~mgic_geo.state_checks.MAX_NUM_CLASSES`
            or for a network the weights do not fit (checked on the ``meta`` device, before anything is built).

    Example (``ckpt`` being a checkpoint of ``mgic-geo fit``)::

        >>> from mgic_geo.data.clouds import synthetic_clouds
        >>> from mgic_geo.inference import load_classifier, predict_clouds
        >>> classifier = load_classifier(ckpt)  # doctest: +SKIP
        >>> [int(x.argmax()) for x in predict_clouds(classifier, synthetic_clouds(3))]  # doctest: +SKIP
        [2, 2, 7]
    """
    path = Path(checkpoint_path)
    if not path.exists():
        raise ValueError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected a checkpoint file (e.g. checkpoints/last.ckpt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as err:
        raise ValueError(f"{path}: cannot read the checkpoint ({err.strerror or err})") from None
    except Exception as err:  # UnpicklingError, RuntimeError, EOFError, ... for a file that is not a checkpoint
        raise ValueError(load_error_message(path, err, kind="checkpoint", plural="checkpoints")) from None
    not_ours = f"{path}: is not a PointCloudClassifier checkpoint"
    if not isinstance(state, dict) or not isinstance(state.get("hyper_parameters"), dict) \
            or not isinstance(state.get("state_dict"), dict):
        keys = sorted(map(str, state))[:6] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{not_ours}: expected a Lightning checkpoint with 'hyper_parameters' and 'state_dict', "
                         f"found {keys}")
    hparams = state["hyper_parameters"]
    class_path = hparams.get("_class_path")
    if class_path is not None and class_path.rsplit(".", 1)[-1] != "PointCloudClassifier":
        raise ValueError(f"{not_ours}: it is a checkpoint of {class_path}")
    from mgic_geo.models import list_models, model_task

    name = hparams.get("model")
    if name not in list_models():
        raise ValueError(f"{not_ours}: its hyperparameters name the model {name!r}, not one of the registry")
    if model_task(name) not in ("point_cloud_classification", None):
        raise ValueError(f"{not_ours}: its model {name!r} is a network for {model_task(name).replace('_', ' ')}")
    from mgic_geo.training.module import PointCloudClassifier

    problem = unusable_weights(path, state["state_dict"])  # NaN or inf, or more elements than the file stores
    if problem:
        raise ValueError(problem)
    accepted = inspect.signature(PointCloudClassifier.__init__).parameters
    arguments = {key: value for key, value in hparams.items() if key in accepted}
    # the sizes the hyperparameters ask for, checked against the weights before anything is built
    problem = class_count_problem(arguments)
    if problem:
        raise ValueError(f"{path}: {problem}")
    defaults = {key: parameter.default for key, parameter in accepted.items()
                if parameter.default is not inspect.Parameter.empty}
    problem = hparams_shape_problem({**defaults, **arguments}, state["state_dict"])
    if problem:
        raise ValueError(f"{path}: its weights do not fit {name!r} built from its hyperparameters: {problem}; "
                         "nothing was built")
    try:
        classifier = PointCloudClassifier(**arguments)
    except ValueError as err:
        raise ValueError(f"{path}: its hyperparameters do not build a PointCloudClassifier: {err}") from None
    try:
        classifier.load_state_dict(state["state_dict"], strict=True)
    except (RuntimeError, ValueError) as err:  # torch's RuntimeError, or RegistryTask's own check (a ValueError)
        raise ValueError(f"{path}: its weights do not fit {name!r} built from its hyperparameters: "
                         f"{' '.join(str(err).split())[:400]}") from None
    return classifier.to(map_location).eval()
