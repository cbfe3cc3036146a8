"""Streaming inference with a point-cloud classifier: ``mgic-geo predict`` and its Python API.

Clouds go through the network in batches, lazily: nothing but the current batch (and one row of the
CSV) is held, so memory stays flat however many clouds pass. A batch is PyG's flat layout, ``pos``
``[sum N_i, 3]`` with a ``batch`` vector, so clouds of different sizes may share a batch; in eval mode
every layer of the registry's point-cloud networks works per cloud (kNN graphs per cloud,
BatchNorm with running statistics, subsampling by a hash of each point's position), so a cloud gets
the same logits in any batch as alone, up to float rounding (``--check-equal`` measures it).

Python API:

- :func:`predict_clouds`: a lazy generator of per-cloud logits, in input order;
- :func:`load_classifier`: a :class:`~mgic_geo.training.PointCloudClassifier` from a Lightning
  checkpoint, read with ``torch.load(weights_only=True)`` only;
- :func:`synthetic_clouds`: a deterministic, lazy stream of ModelNet-10-like clouds
  (:func:`mgic_geo.data.synthetic.synthetic_mesh` shapes, sampled on their surface);
- :func:`read_cloud`: one point-cloud or mesh file as a fixed-size, normalised cloud;
- :func:`render_clouds`: a picture of clouds as 3-D scatter plots titled with their predicted and
  true classes (:func:`true_class` reads the true class from a ModelNet-layout path).

Sampling (files and synthetic shapes): a mesh gives ``num_points`` points on its faces with
probability proportional to area; a point-cloud file gives ``num_points`` of its points without
replacement, or all of them plus random repeats when it has fewer (as PyG's ``SamplePoints`` and
``FixedPoints`` in :mod:`mgic_geo.data.modelnet`). The cloud is then centred and scaled into the
unit sphere (:func:`mgic_geo.data.modelnet.sample_cloud`, as for the datasets). The draws come from
private generators seeded from ``(seed, index)``, never from torch's global generator, so the clouds
depend on the seed and the position in the stream only.

Command line (``--model`` is an untrained network, for load tests without a checkpoint)::

    mgic-geo predict --ckpt outputs/modelnet10/mgic_diffgcn/checkpoints/last.ckpt \\
        --inputs 'datasets/modelnet10/*/test/*.off' --out predictions.csv
    mgic-geo predict --model mgic_diffgcn --synthetic 1000 --check-memory --check-equal 64
    mgic-geo predict --ckpt last.ckpt --inputs 'datasets/modelnet10/*/test/*.off' --render 8 --render-out clouds.png

``--render N`` draws the first N clouds (matplotlib, no display needed) titled ``pred: <class>`` and,
where the true class is known, ``true: <class>`` in green (right) or red (wrong): for files in ModelNet's
layout ``<class>/<split>/<file>`` whose class folder is a class name, and for ``--synthetic`` clouds
of a 10-class model (cloud i is a shape of ``CLASSES[i % 10]``).

The long load check (opt-in, not part of the test suite). On our shared 2-core CPU machine
mgic_diffgcn ran about 20 clouds/s at 1,024 points with one thread (best of 3 batches of 32), so
100,000 such clouds would take about 1.4 hours; the check runs at 128 points::

    mgic-geo predict --model mgic_diffgcn --synthetic 100000 --num-points 128 --batch-size 64 \\
        --threads 1 --check-memory --check-equal 64 --out /tmp/p.csv

Example::

    >>> import torch
    >>> from mgic_geo.models import create_model
    >>> from mgic_geo.predict import predict_clouds, set_batchnorm_statistics, synthetic_clouds
    >>> _ = torch.manual_seed(0)
    >>> model = create_model("mgic_diffgcn", num_classes=10)
    >>> model = set_batchnorm_statistics(model, synthetic_clouds(8, num_points=64, seed=1))  # untrained: see there
    >>> logits = list(predict_clouds(model, synthetic_clouds(5, num_points=64), batch_size=2))
    >>> len(logits), tuple(logits[0].shape), logits[0].dtype
    (5, (10,), torch.float32)
    >>> alone = next(predict_clouds(model, synthetic_clouds(1, num_points=64), batch_size=1))
    >>> torch.allclose(alone, logits[0], atol=1e-4)
    True
"""
from __future__ import annotations

import argparse
import collections
import csv
import ctypes
import glob
import inspect
import json
import os
import re
import sys
import time
import zipfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mgic_geo.bench.process import current_rss_bytes, peak_rss_bytes
from mgic_geo.data.layout import CLASSES, MESH_EXTENSIONS, POINT_EXTENSIONS
from mgic_geo.validation import check_int

MIB = 2**20
DEVICES = ("auto", "cpu", "cuda")
# Batched and one-by-one logits differ only by float32 rounding (measured: below 1e-7 on the clouds
# of the tests); --check-equal fails above this, far above rounding and far below any real change.
EQUAL_ATOL = 1e-4
EQUAL_RTOL = 1e-4
# Clouds whose statistics the BatchNorms of an untrained --model take (set_batchnorm_statistics).
CALIBRATION_CLOUDS = 32
# Most panels of one picture of --render (render_clouds).
MAX_RENDER = 64
# Split folders of ModelNet's layout <class>/<split>/<file> (true_class).
LAYOUT_SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------------------------
# What a model needs


def _network(model: nn.Module) -> nn.Module:
    """The registry network inside ``model`` (a PointCloudClassifier wraps it as ``.net``)."""
    return getattr(model, "net", model)


def min_points(model: nn.Module) -> int:
    """Fewest points a cloud may have for ``model``: its ``k`` neighbours plus the point itself
    (2 for a network without a ``k``)."""
    k = getattr(_network(model), "k", None)
    return k + 1 if isinstance(k, int) and not isinstance(k, bool) else 2


def class_names(num_classes: int) -> list[str] | None:
    """The ModelNet-10 class names when ``num_classes`` is 10 (every point-cloud data module of the
    package is ModelNet-10), else ``None``: the names are not known."""
    return list(CLASSES) if num_classes == len(CLASSES) else None


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _as_cloud(cloud, index: int, least: int, fixed: int | None) -> Tensor:
    if not isinstance(cloud, (Tensor, np.ndarray)):
        raise ValueError(f"cloud {index}: expected an [N, 3] tensor of coordinates, got {type(cloud).__name__}")
    cloud = torch.as_tensor(cloud)
    if cloud.dim() != 2 or cloud.shape[1] != 3 or cloud.dtype == torch.bool or cloud.is_complex():
        raise ValueError(f"cloud {index}: expected an [N, 3] tensor of coordinates, got shape {tuple(cloud.shape)} "
                         f"of {cloud.dtype}")
    points = cloud.shape[0]
    if points < least:
        raise ValueError(f"cloud {index} has {points} points; the model needs at least {least} (its k={least - 1} "
                         "neighbours plus the point itself)")
    if fixed is not None and points != fixed:
        raise ValueError(f"cloud {index} has {points} points, but the model was built for clouds of exactly {fixed} "
                         "(its num_points)")
    cloud = cloud.to(torch.float32)
    if not bool(torch.isfinite(cloud).all()):
        raise ValueError(f"cloud {index} has NaN or infinite coordinates")
    return cloud


# ----------------------------------------------------------------------------------------------
# Prediction


def predict_clouds(model: nn.Module, clouds: Iterable[Tensor], *, batch_size: int = 32,
                   device: str | torch.device | None = None) -> Iterator[Tensor]:
    """Logits of every cloud of ``clouds``, in order, computed in batches of ``batch_size``.

    A lazy generator: it reads ``batch_size`` clouds, runs them as one batch (PyG layout, ``pos``
    concatenated and a ``batch`` vector) under ``torch.inference_mode``, yields their logits and
    forgets them, so memory does not grow with the number of clouds. The arguments are checked at
    the call, the clouds as they come.

    :param model: a point-cloud network of the registry (``forward(pos, batch)``) or a
        :class:`~mgic_geo.training.PointCloudClassifier`; it is put in eval mode (and left there).
    :param clouds: an iterable of ``[N_i, 3]`` float tensors (or numpy arrays), any sizes ``N_i`` of
        at least :func:`min_points` (exactly the model's ``num_points`` if it was built with one).
    :param batch_size: clouds per forward pass.
    :param device: where to run; the model is moved there. ``None``: where the model is.
    :returns: an iterator of ``[num_classes]`` float32 CPU tensors; ``.argmax()`` is the class.
    :raises ValueError: for a bad ``batch_size`` or ``model`` at the call; for a cloud of the wrong
        shape, too few points or NaN/inf coordinates when it is reached, naming its index.

    Example::

        >>> import torch
        >>> from mgic_geo.models import create_model
        >>> from mgic_geo.predict import predict_clouds
        >>> model = create_model("diffgcn", num_classes=4)
        >>> clouds = [torch.rand(100, 3), torch.rand(50, 3), torch.rand(70, 3)]
        >>> [int(logits.argmax()) in range(4) for logits in predict_clouds(model, clouds, batch_size=2)]
        [True, True, True]
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"`model` must be a torch.nn.Module (a point-cloud network), got {type(model).__name__}")
    check_int("batch_size", batch_size)
    if device is not None:
        device = torch.device(device)
        model.to(device)
    else:
        device = _model_device(model)
    model.eval()
    fixed = getattr(_network(model), "num_points", None)
    return _stream(model, iter(clouds), batch_size, device, min_points(model), fixed)


def _stream(model: nn.Module, clouds: Iterator, batch_size: int, device: torch.device, least: int,
            fixed: int | None) -> Iterator[Tensor]:
    index = 0
    while True:
        batch: list[Tensor] = []
        for cloud in clouds:
            batch.append(_as_cloud(cloud, index + len(batch), least, fixed))
            if len(batch) == batch_size:
                break
        if not batch:
            return
        sizes = torch.tensor([len(cloud) for cloud in batch])
        pos = torch.cat(batch).to(device, non_blocking=True)
        owner = torch.repeat_interleave(torch.arange(len(batch)), sizes).to(device, non_blocking=True)
        del batch  # the clouds are in `pos` now; do not hold them twice
        # Inference mode only around the forward: a generator suspended inside the context would
        # leak it into the caller's code between two items.
        with torch.inference_mode():
            logits = model(pos, owner).float().cpu()
        # Outside inference mode, so the caller gets ordinary tensors (usable in autograd, in place).
        logits = logits.clone()
        del pos, owner
        index += len(logits)
        yield from logits


def one_by_one(model: nn.Module, clouds: Iterable[Tensor], *, device: str | torch.device | None = None) -> Iterator[Tensor]:
    """The logits of each cloud computed alone (``batch=None``): the reference batching must match."""
    if device is not None:
        model.to(device)
    device = _model_device(model)
    model.eval()
    least, fixed = min_points(model), getattr(_network(model), "num_points", None)
    for index, cloud in enumerate(clouds):
        cloud = _as_cloud(cloud, index, least, fixed).to(device)
        with torch.inference_mode():
            logits = model(cloud, None).float().cpu()
        yield logits.clone()[0]


def set_batchnorm_statistics(model: nn.Module, clouds: Iterable[Tensor]) -> nn.Module:
    """Set every BatchNorm's running statistics to those of one batch of ``clouds`` (one forward
    pass in training mode without gradients, dropout off), then put ``model`` in eval mode.

    For untrained networks (``mgic-geo predict --model``): with their initial statistics (mean 0,
    variance 1) the activations are not normalised and the logits hardly depend on the cloud
    (measured on 64 synthetic clouds through an untrained mgic_diffgcn: logits within 5e-4 of
    their mean, every cloud the same class), so comparing batched with one-by-one outputs would
    prove little. After this they differ between clouds as a trained network's do (same clouds:
    up to 4.2 from their mean, 9 of the 10 classes predicted). The weights are not changed.

    :param clouds: ``[N_i, 3]`` clouds of one batch (at least two: BatchNorm needs a spread).
    :returns: ``model``, in eval mode.
    """
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.dropout import _DropoutNd

    clouds = [torch.as_tensor(cloud, dtype=torch.float32) for cloud in clouds]
    if len(clouds) < 2:
        raise ValueError(f"set_batchnorm_statistics needs at least 2 clouds, got {len(clouds)}")
    norms = [module for module in model.modules() if isinstance(module, _BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    device = _model_device(model)
    try:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average: after one batch, exactly that batch's statistics
        model.train()
        for module in model.modules():
            if isinstance(module, _DropoutNd):
                module.eval()
        pos = torch.cat(clouds).to(device)
        batch = torch.repeat_interleave(torch.arange(len(clouds)), torch.tensor([len(c) for c in clouds])).to(device)
        with torch.no_grad():
            model(pos, batch)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.eval()
    return model


# ----------------------------------------------------------------------------------------------
# Checkpoints


def load_classifier(checkpoint_path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """A :class:`~mgic_geo.training.PointCloudClassifier` from a Lightning checkpoint, in eval mode.

    The file is read with ``torch.load(..., weights_only=True)`` only (tensors and plain
    containers, never arbitrary pickled objects); the network is rebuilt from the checkpoint's
    hyperparameters and its weights loaded strictly.

    :param checkpoint_path: a ``.ckpt`` written by ``mgic-geo fit`` (or any Lightning checkpoint of a
        PointCloudClassifier).
    :param map_location: where the tensors go (``torch.load``'s ``map_location``).
    :raises ValueError: naming the path, for a missing file, a file ``torch.load`` cannot read
        with ``weights_only=True``, or a checkpoint that is not a PointCloudClassifier's (another
        LightningModule, an image network, no hyperparameters or weights, weights of another shape).

    Example (``ckpt`` being a checkpoint of ``mgic-geo fit``)::

        >>> from mgic_geo.predict import load_classifier, predict_clouds, synthetic_clouds
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
    except Exception as err:  # UnpicklingError, RuntimeError, EOFError, zipfile errors ... for a non-checkpoint
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if refused:
            raise ValueError(f"{path}: torch.load(weights_only=True) refuses it: it holds a {refused[1]} object, and a "
                             "checkpoint may hold only tensors and plain containers (nothing else is unpickled)") from None
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = "not a zip archive as torch.save writes" if not zipfile.is_zipfile(path) else \
            f"{type(err).__name__}: {lines[-1] if lines else 'no details'}"
        raise ValueError(f"{path}: is not a checkpoint torch.load can read ({detail})") from None
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

    accepted = inspect.signature(PointCloudClassifier.__init__).parameters
    try:
        classifier = PointCloudClassifier(**{key: value for key, value in hparams.items() if key in accepted})
    except ValueError as err:
        raise ValueError(f"{path}: its hyperparameters do not build a PointCloudClassifier: {err}") from None
    try:
        classifier.load_state_dict(state["state_dict"], strict=True)
    except (RuntimeError, ValueError) as err:  # torch's RuntimeError, or RegistryTask's own check (a ValueError)
        raise ValueError(f"{path}: its weights do not fit {name!r} built from its hyperparameters: "
                         f"{' '.join(str(err).split())[:400]}") from None
    return classifier.to(map_location).eval()


# ----------------------------------------------------------------------------------------------
# Clouds


def read_cloud(path: str | os.PathLike, num_points: int, *, seed: int = 0, index: int = 0,
               min_points: int = 1) -> Tensor:
    """One file (``.off`` mesh or point-cloud file, :func:`mgic_geo.data.readers.read_shape`) as a
    float32 ``[num_points, 3]`` cloud in the unit sphere (module docstring: sampling).

    :param seed: with ``index``, seeds the draw (the same file at the same index gives the same cloud).
    :param min_points: a point-cloud file with fewer points is an error (repeats would only pad it).
    :raises ValueError: naming the file, for a file the readers reject or with too few points.
    """
    from mgic_geo.data.modelnet import sample_cloud, shape_seed
    from mgic_geo.data.readers import read_shape

    shape = read_shape(path)
    if "face" not in shape and len(shape["pos"]) < min_points:
        raise ValueError(f"{path}: has {len(shape['pos'])} points; the model needs at least {min_points} (its "
                         f"k={min_points - 1} neighbours plus the point itself)")
    return sample_cloud(shape, num_points, seed=shape_seed(seed, index)).pos


def synthetic_clouds(count: int, num_points: int = 1024, *, seed: int = 0) -> Iterator[Tensor]:
    """A lazy, deterministic stream of ``count`` float32 ``[num_points, 3]`` clouds.

    Cloud ``i`` is a shape of ModelNet-10 class ``CLASSES[i % 10]`` from
    :func:`mgic_geo.data.synthetic.synthetic_mesh` (random proportions, turn and noise), sampled on
    its surface and scaled into the unit sphere, all drawn from ``default_rng([seed, i])``: each
    cloud is made when it is asked for, and the same ``(seed, i)`` always gives the same cloud.

    Example::

        >>> from mgic_geo.predict import synthetic_clouds
        >>> clouds = synthetic_clouds(100_000, num_points=256)  # nothing is generated yet
        >>> tuple(next(clouds).shape)
        (256, 3)
    """
    check_int("count", count, minimum=0)
    check_int("num_points", num_points)
    check_int("seed", seed, minimum=0)
    return _synthetic(count, num_points, seed)


def _synthetic(count: int, num_points: int, seed: int, salt: tuple[int, ...] = ()) -> Iterator[Tensor]:
    from mgic_geo.data.modelnet import sample_cloud
    from mgic_geo.data.synthetic import synthetic_mesh

    for index in range(count):
        rng = np.random.default_rng([seed, index, *salt])
        vertices, faces = synthetic_mesh(CLASSES[index % len(CLASSES)], rng)
        shape = {"pos": torch.from_numpy(vertices).float(), "face": torch.from_numpy(faces).t()}
        yield sample_cloud(shape, num_points, seed=int(rng.integers(2**62))).pos


def input_files(inputs: str) -> list[Path]:
    """The files of ``--inputs``: every mesh or point-cloud file under a folder (recursively), or
    the files a glob pattern matches, sorted; ``ValueError`` naming ``inputs`` when there are none."""
    extensions = MESH_EXTENSIONS + POINT_EXTENSIONS
    root = Path(inputs)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in extensions and p.is_file())
        if not files:
            raise ValueError(f"`--inputs` {inputs}: no mesh or point-cloud files ({' '.join(extensions)}) in this folder")
        return files
    files = sorted(Path(p) for p in glob.glob(inputs, recursive=True) if Path(p).is_file())
    if not files:
        what = "no such file or folder" if not glob.has_magic(inputs) else "the pattern matches no file"
        raise ValueError(f"`--inputs` {inputs}: {what}; expected a folder or a glob of mesh or point-cloud files "
                         f"({' '.join(extensions)})")
    return files


# ----------------------------------------------------------------------------------------------
# Pictures


def true_class(path: str | os.PathLike, names: Sequence[str] | None = CLASSES) -> int | None:
    """The class of a file in ModelNet's layout, ``.../<class>/<split>/<file>`` with ``<split>`` one of
    ``train``, ``val``, ``test`` and ``<class>`` one of ``names``: its index in ``names``; else ``None``.

    Example::

        >>> from mgic_geo.predict import true_class
        >>> true_class("datasets/modelnet10/ModelNet10/chair/test/chair_0890.off")
        2
        >>> true_class("scans/chair_0890.off") is None
        True
    """
    parts = Path(path).parts
    if names is None or len(parts) < 3 or parts[-2] not in LAYOUT_SPLITS:
        return None
    names = list(names)
    return names.index(parts[-3]) if parts[-3] in names else None


def render_clouds(clouds: Sequence[Tensor], predicted: Sequence[int], *, class_names: Sequence[str] | None = None,
                  true: Sequence[int | None] | None = None, labels: Sequence[str] | None = None,
                  path: str | os.PathLike | None = None, columns: int = 4):
    """A grid of 3-D scatter plots, one panel per cloud, titled with the prediction and, where known,
    the true class.

    Panel ``i`` shows ``clouds[i]`` (``[N, 3]``, coloured by height) under the title ``labels[i]`` (if
    given), ``pred: <class>`` and ``true: <class>`` (where ``true[i]`` is not ``None``); the title is
    green when the prediction is right, red when it is wrong, black when the truth is unknown. Classes
    are written as ``class_names[c]`` when given, else as their index. Drawn with matplotlib's Agg
    (no display needed; pyplot is not used).

    :param columns: panels per row (fewer when there are fewer clouds).
    :param path: where to write the picture (folders are created; the format follows the suffix:
        ``.png``, ``.pdf``, ``.svg`` ...), through a temporary file renamed at the end.
    :returns: the matplotlib ``Figure``, whose ``axes`` are the panels in order.
    :raises ValueError: for no clouds, more than ``MAX_RENDER``, or lists of different lengths.

    Example::

        >>> import torch
        >>> from mgic_geo.predict import render_clouds
        >>> figure = render_clouds([torch.rand(50, 3), torch.rand(60, 3)], [2, 5], true=[2, 3],
        ...                        class_names=["a", "b", "c", "d", "e", "f"])
        >>> [ax.get_title() for ax in figure.axes]
        ['pred: c\\ntrue: c', 'pred: f\\ntrue: d']
    """
    count = len(clouds)
    if not 1 <= count <= MAX_RENDER:
        raise ValueError(f"render_clouds draws 1 to {MAX_RENDER} clouds, got {count}")
    for name, values in (("predicted", predicted), ("true", true), ("labels", labels)):
        if values is not None and len(values) != count:
            raise ValueError(f"`{name}` has {len(values)} entries for {count} clouds")
    check_int("columns", columns)
    from matplotlib.figure import Figure

    def named(label: int) -> str:
        label = int(label)
        return str(class_names[label]) if class_names is not None and 0 <= label < len(class_names) else str(label)

    columns = min(columns, count)
    rows = -(-count // columns)
    figure = Figure(figsize=(3.2 * columns, 3.4 * rows), dpi=100, layout="constrained")
    for index, cloud in enumerate(clouds):
        points = torch.as_tensor(cloud).detach().cpu().to(torch.float32).numpy()
        ax = figure.add_subplot(rows, columns, index + 1, projection="3d")
        ax.scatter(points[:, 0], points[:, 1], points[:, 2], s=3, c=points[:, 2], cmap="viridis", depthshade=False)
        if len(points):
            centre = (points.max(0) + points.min(0)) / 2
            half = float((points.max(0) - points.min(0)).max()) / 2 or 1.0
            ax.set(xlim=(centre[0] - half, centre[0] + half), ylim=(centre[1] - half, centre[1] + half),
                   zlim=(centre[2] - half, centre[2] + half))
        ax.set_box_aspect((1, 1, 1), zoom=1.25)
        ax.set_axis_off()
        known = true[index] if true is not None else None
        lines = ([str(labels[index])] if labels is not None else []) + [f"pred: {named(predicted[index])}"]
        colour = "black"
        if known is not None:
            lines.append(f"true: {named(known)}")
            colour = "green" if int(known) == int(predicted[index]) else "red"
        ax.set_title("\n".join(lines), color=colour, fontsize=9)
    if path is not None:
        from mgic_geo.training.plots import save_figure

        save_figure(figure, path)
    return figure


def _picture_path(path: str | os.PathLike) -> Path:
    """``path`` checked as a picture to write (a format matplotlib writes, not a folder, its folder creatable)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    formats = FigureCanvasAgg.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        raise ValueError(f"`--render-out` {path}: expected a picture file name ending in one of "
                         f"{', '.join('.' + f for f in sorted(formats))}")
    if path.is_dir():
        raise ValueError(f"`--render-out` {path}: is a folder, expected a picture file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"`--render-out` {path}: cannot be written ({err.strerror})") from None
    return path


# ----------------------------------------------------------------------------------------------
# Memory


def _malloc_trim():
    """glibc's ``malloc_trim`` (returns the allocator's free pages to the system), or ``None``."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


class MemoryMonitor:
    """RSS samples every ``every`` batches, the first one (after ``every`` batches: the warm-up that
    allocates the model's buffers and the allocator's pools) being the start.

    Each sample is taken right after ``malloc_trim(0)`` where glibc has it: between two batches the
    untrimmed RSS swings by tens of MiB depending on which freed buffers the allocator happens to
    keep (measured: 826-909 MiB, sampled after every batch of 2,000 clouds of 256 points through
    mgic_diffgcn), which would hide a slow leak or fake one; after the trim it is the memory actually
    in use (814.0-814.1 MiB on the same run). The untrimmed maximum and the process's peak RSS are
    reported too: they are what the system must provide.
    """

    def __init__(self, every: int):
        self.every = check_int("--memory-every", every)
        # (clouds done, RSS bytes) of the first and the latest sample, the largest RSS and the count:
        # constant memory however long the run
        self.first: tuple[int, int] | None = None
        self.last: tuple[int, int] | None = None
        self.top = self.count = self.untrimmed_max = 0
        self.trim = _malloc_trim()

    def after_batch(self, batches: int, clouds: int, *, last: bool = False) -> None:
        """Record a sample when ``batches`` is a multiple of ``every``, and after the ``last`` batch."""
        if batches % self.every == 0 or (last and (self.last is None or self.last[0] != clouds)):
            untrimmed = current_rss_bytes()
            self.untrimmed_max = max(self.untrimmed_max, untrimmed)
            if self.trim is not None:
                self.trim(0)
            self.last = (clouds, current_rss_bytes())
            self.first = self.first or self.last
            self.top = max(self.top, self.last[1])
            self.count += 1

    def figures(self) -> dict[str, float]:
        """``start``, ``max``, ``end``, ``growth`` (end - start) and ``max_growth`` (max - start) in
        MiB, ``per_10k`` (growth per 10,000 clouds), ``start_clouds``, ``clouds`` (after the start),
        ``untrimmed_max`` and ``peak`` in MiB; needs two samples."""
        if self.count < 2:
            raise ValueError(f"too few batches to measure memory growth: need more than {self.every} (the warm-up, "
                             "--memory-every)")
        (start_clouds, start), (end_clouds, end), top = self.first, self.last, self.top
        return {"start": start / MIB, "max": top / MIB, "end": end / MIB, "growth": (end - start) / MIB,
                "max_growth": (top - start) / MIB, "per_10k": (end - start) / MIB / (end_clouds - start_clouds) * 10_000,
                "start_clouds": start_clouds, "clouds": end_clouds - start_clouds,
                "untrimmed_max": self.untrimmed_max / MIB, "peak": peak_rss_bytes() / MIB}

    def summary(self) -> str:
        try:
            f = self.figures()
        except ValueError as err:
            return f"memory: {err}"
        how = "after malloc_trim(0)" if self.trim is not None else "(no malloc_trim here: allocator caches included)"
        batches = f"{self.every} batch{'es' * (self.every != 1)}"
        return (f"memory: RSS {how}: start {f['start']:.1f} MiB (after a warm-up of {batches}, "
                f"{f['start_clouds']} clouds), max {f['max']:.1f} MiB, end {f['end']:.1f} MiB; growth "
                f"{f['growth']:+.1f} MiB over {f['clouds']} clouds ({f['per_10k']:+.2f} MiB per 10k clouds), max - start "
                f"{f['max_growth']:+.1f} MiB; {self.count} samples, one every {batches}\n"
                f"memory: untrimmed RSS max {f['untrimmed_max']:.1f} MiB at the samples; process peak RSS "
                f"{f['peak']:.1f} MiB (getrusage)")


# ----------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="a PointCloudClassifier checkpoint (mgic-geo fit's checkpoints/last.ckpt)")
    source.add_argument("--model", help="an untrained registry network (randomly initialised with --seed), for load tests")
    parser.add_argument("--model-kwargs", default="{}",
                        help='with --model: JSON keyword arguments of create_model, e.g. \'{"k": 4}\' (default: {})')
    parser.add_argument("--num-classes", type=int, default=10, help="with --model: classes (default: %(default)s)")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--inputs", help="a folder (searched recursively) or a glob of .off meshes or point-cloud files "
                                         f"({' '.join(POINT_EXTENSIONS)})")
    inputs.add_argument("--synthetic", type=int, metavar="N", help="N generated ModelNet-10-like clouds instead")
    parser.add_argument("--num-points", type=int, default=None,
                        help="points per cloud, sampled or padded (default: the model's num_points, else 1024)")
    parser.add_argument("--batch-size", type=int, default=32, help="clouds per forward pass (default: %(default)s)")
    parser.add_argument("--out", default="outputs/predict/predictions.csv",
                        help="CSV of file, class, class_name, one row per cloud, streamed (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the sampling of the clouds (and --model's weights) (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu or cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads, e.g. 1 on a busy machine (default: torch's default)")
    parser.add_argument("--check-memory", action="store_true",
                        help="sample the process RSS every --memory-every batches; print start, max and growth")
    parser.add_argument("--memory-every", type=int, default=10, help="batches between RSS samples (default: %(default)s)")
    parser.add_argument("--check-equal", type=int, default=0, metavar="M",
                        help="re-run the first M clouds one by one and compare their logits (default: 0, off)")
    parser.add_argument("--render", type=int, default=0, metavar="N",
                        help=f"draw the first N clouds (at most {MAX_RENDER}) as 3-D scatter plots titled with their "
                             "predicted and, where known, true class (default: 0, off)")
    parser.add_argument("--render-out", default=None, metavar="PATH",
                        help="the picture of --render (default: --out with the suffix .png)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _resolve_device(device: str) -> torch.device:
    if device not in DEVICES:
        raise ValueError(f"`--device` must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("`--device cuda` was requested but CUDA is not available (torch.cuda.is_available() is False)")
    return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device)


def _build_model(args: argparse.Namespace) -> tuple[nn.Module, str, int]:
    if args.ckpt is not None:
        try:
            classifier = load_classifier(args.ckpt)
        except ValueError as err:
            raise ValueError(f"`--ckpt` {err}") from None
        return classifier, f"{classifier.hparams.model} from {args.ckpt}", int(classifier.num_classes)
    from mgic_geo.models import create_model, list_models, model_task

    if args.model not in list_models():
        raise ValueError(f"`--model` {args.model!r} is not a registry model; available: {', '.join(list_models())}")
    if model_task(args.model) != "point_cloud_classification":
        fitting = [name for name in list_models() if model_task(name) == "point_cloud_classification"]
        raise ValueError(f"`--model` {args.model!r} is a network for {model_task(args.model).replace('_', ' ')}, "
                         f"not point clouds; choose one of: {', '.join(fitting)}")
    try:
        kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as err:
        raise ValueError(f"`--model-kwargs` must be a JSON object, got {args.model_kwargs!r} ({err})") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"`--model-kwargs` must be a JSON object, got {args.model_kwargs!r}")
    check_int("--num-classes", args.num_classes, minimum=2)
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=args.num_classes, **kwargs)
    description = (f"{args.model} (untrained: seed {args.seed}, BatchNorm statistics of {CALIBRATION_CLOUDS} "
                   "synthetic clouds)")
    return model, description, args.num_classes


def _open_csv(out: str):
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"`--out` {out}: is a folder, expected a .csv file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # written under another name and renamed at the end, so a stopped run never leaves a
        # complete-looking file
        partial = path.with_name(f".{path.name}.partial")
        return path, partial, open(partial, "w", newline="")
    except OSError as err:
        raise ValueError(f"`--out` {out}: cannot be written ({err.strerror})") from None


def run(args: argparse.Namespace) -> int:
    check_int("--batch-size", args.batch_size)
    check_int("--seed", args.seed, minimum=0)
    check_int("--check-equal", args.check_equal, minimum=0)
    check_int("--memory-every", args.memory_every)
    check_int("--render", args.render, minimum=0)
    if args.render > MAX_RENDER:
        raise ValueError(f"`--render` draws at most {MAX_RENDER} clouds, got {args.render}")
    if args.synthetic is not None:
        check_int("--synthetic", args.synthetic)
    if args.num_points is not None:
        check_int("--num-points", args.num_points)
    if args.threads is not None:
        check_int("--threads", args.threads)
    default_threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(default_threads)


def _run(args: argparse.Namespace) -> int:
    device = _resolve_device(args.device)
    files = input_files(args.inputs) if args.inputs is not None else None  # a bad --inputs fails before the model loads
    picture = _picture_path(args.render_out or Path(args.out).with_suffix(".png")) if args.render else None
    model, description, num_classes = _build_model(args)
    net = _network(model)
    least = min_points(model)
    fixed = getattr(net, "num_points", None)
    num_points = args.num_points if args.num_points is not None else fixed or 1024
    if num_points < least:
        raise ValueError(f"`--num-points` must be at least {least} for this model (its k={least - 1} neighbours plus "
                         f"the point itself), got {num_points}")
    if fixed is not None and num_points != fixed:
        raise ValueError(f"`--num-points` {num_points} differs from the model's num_points={fixed}; give {fixed}")
    if args.model is not None:
        # Clouds of their own (a third seed word), so the statistics never come from the clouds predicted.
        set_batchnorm_statistics(model, list(_synthetic(CALIBRATION_CLOUDS, num_points, args.seed, salt=(1,))))
    names_of_classes = class_names(num_classes)

    total = len(files) if files is not None else args.synthetic
    names: collections.deque[str] = collections.deque()  # the names of the clouds in flight: one batch at most
    # [cloud, name, true class or None, predicted class] of the first --render clouds only
    shown: list[list] = []

    def clouds() -> Iterator[Tensor]:
        if files is None:
            for index, cloud in enumerate(synthetic_clouds(total, num_points, seed=args.seed)):
                names.append(f"synthetic-{index:06d}")
                if index < args.render:  # synthetic cloud i is a shape of class CLASSES[i % 10]
                    shown.append([cloud, names[-1], index % len(CLASSES) if names_of_classes else None])
                yield cloud
        else:
            for index, file in enumerate(files):
                cloud = read_cloud(file, num_points, seed=args.seed, index=index, min_points=least)
                names.append(str(file))
                if index < args.render:
                    shown.append([cloud, file.name, true_class(file, names_of_classes)])
                yield cloud

    from tqdm import tqdm

    out, partial, handle = _open_csv(args.out)
    monitor = MemoryMonitor(args.memory_every) if args.check_memory else None
    kept: list[tuple[Tensor, Tensor]] = []  # (cloud, batched logits) of the first --check-equal clouds only
    done = 0
    started = time.perf_counter()
    try:
        with handle, tqdm(total=total, desc="predict", unit="cloud", file=sys.stderr, mininterval=1.0,
                          disable=args.no_progress) as bar:
            writer = csv.writer(handle)
            writer.writerow(["file", "class", "class_name"])
            stream = clouds()
            if args.check_equal:
                stream = _keep_first(stream, args.check_equal, kept)
            for logits in predict_clouds(model, stream, batch_size=args.batch_size, device=device):
                label = int(logits.argmax())
                writer.writerow([names.popleft(), label, names_of_classes[label] if names_of_classes else ""])
                if done < args.check_equal:
                    kept[done] = (kept[done][0], logits)
                if done < args.render:
                    shown[done].append(label)
                done += 1
                if done % args.batch_size == 0 or done == total:
                    handle.flush()  # a long run's CSV grows on disk batch by batch
                    bar.update(done - bar.n)
                    if monitor is not None:
                        monitor.after_batch(-(-done // args.batch_size), done, last=done == total)
        os.replace(partial, out)
        elapsed = time.perf_counter() - started
        threads = torch.get_num_threads()
        print(f"predicted {done} clouds with {description}: {num_points} points each, batches of {args.batch_size}, "
              f"{device.type}, {threads} thread{'s' * (threads != 1)}; {elapsed:.1f} s ({done / elapsed:.1f} clouds/s)")
        print(f"wrote {out} ({done} rows)")
        if monitor is not None:
            print(monitor.summary())
        if shown:
            render_clouds([c for c, *_ in shown], [p for *_, p in shown], class_names=names_of_classes,
                          true=[t for _, _, t, _ in shown], labels=[n for _, n, _, _ in shown], path=picture)
            right = sum(t == p for _, _, t, p in shown if t is not None)
            known = sum(t is not None for _, _, t, _ in shown)
            print(f"wrote {picture} ({len(shown)} clouds drawn; "
                  f"{f'{right} of {known} with a known class right' if known else 'true classes unknown'})")
        if args.check_equal:
            return _check_equal(model, kept, args.batch_size, device)
        return 0
    finally:
        if partial.exists():
            partial.unlink()


def _keep_first(clouds: Iterator[Tensor], count: int, kept: list) -> Iterator[Tensor]:
    for index, cloud in enumerate(clouds):
        if index < count:
            kept.append((cloud, None))
        yield cloud


def _check_equal(model: nn.Module, kept: list[tuple[Tensor, Tensor]], batch_size: int, device: torch.device) -> int:
    batched = torch.stack([logits for _, logits in kept])
    alone = torch.stack(list(one_by_one(model, [cloud for cloud, _ in kept], device=device)))
    difference = float((batched - alone).abs().max())
    agree = int((batched.argmax(1) == alone.argmax(1)).sum())
    close = torch.allclose(batched, alone, atol=EQUAL_ATOL, rtol=EQUAL_RTOL)
    verdict = "equal" if close and agree == len(kept) else "DIFFERENT"
    # How far the clouds' logits lie from each other: a difference far below it is rounding, not a mix-up.
    spread = float((alone - alone.mean(0)).abs().max())
    print(f"check-equal: the first {len(kept)} clouds one by one vs in batches of {batch_size}: max |logit difference| "
          f"{difference:.3g} (tolerance atol {EQUAL_ATOL:g} + rtol {EQUAL_RTOL:g}; the clouds' logits lie up to "
          f"{spread:.3g} from their mean), argmax agree {agree}/{len(kept)}: {verdict}")
    if verdict != "equal":
        print(f"mgic-geo: error: --check-equal {len(kept)}: batched and one-by-one logits differ beyond rounding "
              f"(max {difference:.3g}, argmax agree {agree}/{len(kept)})", file=sys.stderr)
        return 1
    return 0
