"""Batched, streaming prediction with a point-cloud network: a cloud gets the same logits in any batch.

A batch is PyG's flat layout, ``pos`` ``[sum N_i, 3]`` with a ``batch`` vector, so clouds of
different sizes may share one; in eval mode every layer of the registry's point-cloud networks
works per cloud, so :func:`predict_clouds` and :func:`one_by_one` agree up to float rounding.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from mgic_geo.data.layout import CLASSES
from mgic_geo.validation import check_int


def _network(model: nn.Module) -> nn.Module:
    """The registry network inside ``model`` (a PointCloudClassifier wraps it as ``.net``)."""
    return getattr(model, "net", model)


def min_points(model: nn.Module) -> int:
    """Fewest points a cloud may have for ``model``: its ``k`` neighbours plus the point itself
    (2 for a network without a ``k``)."""
    k = getattr(_network(model), "k", None)
    return k + 1 if isinstance(k, int) and not isinstance(k, bool) else 2


def fixed_points(model: nn.Module) -> int | None:
    """The number of points every cloud must have for ``model`` (its network's ``num_points``), or
    ``None`` when it takes clouds of any size."""
    return getattr(_network(model), "num_points", None)


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



def predict_clouds(model: nn.Module, clouds: Iterable[Tensor], *, batch_size: int = 32,
                   device: str | torch.device | None = None) -> Iterator[Tensor]:
    """Logits of every cloud of ``clouds``, in order, computed in batches of ``batch_size``.

    A lazy generator: it reads ``batch_size`` clouds, runs them as one batch (PyG layout, ``pos``
    concatenated and a ``batch`` vector) under ``torch.inference_mode``, yields their logits and
    forgets them, so memory does not grow with the number of clouds. The arguments are checked at
    the call, the clouds as they come.

    Args:
        model (nn.Module): a point-cloud network of the registry (``forward(pos, batch)``) or a
            :class:`~mgic_geo.training.PointCloudClassifier`; it is put in eval mode (and left there).
        clouds (Iterable[Tensor]): an iterable of ``[N_i, 3]`` float tensors (or numpy arrays), any sizes ``N_i`` of
            at least :func:`min_points` (exactly the model's ``num_points`` if it was built with one).
        batch_size (int): clouds per forward pass.
        device (str | torch.device | None): where to run; the model is moved there. ``None``: where the model is.

    Returns:
        Iterator[Tensor]: an iterator of ``[num_classes]`` float32 CPU tensors; ``.argmax()`` is the class.

    Raises:
        ValueError: for a bad ``batch_size`` or ``model`` at the call; for a cloud of the wrong
            shape, too few points or NaN/inf coordinates when it is reached, naming its index.

    Example::

        >>> import torch
        >>> from mgic_geo.models import create_model
        >>> from mgic_geo.inference import predict_clouds
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
    return _stream(model, iter(clouds), batch_size, device, min_points(model), fixed_points(model))


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
    least, fixed = min_points(model), fixed_points(model)
    for index, cloud in enumerate(clouds):
        cloud = _as_cloud(cloud, index, least, fixed).to(device)
        with torch.inference_mode():
            logits = model(cloud, None).float().cpu()
        yield logits.clone()[0]


def set_batchnorm_statistics(model: nn.Module, clouds: Iterable[Tensor]) -> nn.Module:
    """Set every BatchNorm's running statistics to those of one batch of ``clouds`` (one forward
    pass in training mode without gradients, dropout off), then put ``model`` in eval mode.

    For untrained networks (``mgic-geo predict --model``): with their initial statistics (mean 0,
    variance 1) the activations are not normalised and the logits hardly depend on the cloud, so
    comparing batched with one-by-one outputs would prove little. After this they differ between
    clouds as a trained network's do. The weights are not changed.

    Args:
        clouds (Iterable[Tensor]): ``[N_i, 3]`` clouds of one batch (at least two: BatchNorm needs a spread).

    Returns:
        nn.Module: ``model``, in eval mode.
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
