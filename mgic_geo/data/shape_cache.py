"""The parsed-shape cache of a ModelNet-style data root.

Parsed shapes are cached as ``.pt`` files under ``<cache>/v1/`` mirroring the class folders; a
cache file's name carries the raw file's size and modification time, so an edited raw file is parsed
again. Raw files are only ever read. ``<cache>`` is ``cache_dir`` when given, else
:func:`default_cache_dir`: ``<root>/processed_mgic`` when the root's permission bits let this user
write it, otherwise a per-user folder (``$MGIC_CACHE_DIR/shapes/<hash>``, by default
``~/.cache/mgic_geo/shapes/<hash>``, ``<hash>`` from the resolved root path), so a shared read-only
root is never written to, even by root. Where the cache cannot be written after all, the parsed
shapes stay in memory, with one warning.

Entries are checked when they are read back, as a fresh file would be: each carries the SHA-256 of its
tensors, and its tensors must have the dtypes and shapes above, finite coordinates with some extent, and
face indices within the vertices. An entry that fails (edited or damaged on disk, e.g. NaN positions,
or unreadable) is rebuilt from its raw file, with a warning naming the entry. Entries written before
the checksum was added are checked without it.
"""
from __future__ import annotations

import glob
import hashlib
import os
import stat
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

from mgic_geo.data.layout import CACHE_DIR
from mgic_geo.data.readers import read_shape

CACHE_VERSION = 1
CACHE_ENV = "MGIC_CACHE_DIR"


MEMORY_BYTES = 2**30  # parsed shapes a ShapeCache keeps in memory per process (ModelNet-10 train: 63 MB)
CHECKSUM_KEY = "sha256"  # the entry's checksum of its tensors, stored beside them


def checksum(shape: dict[str, Tensor]) -> str:
    """The SHA-256 (hex) of a parsed shape's tensors: their names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for key in sorted(shape):
        tensor = shape[key].contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def entry_problem(entry) -> str | None:
    """What is wrong with a cache entry as ``torch.load`` read it, or ``None`` when it is a valid
    parsed shape (module docstring): the keys ``pos`` (and ``face``), float32 ``pos [N, 3]`` with
    N >= 1, finite and with some extent, int32 ``face [3, F]`` with F >= 1 and indices in ``0..N-1``,
    and, when it carries one, a matching SHA-256."""
    if not isinstance(entry, dict):
        return f"it holds a {type(entry).__name__}, expected a dict of tensors"
    keys = set(entry) - {CHECKSUM_KEY}
    if keys not in ({"pos"}, {"pos", "face"}) or not all(isinstance(entry[k], Tensor) for k in keys):
        return f"it holds the keys {sorted(map(str, entry))}, expected tensors 'pos' (and 'face')"
    pos = entry["pos"]
    if pos.dtype != torch.float32 or pos.dim() != 2 or pos.shape[1] != 3 or pos.shape[0] < 1:
        return f"'pos' is {pos.dtype} of shape {tuple(pos.shape)}, expected float32 [N, 3] with N >= 1"
    if not bool(torch.isfinite(pos).all()):
        return f"'pos' has NaN or infinite coordinates ({int((~torch.isfinite(pos)).any(1).sum())} points)"
    if float((pos.amax(0) - pos.amin(0)).max()) == 0:
        return f"'pos' has no extent: all {len(pos)} points coincide"
    if "face" in entry:
        face = entry["face"]
        if face.dtype != torch.int32 or face.dim() != 2 or face.shape[0] != 3 or face.shape[1] < 1:
            return f"'face' is {face.dtype} of shape {tuple(face.shape)}, expected int32 [3, F] with F >= 1"
        if int(face.min()) < 0 or int(face.max()) >= len(pos):
            return f"'face' uses vertices {int(face.min())}..{int(face.max())}, the entry has 0..{len(pos) - 1}"
    if CHECKSUM_KEY in entry and entry[CHECKSUM_KEY] != checksum({k: entry[k] for k in keys}):
        return "its tensors do not match the SHA-256 stored with them (changed on disk)"
    return None


def writable_by_mode(folder: Path) -> bool:
    """Whether ``folder``'s permission bits (owner, group or other, whichever applies to this process)
    allow writing, on a file system not mounted read-only. Unlike ``os.access``, this is ``False`` for
    a ``r-x`` folder even when running as root."""
    try:
        info = folder.stat()
        if hasattr(os, "statvfs") and os.statvfs(folder).f_flag & os.ST_RDONLY:
            return False
    except OSError:
        return False
    if not hasattr(os, "geteuid"):  # no POSIX owners (Windows)
        return os.access(folder, os.W_OK)
    if info.st_uid == os.geteuid():
        bit = stat.S_IWUSR
    elif info.st_gid == os.getegid() or info.st_gid in os.getgroups():
        bit = stat.S_IWGRP
    else:
        bit = stat.S_IWOTH
    return bool(info.st_mode & bit)


def default_cache_dir(root: str | Path) -> Path:
    """Where the parsed shapes of ``root`` are cached when no ``cache_dir`` is given:
    ``<root>/processed_mgic`` when :func:`writable_by_mode` says ``root`` may be written, otherwise
    ``<base>/shapes/<hash>``, with ``<base>`` = ``$MGIC_CACHE_DIR`` or ``$XDG_CACHE_HOME/mgic_geo``
    (``~/.cache/mgic_geo``) and ``<hash>`` the first 16 hex digits of the SHA-256 of the resolved
    root path (one folder per root)."""
    root = Path(root)
    if writable_by_mode(root):
        return root / CACHE_DIR
    base = os.environ.get(CACHE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                                     "mgic_geo")
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return Path(base) / "shapes" / digest


class ShapeCache:
    """Parsed shapes of one data root, under ``<folder>/v1/``: ``{"pos": float32 [N, 3]}`` for point
    clouds (centred in float64 first, so far-off-origin coordinates keep their precision) and
    additionally ``{"face": int32 [3, F]}`` for meshes.

    Args:
        folder (Path): the cache folder (``<root>/processed_mgic`` by default, see :func:`default_cache_dir`);
            one per data root.
        data_dir (Path): the folder holding the class folders; cache entries mirror the paths below it.
    """

    def __init__(self, folder: Path, data_dir: Path):
        self.dir = Path(folder) / f"v{CACHE_VERSION}"
        self.data_dir = data_dir
        self.memory: dict[Path, dict[str, Tensor]] = {}
        self.warned = False
        # Entries read back, kept in this process (an epoch then reads no file twice), up to
        # MEMORY_BYTES; keyed by entry path, which changes with the raw file's size and mtime.
        self.loaded: dict[Path, dict[str, Tensor]] = {}
        self.loaded_bytes = 0

    def _entry(self, file: Path) -> Path:
        stat = file.stat()
        relative = file.relative_to(self.data_dir)
        return self.dir / relative.parent / f"{relative.name}.{stat.st_size}-{stat.st_mtime_ns}.pt"

    def _parse(self, file: Path) -> dict[str, Tensor]:
        with one_thread():
            shape = read_shape(file)
        if "face" in shape:
            return {"pos": shape["pos"].float(), "face": shape["face"].int()}
        pos = shape["pos"]
        return {"pos": (pos - pos.mean(dim=0)).float()}

    def _store(self, entry: Path, file: Path, shape: dict[str, Tensor]) -> None:
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            for stale in entry.parent.glob(f"{glob.escape(file.name)}.*.pt"):  # earlier versions of this raw file
                stale.unlink()
            partial = entry.with_name(f".{entry.name}.{os.getpid()}.partial")
            torch.save({**shape, CHECKSUM_KEY: checksum(shape)}, partial)
            os.replace(partial, entry)  # atomic: parallel processes may write the same entry
        except OSError as err:
            if not self.warned:
                warnings.warn(f"cannot write the shape cache under {self.dir} ({err}); parsed shapes are kept in memory "
                              "instead, per process", stacklevel=3)
                self.warned = True
            self.memory[file] = shape

    def ensure(self, file: Path) -> None:
        """Parse ``file`` into the cache unless it is there already; ``ValueError`` for a bad file."""
        if file not in self.memory and not self._entry(file).is_file():
            self._store(self._entry(file), file, self._parse(file))

    def num_points(self, file: Path) -> int:
        """The number of points (vertices, for a mesh) of ``file``'s parsed shape, read from the entry's
        metadata without reading its data where possible (a memory-mapped ``torch.load``)."""
        if file in self.memory:
            return len(self.memory[file]["pos"])
        entry = self._entry(file)
        if entry in self.loaded:
            return len(self.loaded[entry]["pos"])
        if entry.is_file():  # never a FIFO or device
            try:
                return len(torch.load(entry, weights_only=True, mmap=True)["pos"])
            except Exception:  # noqa: BLE001 (damaged: load() rebuilds it)
                pass
        return len(self.load(file)["pos"])

    def load(self, file: Path) -> dict[str, Tensor]:
        """The parsed shape of ``file`` (parsed now if the cache lacks it; parsed again, with a warning
        naming the entry, if its entry is unreadable or fails the checks of :func:`entry_problem`)."""
        if file in self.memory:
            return self.memory[file]
        entry = self._entry(file)
        if entry in self.loaded:
            return self.loaded[entry]
        shape, problem = None, None
        if entry.is_file():
            try:
                shape = torch.load(entry, weights_only=True)
                problem = entry_problem(shape)
            except Exception as err:  # noqa: BLE001 (a damaged file: torch.load raises many types)
                problem = f"torch.load cannot read it ({type(err).__name__}: {str(err)[:200]})"
        if shape is None or problem is not None:  # missing (parse it now) or damaged (parse it again)
            if problem is not None:
                warnings.warn(f"shape cache entry {entry} is damaged: {problem}; rebuilding it from {file}",
                              stacklevel=2)
            shape = self._parse(file)
            self._store(entry, file, shape)
        shape = {key: value for key, value in shape.items() if key != CHECKSUM_KEY}
        size = sum(t.numel() * t.element_size() for t in shape.values())
        if self.loaded_bytes + size <= MEMORY_BYTES:
            self.loaded[entry] = shape
            self.loaded_bytes += size
        return shape


@contextmanager
def one_thread():
    """Run the block on one intra-op thread (restored after)."""
    # One cloud is a few dozen tiny ops. With intra-op threads (num_workers=0 shares the model's), each
    # pays an OpenMP wake-up: measured 50 ms instead of 3 ms per cloud on a busy 2-core machine.
    # DataLoader workers are single-threaded anyway.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)

