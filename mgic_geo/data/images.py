"""Image classification data for Lightning: CIFAR-10 (official archive, class folders or generated
stand-ins) and ImageNet-style class folders.

Batches are ``(images, labels)``: float32 ``[B, 3, H, W]`` normalised per channel, int64 ``[B]``.

Checks and their cost: the layout (split folders, class folders, at least one image per class, the
same classes in every split) is checked at :meth:`setup`, before any image is decoded. Each image is
decoded and checked when it is first read (:func:`load_image`): an unreadable or truncated file raises
``ValueError`` naming it then, so no extra pass over (possibly a million) files is paid up front.
Nothing on disk is ever written, except by ``source="synthetic"`` (into an empty root) and
``download=True`` (into an empty root).
"""
from __future__ import annotations

import pickle
import urllib.error
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from mgic_geo.data.image_synthetic import (
    IMAGE_SPLITS,
    SYNTHETIC_IMAGES_MARKER,
    write_synthetic_image_folder,
)
from mgic_geo.validation import check_int

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
CIFAR10_SOURCES = ("auto", "archive", "folder", "synthetic")
CIFAR10_ARCHIVE_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))

CIFAR10_LAYOUT = """expected one of:
  {root}/cifar-10-batches-py/{{data_batch_1..5, test_batch, batches.meta}}   (source="archive", the official python archive)
  {root}/train/<class>/*.png|jpg and {root}/test/<class>/*.png|jpg          (source="folder")
  {root}/synthetic_images.json + the folder layout                           (source="synthetic", written for you)"""
FOLDER_LAYOUT = """expected:
  {root}/
    {first}/<class>/<image>.png|jpg|jpeg   (one folder per class)
    {second}/<class>/<image>.png|jpg|jpeg   (the same class folders)"""


def load_image(path: str | Path) -> Image.Image:
    """Decode ``path`` fully into an RGB image; ``ValueError`` naming the file when it is unreadable,
    not an image, or truncated. The file is only read."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # convert() loads every pixel, so a truncated file fails here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: unreadable or truncated image ({err})") from None


def is_image_file(path: str | Path) -> bool:
    """A visible file with an image extension (case-insensitive)."""
    path = Path(path)
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def scan_class_folders(root: Path, splits: tuple[str, str]) -> list[str]:
    """Check ``<root>/<split>/<class>/<images>`` for both ``splits`` and return the sorted class names;
    ``ValueError`` naming the folder for a missing split, no class folders, an empty class folder, or
    classes that differ between the splits (the differing ones are named)."""
    tree = FOLDER_LAYOUT.format(root=root, first=splits[0], second=splits[1])
    for split in splits:
        if not (root / split).is_dir():
            raise ValueError(f"image data root {str(root)!r}: no {split}/ folder\n{tree}")
    classes = {}
    for split in splits:
        folder = root / split
        names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not names:
            raise ValueError(f"image data root {str(root)!r}: {split}/ holds no class folders\n{tree}")
        for name in names:
            if not any(is_image_file(p) and p.is_file() for p in (folder / name).rglob("*")):  # ImageFolder walks subfolders
                raise ValueError(f"class folder {str(folder / name)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        classes[split] = names
    first, second = (set(classes[s]) for s in splits)
    if first != second:
        only = [f"only in {s}/: {', '.join(sorted(a - b))}" for s, a, b in ((splits[0], first, second), (splits[1], second, first))
                if a - b]
        raise ValueError(f"image data root {str(root)!r}: the class folders differ between {splits[0]}/ and {splits[1]}/ "
                         f"({'; '.join(only)})")
    return classes[splits[0]]


class _ClassFolder(ImageFolder):
    """torchvision's ``ImageFolder`` that skips hidden folders and decodes with :func:`load_image`."""

    def __init__(self, root: Path, transform):
        super().__init__(str(root), transform=transform, loader=load_image, is_valid_file=is_image_file)

    def find_classes(self, directory):
        classes = sorted(e.name for e in Path(directory).iterdir() if e.is_dir() and not e.name.startswith("."))
        return classes, {name: i for i, name in enumerate(classes)}


# What the official CIFAR-10 batches (and numpy arrays pickled with protocol 2) need to be rebuilt;
# a pickle naming any other global could run code, so it is refused instead of loaded.
SAFE_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only; any other global is an ``UnpicklingError``."""

    def find_class(self, module: str, name: str):
        if (module, name) not in SAFE_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load the global {module}.{name} (a CIFAR-10 batch holds only "
                                         "dicts, lists, strings and numpy arrays; anything else could run code)")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"CIFAR-10 archive: missing file {str(path)!r}\n"
                         + CIFAR10_LAYOUT.format(root=path.parent.parent))
    try:
        with open(path, "rb") as handle:
            content = _ArrayUnpickler(handle, encoding="latin1").load()
    except Exception as err:  # truncated / not a pickle
        raise ValueError(f"{path}: not a readable CIFAR-10 python batch ({type(err).__name__}: {err})") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a pickled dict, found {type(content).__name__}")
    return content


def read_cifar10_names(folder: str | Path) -> list[str]:
    """The class names in the archive's ``batches.meta`` (``ValueError`` naming it when bad)."""
    meta = _unpickle(Path(folder) / "batches.meta")
    names = meta.get("label_names")
    if not isinstance(names, list) or not names:
        raise ValueError(f"{Path(folder) / 'batches.meta'}: expected a non-empty 'label_names' list")
    return [str(n) for n in names]


def read_cifar10_archive(folder: str | Path, train: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read the official CIFAR-10 python archive's training (``data_batch_1..5``) or test
    (``test_batch``) images from ``folder`` (the ``cifar-10-batches-py`` folder).

    :returns: ``uint8 [N, 32, 32, 3]`` images, ``int64 [N]`` labels, the class names of ``batches.meta``.
    :raises ValueError: naming the file that is missing, unreadable or not in the official format.
    """
    folder = Path(folder)
    names = read_cifar10_names(folder)
    images, labels = [], []
    for name in CIFAR10_TRAIN_BATCHES if train else ("test_batch",):
        batch = _unpickle(folder / name)
        data, targets = batch.get("data"), batch.get("labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            shape = getattr(data, "shape", None), getattr(data, "dtype", type(data).__name__)
            raise ValueError(f"{folder / name}: 'data' must be a uint8 array [N, 3072], found {shape}")
        targets = np.asarray(targets if targets is not None else [], dtype=np.int64)
        if targets.shape != (len(data),) or (len(targets) and (targets.min() < 0 or targets.max() >= len(names))):
            raise ValueError(f"{folder / name}: 'labels' must be {len(data)} integers in [0, {len(names)}), "
                             f"found shape {targets.shape}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(targets)
    return np.concatenate(images), np.concatenate(labels), names


class ArrayImages(Dataset):
    """``(transform(image), label)`` pairs from a ``uint8 [N, H, W, 3]`` array."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


class _FitSize:
    """Resize to ``size x size`` only when the image is not that size already."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.size == (self.size, self.size) else image.resize((self.size, self.size), Image.BILINEAR)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.size})"


def _check_flags(**flags) -> None:
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise ValueError(f"`{name}` must be True or False, got {flag!r}")


def _seed_worker(worker_id: int) -> None:
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class _ClassificationDataModule(LightningDataModule):
    """Loaders shared by the image datamodules: a seeded shuffled training loader that drops the last
    incomplete batch, and evaluation loaders in file order."""

    train_set: Dataset | None
    eval_set: Dataset | None

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        workers = {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0,
                   "worker_init_fn": _seed_worker if self.num_workers > 0 else None}
        if train:
            return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, drop_last=True, generator=self.generator,
                              **workers)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, **workers)

    def _check_train_size(self) -> None:
        if len(self.train_set) < self.batch_size:
            raise ValueError(f"`batch_size` ({self.batch_size}) exceeds the {len(self.train_set)} training images; the "
                             "training loader drops incomplete batches, so it would yield nothing")

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) training batches, augmented unless ``augment=False``."""
        if self.train_set is None:
            self.setup("fit")
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        """The evaluation split in file order (for monitoring)."""
        if self.eval_set is None:
            self.setup("validate")
        return self._loader(self.eval_set, train=False)

    def test_dataloader(self) -> DataLoader:
        """The same evaluation split as :meth:`val_dataloader`."""
        return self.val_dataloader()


class CIFAR10DataModule(_ClassificationDataModule):
    """CIFAR-10 as ``(images [B, 3, image_size, image_size], labels [B])`` batches from the official
    python archive, class folders, or generated stand-in images.

    CIFAR-10 has no validation split, so :meth:`val_dataloader` serves the test split: validation
    numbers are for monitoring only.

    :param root: the data root (see ``source``).
    :param source: ``"auto"`` (archive if ``<root>/cifar-10-batches-py`` exists, else the synthetic
        marker's images, else class folders; an empty root with ``download=True`` downloads),
        ``"archive"`` (``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``),
        ``"folder"`` (``<root>/{train,test}/<class>/*.png|jpg``) or ``"synthetic"`` (write
        :func:`write_synthetic_image_folder` images into ``root`` if missing, read them as folders).
    :param batch_size: images per batch; the training loader drops the last incomplete batch.
    :param num_workers: ``DataLoader`` worker processes (0: load in the main process).
    :param augment: random crop (padding ``image_size // 8``, 4 for 32) and horizontal flip for
        training; ``False`` keeps only the resizing and normalisation.
    :param download: fetch the official archive into an empty root with torchvision (which checks its MD5).
    :param seed: seeds the training shuffle and the worker seeds.
    :param synthetic_images: ``(train, test)`` images per class for ``source="synthetic"``.
    :param synthetic_seed: seed of the synthetic images (separate from ``seed``).
    :param image_size: side of the batched images; images of another size are resized (bilinear).

    Example::

        >>> import tempfile
        >>> from mgic_geo.data import CIFAR10DataModule
        >>> tmp = tempfile.TemporaryDirectory()
        >>> dm = CIFAR10DataModule(tmp.name, source="synthetic", synthetic_images=(2, 1), batch_size=8)
        >>> dm.prepare_data()
        >>> dm.setup("fit")
        >>> images, labels = next(iter(dm.train_dataloader()))
        >>> images.shape, labels.dtype, dm.num_classes
        (torch.Size([8, 3, 32, 32]), torch.int64, 10)
        >>> tmp.cleanup()
    """

    def __init__(
        self,
        root: str = "datasets/cifar10",
        *,
        source: str = "auto",
        batch_size: int = 128,
        num_workers: int = 0,
        augment: bool = True,
        download: bool = False,
        seed: int = 0,
        synthetic_images: tuple[int, int] = (500, 100),
        synthetic_seed: int = 0,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        if source not in CIFAR10_SOURCES:
            raise ValueError(f"`source` must be one of {CIFAR10_SOURCES}, got {source!r}")
        check_int("batch_size", batch_size)
        check_int("num_workers", num_workers, minimum=0)
        check_int("seed", seed, minimum=0)
        check_int("synthetic_seed", synthetic_seed, minimum=0)
        check_int("image_size", image_size, minimum=8)
        if not isinstance(synthetic_images, (tuple, list)) or len(synthetic_images) != 2:
            raise ValueError(f"`synthetic_images` must be a (train, test) pair of positive integers, got {synthetic_images!r}")
        check_int("synthetic_images[0]", synthetic_images[0])
        check_int("synthetic_images[1]", synthetic_images[1])
        _check_flags(augment=augment, download=download)
        self.save_hyperparameters()
        self.root = Path(root)
        self.source, self.batch_size, self.num_workers = source, batch_size, num_workers
        self.augment, self.download, self.seed, self.image_size = augment, download, seed, image_size
        self.synthetic_images, self.synthetic_seed = (int(synthetic_images[0]), int(synthetic_images[1])), synthetic_seed
        self.generator = torch.Generator().manual_seed(seed)
        self.resolved: str | None = None  # "archive" or "folder" once found
        self._class_names: list[str] | None = None
        self.train_set = self.eval_set = None
        normalize = [T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
        fit = [_FitSize(image_size)]
        random = [T.RandomCrop(image_size, padding=max(1, image_size // 8)), T.RandomHorizontalFlip()] if augment else []
        self.train_transform = T.Compose(fit + random + normalize)
        self.eval_transform = T.Compose(fit + normalize)

    def _resolve(self) -> str:
        if self.resolved is not None:
            return self.resolved
        archive = self.root / CIFAR10_ARCHIVE_DIR
        visible = [p for p in self.root.iterdir() if not p.name.startswith(".")] if self.root.is_dir() else []
        source = self.source
        if source == "synthetic":
            write_synthetic_image_folder(self.root, classes=10, images_per_class=self.synthetic_images, size=self.image_size,
                                         seed=self.synthetic_seed)
            source = "folder"
        elif source == "auto":
            if archive.is_dir() or (not visible and self.download):
                source = "archive"
            elif (self.root / SYNTHETIC_IMAGES_MARKER).is_file() or all((self.root / s).is_dir() for s in IMAGE_SPLITS):
                source = "folder"
            else:
                found = ", ".join(sorted(p.name for p in visible)[:5]) or "nothing"
                raise ValueError(f"CIFAR-10 data root {str(self.root)!r}: cannot tell the layout (found {found}); "
                                 "pass source='synthetic' for generated stand-ins or download=True for the archive\n"
                                 + CIFAR10_LAYOUT.format(root=self.root))
        if source == "archive" and not archive.is_dir():
            if self.download and not visible:
                from torchvision.datasets import CIFAR10

                try:
                    for train in (True, False):
                        CIFAR10(str(self.root), train=train, download=True)  # verifies the MD5 of the download
                except (urllib.error.URLError, OSError, RuntimeError) as err:
                    raise RuntimeError(f"could not download CIFAR-10 from {CIFAR10.url} into {str(self.root)!r} ({err}); "
                                       f"offline, extract cifar-10-python.tar.gz there by hand so that "
                                       f"{self.root}/{CIFAR10_ARCHIVE_DIR}/data_batch_1 exists") from err
            else:
                raise ValueError(f"CIFAR-10 data root {str(self.root)!r}: no {CIFAR10_ARCHIVE_DIR}/ folder "
                                 "(download=True fetches it into an empty root)\n" + CIFAR10_LAYOUT.format(root=self.root))
        self.resolved = source
        return source

    @property
    def class_names(self) -> list[str]:
        """The class names: ``batches.meta``'s for the archive, the sorted folder names otherwise."""
        if self._class_names is None:
            if self._resolve() == "archive":
                self._class_names = read_cifar10_names(self.root / CIFAR10_ARCHIVE_DIR)
            else:
                self._class_names = scan_class_folders(self.root, IMAGE_SPLITS)
        return list(self._class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_data(self) -> None:
        """Write the synthetic images or download the archive (when asked)."""
        self._resolve()

    def setup(self, stage: str | None = None) -> None:
        """Build the training split (``stage`` ``"fit"`` or ``None``) and the test split (every stage)."""
        _ = self.class_names  # checks the layout
        train = stage in (None, "fit") and self.train_set is None
        if self.resolved == "archive":
            folder = self.root / CIFAR10_ARCHIVE_DIR
            if train:
                images, labels, _ = read_cifar10_archive(folder, train=True)
                self.train_set = ArrayImages(images, labels, self.train_transform)
            if self.eval_set is None:
                images, labels, _ = read_cifar10_archive(folder, train=False)
                self.eval_set = ArrayImages(images, labels, self.eval_transform)
        else:
            if train:
                self.train_set = _ClassFolder(self.root / "train", self.train_transform)
            if self.eval_set is None:
                self.eval_set = _ClassFolder(self.root / "test", self.eval_transform)
        if train:
            self._check_train_size()


class ImageFolderDataModule(_ClassificationDataModule):
    """ImageNet-style class folders, ``<root>/{train,val}/<class>/*.JPEG|jpg|png``, as
    ``(images [B, 3, image_size, image_size], labels [B])`` batches with ImageNet's normalisation.

    Training: ``RandomResizedCrop(image_size)`` and a horizontal flip (``augment=False``: the
    evaluation transform instead). Evaluation: ``Resize(resize_size)`` of the shorter side then
    ``CenterCrop(image_size)``. :meth:`val_dataloader` and :meth:`test_dataloader` both serve ``val/``.

    :param root: the data root.
    :param batch_size: images per batch; the training loader drops the last incomplete batch.
    :param num_workers: ``DataLoader`` worker processes.
    :param augment: the random training transform (see above).
    :param seed: seeds the training shuffle and the worker seeds.
    :param image_size: side of the batched images (224 for ImageNet).
    :param resize_size: shorter side before the evaluation centre crop; ``None``: ``image_size * 256 / 224``.
    """

    def __init__(
        self,
        root: str = "datasets/imagenet",
        *,
        batch_size: int = 256,
        num_workers: int = 0,
        augment: bool = True,
        seed: int = 0,
        image_size: int = 224,
        resize_size: int | None = None,
    ) -> None:
        super().__init__()
        check_int("batch_size", batch_size)
        check_int("num_workers", num_workers, minimum=0)
        check_int("seed", seed, minimum=0)
        check_int("image_size", image_size)
        resize_size = round(image_size * 256 / 224) if resize_size is None else resize_size
        check_int("resize_size", resize_size, minimum=image_size)
        _check_flags(augment=augment)
        self.save_hyperparameters()
        self.root = Path(root)
        self.batch_size, self.num_workers, self.augment, self.seed = batch_size, num_workers, augment, seed
        self.image_size, self.resize_size = image_size, resize_size
        self.generator = torch.Generator().manual_seed(seed)
        self._class_names: list[str] | None = None
        self.train_set = self.eval_set = None
        normalize = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        self.eval_transform = T.Compose([T.Resize(resize_size), T.CenterCrop(image_size)] + normalize)
        self.train_transform = (T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()] + normalize)
                                if augment else self.eval_transform)

    @property
    def class_names(self) -> list[str]:
        """The sorted class folder names (checks the layout on first use)."""
        if self._class_names is None:
            self._class_names = scan_class_folders(self.root, ("train", "val"))
        return list(self._class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def setup(self, stage: str | None = None) -> None:
        """Build the training split (``stage`` ``"fit"`` or ``None``) and ``val/`` (every stage)."""
        _ = self.class_names  # checks the layout
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = _ClassFolder(self.root / "train", self.train_transform)
            self._check_train_size()
        if self.eval_set is None:
            self.eval_set = _ClassFolder(self.root / "val", self.eval_transform)
