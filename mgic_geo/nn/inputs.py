"""The checks of the feature and position tensors the graph layers and networks take.

What works, and is therefore accepted: floating-point features (float32, float64, bfloat16,
float16) of the dtype and on the device of the layer's parameters (``layer.double()`` takes
float64 features; under ``torch.autocast`` the features may have the autocast dtype instead), and
floating-point positions of any of those dtypes on the features' device. Integer features,
another dtype than the parameters' outside autocast, another device, the meta device (it holds no
data; the graph layers need it) and zero nodes (every layer needs at least one: leave empty
batches out) raise a ``ValueError`` naming the layer, the tensor and what was expected.

Every check reads metadata only (dtype, device, shape): no host synchronisation, and nothing
``torch.compile`` breaks on.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def _reference(module: nn.Module) -> Tensor | None:
    """The module's first floating-point parameter, breadth first (its dtype and device are the
    layer's): read from the modules' own dicts, several times cheaper than ``module.parameters()``."""
    queue = [module]
    for current in queue:
        for parameter in current._parameters.values():
            if parameter is not None and parameter.is_floating_point():
                return parameter
        queue.extend(child for child in current._modules.values() if child is not None)
    return None


def check_features(layer: str, name: str, x: Tensor, module: nn.Module, *, allow_meta: bool = False) -> None:
    """Check the dtype, device and node count of ``x`` (the tensor ``name``) against ``module``'s
    parameters (module docstring); errors start with ``layer``."""
    reference = _reference(module)
    expected = f"its parameters' dtype {reference.dtype}" if reference is not None else "any floating dtype"
    if not x.is_floating_point():
        raise ValueError(f"{layer}: `{name}` must be floating point ({expected}), got dtype {x.dtype}")
    if reference is not None:
        if x.device != reference.device:
            raise ValueError(f"{layer}: `{name}` is on device {x.device} but its parameters are on {reference.device}; "
                             f"move one of them")
        if x.dtype != reference.dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(f"{layer}: `{name}` has dtype {x.dtype} but its parameters have {reference.dtype}; "
                             f"convert one of them (`{name}`.to({reference.dtype}) or layer.to({x.dtype})), "
                             f"or run under torch.autocast")
    if x.device.type == "meta" and not allow_meta:
        raise ValueError(f"{layer}: `{name}` is on the meta device, which holds no values; {layer} needs them "
                         f"(its graph and neighbour sums read them)")
    if x.shape[0] == 0:
        raise ValueError(f"{layer}: `{name}` holds 0 nodes; {layer} needs at least one (leave empty batches out)")


def check_positions(layer: str, pos: Tensor, x: Tensor) -> None:
    """``pos`` must be floating point (any of the dtypes above) and on ``x``'s device."""
    if not isinstance(pos, Tensor) or not pos.is_floating_point():
        what = f"dtype {pos.dtype}" if isinstance(pos, Tensor) else type(pos).__name__
        raise ValueError(f"{layer}: `pos` must be a floating-point tensor, got {what}")
    if pos.device != x.device:
        raise ValueError(f"{layer}: `pos` is on device {pos.device} but `x` on {x.device}")
