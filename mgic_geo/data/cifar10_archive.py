"""The official CIFAR-10 python archive: reading its pickled batches without running any code they
could hold, and downloading it.

The batches are pickles. Only the globals a plain numeric array needs are allowed, each replaced by a
stand-in that checks its arguments (:data:`SAFE_PICKLE_GLOBALS`), and the opcodes are walked before
unpickling, so a crafted file is refused with a ``ValueError`` naming it instead of being run or
allocating what it claims.
"""
from __future__ import annotations

import io
import pickle
import pickletools
import re
import reprlib
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from mgic_geo.data.errors import check_data_file
from mgic_geo.data.readers import DataFileError

CIFAR10_ARCHIVE_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
# torchvision's CIFAR10.url and CIFAR10.tgz_md5: the official python archive and its published MD5.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"

CIFAR10_LAYOUT = """expected one of:
  {root}/cifar-10-batches-py/{{data_batch_1..5, test_batch, batches.meta}}   (source="archive", the official python archive)
  {root}/train/<class>/*.png|jpg and {root}/test/<class>/*.png|jpg          (source="folder"; test/ optional)
  {root}/synthetic_images.json + the folder layout                           (source="synthetic", written for you)"""


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
    if not path.exists():
        raise ValueError(f"CIFAR-10 archive: missing file {str(path)!r}\n"
                         + CIFAR10_LAYOUT.format(root=path.parent.parent))
    check_data_file(path)  # a regular file within the size limit, checked before it is opened
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

    Returns:
        tuple[np.ndarray, np.ndarray, list[str]]: ``uint8 [N, 32, 32, 3]`` images, ``int64 [N]`` labels, the class
            names of ``batches.meta``.

    Raises:
        ValueError: naming the file that is missing, unreadable or not in the official format.
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
    """Download the official CIFAR-10 python archive and extract ``root/cifar-10-batches-py``
    (:func:`mgic_geo.data.archive.download_and_extract`).

    Only a ``root`` without visible entries is written to. The archive is streamed to the hidden
    ``root/.cifar-10-python.tar.gz.part`` (resumed by the next call when the transfer breaks off),
    its MD5 is checked against :data:`CIFAR10_MD5` before it is opened, it is extracted through a
    scratch folder renamed into place only when complete (members escaping the folder, links and
    special files are refused; see :mod:`mgic_geo.data.archive`), and deleted.

    Args:
        root (str or Path): an empty (or missing) folder.
        url (str): where to download from (``http(s)://`` or ``file://``).

    Returns:
        Path: ``root/cifar-10-batches-py``.

    Raises:
        ValueError: for a non-empty ``root``, a checksum mismatch or an unsafe or corrupt archive.
        RuntimeError: naming the URL and saying how to place the files by hand, when the download fails.
    """
    from mgic_geo.data.archive import download_and_extract

    by_hand = (f"offline, extract cifar-10-python.tar.gz there by hand so that {Path(root)}/{CIFAR10_ARCHIVE_DIR}/"
               "data_batch_1 exists")
    return download_and_extract(url, root, what="CIFAR-10", file_name="cifar-10-python.tar.gz",
                                member=CIFAR10_ARCHIVE_DIR, by_hand=by_hand, md5=CIFAR10_MD5, mismatch_as_sentence=True)


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


