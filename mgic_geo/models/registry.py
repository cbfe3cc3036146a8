"""One registry for every network of the package: ``create_model(name, **kwargs)``, ``list_models()``.

Builders are keyword-only functions registered with :func:`register_model` under their own name,
as timm and torchvision do. ``create_model(name, weights=...)`` builds a network with released
weights (:mod:`mgic_geo.models.weights`).
"""
from __future__ import annotations

import fnmatch
import inspect
from typing import Callable

from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}

# What the networks of each of our model modules take and give, for the training tasks' checks.
MODULE_TASKS = {
    "mgic_geo.models.dgcnn": "point_cloud_classification",
    "mgic_geo.models.diffgcn": "point_cloud_classification",
    "mgic_geo.models.resnet": "image_classification",
    "mgic_geo.models.mobilenetv3": "image_classification",
    "mgic_geo.models.lraspp": "semantic_segmentation",
}


def register_model(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``builder`` under ``builder.__name__``."""
    if builder.__name__ in _BUILDERS:
        raise ValueError(f"a model named {builder.__name__!r} is already registered")
    _BUILDERS[builder.__name__] = builder
    return builder


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching the shell-style ``pattern``."""
    return sorted(name for name in _BUILDERS if fnmatch.fnmatch(name, pattern))


def model_task(name: str) -> str | None:
    """``"point_cloud_classification"``, ``"image_classification"`` or ``"semantic_segmentation"`` for
    the package's models; ``None`` for a model registered elsewhere (its task is not known)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return MODULE_TASKS.get(_BUILDERS[name].__module__)


def create_model(name: str, *, weights=None, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with the builder's keyword arguments.

    ``weights``: ``None`` (random initialisation), or released weights of ``name``
    (:mod:`mgic_geo.models.weights`): a member of its enum (``MGICDiffGCN_Weights.MODELNET10_V1``),
    the member's name (``"MODELNET10_V1"``, ``"DEFAULT"``, ``"MGICDiffGCN_Weights.DEFAULT"``), or a
    :class:`~mgic_geo.models.weights.Weights`. With weights, ``num_classes`` and the architecture's
    arguments come from the weights' metadata, and a conflicting value is refused. The file's sha256
    and contents are checked before it is loaded.

    Example::

        >>> from mgic_geo.models import create_model
        >>> model = create_model("mgic_diffgcn", num_classes=10)
        >>> type(model).__name__
        'DiffGCNNet'
        >>> create_model("diffgcn", weights="DEFAULT")
        Traceback (most recent call last):
        ...
        mgic_geo.models.weights.WeightsError: model 'diffgcn' has no released weights; models with weights: mgic_diffgcn
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    builder = _BUILDERS[name]
    accepted = inspect.signature(builder).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"model {name!r} takes no argument(s) {', '.join(map(repr, unknown))}; "
                         f"it takes: {', '.join(accepted)}")
    if weights is not None:
        from mgic_geo.models.weights import build_with_weights

        return build_with_weights(name, builder, weights, kwargs)
    return builder(**kwargs)
