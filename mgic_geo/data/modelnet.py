"""ModelNet-10 as fixed-size point clouds: a parsed-shape cache, a dataset per split, and one
Lightning datamodule for three sources (meshes, point-cloud files, synthetic meshes).

Sampling and seeding:

- a mesh gives ``num_points`` points drawn on its faces with probability proportional to area (PyG's
  ``SamplePoints``); a point-cloud file gives ``num_points`` of its points, without replacement, or
  all of them plus random repeats when it has fewer (PyG's ``FixedPoints``). Either cloud is then
  centred on its centroid and scaled into the unit sphere (:class:`NormalizeUnitSphere`);
- test (and validation) clouds are drawn under a private generator state seeded from ``seed`` and the
  shape's index in its split, so they are identical across epochs, runs and datamodules;
- training clouds and their augmentation draw from torch's global generator: fresh points every
  epoch, reproducible under ``torch.manual_seed`` / Lightning's ``seed_everything`` with
  ``num_workers=0``; with workers, PyTorch seeds each worker from the training loader's generator
  (seeded with ``seed``) plus the worker id, so workers never repeat each other's draws;
- resuming: the training loader's generator is part of the datamodule's ``state_dict`` (so of every
  checkpoint) and training workers are started afresh each epoch from it, so a run resumed from an
  end-of-epoch checkpoint draws the clouds an uninterrupted run would (``mgic-geo fit`` restores the
  global generators too: :class:`mgic_geo.training.fault.RandomState`).

Parsed shapes are cached as ``.pt`` files under ``<root>/processed_mgic/v1/`` mirroring the class
folders; a cache file's name carries the raw file's size and modification time, so an edited raw
file is parsed again. Raw files are only ever read. Where the cache cannot be written (a read-only
root) the parsed shapes stay in memory, with one warning.
"""
from __future__ import annotations

import glob
import os
import random
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

from mgic_geo.data.layout import CACHE_DIR, CLASSES, SOURCES, SPLITS, Layout, download_modelnet10, find_layout, is_empty
from mgic_geo.data.readers import read_shape
from mgic_geo.data.shuffle import ResumableShuffle
from mgic_geo.data.synthetic import write_synthetic_modelnet
from mgic_geo.data.transforms import NormalizeUnitSphere, dgcnn_augmentation
from mgic_geo.validation import check_int

CACHE_VERSION = 1


class ShapeCache:
    """Parsed shapes of one data root: ``{"pos": float32 [N, 3]}`` for point clouds (centred in
    float64 first, so far-off-origin coordinates keep their precision) and additionally
    ``{"face": int32 [3, F]}`` for meshes."""

    def __init__(self, root: Path, data_dir: Path):
        self.dir = root / CACHE_DIR / f"v{CACHE_VERSION}"
        self.data_dir = data_dir
        self.memory: dict[Path, dict[str, Tensor]] = {}
        self.warned = False

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
        try:
            return torch.load(entry, weights_only=True)
        except Exception:  # missing or damaged cache entry: parse the raw file again
            shape = self._parse(file)
            self._store(entry, file, shape)
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
    ``[B * num_points]`` (sorted), ``y`` int64 ``[B]`` (indices into :attr:`class_names`). ModelNet has
    no validation split, so :meth:`val_dataloader` serves the test split: validation numbers are for
    monitoring only and nothing here selects a checkpoint by them.

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
    :param skip_bad: drop unreadable shape files with one warning instead of raising.
    :param seed: seeds the training shuffle (and the worker seeds) and the fixed test sampling.
    :param synthetic_shapes: ``(train, test)`` shapes per class for ``source="synthetic"``.
    :param synthetic_seed: seed of the synthetic shapes (separate from ``seed``, so several training
        seeds can share one synthetic root).
    :param download: download the official archive when ``root`` is empty (needs internet).

    Example::

        >>> import tempfile
        >>> from mgic_geo.data import ModelNet10DataModule
        >>> tmp = tempfile.TemporaryDirectory()
        >>> dm = ModelNet10DataModule(root=tmp.name, source="synthetic", synthetic_shapes=(2, 1),
        ...                           num_points=128, batch_size=8)
        >>> dm.prepare_data()
        >>> dm.setup("fit")
        >>> batch = next(iter(dm.train_dataloader()))
        >>> batch.pos.shape, batch.batch.shape, batch.y.shape, dm.num_classes
        (torch.Size([1024, 3]), torch.Size([1024]), torch.Size([8]), 10)
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
        self.synthetic_shapes, self.synthetic_seed = (int(synthetic_shapes[0]), int(synthetic_shapes[1])), synthetic_seed
        self.train_transform = dgcnn_augmentation() if augment else None
        # One generator for the datamodule's life: a reloaded training loader continues the stream
        # instead of repeating the first epoch's order.
        self.generator = torch.Generator().manual_seed(seed)
        self.layout: Layout | None = None
        self.cache: ShapeCache | None = None
        self.train_set: ModelNetShapes | None = None
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
            self.layout = find_layout(self.root, self.source)
            self.cache = ShapeCache(self.root, self.layout.data_dir)
        return self.layout

    def prepare_data(self) -> None:
        """Write the synthetic shapes or download (when asked), and parse every shape into the cache.
        Bad files are left for :meth:`setup` to report."""
        layout = self._find()
        for split in SPLITS:
            for file, _ in layout.files[split]:
                try:
                    self.cache.ensure(file)
                except ValueError:
                    pass

    def _readable(self, split: str, bad: list[ValueError]) -> list[tuple[Path, int]]:
        good = []
        for file, label in self._find().files[split]:
            try:
                self.cache.ensure(file)
                good.append((file, label))
            except ValueError as err:
                bad.append(err)
        return good

    def setup(self, stage: str | None = None) -> None:
        """Build the training split (``stage`` ``"fit"`` or ``None``) and the test split (every stage)."""
        splits = [s for s in SPLITS if (s == "test" or stage in (None, "fit"))
                  and getattr(self, f"{s}_set") is None]
        bad: list[ValueError] = []
        files = {split: self._readable(split, bad) for split in splits}
        if bad:
            listing = "; ".join(str(err) for err in bad[:3]) + (f"; ... ({len(bad)} in all)" if len(bad) > 3 else "")
            if not self.skip_bad:
                raise ValueError(f"{len(bad)} unreadable shape file(s) (skip_bad=True drops them with a warning): {listing}")
            warnings.warn(f"skip_bad=True: dropped {len(bad)} unreadable shape file(s): {listing}", stacklevel=2)
        for split, good in files.items():
            empty = [name for label, name in enumerate(CLASSES) if label not in {lab for _, lab in good}]
            if empty:
                raise ValueError(f"no readable {split} shapes left under {str(self.layout.data_dir)!r} for class(es) "
                                 f"{', '.join(empty)} after dropping bad files")
        if "train" in files:
            if len(files["train"]) < self.batch_size:
                raise ValueError(f"`batch_size` ({self.batch_size}) exceeds the {len(files['train'])} training shapes; "
                                 "the training loader drops incomplete batches, so it would yield nothing")
            self.train_set = ModelNetShapes(files["train"], self.cache, self.num_points, transform=self.train_transform)
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

    def val_dataloader(self) -> DataLoader:
        """The test split (ModelNet has no validation split): for monitoring only."""
        return self.test_dataloader()

    def test_dataloader(self) -> DataLoader:
        """Test batches in file order, the same points every time."""
        if self.test_set is None:
            self.setup("test")
        return self._loader(self.test_set, train=False)
