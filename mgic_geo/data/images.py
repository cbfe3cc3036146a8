"""Image classification data for Lightning: CIFAR-10 (official archive, class folders or generated
stand-ins) and ImageNet-style class folders.

Batches are ``(images, labels)``: float32 ``[B, 3, H, W]`` normalised per channel, int64 ``[B]``.

Validation: where a root has no evaluation split of its own (CIFAR-10 class folders without
``test/``, ImageNet-style folders without ``val/``), a seeded, stratified ``val_fraction`` (default 0.1)
of the training images is held out for validation (:mod:`mgic_geo.data.split`); testing then fails
with a ``ValueError`` naming the missing folder. Where the root has one, the validation loader serves
it, as it always did (monitoring only: it is the split ``test`` evaluates), unless ``val_fraction`` is
given, which then holds out that share of the training images instead (0: no validation).

Checks and their cost: the layout (split folders, class folders, at least one image per class, the
same classes in every split) is checked at :meth:`setup`, before any image is decoded. Each image is
decoded and checked when it is first read (:func:`load_image`): an unreadable or truncated file raises
``ValueError`` naming it then, so no extra pass over (possibly a million) files is paid up front.
Nothing on disk is ever written, except by ``source="synthetic"`` (into an empty root) and
``download=True`` (into an empty root).
"""
from __future__ import annotations

import copy
import io
import pickle
import pickletools
import re
import reprlib
import warnings
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
from mgic_geo.data.readers import DataFileError
from mgic_geo.data.shuffle import ResumableShuffle
from mgic_geo.data.split import check_fraction, stratified_split
from mgic_geo.validation import check_int

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
CIFAR10_SOURCES = ("auto", "archive", "folder", "synthetic")
CIFAR10_ARCHIVE_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
# torchvision's CIFAR10.url and CIFAR10.tgz_md5: the official python archive and its published MD5.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"

CIFAR10_LAYOUT = """expected one of:
  {root}/cifar-10-batches-py/{{data_batch_1..5, test_batch, batches.meta}}   (source="archive", the official python archive)
  {root}/train/<class>/*.png|jpg and {root}/test/<class>/*.png|jpg          (source="folder"; test/ optional)
  {root}/synthetic_images.json + the folder layout                           (source="synthetic", written for you)"""
FOLDER_LAYOUT = """expected:
  {root}/
    {first}/<class>/<image>.png|jpg|jpeg   (one folder per class)
    {second}/<class>/<image>.png|jpg|jpeg   (the same class folders{optional})"""
DEFAULT_VAL_FRACTION = 0.1


# A PNG's pixels are deflate-compressed, and deflate expands at most ~1032:1; a PNG claiming more
# pixels (at one bit each) than that allows for its file size is refused before any pixel is allocated.
PNG_MAX_RATIO = 1032 * 8


def load_image(path: str | Path) -> Image.Image:
    """Decode ``path`` (a PNG or JPEG image) fully into an RGB image. The file is only read.

    :raises ValueError: (:class:`~mgic_geo.data.readers.DataFileError`) naming the file when it is
        unreadable, not a PNG or JPEG, truncated or corrupt, or claims more pixels than PIL's
        decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``; PIL only warns below twice that) or, for
        a PNG, more than its file size can hold; such images are refused before their pixels are allocated.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=("PNG", "JPEG")) as image:
                pixels, size = image.width * image.height, Path(path).stat().st_size
                if image.format == "PNG" and pixels > PNG_MAX_RATIO * size:
                    raise DataFileError(f"{path}: the PNG claims {image.width} x {image.height} pixels, more than its "
                                        f"{size} bytes can hold; refused before decoding")
                return image.convert("RGB")  # convert() loads every pixel, so a truncated file fails here
    except DataFileError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise DataFileError(f"{path}: refused as a possible decompression bomb ({err})") from None
    # PIL's plugins report malformed data as OSError, SyntaxError, ValueError, EOFError, struct.error,
    # IndexError, ...: whatever the decoder raises, the file is unreadable.
    except Exception as err:  # noqa: BLE001
        raise DataFileError(f"{path}: unreadable or truncated image ({type(err).__name__}: {err})") from None


def is_image_file(path: str | Path) -> bool:
    """A visible file with an image extension (case-insensitive)."""
    path = Path(path)
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def scan_class_folders(root: Path, splits: tuple[str, str], *, optional: bool = False) -> list[str]:
    """Check ``<root>/<split>/<class>/<images>`` for both ``splits`` and return the sorted class names;
    ``ValueError`` naming the folder for a missing split, no class folders, an empty class folder, or
    classes that differ between the splits (the differing ones are named). ``optional=True``: the
    second split may be missing (then only the first is checked)."""
    tree = FOLDER_LAYOUT.format(root=root, first=splits[0], second=splits[1], optional="; optional" if optional else "")
    if optional and not (root / splits[1]).is_dir():
        splits = splits[:1]
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
    first, second = (set(classes[s]) for s in (splits * 2)[:2])
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

    def keys(self) -> list[str]:
        """Each image's path relative to the folder, with ``/`` (what a split is keyed by)."""
        return [Path(path).relative_to(self.root).as_posix() for path, _ in self.samples]

    def subset(self, indices: list[int], transform) -> "_ClassFolder":
        """A copy holding only the images at ``indices`` (in that order), with ``transform``."""
        part = copy.copy(self)
        part.samples = [self.samples[i] for i in indices]
        part.imgs = part.samples
        part.targets = [label for _, label in part.samples]
        part.transform = transform
        return part


# What the official CIFAR-10 batches (and numpy arrays pickled with protocols 2 to 5) need to be rebuilt;
# a pickle naming any other global could run code, so it is refused instead of loaded. Even these are not
# handed to the pickle as numpy's own: ``numpy.dtype.__setstate__`` lets a pickle set a dtype's internal
# flags (e.g. mark uint8 as holding Python objects) and ``numpy.ndarray((10**9,), "O")`` allocates and
# fills gigabytes, so each is replaced by a stand-in that checks its arguments and builds plain arrays
# with ``np.frombuffer`` from bytes the file holds.
SAFE_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}
_NDARRAY = object()  # stands for numpy.ndarray, which a pickle may only pass to _reconstruct


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxtuple, _REPR.maxlist, _REPR.maxdict = 3, 8, 8, 4


def _short(value) -> str:
    """A bounded repr: unpickled objects may nest shared lists so deep that ``repr`` would never end."""
    return _REPR.repr(value)


def _refuse(what: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(f"refused {what} (a CIFAR-10 batch holds only plain numeric arrays)")


class _PickledDtype:
    """``numpy.dtype(spec, align, copy)`` for numbers and strings only; its state sets the byte order alone."""

    def __init__(self, spec=None, align=False, copy=False):
        if not isinstance(spec, str) or not re.fullmatch(r"[biufc]\d{1,2}|[SU]\d{1,6}", spec):
            raise _refuse(f"the dtype {_short(spec)}")
        self.dtype = np.dtype(spec)

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 8 and state[1] in ("<", ">", "|", "=")
                and state[2:5] == (None, None, None)):
            raise _refuse(f"a dtype state {_short(state)}")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


def _pickled_array(data, dtype, shape, order: str = "C") -> np.ndarray:
    """A writable copy of the array ``shape`` of ``dtype`` held by the bytes ``data``, checked first."""
    if not isinstance(dtype, _PickledDtype):
        raise _refuse(f"an array of dtype {type(dtype).__name__}")
    if (not isinstance(shape, tuple) or len(shape) > 32 or not all(type(n) is int and n >= 0 for n in shape)
            or order not in ("C", "F")):
        raise _refuse(f"the array shape {_short(shape)} (order {_short(order)})")
    if isinstance(data, pickle.PickleBuffer):
        data = data.raw()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _refuse(f"array data of type {type(data).__name__}")
    needed = dtype.dtype.itemsize
    for n in shape:
        needed *= n
    if memoryview(data).nbytes != needed:
        raise _refuse(f"an array of shape {shape} and dtype {dtype.dtype} ({needed} bytes) from "
                      f"{memoryview(data).nbytes} bytes")
    return np.frombuffer(data, dtype.dtype).reshape(shape, order=order).copy(order="K")


class _PickledArray:
    """What ``_reconstruct(ndarray, (0,), ...)`` stands for until its state (``ndarray.__reduce__``'s
    ``(version, shape, dtype, fortran, data)``) arrives; :func:`_unpickle` swaps in ``.array``."""

    array: np.ndarray | None = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[3], bool)):
            raise _refuse(f"an array state {_short(state)}")
        self.array = _pickled_array(state[4], state[2], state[1], "F" if state[3] else "C")


def _reconstruct(subtype=None, shape=None, code=None) -> _PickledArray:
    if subtype is not _NDARRAY or shape != (0,):
        raise _refuse(f"_reconstruct{_short((subtype, shape, code))}")
    return _PickledArray()


def _scalar(dtype=None, data=None):
    return _pickled_array(data, dtype, (1,))[0]


def _latin1(text=None, encoding=None) -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _refuse(f"_codecs.encode with encoding {_short(encoding)}")
    return text.encode("latin1")


_PICKLE_STAND_INS = {"_reconstruct": _reconstruct, "scalar": _scalar, "_frombuffer": _pickled_array,
                     "ndarray": _NDARRAY, "dtype": _PickledDtype, "encode": _latin1}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only; any other global is an ``UnpicklingError``."""

    def find_class(self, module: str, name: str):
        if (module, name) not in SAFE_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load the global {module}.{name} (a CIFAR-10 batch holds only "
                                         "dicts, lists, strings and numpy arrays; anything else could run code)")
        return _PICKLE_STAND_INS[name]


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"CIFAR-10 archive: missing file {str(path)!r}\n"
                         + CIFAR10_LAYOUT.format(root=path.parent.parent))
    try:
        raw = path.read_bytes()
        # The unpickler allocates the length a BINBYTES8/BINUNICODE8/... opcode claims before reading it,
        # and a memo table as long as the largest PUT index (LONG_BINPUT 671088640: 10 GB, found by
        # fuzzing). Walking the opcodes first refuses lengths longer than what is left of the file and
        # memo indices out of the sequence picklers write (0, 1, 2, ... in Python 3; 1, 2, 3, ... in
        # Python 2's cPickle, which wrote the official batches).
        stored = 0
        for opcode, argument, _ in pickletools.genops(io.BytesIO(raw)):
            if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                if opcode.name != "MEMOIZE" and not 0 <= argument <= stored + 1:
                    raise _refuse(f"the memo index {argument} after {stored} stored objects")
                stored += 1
        content = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
        if isinstance(content, dict):
            for key, value in content.items():
                if isinstance(value, _PickledArray):
                    if value.array is None:
                        raise _refuse(f"the array {_short(key)} without its data")
                    content[key] = value.array
    except Exception as err:  # noqa: BLE001 (truncated, not a pickle, or refused: the unpickler raises many types)
        raise DataFileError(f"{path}: not a readable CIFAR-10 python batch ({type(err).__name__}: {err})") from None
    if not isinstance(content, dict):
        raise DataFileError(f"{path}: expected a pickled dict, found {type(content).__name__}")
    return content


def read_cifar10_names(folder: str | Path) -> list[str]:
    """The class names in the archive's ``batches.meta`` (``ValueError`` naming it when bad)."""
    meta = _unpickle(Path(folder) / "batches.meta")
    names = meta.get("label_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, bytes)) for n in names):
        raise DataFileError(f"{Path(folder) / 'batches.meta'}: expected a non-empty 'label_names' list of strings")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


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
            raise DataFileError(f"{folder / name}: 'data' must be a uint8 array [N, 3072], found {shape}")
        # checked before numpy converts them: a pickled list may nest (and share) lists without bound
        flat = (isinstance(targets, np.ndarray) and targets.ndim == 1 and targets.dtype.kind in "iu"
                or isinstance(targets, list)
                and all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in targets))
        if not flat or len(targets) != len(data) or (len(targets) and not 0 <= min(targets) <= max(targets) < len(names)):
            found = getattr(targets, "shape", None) or (len(targets) if isinstance(targets, list)
                                                        else type(targets).__name__)
            raise DataFileError(f"{folder / name}: 'labels' must be {len(data)} integers in [0, {len(names)}), "
                                f"found {found}")
        targets = np.asarray(targets, dtype=np.int64)
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(targets)
    return np.concatenate(images), np.concatenate(labels), names


def download_cifar10(root: str | Path, *, url: str = CIFAR10_URL) -> Path:
    """Download the official CIFAR-10 python archive and extract ``root/cifar-10-batches-py``.

    Only a ``root`` without visible entries is written to. The archive is streamed to the hidden
    ``root/.cifar-10-python.tar.gz.part`` (resumed by the next call when the transfer breaks off),
    its MD5 is checked against :data:`CIFAR10_MD5` before it is opened, it is extracted through a
    scratch folder renamed into place only when complete (members escaping the folder, links and
    special files are refused; see :mod:`mgic_geo.data.archive`), and deleted.

    :returns: ``root/cifar-10-batches-py``.
    :raises ValueError: for a non-empty ``root``, a checksum mismatch or an unsafe or corrupt archive.
    :raises RuntimeError: naming the URL and saying how to place the files by hand, when the download fails.
    """
    from mgic_geo.data.archive import download, extract

    root = Path(root)
    if root.is_dir() and any(not p.name.startswith(".") for p in root.iterdir()):
        raise ValueError(f"download: {str(root)!r} is not empty; downloads go only into an empty root")
    by_hand = (f"offline, extract cifar-10-python.tar.gz there by hand so that {root}/{CIFAR10_ARCHIVE_DIR}/data_batch_1 "
               "exists")
    root.mkdir(parents=True, exist_ok=True)
    archive = root / ".cifar-10-python.tar.gz"
    try:
        try:
            download(url, archive, md5=CIFAR10_MD5)
        except OSError as err:  # URLError, DownloadError, socket errors
            raise RuntimeError(f"could not download CIFAR-10 from {url} into {str(root)!r} ({err}); {by_hand}") from err
        try:
            return extract(archive, root / CIFAR10_ARCHIVE_DIR, member=CIFAR10_ARCHIVE_DIR)
        except ValueError as err:
            raise ValueError(f"{err}; the downloaded archive was deleted") from None
    except ValueError as err:
        raise ValueError(f"{err}. {by_hand[0].upper()}{by_hand[1:]}") from None
    finally:
        archive.unlink(missing_ok=True)  # extracted or broken, the archive itself is not kept


class ArrayImages(Dataset):
    """``(transform(image), label)`` pairs from a ``uint8 [N, H, W, 3]`` array."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])

    def keys(self) -> list[str]:
        """Each image's index, as a string (what a split is keyed by)."""
        return [str(i) for i in range(len(self.images))]

    def subset(self, indices: list[int], transform) -> "ArrayImages":
        """A copy holding only the images at ``indices`` (in that order), with ``transform``."""
        return ArrayImages(self.images[indices], self.labels[indices], transform)

    @property
    def targets(self) -> list[int]:
        """The labels, as a list (``ImageFolder``'s name)."""
        return self.labels.tolist()


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


class _ClassificationDataModule(ResumableShuffle, LightningDataModule):
    """Splits and loaders shared by the image datamodules: a seeded shuffled training loader that drops
    the last incomplete batch, and evaluation loaders in file order.

    ``eval_set`` is the root's own evaluation split (what :meth:`test_dataloader` serves), ``val_set``
    what :meth:`val_dataloader` serves: a held-out share of the training images, or ``eval_set``
    (see the module docstring), or nothing. A subclass sets ``val_fraction``, ``split_seed`` and the
    transforms, and defines :meth:`_has_eval_split`, :meth:`_no_eval_split`, :meth:`_training_images`
    and :meth:`_evaluation_images`.
    """

    train_set: Dataset | None
    val_set: Dataset | list | None
    eval_set: Dataset | None
    val_fraction: float | None
    split_seed: int
    #: where validation comes from after :meth:`setup`: ``"held_out"`` (a share of the training
    #: images), ``"eval_split"`` (the root's evaluation split, which testing serves too) or ``None``
    validation: str | None = None

    def _has_eval_split(self) -> bool:
        raise NotImplementedError

    def _no_eval_split(self) -> ValueError:
        raise NotImplementedError

    def _training_images(self):
        raise NotImplementedError

    def _evaluation_images(self):
        raise NotImplementedError

    def held_out_fraction(self) -> float:
        """The share of each class's training images held out for validation: ``val_fraction`` when
        given, else 0 where the root has an evaluation split and 0.1 where it has none."""
        if self.val_fraction is not None:
            return self.val_fraction
        return 0.0 if self._has_eval_split() else DEFAULT_VAL_FRACTION

    def setup(self, stage: str | None = None) -> None:
        """Build the training and validation splits (``stage`` ``"fit"`` or ``None``), the validation
        split (``"validate"``) and, at every stage, the root's evaluation split when it has one.
        ``"test"`` (or ``"predict"``) on a root without one raises a ``ValueError`` naming the folder."""
        _ = self.class_names  # checks the layout
        has_eval = self._has_eval_split()
        if stage in ("test", "predict") and not has_eval:
            raise self._no_eval_split()
        fit, validate = stage in (None, "fit"), stage in (None, "fit", "validate")
        fraction = self.held_out_fraction()
        if (fit and self.train_set is None) or (validate and self.val_set is None and fraction > 0):
            images = self._training_images()
            if fraction > 0:
                kept, held = stratified_split(images.keys(), images.targets, fraction, self.split_seed)
                train, val = images.subset(kept, self.train_transform), images.subset(held, self.eval_transform)
            else:
                train, val = images, None
            if fit and self.train_set is None:
                self.train_set = train
                self._check_train_size()
            if validate and self.val_set is None and val is not None:
                self.val_set, self.validation = val, "held_out" if len(val) else None
        if has_eval and self.eval_set is None:
            self.eval_set = self._evaluation_images()
        if validate and self.val_set is None:  # nothing held out
            if self.val_fraction is None and has_eval:
                self.val_set, self.validation = self.eval_set, "eval_split"
            else:
                self.val_set, self.validation = [], None

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        # Training workers start afresh each epoch, seeded from the generator, which checkpoints keep
        # (state_dict): a resumed run's workers then draw what an uninterrupted run's would.
        workers = {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0 and not train,
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

    def val_dataloader(self) -> DataLoader | list:
        """The validation split in file order, never augmented; ``[]`` when there is none (Lightning
        then skips validation)."""
        if self.val_set is None:
            self.setup("validate")
        if not len(self.val_set):
            return []
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        """The root's evaluation split in file order; a ``ValueError`` naming the missing folder on a
        root without one."""
        if self.eval_set is None:
            self.setup("test")
        return self._loader(self.eval_set, train=False)


class CIFAR10DataModule(_ClassificationDataModule):
    """CIFAR-10 as ``(images [B, 3, image_size, image_size], labels [B])`` batches from the official
    python archive, class folders, or generated stand-in images.

    CIFAR-10 has no validation split. On a root with a test split (the archive's ``test_batch``, or
    ``test/`` class folders) :meth:`val_dataloader` serves it by default, as before: numbers for
    monitoring only, since testing evaluates the same images. Pass ``val_fraction`` to validate on a
    held-out share of the training images instead. On a root holding only ``train/`` (e.g. the CIFAR-10
    training split as an image folder) ``val_fraction`` defaults to 0.1 (5,000 of the 50,000 images),
    and :meth:`test_dataloader` raises a ``ValueError`` naming the missing ``test/`` folder.

    :param root: the data root (see ``source``).
    :param source: ``"auto"`` (archive if ``<root>/cifar-10-batches-py`` exists, else the synthetic
        marker's images, else class folders; an empty root with ``download=True`` downloads),
        ``"archive"`` (``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``),
        ``"folder"`` (``<root>/{train,test}/<class>/*.png|jpg``, ``test/`` optional) or ``"synthetic"`` (write
        :func:`write_synthetic_image_folder` images into ``root`` if missing, read them as folders).
    :param batch_size: images per batch; the training loader drops the last incomplete batch.
    :param num_workers: ``DataLoader`` worker processes (0: load in the main process).
    :param augment: random crop (padding ``image_size // 8``, 4 for 32) and horizontal flip for
        training; ``False`` keeps only the resizing and normalisation.
    :param download: fetch the official archive into an empty root (:func:`download_cifar10`: checked against its
        published MD5 before it is opened, extracted safely).
    :param seed: seeds the training shuffle and the worker seeds.
    :param val_fraction: the share of each class's training images held out for validation, in
        ``[0, 1)`` (0: no validation); ``None``: 0.1 on a root without a test split, else validate
        on the test split (monitoring only).
    :param split_seed: which images are held out (:func:`mgic_geo.data.split.stratified_split`:
        stratified per class, the same images for the same seed and files).
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
        val_fraction: float | None = None,
        split_seed: int = 0,
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
        if val_fraction is not None:
            check_fraction("val_fraction", val_fraction)
        check_int("split_seed", split_seed, minimum=0)
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
        self.val_fraction = None if val_fraction is None else float(val_fraction)
        self.split_seed = split_seed
        self.synthetic_images, self.synthetic_seed = (int(synthetic_images[0]), int(synthetic_images[1])), synthetic_seed
        self.generator = torch.Generator().manual_seed(seed)
        self.resolved: str | None = None  # "archive" or "folder" once found
        self._class_names: list[str] | None = None
        self.train_set = self.val_set = self.eval_set = None
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
            elif (self.root / SYNTHETIC_IMAGES_MARKER).is_file() or (self.root / "train").is_dir():
                source = "folder"
            else:
                found = ", ".join(sorted(p.name for p in visible)[:5]) or "nothing"
                raise ValueError(f"CIFAR-10 data root {str(self.root)!r}: cannot tell the layout (found {found}); "
                                 "pass source='synthetic' for generated stand-ins or download=True for the archive\n"
                                 + CIFAR10_LAYOUT.format(root=self.root))
        if source == "archive" and not archive.is_dir():
            if self.download and not visible:
                download_cifar10(self.root)
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
                self._class_names = scan_class_folders(self.root, IMAGE_SPLITS, optional=True)
        return list(self._class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_data(self) -> None:
        """Write the synthetic images or download the archive (when asked)."""
        self._resolve()

    def _has_eval_split(self) -> bool:
        return self._resolve() == "archive" or (self.root / "test").is_dir()

    def _no_eval_split(self) -> ValueError:
        return ValueError(f"CIFAR-10 data root {str(self.root)!r}: no test split to test on: the folder "
                          f"{str(self.root / 'test')!r} does not exist (this root holds the training split only; "
                          "validation uses a held-out share of it, `val_fraction`)")

    def _training_images(self):
        if self._resolve() == "archive":
            images, labels, _ = read_cifar10_archive(self.root / CIFAR10_ARCHIVE_DIR, train=True)
            return ArrayImages(images, labels, self.train_transform)
        return _ClassFolder(self.root / "train", self.train_transform)

    def _evaluation_images(self):
        if self._resolve() == "archive":
            images, labels, _ = read_cifar10_archive(self.root / CIFAR10_ARCHIVE_DIR, train=False)
            return ArrayImages(images, labels, self.eval_transform)
        return _ClassFolder(self.root / "test", self.eval_transform)


class ImageFolderDataModule(_ClassificationDataModule):
    """ImageNet-style class folders, ``<root>/{train,val}/<class>/*.JPEG|jpg|png``, as
    ``(images [B, 3, image_size, image_size], labels [B])`` batches with ImageNet's normalisation.

    Training: ``RandomResizedCrop(image_size)`` and a horizontal flip (``augment=False``: the
    evaluation transform instead). Evaluation: ``Resize(resize_size)`` of the shorter side then
    ``CenterCrop(image_size)``.

    ``val/`` is optional. With it, :meth:`val_dataloader` and :meth:`test_dataloader` both serve
    ``val/`` by default (ImageNet's convention: its test labels are not public), so validation numbers
    are for monitoring only; pass ``val_fraction`` to validate on a held-out share of ``train/``
    instead. Without it, ``val_fraction`` defaults to 0.1 and :meth:`test_dataloader` raises a
    ``ValueError`` naming the missing ``val/`` folder.

    :param root: the data root.
    :param batch_size: images per batch; the training loader drops the last incomplete batch.
    :param num_workers: ``DataLoader`` worker processes.
    :param augment: the random training transform (see above).
    :param seed: seeds the training shuffle and the worker seeds.
    :param val_fraction: the share of each class's training images held out for validation, in
        ``[0, 1)`` (0: no validation); ``None``: 0.1 on a root without ``val/``, else validate on ``val/``.
    :param split_seed: which images are held out (:func:`mgic_geo.data.split.stratified_split`).
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
        val_fraction: float | None = None,
        split_seed: int = 0,
        image_size: int = 224,
        resize_size: int | None = None,
    ) -> None:
        super().__init__()
        check_int("batch_size", batch_size)
        check_int("num_workers", num_workers, minimum=0)
        check_int("seed", seed, minimum=0)
        if val_fraction is not None:
            check_fraction("val_fraction", val_fraction)
        check_int("split_seed", split_seed, minimum=0)
        check_int("image_size", image_size)
        resize_size = round(image_size * 256 / 224) if resize_size is None else resize_size
        check_int("resize_size", resize_size, minimum=image_size)
        _check_flags(augment=augment)
        self.save_hyperparameters()
        self.root = Path(root)
        self.batch_size, self.num_workers, self.augment, self.seed = batch_size, num_workers, augment, seed
        self.image_size, self.resize_size = image_size, resize_size
        self.val_fraction = None if val_fraction is None else float(val_fraction)
        self.split_seed = split_seed
        self.generator = torch.Generator().manual_seed(seed)
        self._class_names: list[str] | None = None
        self.train_set = self.val_set = self.eval_set = None
        normalize = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        self.eval_transform = T.Compose([T.Resize(resize_size), T.CenterCrop(image_size)] + normalize)
        self.train_transform = (T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()] + normalize)
                                if augment else self.eval_transform)

    @property
    def class_names(self) -> list[str]:
        """The sorted class folder names (checks the layout on first use)."""
        if self._class_names is None:
            self._class_names = scan_class_folders(self.root, ("train", "val"), optional=True)
        return list(self._class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _has_eval_split(self) -> bool:
        return (self.root / "val").is_dir()

    def _no_eval_split(self) -> ValueError:
        return ValueError(f"image data root {str(self.root)!r}: no val/ folder to test on: {str(self.root / 'val')!r} "
                          "does not exist (this root holds the training split only; validation uses a held-out share "
                          "of it, `val_fraction`)")

    def _training_images(self):
        return _ClassFolder(self.root / "train", self.train_transform)

    def _evaluation_images(self):
        return _ClassFolder(self.root / "val", self.eval_transform)
