"""Released weights, named the way torchvision names them.

A network with released weights has an enum of them: :class:`MGICDiffGCN_Weights` for
``mgic_diffgcn``. Each member's value is a :class:`Weights`, which points to a file shipped inside the
package (``mgic_geo/models/released/<name>.pt``) and to its metadata in a JSON file of the same name
beside it (``<name>.json``). ``DEFAULT`` is another name for the recommended member::

    from mgic_geo.models import MGICDiffGCN_Weights, create_model

    model = create_model("mgic_diffgcn", weights="DEFAULT").eval()   # or "MODELNET10_V1", or the member
    MGICDiffGCN_Weights.DEFAULT.meta["metrics"]                       # the accuracy and the split it was measured on
    MGICDiffGCN_Weights.DEFAULT.path                                  # the file: also a `mgic-geo test --ckpt_path`

The file is a stripped Lightning checkpoint written by ``mgic-geo release-weights``
(:mod:`mgic_geo.models.release`). It holds the task's ``state_dict`` (the network under ``net.``),
``hyper_parameters``, ``pytorch-lightning_version``, ``epoch``, ``global_step``, and the metadata
under ``"mgic_geo_weights"``, all without the sha256, which cannot be inside the file it hashes. It
holds no optimiser, loop, callback or random-generator state. So ``mgic-geo test --config
experiments/modelnet10/mgic_diffgcn.yaml --ckpt_path <file>`` tests it as it would test a training
checkpoint, with the network rebuilt from the file's hyperparameters. A fit cannot resume from it,
because the optimiser state is gone.

Loading (:meth:`Weights.get_state_dict`, ``create_model(..., weights=...)``) checks, in order:

1. the sha256 of the file's bytes against the ``sha256`` in the metadata, before anything is
   unpickled. On a mismatch the error names the file and both hashes;
2. ``torch.load(weights_only=True)`` of those same bytes. A file that pickles any other Python object
   (which unpickling would call) is refused;
3. that every floating-point tensor is finite. The tensors holding NaN or inf are named;
4. that the metadata stored in the file agree with the JSON (model, model_kwargs, num_classes,
   categories);
5. the state dict's keys and shapes against the network that was built. Missing, unexpected and
   mis-shaped keys are listed before any weight is copied.

Building with weights (:func:`build_with_weights`): ``num_classes`` comes from the metadata, and a
different ``num_classes`` is refused. The builder arguments recorded in ``meta["model_kwargs"]``
are used. A different value for any of them is refused, except for ``num_points`` and ``dropout``
(see :data:`FREE_KWARGS`): neither changes the weights or the eval-mode outputs on clouds of that
size. The model comes back in training mode, as torchvision's do: call ``.eval()`` for inference.

Metadata keys (``Weights.meta``; :func:`check_meta` validates them):

- ``model``: the registry name. ``model_kwargs``: every argument of its builder except
  ``num_classes``, as the network was built. ``num_classes`` and ``categories``: the class names,
  in label order;
- ``num_params``: the network's trainable parameters. ``num_points``: points per cloud of the
  training data (``model_kwargs["num_points"]`` is the builder's argument: ``None``, any size);
- ``epochs`` and ``global_step``: the training the weights had;
- ``metrics``: ``overall_accuracy`` and ``mean_class_accuracy`` (fractions), the ``split`` they were
  measured on (``"test"`` for the figures of ``mgic-geo test``) and ``num_samples``;
- ``recipe``: the ``config`` file, the optimiser settings, ``batch_size``, ``augment``, the
  validation hold-out ``val_fraction`` and ``seed``. ``training_data``: a description of the data;
- ``sha256``, ``file`` and ``size``: the file's. Also ``schema``, ``task``, ``versions``, ``date``
  and ``source_checkpoint``.

Example (runs without the shipped file, which is added when a release run is done)::

    >>> from mgic_geo.models import MGICDiffGCN_Weights, get_weight, list_weights
    >>> list_weights("mgic_diffgcn")
    ['MGICDiffGCN_Weights.MODELNET10_V1']
    >>> MGICDiffGCN_Weights.DEFAULT is get_weight("MGICDiffGCN_Weights.MODELNET10_V1")
    True
    >>> MGICDiffGCN_Weights.verify("DEFAULT"), MGICDiffGCN_Weights.DEFAULT.path.name
    (MGICDiffGCN_Weights.MODELNET10_V1, 'mgic_diffgcn_modelnet10.pt')

With the shipped file::

    >>> model = create_model("mgic_diffgcn", weights="DEFAULT").eval()  # doctest: +SKIP
    >>> MGICDiffGCN_Weights.DEFAULT.meta["metrics"]["split"]  # doctest: +SKIP
    'test'

:func:`mgic_geo.models.release.release_weights` has an example that runs end to end: it releases
an untrained network and loads it back with ``create_model(..., weights=Weights.from_file(path))``.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import inspect
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

# The release file's format lives in weights_file; its names stay importable from here too.
from mgic_geo.models.weights_file import (  # noqa: F401
    EMBEDDED_KEYS,
    META_KEY,
    NET_PREFIX,
    SCHEMA,
    WeightsError,
    check_meta,
    load_release_bytes,
    read_meta,
    sha256_of,
)
from mgic_geo.state_checks import nonfinite_tensors, state_dict_mismatch  # noqa: F401
from mgic_geo.models.registry import effective_mgic, fold_legacy_mgic

RELEASE_DIR = Path(__file__).resolve().parent / "released"  # shipped as package data (pyproject.toml)
# builder arguments that may differ from the recorded ones: they change neither the weights nor, in eval
# mode on clouds of that size, the outputs (num_points: a fixed cloud size, for a forward with no host sync)
FREE_KWARGS = ("num_points", "dropout")


# -- the weights --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Weights:
    """One released set of weights: the registry ``model`` it is for and its ``file``.

    ``file`` is a file name under :data:`RELEASE_DIR` (the package's ``released/`` folder) or a path
    to a release file elsewhere (:meth:`from_file`). The metadata is the JSON file of the same name
    with a ``.json`` suffix. It is read when first needed, so an enum member exists before its file
    is shipped (see :attr:`available`).
    """

    model: str
    file: str

    @classmethod
    def from_file(cls, path: str | Path) -> "Weights":
        """The release file at ``path`` (e.g. one ``mgic-geo release-weights`` just wrote), with its
        model read from the metadata beside it."""
        path = Path(path).resolve()
        return cls(model=read_meta(path.with_suffix(".json"))["model"], file=str(path))

    @property
    def path(self) -> Path:
        """The release file."""
        file = Path(self.file)
        return file if len(file.parts) > 1 else RELEASE_DIR / file

    @property
    def meta_path(self) -> Path:
        """The metadata JSON beside the file."""
        return self.path.with_suffix(".json")

    @property
    def available(self) -> bool:
        """Whether the file and its metadata are there (a member may be registered before its release)."""
        return self.path.is_file() and self.meta_path.is_file()

    @property
    def meta(self) -> dict[str, Any]:
        """The metadata (see the module docstring), a fresh copy each time."""
        if not self.meta_path.is_file():
            shipped = "" if len(Path(self.file).parts) > 1 else (
                " (these weights are not shipped with this installation of mgic_geo yet: see the README's "
                "'Released weights')")
            raise WeightsError(f"{self.meta_path}: no such metadata file{shipped}")
        return read_meta(self.meta_path)

    def verify(self) -> str:
        """Check the file (steps 1 to 4 of the module docstring) and return its sha256;
        :class:`WeightsError` on any problem, naming the file (and both hashes on a sha256 mismatch)."""
        self.load_checkpoint()
        return self.meta["sha256"]

    def load_checkpoint(self) -> dict[str, Any]:
        """The whole release file, verified (steps 1 to 4 of the module docstring)."""
        meta, path = self.meta, self.path
        try:
            data = path.read_bytes()
        except OSError as error:
            raise WeightsError(f"{path}: cannot read the weights file ({error.strerror or error})") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != meta["sha256"]:
            raise WeightsError(
                f"{path}: sha256 mismatch: the file hashes to {actual}, but its metadata ({self.meta_path.name}) "
                f"records {meta['sha256']}; the file is damaged or was changed after release, so it was not loaded")
        checkpoint = load_release_bytes(data, path)
        embedded = checkpoint.get(META_KEY)
        if not isinstance(embedded, dict):
            raise WeightsError(f"{path}: no {META_KEY!r} metadata inside the file (not written by "
                               "mgic-geo release-weights)")
        differ = [key for key in EMBEDDED_KEYS if embedded.get(key) != meta.get(key)]
        if differ:
            raise WeightsError(f"{path}: the metadata inside the file and {self.meta_path.name} disagree on "
                               + ", ".join(f"{key} ({embedded.get(key)!r} vs {meta.get(key)!r})" for key in differ))
        return checkpoint

    def get_state_dict(self) -> dict[str, torch.Tensor]:
        """The network's state dict, without the task's ``net.`` prefix: what
        ``create_model(meta["model"], num_classes=..., **meta["model_kwargs"]).load_state_dict`` takes."""
        state = self.load_checkpoint()["state_dict"]
        return {key[len(NET_PREFIX):]: value for key, value in state.items() if key.startswith(NET_PREFIX)}


def _of_weights(name: str) -> property:
    """A read-only view of a member's :class:`Weights` attribute ``name``."""
    return property(lambda self: getattr(self.value, name), doc=f"The weights' ``{name}``.")


class WeightsEnum(enum.Enum):
    """Base class of the per-model enums, like torchvision's ``WeightsEnum``. The members are
    :class:`Weights`, and ``DEFAULT`` names the recommended one."""

    @classmethod
    def verify(cls, obj: Any) -> "WeightsEnum | None":
        """``obj`` as a member of this enum. ``obj`` may be ``None``, a member, a member's name
        (``"MODELNET10_V1"``, ``"DEFAULT"``) or a qualified name (``"MGICDiffGCN_Weights.DEFAULT"``)."""
        if obj is None or isinstance(obj, cls):
            return obj
        if isinstance(obj, str):
            name = obj[len(cls.__name__) + 1:] if obj.startswith(cls.__name__ + ".") else obj
            if name in cls.__members__:
                return cls[name]
            raise WeightsError(f"unknown weights {obj!r} for {cls.__name__}; available: "
                               f"{', '.join(cls.__members__)}")
        raise WeightsError(f"expected a {cls.__name__} member or its name, got {obj!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}"

    # what a member tells: its Weights' (model name, release file, metadata file, whether the file
    # is there, the metadata)
    model, path, meta_path, available, meta = (_of_weights(name) for name in
                                               ("model", "path", "meta_path", "available", "meta"))

    def load_checkpoint(self) -> dict[str, Any]:
        return self.value.load_checkpoint()

    def get_state_dict(self) -> dict[str, torch.Tensor]:
        return self.value.get_state_dict()


_MODEL_WEIGHTS: dict[str, type[WeightsEnum]] = {}


def register_weights(model: str) -> Callable[[type[WeightsEnum]], type[WeightsEnum]]:
    """Class decorator: the enum of ``model``'s released weights."""
    def register(weights_enum: type[WeightsEnum]) -> type[WeightsEnum]:
        if model in _MODEL_WEIGHTS:
            raise ValueError(f"weights of model {model!r} are already registered ({_MODEL_WEIGHTS[model].__name__})")
        wrong = [member.name for member in weights_enum if member.value.model != model]
        if wrong:
            raise ValueError(f"{weights_enum.__name__}: member(s) {', '.join(wrong)} are weights of another model")
        _MODEL_WEIGHTS[model] = weights_enum
        return weights_enum
    return register


@register_weights("mgic_diffgcn")
class MGICDiffGCN_Weights(WeightsEnum):  # noqa: N801  (torchvision's naming)
    """Released weights of ``mgic_diffgcn`` (Table 6, row 3).

    ``MODELNET10_V1``: trained with ``experiments/modelnet10/mgic_diffgcn.yaml`` on ModelNet-10, 1,024
    points per shape. Its accuracy is in ``meta["metrics"]`` and in the README's "Released weights".
    """

    MODELNET10_V1 = Weights(model="mgic_diffgcn", file="mgic_diffgcn_modelnet10.pt")
    DEFAULT = MODELNET10_V1


def get_model_weights(model: str) -> type[WeightsEnum]:
    """The enum of ``model``'s released weights."""
    if model not in _MODEL_WEIGHTS:
        with_weights = ", ".join(sorted(_MODEL_WEIGHTS)) or "none"
        raise WeightsError(f"model {model!r} has no released weights; models with weights: {with_weights}")
    return _MODEL_WEIGHTS[model]


def list_weights(model: str | None = None) -> list[str]:
    """Qualified names (``"MGICDiffGCN_Weights.MODELNET10_V1"``) of the released weights of ``model``,
    or of every model; aliases such as ``DEFAULT`` are left out."""
    enums = [get_model_weights(model)] if model is not None else [_MODEL_WEIGHTS[m] for m in sorted(_MODEL_WEIGHTS)]
    return [repr(member) for weights_enum in enums for member in weights_enum]


def get_weight(name: str) -> WeightsEnum:
    """The member named ``"<Enum>.<MEMBER>"``, e.g. ``get_weight("MGICDiffGCN_Weights.DEFAULT")``."""
    enum_name, _, member = str(name).partition(".")
    for weights_enum in _MODEL_WEIGHTS.values():
        if weights_enum.__name__ == enum_name and member:
            return weights_enum.verify(member)
    raise WeightsError(f"unknown weights {name!r}; available: {', '.join(list_weights())} "
                       "(and each enum's DEFAULT)")


def resolve_weights(model: str, weights: Any) -> Weights | None:
    """What ``create_model(model, weights=...)`` was given, as :class:`Weights`. ``weights`` may be
    ``None``, a member of the model's enum, its name (``"MODELNET10_V1"``, ``"DEFAULT"``), a qualified
    name (``"MGICDiffGCN_Weights.DEFAULT"``), or a :class:`Weights` (e.g. :meth:`Weights.from_file`)."""
    if weights is None:
        return None
    if isinstance(weights, WeightsEnum):
        weights = weights.value
    elif isinstance(weights, str):
        if "." in weights:
            weights = get_weight(weights).value
        else:
            weights = get_model_weights(model).verify(weights).value
    elif not isinstance(weights, Weights):
        raise WeightsError(f"`weights` must be None, a weights enum member, its name or a Weights, "
                           f"got {type(weights).__name__}")
    if weights.model != model:
        raise WeightsError(f"{weights.path.name} are weights of model {weights.model!r}, not {model!r}")
    return weights


def build_with_weights(model: str, builder: Callable[..., nn.Module], weights: Any,
                       kwargs: Mapping[str, Any]) -> nn.Module:
    """``builder(**arguments)`` with ``weights`` loaded (what ``create_model(model, weights=..., **kwargs)``
    does): the arguments are the recorded ones, ``kwargs`` may add or override only :data:`FREE_KWARGS`
    and values equal to the recorded ones (module docstring)."""
    weights = resolve_weights(model, weights)
    meta = weights.meta
    where = weights.path.name
    if "num_classes" in kwargs and kwargs["num_classes"] != meta["num_classes"]:
        raise WeightsError(
            f"{where} were trained for num_classes={meta['num_classes']} ({', '.join(meta['categories'])}), "
            f"got num_classes={kwargs['num_classes']!r}: leave num_classes out (the classifier is part of the "
            "weights), or build without weights and load the matching layers yourself to fine-tune")
    recorded = fold_legacy_mgic(builder, dict(meta["model_kwargs"]))
    signature = inspect.signature(builder).parameters
    unknown = sorted(set(recorded) - set(signature))
    if unknown:
        raise WeightsError(f"{where}: the recorded model_kwargs {unknown} are not arguments of {model!r} in this "
                           "version of mgic_geo")
    conflicts = []
    for key, value in kwargs.items():
        if key == "num_classes" or key in FREE_KWARGS:
            continue
        trained = recorded.get(key, signature[key].default)
        if key == "mgic" and effective_mgic(builder, value) == effective_mgic(builder, trained):
            continue
        if value != trained:
            conflicts.append(f"{key}={value!r} (the weights were trained with {key}={trained!r})")
    if conflicts:
        raise WeightsError(f"{where}: {', '.join(conflicts)}; with weights only {', '.join(FREE_KWARGS)} may be "
                           "changed")
    arguments = {**recorded, **kwargs, "num_classes": meta["num_classes"]}
    state = weights.get_state_dict()
    try:  # on the meta device first: arguments asking for a bigger network than the file are refused unbuilt
        with torch.device("meta"):
            planned = builder(**arguments).state_dict()
    except Exception:  # noqa: BLE001  bad arguments: the real build below raises them
        planned = None
    network = None
    if planned is None:
        network = builder(**arguments)
        planned = network.state_dict()
    problem = state_dict_mismatch(planned, state, source="the file")
    if problem:
        raise WeightsError(f"{weights.path}: the weights do not fit {model!r} built with {arguments}: {problem}")
    network = builder(**arguments) if network is None else network
    network.load_state_dict(state)
    return network
