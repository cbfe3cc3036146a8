"""One registry for every network of the package: ``create_model(name, **kwargs)``, ``list_models()``.

Builders are keyword-only functions registered with :func:`register_model` under their own name,
as timm and torchvision do. ``create_model(name, weights=...)`` builds a network with released
weights (:mod:`mgic_geo.models.weights`).
"""
from __future__ import annotations

import fnmatch
import functools
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


def model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _BUILDERS[name]


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
        mgic_geo.models.weights_file.WeightsError: model 'diffgcn' has no released weights; models with weights: mgic_diffgcn
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    builder = _BUILDERS[name]
    kwargs = fold_legacy_mgic(builder, kwargs)
    accepted = inspect.signature(builder).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"model {name!r} takes no argument(s) {', '.join(map(repr, unknown))}; "
                         f"it takes: {', '.join(accepted)}")
    if weights is not None:
        from mgic_geo.models.weights import build_with_weights

        return build_with_weights(name, builder, weights, kwargs)
    return builder(**kwargs)


# The MGICConfig fields that builders took as keywords of their own before they took `mgic=`.
LEGACY_MGIC_FIELDS = ("group_size", "coarsest", "level_rule", "transfer_init", "zero_init_correction")


def fold_legacy_mgic(builder: Callable[..., nn.Module], kwargs: dict) -> dict:
    """``kwargs`` with MGIC fields given at the top level (``group_size=8``, as checkpoints and
    released weights written before :class:`~mgic_geo.core.config.MGICConfig` record them) moved
    into the builder's ``mgic`` argument; unchanged for builders without one. A field given both
    ways is refused."""
    parameters = inspect.signature(builder).parameters
    legacy = {key: kwargs[key] for key in LEGACY_MGIC_FIELDS if key in kwargs and key not in parameters}
    if not legacy or "mgic" not in parameters:
        return kwargs
    from mgic_geo.core.config import MGICConfig

    given = kwargs.get("mgic")
    if isinstance(given, MGICConfig):
        raise ValueError(f"give the MGIC settings either as `mgic` or as {', '.join(map(repr, legacy))}, not both")
    both = sorted(set(legacy) & set(given or {}))
    if both:
        raise ValueError(f"{', '.join(map(repr, both))} given both in `mgic` and as an argument of its own")
    folded = {key: value for key, value in kwargs.items() if key not in legacy}
    folded["mgic"] = {**legacy, **dict(given or {})}
    return folded


def effective_mgic(builder: Callable[..., nn.Module], value):
    """The :class:`~mgic_geo.core.config.MGICConfig` ``builder(mgic=value)`` builds with (its own
    default completed by ``value``), for comparing recorded and requested settings; ``None`` for
    builders without MGIC settings."""
    default = getattr(builder, "default_mgic", None)
    if default is None:
        return value
    from mgic_geo.core.config import MGICConfig

    return MGICConfig.coerce(value, default=default)


def default_mgic(config):
    """Decorator for builders that take ``mgic``: the builder receives it as a complete
    :class:`~mgic_geo.core.config.MGICConfig`, ``config`` completed by what the caller gave
    (:meth:`~mgic_geo.core.config.MGICConfig.coerce`), and records ``config`` as ``default_mgic``."""
    def wrap(builder):
        from mgic_geo.core.config import MGICConfig

        @functools.wraps(builder)
        def build(*args, **kwargs):
            kwargs["mgic"] = MGICConfig.coerce(kwargs.get("mgic"), default=config)
            return builder(*args, **kwargs)

        build.default_mgic = config
        return build
    return wrap


def mgic_kwargs(builder: Callable[..., nn.Module], kwargs: dict, **changes) -> dict:
    """``kwargs`` of a builder with a ``default_mgic``, its MGIC setting given in full as ``mgic``
    (legacy fields folded, the builder's default completed) with ``changes`` applied to it."""
    kwargs = fold_legacy_mgic(builder, dict(kwargs))
    return {**kwargs, "mgic": effective_mgic(builder, kwargs.get("mgic")).replace(**changes)}


def register_builders(table: dict[str, tuple], build: Callable[..., nn.Module], *, module: str) -> dict[str, Callable]:
    """Register one keyword-only builder per row of ``table``: ``name -> (docstring, defaults, fixed,
    mgic_default)``. ``name(**kwargs)`` calls ``build(fixed, **(defaults | kwargs))`` and has the
    signature ``(*, **defaults)`` (what :func:`create_model` and ``inspect.signature`` read). A row
    with an ``mgic_default`` (an :class:`~mgic_geo.core.config.MGICConfig`) also takes ``mgic``,
    completed from it as :meth:`~mgic_geo.core.config.MGICConfig.coerce` does. Returns the builders
    by name, for the module to bind them to its own names."""
    builders = {}
    for name, (doc, defaults, fixed, mgic_default) in table.items():
        if mgic_default is not None:
            defaults = {"mgic": None} | defaults
        signature = inspect.Signature([inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=value)
                                       for key, value in defaults.items()])

        def builder(*args, _signature=signature, _fixed=fixed, **kwargs):
            bound = _signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return build(_fixed, **bound.arguments)

        builder.__name__ = builder.__qualname__ = name
        builder.__doc__, builder.__module__, builder.__signature__ = doc, module, signature
        if mgic_default is not None:
            builder = default_mgic(mgic_default)(builder)
        builders[name] = register_model(builder)
    return builders
