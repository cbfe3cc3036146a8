"""The ``mgic-geo`` command line.

Each sub-command lives in a module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# (group, name) -> (module, help)
COMMANDS = {
    ("experiment", "reconstruction"): (
        "mgic_geo.experiments.reconstruction",
        "Table 1 / Fig. 2: feature maps encoded to the coarsest level and decoded",
    ),
    ("experiment", "scaling"): (
        "mgic_geo.experiments.scaling",
        "Sec. 4.4 / Eq. 8: params and MACs of a dense 3x3 block vs its MGIC block",
    ),
    ("bench", "grouped"): (
        "mgic_geo.bench.grouped",
        "forward+backward time of the formulations of a grouped 1x1 channel map",
    ),
    ("bench", "block"): (
        "mgic_geo.bench.block",
        "forward+backward time and peak memory, dense block vs MGIC block",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    from mgic_geo import __version__

    parser = argparse.ArgumentParser(prog="mgic-geo", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    groups = parser.add_subparsers(dest="group", required=True, metavar="{experiment,bench}")
    subparsers = {}
    for (group, name), (module_name, help_text) in COMMANDS.items():
        if group not in subparsers:
            group_parser = groups.add_parser(group, help=f"run a{'n' if group[0] in 'aeiou' else ''} {group}")
            subparsers[group] = group_parser.add_subparsers(dest="name", required=True)
        sub = subparsers[group].add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(module=module_name)
        importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(args.module)
    try:
        return module.run(args) or 0
    except ValueError as error:  # bad input: a clear message, not a traceback
        print(f"mgic-geo: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
