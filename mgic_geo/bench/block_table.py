"""The table of ``mgic-geo bench block``: its columns, one row from the measurements, its notes."""
from __future__ import annotations

from typing import Sequence

from mgic_geo.bench.traffic import GIB
from mgic_geo.memory import MIB

COLUMNS = (
    "device",
    "case",
    "c",
    "MGIC levels",
    "dense ms",
    "grouped ms",
    "MGIC ms",
    "speed-up (dense/MGIC)",
    "dense GiB moved",
    "MGIC GiB moved",
    "bandwidth GB/s",
    "MGIC floor ms",
    "MGIC ms / floor",
    "dense peak MiB",
    "grouped peak MiB",
    "MGIC peak MiB",
    "memory ratio (dense/MGIC)",
    "dense params",
    "MGIC params",
    "dense GMAC",
    "MGIC GMAC",
    "MAC ratio (dense/MGIC)",
)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def table_row(spec, dense: dict, grouped: dict, mgic: dict) -> dict:
    """One row of the table, keyed by :data:`COLUMNS`, from the measurements of the three variants.

    Args:
        spec (Measurement): the dense variant's :class:`~mgic_geo.bench.block.Measurement` (its
            device, case and width name the row).
        dense (dict): what the dense block's measurement returned (``ms``, ``peak_bytes``,
            ``traffic_bytes``, ``bandwidth``, ``params``, ``macs``, ``levels``).
        grouped (dict): the same for the grouped finest level alone.
        mgic (dict): the same for the MGIC block.

    Returns:
        dict: times in ms, memory in MiB, traffic in GiB, MACs in GMAC; ratios are dense / MGIC
        (``nan`` where the MGIC figure is 0).
    """
    dense_mib, mgic_mib = dense["peak_bytes"] / MIB, mgic["peak_bytes"] / MIB
    floor_ms = 1e3 * _ratio(mgic["traffic_bytes"], mgic["bandwidth"])
    return {
        "device": spec.device,
        "case": spec.case,
        "c": spec.width,
        "MGIC levels": mgic["levels"],
        "dense ms": dense["ms"],
        "grouped ms": grouped["ms"],
        "MGIC ms": mgic["ms"],
        "speed-up (dense/MGIC)": _ratio(dense["ms"], mgic["ms"]),
        "dense GiB moved": dense["traffic_bytes"] / GIB,
        "MGIC GiB moved": mgic["traffic_bytes"] / GIB,
        "bandwidth GB/s": mgic["bandwidth"] / 1e9,
        "MGIC floor ms": floor_ms,
        "MGIC ms / floor": _ratio(mgic["ms"], floor_ms),
        "dense peak MiB": dense_mib,
        "grouped peak MiB": grouped["peak_bytes"] / MIB,
        "MGIC peak MiB": mgic_mib,
        "memory ratio (dense/MGIC)": _ratio(dense_mib, mgic_mib),
        "dense params": dense["params"],
        "MGIC params": mgic["params"],
        "dense GMAC": dense["macs"] / 1e9,
        "MGIC GMAC": mgic["macs"] / 1e9,
        "MAC ratio (dense/MGIC)": _ratio(dense["macs"], mgic["macs"]),
    }


def method_notes(*, warmup: int, repeats: int, group_size: int, coarsest: int, nodes: int, batch: int,
                 size: int, channels_last: bool, devices: Sequence[str], checkpoint: bool = False,
                 compile: bool = False) -> list[str]:
    """The printed and saved notes: what was measured and how."""
    lines = [
        f"graph: node features [{nodes}, c], dense = ChannelMixNormAct(c, 1) (1x1 mix + BN + ReLU); "
        f"image: [{batch}, c, {size}, {size}]{' channels_last' if channels_last else ''}, "
        "dense = ConvNormAct(c, 1) (3x3 conv + BN + ReLU). "
        f"MGIC = MGICBlock(c, level block, group_size={group_size}, coarsest={coarsest}"
        f"{', checkpoint=True' if checkpoint else ''}), paper level rule; "
        "`MGIC levels` counts widths c, c/2, ..., coarsest. grouped = the MGIC block's finest level block alone "
        f"(c/{group_size} groups, nothing coupling them).",
        f"time: median of {repeats} forward+backward passes after {warmup} warm-up pass(es), train mode, "
        "input requires grad, backward with a ones gradient; ratios > 1 favour MGIC.",
    ]
    if compile:
        lines.append("compiled: every block (dense, grouped and MGIC alike) wrapped in torch.compile (inductor, "
                     "default mode), compiled during the warm-up passes; GiB moved is not counted for compiled "
                     "kernels (n/a).")
    if "cpu" in devices:
        lines.append(
            "CPU peak memory: each (case, c, variant) is timed in one fresh process and measured for memory in "
            "another, both forked from a forkserver that only imported torch. The memory process pins glibc's mmap "
            "threshold at 128 KiB so the RSS follows the live tensors, runs a warm-up pass, resets the peak-RSS "
            "mark (/proc/self/clear_refs), and reports ru_maxrss after one forward+backward pass minus the RSS "
            "(/proc/self/statm) before it: activations, gradients and temporaries."
        )
    if "cuda" in devices:
        lines.append(
            "CUDA peak memory: torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus "
            "memory_allocated before the timed passes; times with torch.cuda.synchronize around each pass."
        )
    lines.append(
        "GiB moved: bytes every ATen operator of one forward+backward reads and writes (views excluded; "
        "mgic_geo.bench.traffic); bandwidth: best 256 MiB copy in the timing process; MGIC floor ms = MGIC GiB "
        "moved / bandwidth, the fastest the same operators could run."
    )
    lines.append(
        "GMAC: forward multiply-accumulates from `mgic_geo.complexity.profile` (conv and channel maps; BN, ReLU, adds ignored)."
    )
    return lines
