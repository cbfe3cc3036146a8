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
  all of them plus random repeats when it has fewer (PyG's ``FixedPoints``; :meth:`ModelNet10DataModule.setup`
  warns once for each such file, naming it and its count). Either cloud is then centred on its centroid
  and scaled into the unit sphere (:class:`NormalizeUnitSphere`);
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

Parsed shapes come from the cache of :mod:`mgic_geo.data.shape_cache`.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import FixedPoints, SamplePoints

from mgic_geo.data.base import BaseDataModule
from mgic_geo.data.generated import check_count_pair
from mgic_geo.data.layout import (
    ALL_SPLITS,
    CLASSES,
    SOURCES,
    Layout,
    download_modelnet10,
    find_layout,
    is_empty,
)
from mgic_geo.data.shape_cache import ShapeCache, default_cache_dir, one_thread
from mgic_geo.data.split import check_fraction, stratified_split
from mgic_geo.data.synthetic import write_synthetic_modelnet
from mgic_geo.data.transforms import NormalizeUnitSphere, dgcnn_augmentation
from mgic_geo.validation import check_int


def shape_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for shape ``index`` of a split, from the datamodule's ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def sample_cloud(shape: dict[str, Tensor], num_points: int, *, seed: int | None = None) -> Data:
    """``num_points`` points of a parsed shape (:func:`~mgic_geo.data.readers.read_shape`), centred
    and scaled into the unit sphere, as ``Data(pos=[num_points, 3])``: a mesh is sampled on its
    faces with probability proportional to area (PyG's ``SamplePoints``); a point cloud gives
    ``num_points`` of its points without replacement, or all of them plus random repeats when it has
    fewer (``FixedPoints``; this function pads silently, :meth:`ModelNet10DataModule.setup` warns once per
    such file). ``seed=None`` draws from torch's global generator; an integer draws under a
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

    Args:
        files (list[tuple[Path, int]]): ``(path, label)`` pairs.
        cache (ShapeCache): where the parsed shapes come from.
        num_points (int): points per cloud.
        seed (int, optional): ``None`` draws fresh points on every access (training); an integer draws shape ``i``
            under a generator seeded from ``(seed, i)``, the same points on every access (test).
        transform (callable, optional): applied after sampling and normalisation (the training augmentation).
    """

    def __init__(self, files: list[tuple[Path, int]], cache: ShapeCache, num_points: int, *,
                 seed: int | None = None, transform=None):
        self.files, self.cache, self.num_points = files, cache, check_int("num_points", num_points)
        self.seed, self.transform = seed, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Data:
        with one_thread():
            file, label = self.files[index]
            shape = self.cache.load(file)
            data = sample_cloud(shape, self.num_points, seed=None if self.seed is None else shape_seed(self.seed, index))
            data.y = torch.tensor([label])
            return self.transform(data) if self.transform is not None else data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({len(self)}, num_points={self.num_points}, seeded={self.seed is not None})"


class ModelNet10DataModule(BaseDataModule):
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

    Args:
        root (str): the data root (see ``datasets/README.md`` and :func:`find_layout` for the layout).
        source (str): ``"auto"`` (tell meshes from point-cloud files by what is under ``root``),
            ``"meshes"`` (``.off``), ``"points"`` (``.pcd .ply .xyz .pts .txt .npy``) or ``"synthetic"``
            (write :func:`write_synthetic_modelnet` shapes into ``root`` if missing, read them as meshes).
        num_points (int): points per cloud. A point-cloud file with fewer points gives all of them plus
            random repeats (a mesh is sampled on its faces, so it never falls short); :meth:`setup` warns once
            for each such file, naming it and its point count (not again for later epochs or stages).
        batch_size (int): clouds per batch; the training loader drops the last incomplete batch (for
            BatchNorm), so it must not exceed the number of training shapes.
        num_workers (int): ``DataLoader`` worker processes (0: load in the main process).
        augment (bool): DGCNN's training augmentation (anisotropic scale in [2/3, 3/2], shift in
            [-0.2, 0.2], point shuffle); ``False`` trains on the normalised clouds as they are.
            Validation and test clouds are never augmented.
        skip_bad (bool): drop unreadable shape files with one warning instead of raising.
        seed (int): seeds the training shuffle (and the worker seeds) and the fixed validation and test
            sampling.
        val_fraction (float): the share of each class's training files held out for validation, in
            ``[0, 1)`` (0.1: 399 of the 3,991 official training files); ignored when the root has
            ``<class>/val/`` folders; 0 without them: no validation.
        split_seed (int): which files are held out (separate from ``seed``, so several training seeds
            can share one validation split).
        cache_dir (str, optional): the parsed-shape cache folder, one per root; ``None``: ``<root>/processed_mgic``
            where the root's permission bits allow writing, else a per-user folder
            (:func:`default_cache_dir`). A folder inside the root must be named ``processed_mgic``.
        synthetic_shapes ((int, int)): ``(train, test)`` shapes per class for ``source="synthetic"``.
        synthetic_seed (int): seed of the synthetic shapes (separate from ``seed``, so several training
            seeds can share one synthetic root).
        download (bool): download the official archive when ``root`` is empty (needs internet).

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

    loader_class = DataLoader  # PyG's: batches Data objects
    sample_name = "shapes"

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
        if source not in SOURCES:
            raise ValueError(f"`source` must be one of {SOURCES}, got {source!r}")
        check_int("num_points", num_points)
        check_fraction("val_fraction", val_fraction)
        check_int("split_seed", split_seed, minimum=0)
        if cache_dir is not None and (not isinstance(cache_dir, (str, os.PathLike)) or not str(cache_dir)):
            raise ValueError(f"`cache_dir` must be a folder path or None, got {cache_dir!r}")
        check_int("synthetic_seed", synthetic_seed, minimum=0)
        pair = check_count_pair("synthetic_shapes", synthetic_shapes)
        super().__init__(root, batch_size=batch_size, num_workers=num_workers, seed=seed, augment=augment,
                         skip_bad=skip_bad, download=download)
        self.save_hyperparameters()
        self.source, self.num_points = source, num_points
        self.val_fraction, self.split_seed = float(val_fraction), split_seed
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.synthetic_shapes, self.synthetic_seed = pair, synthetic_seed
        self.train_transform = dgcnn_augmentation() if augment else None
        self.layout: Layout | None = None
        self.cache: ShapeCache | None = None
        self.splits: dict[str, list[tuple[Path, int]]] | None = None
        #: where validation comes from once the layout is read: ``"folder"`` (``<class>/val/``),
        #: ``"held_out"`` (``val_fraction`` of the training files) or ``None`` (no validation)
        self.validation: str | None = None
        self.train_set: ModelNetShapes | None = None
        self.val_set: ModelNetShapes | None = None
        self.test_set: ModelNetShapes | None = None
        self._warned_short: set[Path] = set()  # point-cloud files already reported as padded with repeats

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
        ``<class>/test/`` folders raises a ``ValueError`` naming them. A point-cloud file with fewer than
        ``num_points`` points is padded with repeats when sampled; each such file gets one warning here,
        naming it and its count."""
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
        if layout.source == "points":
            self._warn_short([file for good in files.values() for file, _ in good])
        if "train" in files:
            self.check_train_size(len(files["train"]))
            self.train_set = ModelNetShapes(files["train"], self.cache, self.num_points, transform=self.train_transform)
        if "val" in files:
            self.val_set = ModelNetShapes(files["val"], self.cache, self.num_points, seed=self.seed)
        if "test" in files:
            self.test_set = ModelNetShapes(files["test"], self.cache, self.num_points, seed=self.seed)

    def _warn_short(self, files: list[Path]) -> None:
        """One warning for each point-cloud file with fewer than ``num_points`` points not reported before."""
        for file in files:
            if file in self._warned_short:
                continue
            count = self.cache.num_points(file)
            if count < self.num_points:
                self._warned_short.add(file)
                warnings.warn(f"{file}: has {count} points, fewer than num_points={self.num_points}; its clouds are "
                              f"all {count} points plus {self.num_points - count} random repeats", stacklevel=3)
