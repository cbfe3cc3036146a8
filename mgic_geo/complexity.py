"""Parameters and multiply-accumulates (MACs) with the paper's convention.

"FLOPs" in the paper, as in most of the field, are multiply-accumulates of convolutions, linear
maps and matrix products; batch norms, activations, additions and poolings are not counted.
:func:`profile` runs one forward pass under :class:`torch.utils.flop_counter.FlopCounterMode`
(which reports 2 x MAC for those ops) and adds formulas for what it misses:

* ``aten.mv``/``addmv``/``dot``/``vdot`` (matrix-vector and vector products);
* ``aten._cdist_forward`` / ``aten._euclidean_dist`` (what ``torch.cdist`` dispatches to): pairwise
  distances, ``P * R * M`` MACs for ``[*, P, M]`` by ``[*, R, M]`` (a kNN's cost, which callers
  that build graphs report on its own line);
* :class:`~mgic_geo.core.transfer.GroupedChannelMap`: its fast channel-last formulation multiplies
  block-diagonal *padded* weights (:mod:`mgic_geo.core.grouped`), so the counter would see up to
  ``64 / a`` times the real work; the count inside each such module is replaced by its true grouped
  MACs, ``output elements x in_channels / groups``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mgic_geo.core.transfer import GroupedChannelMap
from mgic_geo.nn import cost

aten = torch.ops.aten
GROUPED_CHANNEL_MAP = "mgic_geo.grouped_channel_map"


def _mv_flop(matrix_shape, vector_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * matrix_shape[0] * matrix_shape[1]


def _addmv_flop(self_shape, matrix_shape, vector_shape, *args, out_shape=None, **kwargs) -> int:
    return _mv_flop(matrix_shape, vector_shape)


def _dot_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0]


def _cdist_flop(x1_shape, x2_shape, *args, out_shape=None, **kwargs) -> int:
    batch = 1
    for size in x1_shape[:-2]:
        batch *= size
    return 2 * batch * x1_shape[-2] * x2_shape[-2] * x1_shape[-1]


MISSING_FORMULAS = {
    aten.mv: _mv_flop,
    aten.addmv: _addmv_flop,
    aten.dot: _dot_flop,
    aten.vdot: _dot_flop,
    aten._cdist_forward: _cdist_flop,
    aten._euclidean_dist: _cdist_flop,
}


@dataclass
class Profile:
    """What :func:`profile` measured: parameter count and MACs of one forward pass."""

    params: int
    macs: int
    macs_by_op: dict[str, int] = field(default_factory=dict)
    knn_macs: int = 0  # distance products of kNN searches, not in ``macs``
    graph_operator_macs: int = 0  # neighbour sums of graph operators, not in ``macs``

    def __str__(self) -> str:
        extra = [f"{v / 1e6:.2f} M {name} MACs" for name, v in (("kNN distance", self.knn_macs),
                                                                 ("graph operator", self.graph_operator_macs)) if v]
        extra_part = f" (+ {', '.join(extra)})" if extra else ""
        return f"{self.params / 1e6:.3f} M params, {self.macs / 1e6:.2f} M MACs{extra_part}"


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (shared ones counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def profile(model: nn.Module, *inputs, **kwargs) -> Profile:
    """Count the parameters of ``model`` and the MACs of ``model(*inputs, **kwargs)``.

    The forward pass runs in eval mode without gradients, so running statistics are untouched; the
    model's training flag is restored afterwards. Inputs on the ``meta`` device work too (shapes
    only, nothing is computed).

    Example::

        >>> import torch
        >>> from mgic_geo.complexity import profile
        >>> conv = torch.nn.Conv2d(16, 16, 3, padding=1, bias=False)
        >>> profile(conv, torch.randn(1, 16, 32, 32)).macs == 16 * 16 * 9 * 32 * 32
        True
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"`model` must be an nn.Module, got {type(model).__name__}")
    counter = FlopCounterMode(display=False, custom_mapping=MISSING_FORMULAS)
    counted_inside: Counter = Counter()  # per op, what the counter saw inside grouped maps
    true_grouped = 0
    snapshots: list[Counter] = []

    def before(module, args):
        snapshots.append(Counter(counter.flop_counts["Global"]))

    def after(module, args, output):
        nonlocal true_grouped
        counted_inside.update(Counter(counter.flop_counts["Global"]) - snapshots.pop())
        true_grouped += 2 * output.numel() * module.weight.shape[-1]

    handles = []
    for module in model.modules():
        if isinstance(module, GroupedChannelMap):
            handles.append(module.register_forward_pre_hook(before))
            handles.append(module.register_forward_hook(after))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), counter, cost.counting() as reported:  # kind -> graph MACs (mgic_geo.nn.cost)
            model(*inputs, **kwargs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    by_op = Counter({str(op): flops for op, flops in counter.flop_counts["Global"].items()})
    by_op.subtract({str(op): flops for op, flops in counted_inside.items()})
    by_op[GROUPED_CHANNEL_MAP] += true_grouped
    by_op[str(aten.bmm)] -= 2 * sum(reported.values())  # both run as batched products
    macs_by_op = {op: flops // 2 for op, flops in sorted(by_op.items()) if flops > 0}
    return Profile(params=count_parameters(model), macs=sum(macs_by_op.values()), macs_by_op=macs_by_op,
                   knn_macs=reported["knn"], graph_operator_macs=reported["graph operators"])
