"""Between the benchmark functions and their command lines.

Every benchmark module exposes a ``report_<name>(out, **options)`` function with keyword options
named as its command's flags (``--group-size`` is ``group_size``). :func:`call_with_args` is how a
module's ``run(args)`` calls it; :func:`command_line` writes the command that reruns a call
(``mgic-geo bench all`` lists them in its report).
"""
from __future__ import annotations

import argparse
import inspect
from typing import Any, Callable, Iterable, Mapping


def keyword_defaults(function: Callable[..., Any]) -> dict[str, Any]:
    """Every keyword parameter of ``function`` with its default: the options of a ``bench_<name>``
    function, read once where its ``report_<name>`` forwards them.

    Args:
        function (Callable): a ``bench_<name>`` function (keyword parameters with defaults).

    Returns:
        dict[str, Any]: default by parameter name, in order.
    """
    return {name: parameter.default for name, parameter in inspect.signature(function).parameters.items()
            if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)}


def complete_options(defaults: Mapping[str, Any], options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``options`` completed with ``defaults``.

    Args:
        defaults (Mapping[str, Any]): every option with its default (:func:`keyword_defaults`).
        options (Mapping[str, Any]): the options given.
        where (str): the function taking them, for the error.

    Returns:
        dict[str, Any]: every option of ``defaults``, given or default.

    Raises:
        TypeError: for an option not in ``defaults``, as Python does for an unexpected keyword.
    """
    unknown = [name for name in options if name not in defaults]
    if unknown:
        raise TypeError(f"{where}() got an unexpected keyword argument {unknown[0]!r}")
    return {**defaults, **options}


def call_with_args(function: Callable[..., Any], args: argparse.Namespace, options: Iterable[str] = ()) -> Any:
    """``function`` called with every parsed argument that is one of its parameters or one of the
    ``options`` it forwards (its ``**options``).

    Args:
        function (Callable): a ``report_<name>`` function.
        args (argparse.Namespace): the command's parsed arguments (``dest`` names as parameters).
        options (Iterable[str]): names ``function`` takes in its ``**options``.

    Returns:
        Any: what ``function`` returns.
    """
    names = set(keyword_defaults(function)) | set(options)
    return function(**{name: value for name, value in vars(args).items() if name in names})


def command_line(command: str, options: Mapping[str, Any]) -> list[str]:
    """The ``mgic-geo`` arguments that run ``command`` with ``options``, in their order.

    A keyword ``name`` becomes ``--name`` with ``_`` as ``-``; ``True`` is the bare flag, ``False``
    and ``None`` are left out, except ``progress=False``, which is ``--no-progress``; a list or
    tuple gives its items after the flag.

    Args:
        command (str): the words after ``mgic-geo``, e.g. ``"bench block"``.
        options (Mapping[str, Any]): keyword options of the command's ``report_<name>`` function.

    Returns:
        list[str]: ``argv`` for :func:`mgic_geo.cli.main`.

    Example::

        >>> from mgic_geo.bench.command import command_line
        >>> " ".join(command_line("bench block", {"widths": [32], "group_size": 4, "compile": True,
        ...                                       "progress": False}))
        'bench block --widths 32 --group-size 4 --compile --no-progress'
    """
    argv = command.split()
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if name == "progress":
            argv += [] if value else ["--no-progress"]
        elif value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv
