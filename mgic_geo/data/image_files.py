"""Image files and ImageNet-style class folders: decoding one image safely, and checking and reading
``<root>/<split>/<class>/<image>`` trees.

Checks and their cost: :func:`scan_class_folders` checks the layout (split folders, class folders, at
least one image per class, the same classes in every split) before any image is decoded. Each image
is decoded and checked when it is first read (:func:`load_image`): an unreadable or truncated file
raises ``ValueError`` naming it then, so no extra pass over (possibly a million) files is paid up
front. Files are only read.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

from PIL import Image
from torchvision.datasets import ImageFolder

from mgic_geo.data.errors import check_data_file
from mgic_geo.data.readers import DataFileError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
FOLDER_LAYOUT = """expected:
  {root}/
    {first}/<class>/<image>.png|jpg|jpeg   (one folder per class)
    {second}/<class>/<image>.png|jpg|jpeg   (the same class folders{optional})"""

# A PNG's pixels are deflate-compressed, and deflate expands at most ~1032:1; a PNG claiming more
# pixels (at one bit each) than that allows for its file size is refused before any pixel is allocated.
PNG_MAX_RATIO = 1032 * 8


def load_image(path: str | Path) -> Image.Image:
    """Decode ``path`` (a PNG or JPEG image) fully into an RGB image. The file is only read.

    Raises:
        ValueError: (:class:`~mgic_geo.data.readers.DataFileError`) naming the file when it is
            unreadable, not a PNG or JPEG, truncated or corrupt, or claims more pixels than PIL's
            decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``; PIL only warns below twice that) or, for
            a PNG, more than its file size can hold; such images are refused before their pixels are allocated.
            Before the file is opened: a path that is not a regular file (a FIFO, a device) or is larger than
            :func:`~mgic_geo.data.errors.max_file_bytes`.
    """
    check_data_file(path)
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


class ClassFolder(ImageFolder):
    """torchvision's ``ImageFolder`` that skips hidden folders and decodes with :func:`load_image`."""

    def __init__(self, root: Path, transform):
        super().__init__(str(root), transform=transform, loader=load_image, is_valid_file=is_image_file)

    def find_classes(self, directory):
        classes = sorted(e.name for e in Path(directory).iterdir() if e.is_dir() and not e.name.startswith("."))
        return classes, {name: i for i, name in enumerate(classes)}

    def keys(self) -> list[str]:
        """Each image's path relative to the folder, with ``/`` (what a split is keyed by)."""
        return [Path(path).relative_to(self.root).as_posix() for path, _ in self.samples]

    def subset(self, indices: list[int], transform) -> "ClassFolder":
        """A copy holding only the images at ``indices`` (in that order), with ``transform``."""
        part = copy.copy(self)
        part.samples = [self.samples[i] for i in indices]
        part.imgs = part.samples
        part.targets = [label for _, label in part.samples]
        part.transform = transform
        return part

