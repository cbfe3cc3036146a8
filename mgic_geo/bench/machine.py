"""Where a benchmark runs: the devices of ``--device`` and a one-line description of the machine."""
from __future__ import annotations

import os
import platform
from typing import Sequence

import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_devices(device: str) -> list[str]:
    """``auto`` means CPU, plus CUDA when it is available; ``cuda`` requires it."""
    if device not in DEVICES:
        raise ValueError(f"`--device` must be one of {DEVICES}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("`--device cuda` was requested but CUDA is not available (torch.cuda.is_available() is False)")
    if device == "auto":
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    return [device]


def machine_description(devices: Sequence[str]) -> str:
    """CPU model, cores, torch threads, torch version and the measured devices, in one line."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    # Other jobs on a small machine distort both the times and the ratios (an op whose threads wait
    # for a busy core pays a scheduler slice, and MGIC runs more, smaller ops), so record the load.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = (
        f"{cpu}, {cores} cores, torch threads {torch.get_num_threads()}, torch {torch.__version__}, "
        f"1-min load average at start {load:.2f}"
    )
    shown = [f"cuda ({torch.cuda.get_device_name()})" if dev == "cuda" else dev for dev in devices]
    return f"{text}, device {' + '.join(shown)}"
