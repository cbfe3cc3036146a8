"""Process memory, read the same way by the benchmarks and by streaming inference.

CPU memory is the process's resident set (RSS). Every reader here is Linux-first and says what it
does elsewhere:

- :func:`current_rss_bytes`: the RSS now (``/proc/self/statm``);
- :func:`peak_rss_bytes`: the process's peak RSS (``getrusage``'s ``ru_maxrss``);
- :func:`reset_peak_rss`: moves that peak mark down to the current RSS (``/proc/self/clear_refs``);
- :func:`return_freed_memory_to_os`: pins glibc's mmap threshold so a freed tensor leaves the RSS;
- :func:`malloc_trim`: glibc's ``malloc_trim``, which hands the allocator's free pages back;
- :func:`peak_rss_growth`: the peak RSS growth of one call, measured with the above.

The peak of a call only means something in a process that measured nothing before (the benchmarks
fork one per measurement, :func:`mgic_geo.bench.process.run_in_fresh_process`).
"""
from __future__ import annotations

import ctypes
import os
import resource
from typing import Callable

MIB = 2**20


def current_rss_bytes() -> int:
    """The resident set of this process now, in bytes (Linux: ``/proc/self/statm``)."""
    with open("/proc/self/statm") as handle:
        resident_pages = int(handle.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """The largest resident set of this process so far (or since :func:`reset_peak_rss`), in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); False if refused, in
    which case ``ru_maxrss`` may still hold an older, higher peak."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def return_freed_memory_to_os() -> bool:
    """Serve every allocation >= 128 KiB by mmap, so a freed tensor leaves the RSS at once.
    Setting the threshold explicitly also switches off glibc's adaptive threshold, which after the
    first large free would recycle tensors up to 32 MiB inside the heap. False where it is refused
    (not glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 128 * 1024)) and bool(libc.mallopt(m_trim_threshold, 128 * 1024))
    except (OSError, AttributeError):
        return False


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (call it with ``0`` to return the allocator's free pages to the
    system), or ``None`` where there is none (musl, macOS, Windows)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def peak_rss_growth(step: Callable[[], object]) -> tuple[int, bool]:
    """How far the RSS peaks above its current level during one ``step()``.

    Resets the peak mark (:func:`reset_peak_rss`), reads the current RSS, runs ``step`` once and
    returns ``ru_maxrss`` minus that baseline (at least 0). Run a warm-up step first (it pages in
    kernel code and starts the thread pool) and, for tensors, pin the allocator with
    :func:`return_freed_memory_to_os` before allocating them, in a process of its own.

    Args:
        step (Callable[[], object]): the work measured; its result is dropped.

    Returns:
        tuple[int, bool]: the growth in bytes, and whether the peak mark could be reset (if not,
        an older, higher peak may hide the step's).
    """
    reset = reset_peak_rss()
    baseline = current_rss_bytes()
    step()
    return max(0, peak_rss_bytes() - baseline), reset
