"""ModelNet-10 as fixed-size point clouds: a parsed-shape cache, a dataset per split, and one
Lightning datamodule for three sources (meshes, point-cloud files, synthetic meshes).

Splits: training files come from ``<class>/train/``. Validation files come from ``<class>/val/``
when the root has that split, otherwise a seeded, stratified ``val_fraction`` of the training files
is held out (:mod:`mgic_geo.data.split`; ``val_fraction=0``: no validation). Test files come from
``<class>/test/``, which a root may lack (then only testing fails, naming the missing folders). The
test split is never used for validation.

Sampling and seeding:

- a mesh gives ``num_points`` points drawn on its faces with probability proportional to area (PyG's
  ``SamplePoints``); a point-cloud file gives ``num_points`` of its points, without replacement, or
  all of them plus random repeats when it has fewer (PyG's ``FixedPoints``). Either cloud is then
  centred on its centroid and scaled into the unit sphere (:class:`NormalizeUnitSphere`);
- test and validation clouds are drawn under a private generator state seeded from ``seed`` and the
  shape's index in its split, without augmentation, so they are identical across epochs, runs and
  datamodules (with the same split);
- training clouds and their augmentation draw from torch's global generator: fresh points every
  epoch, reproducible under ``torch.manual_seed`` / Lightning's ``seed_everything`` with
  ``num_workers=0``; with workers, PyTorch seeds each worker from the training loader's generator
  (seeded with ``seed``) plus the worker id, so workers never repeat each other's draws;
- resuming: the training loader's generator is part of the datamodule's ``state_dict`` (so of every
  checkpoint) and training workers are started afresh each epoch from it, so a run resumed from an
  end-of-epoch checkpoint draws the clouds an uninterrupted run would (``mgic-geo fit`` restores the
  global generators too: :class:`mgic_geo.training.fault.RandomState`).

Parsed shapes are cached as ``.pt`` files under ``<cache>/v1/`` mirroring the class folders; a
cache file's name carries the raw file's size and modification time, so an edited raw file is parsed
again. Raw files are only ever read. ``<cache>`` is ``cache_dir`` when given, else
:func:`default_cache_dir`: ``<root>/processed_mgic`` when the root's permission bits let this user
write it, otherwise a per-user folder (``$MGIC_CACHE_DIR/shapes/<hash>``, by default
``~/.cache/mgic_geo/shapes/<hash>``, ``<hash>`` from the resolved root path), so a shared read-only
root is never written to, even by root. Where the cache cannot be written after all, the parsed
shapes stay in memory, with one warning.
"""
from __future__ import annotations

import glob
import hashlib
import os
import random
import stat
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import FixedPoints, SamplePoints

from mgic_geo.data.layout import (
    ALL_SPLITS,
    CACHE_DIR,
    CLASSES,
    SOURCES,
    Layout,
    download_modelnet10,
    find_layout,
    is_empty,
)
from mgic_geo.data.readers import read_shape
from mgic_geo.data.shuffle import ResumableShuffle
from mgic_geo.data.split import check_fraction, stratified_split
from mgic_geo.data.synthetic import write_synthetic_modelnet
from mgic_geo.data.transforms import NormalizeUnitSphere, dgcnn_augmentation
from mgic_geo.validation import check_int

CACHE_VERSION = 1
CACHE_ENV = "MGIC_CACHE_DIR"


MEMORY_BYTES = 2**30  # parsed shapes a ShapeCache keeps in memory per process (ModelNet-10 train: 63 MB)


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

    :param folder: the cache folder (``<root>/processed_mgic`` by default, see :func:`default_cache_dir`);
        one per data root.
    :param data_dir: the folder holding the class folders; cache entries mirror the paths below it.
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
        with _one_thread():
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
            torch.save(shape, partial)
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

    def load(self, file: Path) -> dict[str, Tensor]:
        """The parsed shape of ``file`` (parsed now if the cache lacks it)."""
        if file in self.memory:
            return self.memory[file]
        entry = self._entry(file)
        if entry in self.loaded:
            return self.loaded[entry]
        try:
            shape = torch.load(entry, weights_only=True)
        except Exception:  # missing or damaged cache entry: parse the raw file again
            shape = self._parse(file)
            self._store(entry, file, shape)
        size = sum(t.numel() * t.element_size() for t in shape.values())
        if self.loaded_bytes + size <= MEMORY_BYTES:
            self.loaded[entry] = shape
            self.loaded_bytes += size
        return shape


@contextmanager
def _one_thread():
    # One cloud is a few dozen tiny ops. With intra-op threads (num_workers=0 shares the model's), each
    # pays an OpenMP wake-up: measured 50 ms instead of 3 ms per cloud on a busy 2-core machine.
    # DataLoader workers are single-threaded anyway.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def shape_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for shape ``index`` of a split, from the datamodule's ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def sample_cloud(shape: dict[str, Tensor], num_points: int, *, seed: int | None = None) -> Data:
    """``num_points`` points of a parsed shape (:func:`~mgic_geo.data.readers.read_shape`), centred
    and scaled into the unit sphere, as ``Data(pos=[num_points, 3])``: a mesh is sampled on its
    faces with probability proportional to area (PyG's ``SamplePoints``); a point cloud gives
    ``num_points`` of its points without replacement, or all of them plus repeats when it has fewer
    (``FixedPoints``). ``seed=None`` draws from torch's global generator; an integer draws under a
    private generator state seeded with it, leaving the global one untouched."""
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return sample_cloud(shape, num_points)
    data = Data(pos=shape["pos"])
    if "face" in shape:
        data.face = shape["face"].long()
        data = SamplePoints(num_points)(data)
    else:
        data = FixedPoints(num_points, replace=False, allow_duplicates=True)(data)
    return NormalizeUnitSphere()(data)


class ModelNetShapes(Dataset):
    """One split as fixed-size clouds: item ``i`` is ``Data(pos=[num_points, 3], y=[1])``.

    :param files: ``(path, label)`` pairs.
    :param cache: where the parsed shapes come from.
    :param num_points: points per cloud.
    :param seed: ``None`` draws fresh points on every access (training); an integer draws shape ``i``
        under a generator seeded from ``(seed, i)``, the same points on every access (test).
    :param transform: applied after sampling and normalisation (the training augmentation).
    """

    def __init__(self, files: list[tuple[Path, int]], cache: ShapeCache, num_points: int, *,
                 seed: int | None = None, transform=None):
        self.files, self.cache, self.num_points = files, cache, check_int("num_points", num_points)
        self.seed, self.transform = seed, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Data:
        with _one_thread():
            file, label = self.files[index]
            shape = self.cache.load(file)
            data = sample_cloud(shape, self.num_points, seed=None if self.seed is None else shape_seed(self.seed, index))
            data.y = torch.tensor([label])
            return self.transform(data) if self.transform is not None else data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({len(self)}, num_points={self.num_points}, seeded={self.seed is not None})"


def _seed_worker(worker_id: int) -> None:
    # PyTorch seeds torch (and `random`) in each worker from the loader's generator; numpy too, for
    # transforms that draw from it.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class ModelNet10DataModule(ResumableShuffle, LightningDataModule):
    """ModelNet-10 as batches of ``num_points``-point clouds, from meshes, point-cloud files, or
    generated stand-in meshes.

    Batches are PyG ``Batch`` objects: ``pos`` float32 ``[B * num_points, 3]``, ``batch``
    ``[B * num_points]`` (sorted), ``y`` int64 ``[B]`` (indices into :attr:`class_names`).

    Splits (:meth:`split_files` lists them): :meth:`val_dataloader` serves the validation split,
    never the test split. It is the root's own ``<class>/val/`` folders when it has them (then
    ``val_fraction`` is ignored), otherwise a seeded, stratified ``val_fraction`` of the training
    files (:func:`mgic_geo.data.split.stratified_split`: per class, proportional within rounding, at
    least one file of every class with two or more, the same files for the same ``split_seed`` and
    file names whatever order the file system lists them in). With ``val_fraction=0`` and no
    ``val/`` folders there is no validation: :meth:`val_dataloader` returns ``[]``, which Lightning
    takes as "skip validation". :meth:`test_dataloader` serves ``<class>/test/``; on a root without
    it (e.g. the official train split alone) it raises a ``ValueError`` naming the missing folders.

    :param root: the data root (see ``datasets/README.md`` and :func:`find_layout` for the layout).
    :param source: ``"auto"`` (tell meshes from point-cloud files by what is under ``root``),
        ``"meshes"`` (``.off``), ``"points"`` (``.pcd .ply .xyz .pts .txt .npy``) or ``"synthetic"``
        (write :func:`write_synthetic_modelnet` shapes into ``root`` if missing, read them as meshes).
    :param num_points: points per cloud.
    :param batch_size: clouds per batch; the training loader drops the last incomplete batch (for
        BatchNorm), so it must not exceed the number of training shapes.
    :param num_workers: ``DataLoader`` worker processes (0: load in the main process).
    :param augment: DGCNN's training augmentation (anisotropic scale in [2/3, 3/2], shift in
        [-0.2, 0.2], point shuffle); ``False`` trains on the normalised clouds as they are.
        Validation and test clouds are never augmented.
    :param skip_bad: drop unreadable shape files with one warning instead of raising.
    :param seed: seeds the training shuffle (and the worker seeds) and the fixed validation and test
        sampling.
    :param val_fraction: the share of each class's training files held out for validation, in
        ``[0, 1)`` (0.1: 399 of the 3,991 official training files); ignored when the root has
        ``<class>/val/`` folders; 0 without them: no validation.
    :param split_seed: which files are held out (separate from ``seed``, so several training seeds
        can share one validation split).
    :param cache_dir: the parsed-shape cache folder, one per root; ``None``: ``<root>/processed_mgic``
        where the root's permission bits allow writing, else a per-user folder
        (:func:`default_cache_dir`). A folder inside the root must be named ``processed_mgic``.
    :param synthetic_shapes: ``(train, test)`` shapes per class for ``source="synthetic"``.
    :param synthetic_seed: seed of the synthetic shapes (separate from ``seed``, so several training
        seeds can share one synthetic root).
    :param download: download the official archive when ``root`` is empty (needs internet).

    Example::

        >>> import tempfile
        >>> from mgic_geo.data import ModelNet10DataModule
        >>> tmp = tempfile.TemporaryDirectory()
        >>> dm = ModelNet10DataModule(root=tmp.name, source="synthetic", synthetic_shapes=(3, 1),
        ...                           num_points=128, batch_size=8)
        >>> dm.prepare_data()
        >>> dm.setup("fit")
        >>> batch = next(iter(dm.train_dataloader()))
        >>> batch.pos.shape, batch.batch.shape, batch.y.shape, dm.num_classes
        (torch.Size([1024, 3]), torch.Size([1024]), torch.Size([8]), 10)
        >>> len(dm.split_files("train")), len(dm.split_files("val")), len(dm.split_files("test"))
        (20, 10, 10)
        >>> tmp.cleanup()
    """

    def __init__(
        self,
        root: str = "datasets/modelnet10",
        source: str = "auto",
        num_points: int = 1024,
        batch_size: int = 32,
        num_workers: int = 0,
        augment: bool = True,
        skip_bad: bool = False,
        seed: int = 0,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        cache_dir: str | None = None,
        synthetic_shapes: tuple[int, int] = (40, 10),
        synthetic_seed: int = 0,
        download: bool = False,
    ) -> None:
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"`source` must be one of {SOURCES}, got {source!r}")
        check_int("num_points", num_points)
        check_int("batch_size", batch_size)
        check_int("num_workers", num_workers, minimum=0)
        check_int("seed", seed, minimum=0)
        check_fraction("val_fraction", val_fraction)
        check_int("split_seed", split_seed, minimum=0)
        if cache_dir is not None and (not isinstance(cache_dir, (str, os.PathLike)) or not str(cache_dir)):
            raise ValueError(f"`cache_dir` must be a folder path or None, got {cache_dir!r}")
        check_int("synthetic_seed", synthetic_seed, minimum=0)
        if not isinstance(synthetic_shapes, (tuple, list)) or len(synthetic_shapes) != 2:
            raise ValueError(f"`synthetic_shapes` must be a (train, test) pair of positive integers, got {synthetic_shapes!r}")
        check_int("synthetic_shapes[0]", synthetic_shapes[0])
        check_int("synthetic_shapes[1]", synthetic_shapes[1])
        for name, flag in (("augment", augment), ("skip_bad", skip_bad), ("download", download)):
            if not isinstance(flag, bool):
                raise ValueError(f"`{name}` must be True or False, got {flag!r}")
        self.save_hyperparameters()
        self.root = Path(root)
        self.source, self.num_points, self.batch_size, self.num_workers = source, num_points, batch_size, num_workers
        self.augment, self.skip_bad, self.seed, self.download = augment, skip_bad, seed, download
        self.val_fraction, self.split_seed = float(val_fraction), split_seed
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.synthetic_shapes, self.synthetic_seed = (int(synthetic_shapes[0]), int(synthetic_shapes[1])), synthetic_seed
        self.train_transform = dgcnn_augmentation() if augment else None
        # One generator for the datamodule's life: a reloaded training loader continues the stream
        # instead of repeating the first epoch's order.
        self.generator = torch.Generator().manual_seed(seed)
        self.layout: Layout | None = None
        self.cache: ShapeCache | None = None
        self.splits: dict[str, list[tuple[Path, int]]] | None = None
        #: where validation comes from once the layout is read: ``"folder"`` (``<class>/val/``),
        #: ``"held_out"`` (``val_fraction`` of the training files) or ``None`` (no validation)
        self.validation: str | None = None
        self.train_set: ModelNetShapes | None = None
        self.val_set: ModelNetShapes | None = None
        self.test_set: ModelNetShapes | None = None

    @property
    def num_classes(self) -> int:
        return len(CLASSES)

    @property
    def class_names(self) -> list[str]:
        return list(CLASSES)

    def _find(self) -> Layout:
        if self.layout is None:
            if self.source == "synthetic":
                write_synthetic_modelnet(self.root, shapes_per_class=self.synthetic_shapes, seed=self.synthetic_seed)
            elif self.download and is_empty(self.root):
                download_modelnet10(self.root)
            layout = find_layout(self.root, self.source)
            self.cache = ShapeCache(self.cache_dir if self.cache_dir is not None else default_cache_dir(self.root),
                                    layout.data_dir)
            self.splits = self._split(layout)
            self.layout = layout
        return self.layout

    def _split(self, layout: Layout) -> dict[str, list[tuple[Path, int]]]:
        train = layout.files.get("train", [])
        if "val" in layout.files:
            val, self.validation = layout.files["val"], "folder"
        else:
            keys = [path.relative_to(layout.data_dir).as_posix() for path, _ in train]
            kept, held_out = stratified_split(keys, [label for _, label in train], self.val_fraction, self.split_seed)
            train, val = [train[i] for i in kept], [train[i] for i in held_out]
            self.validation = "held_out" if val else None
        splits = {"train": train, "val": val}
        if "test" in layout.files:
            splits["test"] = layout.files["test"]
        return splits

    def split_files(self, split: str) -> list[tuple[Path, int]]:
        """The ``(path, label)`` pairs assigned to ``split`` (``"train"``, ``"val"`` or ``"test"``), in
        class and file-name order, before unreadable files are dropped; ``[]`` for a split the root
        lacks (no test folders, or no validation). No file is in two splits. Reads the layout (and
        writes synthetic shapes or downloads, as :meth:`prepare_data` would) on first use."""
        if split not in ALL_SPLITS:
            raise ValueError(f"`split` must be one of {ALL_SPLITS}, got {split!r}")
        self._find()
        return list(self.splits.get(split, []))

    def _stage_splits(self, stage: str | None) -> list[str]:
        """The splits ``stage`` builds (see :meth:`setup`); a ``ValueError`` for testing without a test split."""
        if stage in ("test", "predict"):
            self._find().require("test")
        if stage == "fit":
            self._find().require("train")
        if stage is None and "train" not in self._find().files:  # a root to test on only
            return ["test"]
        wanted = ["train", "val"] if stage in (None, "fit") else ["val"] if stage == "validate" else []
        return wanted + (["test"] if "test" in self.splits else [])

    def prepare_data(self) -> None:
        """Write the synthetic shapes or download (when asked), and parse the shapes of the splits the
        trainer's stage needs (every split outside a trainer) into the cache; testing a root without a
        test split fails here already. Bad files are left for :meth:`setup` to report."""
        self._find()
        state = getattr(getattr(self, "trainer", None), "state", None)
        stage = getattr(getattr(state, "fn", None), "value", None)  # "fit", "validate", "test", "predict"
        for split in self._stage_splits(stage):
            for file, _ in self.splits[split]:
                try:
                    self.cache.ensure(file)
                except ValueError:
                    pass

    def _readable(self, split: str, bad: list[ValueError]) -> list[tuple[Path, int]]:
        good = []
        for file, label in self.splits[split]:
            try:
                self.cache.ensure(file)
                good.append((file, label))
            except ValueError as err:
                bad.append(err)
        return good

    def setup(self, stage: str | None = None) -> None:
        """Build the training and validation splits (``stage`` ``"fit"`` or ``None``), the validation
        split (``"validate"``) and, at every stage, the test split when the root has one (so a bad
        test file is reported before training). ``"test"`` (or ``"predict"``) on a root without
        ``<class>/test/`` folders raises a ``ValueError`` naming them."""
        layout = self._find()
        splits = [s for s in self._stage_splits(stage) if getattr(self, f"{s}_set") is None]
        bad: list[ValueError] = []
        files = {split: self._readable(split, bad) for split in splits}
        if bad:
            listing = "; ".join(str(err) for err in bad[:3]) + (f"; ... ({len(bad)} in all)" if len(bad) > 3 else "")
            if not self.skip_bad:
                raise ValueError(f"{len(bad)} unreadable shape file(s) (skip_bad=True drops them with a warning): {listing}")
            warnings.warn(f"skip_bad=True: dropped {len(bad)} unreadable shape file(s): {listing}", stacklevel=2)
        for split, good in files.items():
            had, kept = {label for _, label in self.splits[split]}, {label for _, label in good}
            empty = [name for label, name in enumerate(CLASSES) if label in had and label not in kept]
            if empty:
                raise ValueError(f"no readable {split} shapes left under {str(layout.data_dir)!r} for class(es) "
                                 f"{', '.join(empty)} after dropping bad files")
        if "train" in files:
            if len(files["train"]) < self.batch_size:
                raise ValueError(f"`batch_size` ({self.batch_size}) exceeds the {len(files['train'])} training shapes; "
                                 "the training loader drops incomplete batches, so it would yield nothing")
            self.train_set = ModelNetShapes(files["train"], self.cache, self.num_points, transform=self.train_transform)
        if "val" in files:
            self.val_set = ModelNetShapes(files["val"], self.cache, self.num_points, seed=self.seed)
        if "test" in files:
            self.test_set = ModelNetShapes(files["test"], self.cache, self.num_points, seed=self.seed)

    def _loader(self, dataset: ModelNetShapes, train: bool) -> DataLoader:
        # Training workers start afresh each epoch, seeded from the generator, which checkpoints keep
        # (state_dict): a resumed run's workers then draw what an uninterrupted run's would.
        workers = {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0 and not train,
                   "worker_init_fn": _seed_worker if self.num_workers > 0 else None}
        if train:
            return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, drop_last=True,
                              generator=self.generator, **workers)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, **workers)

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) training batches with fresh points and augmentation each epoch."""
        if self.train_set is None:
            self.setup("fit")
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches in file order, the same points every time (no augmentation); ``[]``
        when there is no validation split (Lightning then skips validation)."""
        if self.val_set is None:
            self.setup("validate")
        if not len(self.val_set):
            return []
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in file order, the same points every time; a ``ValueError`` naming the
        missing ``<class>/test/`` folders on a root without a test split."""
        if self.test_set is None:
            self.setup("test")
        return self._loader(self.test_set, train=False)
