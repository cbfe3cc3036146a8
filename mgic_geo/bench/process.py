"""Measurement plumbing shared by the benchmarks: fresh forked processes and device synchronisation.

CPU peak memory is read from the process's resident set (:mod:`mgic_geo.memory`; see
:mod:`mgic_geo.bench.block` for the method and its caveats), which only means something in a
process that measured nothing before: :func:`run_in_fresh_process` forks one from a forkserver that
has imported torch once.
"""
from __future__ import annotations

import multiprocessing
import traceback
import warnings
from typing import Callable

import torch

# Imported first in every forkserver (see worker_context): PyG's import calls torch.jit.script,
# which torch >= 2.10 deprecates, and each worker would print that warning.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _worker_main(function: Callable, argument, connection) -> None:
    try:
        connection.send(("ok", function(argument)))
    except BaseException:  # noqa: BLE001 - the parent re-raises it with the worker's traceback
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()


def worker_context(*preload: str):
    """A forkserver context that imports torch and the modules ``preload`` once."""
    context = multiprocessing.get_context("forkserver")
    # The first backward pass lazily imports sympy through symbolic_shapes (0.7 s here); import it
    # in the forkserver too, or every worker pays it (pure Python: safe to fork).
    context.set_forkserver_preload([__name__, *preload, "torch.fx.experimental.symbolic_shapes"])
    return context


def run_in_fresh_process(function: Callable, argument, context, what: str):
    """``function(argument)`` in a process forked for it (``function`` must be importable by
    name); its result, or a RuntimeError carrying the worker's traceback."""
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_worker_main, args=(function, argument, sender), name=what)
    process.start()
    sender.close()
    try:
        status, payload = receiver.recv()
    except EOFError:
        process.join()
        raise RuntimeError(
            f"the worker measuring the {what} died without a result (exit code {process.exitcode}; killed for memory?)"
        ) from None
    finally:
        receiver.close()
    process.join()
    if status != "ok":
        raise RuntimeError(f"the worker measuring the {what} failed:\n{payload}")
    return payload
