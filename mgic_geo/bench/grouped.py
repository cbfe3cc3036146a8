"""Forward+backward time of the formulations of a grouped 1x1 channel map (``mgic-geo bench grouped``).

The measurements behind the choices in :mod:`mgic_geo.core.grouped`, side by side in one run: for
node features ``[N, C]`` (channel-last), for node features stored channel-major (the layout
:class:`~mgic_geo.MGICBlock` runs pointwise node blocks in) and for NCHW images (channel-major), the
formulation the core uses against the obvious alternatives. Every formulation computes the same map (checked
before timing); times are the median of ``--repeats`` forward+backward passes after one warm-up.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from mgic_geo.bench.command import call_with_args
from mgic_geo.bench.machine import machine_description
from mgic_geo.core.grouped import channel_last_map, grouped_channel_map, to_channel_major
from mgic_geo.tables import prepare_output_dir, write_table
from mgic_geo.validation import check_int


def _per_group_einsum(x: Tensor, weight: Tensor) -> Tensor:
    groups, _, in_per_group = weight.shape
    return torch.einsum("ngi,goi->ngo", x.reshape(x.shape[0], groups, in_per_group), weight).flatten(1)


def _grouped_conv1d(x: Tensor, weight: Tensor) -> Tensor:
    return F.conv1d(x.unsqueeze(-1), weight.flatten(0, 1).unsqueeze(-1), groups=weight.shape[0]).squeeze(-1)


def _grouped_conv2d(x: Tensor, weight: Tensor) -> Tensor:
    return F.conv2d(x, weight.flatten(0, 1)[..., None, None], groups=weight.shape[0])


def _grouped_conv2d_channels_last(x: Tensor, weight: Tensor) -> Tensor:
    return _grouped_conv2d(x.contiguous(memory_format=torch.channels_last), weight)


def _row_major_supergroups(x: Tensor, weight: Tensor) -> Tensor:
    return channel_last_map(x.contiguous(), weight)


def _row_major_then_channel_major(x: Tensor, weight: Tensor) -> Tensor:
    return grouped_channel_map(to_channel_major(x), weight).contiguous()


FORMULATIONS = {
    "nodes [N, C]": {
        "core: block-diagonal super-groups, one batched GEMM": grouped_channel_map,
        "einsum per group": _per_group_einsum,
        "conv1d(groups=g)": _grouped_conv1d,
        "copy to channel-major, broadcast matmul, copy back": _row_major_then_channel_major,
    },
    "nodes [N, C] stored channel-major": {
        "core: broadcast matmul over groups": grouped_channel_map,
        "copy to row-major, block-diagonal super-groups": _row_major_supergroups,
    },
    "images [B, C, H, W]": {
        "core: broadcast matmul over groups": grouped_channel_map,
        "conv2d(groups=g)": _grouped_conv2d,
        "conv2d(groups=g), channels_last": _grouped_conv2d_channels_last,
    },
}


def _time(function, x: Tensor, weight: Tensor, repeats: int) -> float:
    x, weight = x.detach().requires_grad_(), weight.detach().requires_grad_()
    seconds = []
    for _ in range(repeats + 1):  # the first pass warms up
        x.grad = weight.grad = None
        start = time.perf_counter()
        out = function(x, weight)
        out.backward(torch.ones_like(out))
        seconds.append(time.perf_counter() - start)
    return 1e3 * statistics.median(seconds[1:])


def bench_grouped(
    *, channels: int = 1024, in_per_group: int = 8, out_per_group: int = 4, nodes: int = 32_768,
    batch: int = 32, size: int = 32, repeats: int = 3, seed: int = 0,
) -> list[dict]:
    """One row per (layout, formulation): fwd+bwd milliseconds and the ratio to the core's."""
    for option, value in (("--channels", channels), ("--in-per-group", in_per_group), ("--out-per-group", out_per_group),
                          ("--nodes", nodes), ("--batch", batch), ("--size", size), ("--repeats", repeats)):
        check_int(option, value)
    if channels % in_per_group:
        raise ValueError(f"`--in-per-group` {in_per_group} must divide `--channels` {channels}")
    generator = torch.Generator().manual_seed(seed)
    groups = channels // in_per_group
    weight = torch.randn(groups, out_per_group, in_per_group, generator=generator)
    inputs = {
        "nodes [N, C]": torch.randn(nodes, channels, generator=generator),
        "nodes [N, C] stored channel-major": to_channel_major(torch.randn(nodes, channels, generator=generator)),
        "images [B, C, H, W]": torch.randn(batch, channels, size, size, generator=generator),
    }
    rows = []
    for layout, formulations in FORMULATIONS.items():
        x = inputs[layout]
        expected = grouped_channel_map(x, weight)
        timed = {}
        for name, function in formulations.items():
            torch.testing.assert_close(function(x, weight), expected, rtol=1e-4, atol=1e-4)
            timed[name] = _time(function, x, weight, repeats)
        core = next(iter(timed.values()))
        rows += [{"layout": layout, "formulation": name, "fwd+bwd ms": ms, "time / core's": ms / core}
                 for name, ms in timed.items()]
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--channels", type=int, default=1024, help="input channels C (default: %(default)s)")
    parser.add_argument("--in-per-group", type=int, default=8, help="input channels per group (default: %(default)s)")
    parser.add_argument("--out-per-group", type=int, default=4,
                        help="output channels per group; 4 from 8 is a restriction (default: %(default)s)")
    parser.add_argument("--nodes", type=int, default=32_768, help="rows N of the node features (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=32, help="image batch (default: %(default)s)")
    parser.add_argument("--size", type=int, default=32, help="image height = width (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes, median reported (default: %(default)s)")
    parser.add_argument("--out", default="outputs/bench", help="writes grouped.md and grouped.csv here")


def report_grouped(
    out: str | Path = "outputs/bench",
    *,
    channels: int = 1024,
    in_per_group: int = 8,
    out_per_group: int = 4,
    nodes: int = 32_768,
    batch: int = 32,
    size: int = 32,
    repeats: int = 3,
) -> Path:
    """What ``mgic-geo bench grouped`` does: :func:`bench_grouped` with these options, the table and
    its notes printed and written to ``<out>/grouped.md`` and ``grouped.csv``.

    Args:
        out (str or Path): the folder of the table (created; checked before measuring).
        channels, in_per_group, out_per_group, nodes, batch, size, repeats: as for :func:`bench_grouped`.

    Returns:
        Path: the markdown table.
    """
    out = prepare_output_dir(out)
    rows = bench_grouped(channels=channels, in_per_group=in_per_group, out_per_group=out_per_group,
                         nodes=nodes, batch=batch, size=size, repeats=repeats)
    machine = machine_description(["cpu"])
    notes = [
        f"machine: {machine}",
        f"map: {channels} -> {channels // in_per_group * out_per_group} channels in groups of "
        f"{in_per_group} -> {out_per_group}; nodes [{nodes}, C], images [{batch}, C, {size}, "
        f"{size}]; median of {repeats} forward+backward passes after one warm-up.",
    ]
    md_path, _, text = write_table(rows, out, "grouped", title="Grouped 1x1 channel map: formulations side by side",
                                   notes=notes)
    print(text)
    return md_path


def run(args: argparse.Namespace) -> int:
    call_with_args(report_grouped, args)
    return 0
