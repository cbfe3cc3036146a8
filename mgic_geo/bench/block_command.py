"""``mgic-geo bench block``: the dense block vs its MGIC block, measured, printed and written as a table.

The measurement itself (method, caveats) is :mod:`mgic_geo.bench.block`; the table's columns and
notes are :mod:`mgic_geo.bench.block_table`.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from mgic_geo.bench.block import CASES, DEFAULT_WIDTHS, bench_block, validate_options
from mgic_geo.bench.block_table import COLUMNS, method_notes
from mgic_geo.bench.command import call_with_args, complete_options, keyword_defaults
from mgic_geo.bench.machine import machine_description, resolve_devices
from mgic_geo.tables import prepare_output_dir, write_table

# The options of bench_block, with their defaults (report_block forwards them).
BLOCK_OPTIONS = keyword_defaults(bench_block)




def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--widths", type=int, nargs="+", default=list(DEFAULT_WIDTHS), metavar="C",
                        help="block widths c (default: %(default)s)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), metavar="CASE",
                        help=f"cases to run, from {CASES} (default: both)")
    parser.add_argument("--nodes", type=int, default=32_768, help="graph nodes N (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=32, help="image batch size (default: %(default)s)")
    parser.add_argument("--size", type=int, default=32, help="image height = width (default: %(default)s)")
    parser.add_argument("--group-size", type=int, default=8, help="MGIC s_g (default: %(default)s)")
    parser.add_argument("--coarsest", type=int, default=16, help="MGIC s_c (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes, median reported (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes first (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (CPU, plus CUDA when available), cpu or cuda")
    parser.add_argument("--channels-last", action="store_true", help="channels_last images and weights")
    parser.add_argument("--checkpoint", action="store_true",
                        help="MGIC block with checkpoint=True (recomputes each level in backward, less memory)")
    parser.add_argument("--compile", action="store_true",
                        help="wrap every block in torch.compile (compiled in the warm-up passes)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--out", default="outputs/bench",
                        help="writes block.md and block.csv here (default: %(default)s)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")


def report_block(out: str | Path = "outputs/bench", **options) -> Path:
    """What ``mgic-geo bench block`` does: :func:`~mgic_geo.bench.block.bench_block` with
    ``options``, the table and its notes (machine, method, wall time) printed and written to
    ``<out>/block.md`` and ``block.csv``.

    Args:
        out (str or Path): the folder of the table (created; checked before measuring).
        **options: keyword options of :func:`~mgic_geo.bench.block.bench_block` (its defaults for
            the rest).

    Returns:
        Path: the markdown table.

    Raises:
        ValueError: a bad option, named as on the command line.
    """
    options = complete_options(BLOCK_OPTIONS, options, "report_block")
    devices = resolve_devices(options["device"])
    validate_options(*(options[name] for name in ("widths", "cases", "nodes", "batch", "size", "group_size",
                                                  "coarsest", "repeats", "warmup", "seed")))
    out = prepare_output_dir(out)  # fail on a bad --out before minutes of measuring
    machine = machine_description(devices)
    started = time.perf_counter()
    rows = bench_block(**options)
    table_notes = [f"machine: {machine}"]
    table_notes += method_notes(devices=devices, **{name: options[name] for name in (
        "warmup", "repeats", "nodes", "batch", "size", "group_size", "coarsest", "channels_last", "checkpoint",
        "compile")})
    table_notes.append(f"wall time of the whole run: {time.perf_counter() - started:.1f} s")
    md_path, csv_path, text = write_table(
        rows, out, "block", title="Dense block vs MGIC block: forward+backward time and peak memory",
        notes=table_notes, columns=COLUMNS,
    )
    print(f"machine: {machine}")
    print(text)
    print(f"wrote {md_path} and {csv_path}")
    return md_path


def run(args: argparse.Namespace) -> int:
    call_with_args(report_block, args, BLOCK_OPTIONS)
    return 0
