"""Memory of a long prediction stream: RSS sampled every few batches, start, maximum and growth."""
from __future__ import annotations

from mgic_geo.memory import MIB, current_rss_bytes, malloc_trim, peak_rss_bytes
from mgic_geo.validation import check_int


class MemoryMonitor:
    """RSS samples every ``every`` batches, the first one (after ``every`` batches: the warm-up that
    allocates the model's buffers and the allocator's pools) being the start.

    Each sample is taken right after ``malloc_trim(0)`` where glibc has it: between two batches the
    untrimmed RSS swings by tens of MiB depending on which freed buffers the allocator happens to
    keep, which would hide a slow leak or fake one; after the trim it is the memory actually in use. The untrimmed maximum and the process's peak RSS are
    reported too: they are what the system must provide.
    """

    def __init__(self, every: int):
        self.every = check_int("--memory-every", every)
        # (clouds done, RSS bytes) of the first and the latest sample, the largest RSS and the count:
        # constant memory however long the run
        self.first: tuple[int, int] | None = None
        self.last: tuple[int, int] | None = None
        self.top = self.count = self.untrimmed_max = 0
        self.trim = malloc_trim()

    def after_batch(self, batches: int, clouds: int, *, last: bool = False) -> None:
        """Record a sample when ``batches`` is a multiple of ``every``, and after the ``last`` batch."""
        if batches % self.every == 0 or (last and (self.last is None or self.last[0] != clouds)):
            untrimmed = current_rss_bytes()
            self.untrimmed_max = max(self.untrimmed_max, untrimmed)
            if self.trim is not None:
                self.trim(0)
            self.last = (clouds, current_rss_bytes())
            self.first = self.first or self.last
            self.top = max(self.top, self.last[1])
            self.count += 1

    def figures(self) -> dict[str, float]:
        """``start``, ``max``, ``end``, ``growth`` (end - start) and ``max_growth`` (max - start) in
        MiB, ``per_10k`` (growth per 10,000 clouds), ``start_clouds``, ``clouds`` (after the start),
        ``untrimmed_max`` and ``peak`` in MiB; needs two samples."""
        if self.count < 2:
            raise ValueError(f"too few batches to measure memory growth: need more than {self.every} (the warm-up, "
                             "--memory-every)")
        (start_clouds, start), (end_clouds, end), top = self.first, self.last, self.top
        return {"start": start / MIB, "max": top / MIB, "end": end / MIB, "growth": (end - start) / MIB,
                "max_growth": (top - start) / MIB, "per_10k": (end - start) / MIB / (end_clouds - start_clouds) * 10_000,
                "start_clouds": start_clouds, "clouds": end_clouds - start_clouds,
                "untrimmed_max": self.untrimmed_max / MIB, "peak": peak_rss_bytes() / MIB}

    def summary(self) -> str:
        try:
            f = self.figures()
        except ValueError as err:
            return f"memory: {err}"
        how = "after malloc_trim(0)" if self.trim is not None else "(no malloc_trim here: allocator caches included)"
        batches = f"{self.every} batch{'es' * (self.every != 1)}"
        return (f"memory: RSS {how}: start {f['start']:.1f} MiB (after a warm-up of {batches}, "
                f"{f['start_clouds']} clouds), max {f['max']:.1f} MiB, end {f['end']:.1f} MiB; growth "
                f"{f['growth']:+.1f} MiB over {f['clouds']} clouds ({f['per_10k']:+.2f} MiB per 10k clouds), max - start "
                f"{f['max_growth']:+.1f} MiB; {self.count} samples, one every {batches}\n"
                f"memory: untrimmed RSS max {f['untrimmed_max']:.1f} MiB at the samples; process peak RSS "
                f"{f['peak']:.1f} MiB (getrusage)")
