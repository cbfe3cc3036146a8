"""Sec. 4.4 / Eq. 8: parameters and MACs of a dense 3x3 block against its MGIC block.

For widths ``c = 64 ... 4096`` (``s_g = 8``, ``s_c = 16`` by default) both blocks are built on the
``meta`` device (shapes only, so a 4096-wide dense block costs no memory) and measured with
:func:`mgic_geo.complexity.profile` on a ``1 x c x 32 x 32`` input. The level blocks are
3x3 convolution + BN + ReLU (:class:`~mgic_geo.layers.ConvNormAct`).

Eq. 8 bounds the convolution weights of an ``n``-level MGIC block with one ``d x d`` convolution per
level::

    sum_{j<n} s_g c d^2 / 2^j + s_c^2 d^2  <  2 s_g c d^2 + s_c^2 d^2

The table shows the exact sum and the bound beside the measured convolution weights; the block's
full parameter count adds the transfer operators (``R_j`` and ``P_j`` hold ``s_g c / 2^j`` weights
per level together, less than ``2 s_g c`` in all) and the batch norms, which Eq. 8 leaves out.
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from mgic_geo.complexity import profile
from mgic_geo.core.block import MGICBlock
from mgic_geo.core.config import MGICConfig
from mgic_geo.tables import prepare_output_dir, write_table
from mgic_geo.layers import ConvNormAct
from mgic_geo.validation import check_int

DEFAULT_WIDTHS = (64, 128, 256, 512, 1024, 2048, 4096)
KERNEL = 3


def _conv_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Conv2d))


def scaling_rows(
    widths=DEFAULT_WIDTHS, *, group_size: int = 8, coarsest: int = 16, size: int = 32
) -> list[dict]:
    """One row per width: measured params/MACs of both blocks and Eq. 8 beside them."""
    rows = []
    d2 = KERNEL * KERNEL
    for c in widths:
        with torch.device("meta"):
            dense = ConvNormAct(c, 1, kernel_size=KERNEL)
            mgic = MGICBlock(c, lambda w, g: ConvNormAct(w, g, kernel_size=KERNEL),
                             MGICConfig(group_size=group_size, coarsest=coarsest))
            x = torch.empty(1, c, size, size)
        dense_profile, mgic_profile = profile(dense, x), profile(mgic, x)
        levels = len(mgic.widths) - 1
        eq8_sum = sum(group_size * c * d2 // 2**j for j in range(levels)) + mgic.widths[-1] ** 2 * d2
        rows.append(
            {
                "c": c,
                "levels L": levels,
                "dense params": dense_profile.params,
                "MGIC params": mgic_profile.params,
                "MGIC conv weights": _conv_weights(mgic),
                "Eq. 8 sum": eq8_sum,
                "Eq. 8 bound": 2 * group_size * c * d2 + coarsest**2 * d2,
                "dense MACs [M]": dense_profile.macs / 1e6,
                "MGIC MACs [M]": mgic_profile.macs / 1e6,
                "params ratio": dense_profile.params / mgic_profile.params,
                "MACs ratio": dense_profile.macs / mgic_profile.macs,
            }
        )
    return rows


def plot(rows: list[dict], path, *, group_size: int, coarsest: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = [row["c"] for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.loglog(c, [r["dense params"] for r in rows], "o-", label="dense 3x3 block")
    left.loglog(c, [r["MGIC params"] for r in rows], "s-", label="MGIC block (all params)")
    left.loglog(c, [r["MGIC conv weights"] for r in rows], "^-", label="MGIC conv weights")
    left.loglog(c, [r["Eq. 8 bound"] for r in rows], "k--", label=r"Eq. 8 bound $2 s_g c d^2 + s_c^2 d^2$")
    left.set(xlabel="channels c", ylabel="parameters", title="Parameters")
    right.loglog(c, [r["dense MACs [M]"] for r in rows], "o-", label="dense 3x3 block")
    right.loglog(c, [r["MGIC MACs [M]"] for r in rows], "s-", label="MGIC block")
    right.set(xlabel="channels c", ylabel="MACs [M] at 32x32", title="Multiply-accumulates")
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle(f"Dense vs MGIC (s_g={group_size}, s_c={coarsest}): O(c^2) vs O(c)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="outputs/scaling", help="output folder (default: %(default)s)")
    parser.add_argument("--widths", type=int, nargs="+", default=list(DEFAULT_WIDTHS), help="channel widths c")
    parser.add_argument("--group-size", type=int, default=8, help="s_g (default: %(default)s)")
    parser.add_argument("--coarsest", type=int, default=16, help="s_c (default: %(default)s)")
    parser.add_argument("--size", type=int, default=32, help="input height = width for MACs (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    for name in ("group_size", "coarsest", "size"):
        check_int(f"--{name.replace('_', '-')}", getattr(args, name))
    for width in args.widths:
        check_int("--widths", width)
    out = prepare_output_dir(args.out)
    rows = scaling_rows(args.widths, group_size=args.group_size, coarsest=args.coarsest, size=args.size)
    notes = [
        f"Measured with `mgic_geo.complexity.profile` on a 1 x c x {args.size} x {args.size} input; "
        "MACs count convolutions and channel maps only (the paper's FLOPs).",
        "MGIC conv weights equal the exact Eq. 8 sum when c / s_c is a power of two; the full "
        "parameter count adds the transfer operators (< 2 s_g c) and batch norms.",
    ]
    _, _, text = write_table(
        rows, out, "scaling", title=f"Scaling: dense 3x3 block vs MGIC block (s_g={args.group_size}, s_c={args.coarsest})", notes=notes
    )
    plot(rows, out / "scaling.png", group_size=args.group_size, coarsest=args.coarsest)
    print(text)
    print(f"wrote {out / 'scaling.md'}, {out / 'scaling.csv'}, {out / 'scaling.png'}")
    return 0
