"""Where ModelNet-10 files live under a data root, and how the source is told from what is there.

The layout is ModelNet's own: ``<class>/{train,test}/<class>_NNNN.<ext>``, directly under the root,
under ``<root>/ModelNet10/`` (the official archive, extracted) or under ``<root>/raw/`` (PyG's
``ModelNet`` dataset). Each split is optional (a root holding only the train split, e.g. one whose
test split is kept back for independent evaluation, or only the test split, to evaluate released
weights), and so is an explicit validation split ``val/``; a split is there for every class or for
none, and a root needs ``train/`` or ``test/``. Every problem
with it is a ``ValueError`` that shows the expected tree.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CLASSES = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet")
SPLITS = ("train", "test")  # the official splits (what the synthetic shapes are written as)
ALL_SPLITS = ("train", "val", "test")  # each optional; a root has train/ or test/
MESH_EXTENSIONS = (".off",)
POINT_EXTENSIONS = (".pcd", ".ply", ".xyz", ".pts", ".txt", ".npy")
SOURCES = ("auto", "meshes", "points", "synthetic")
CACHE_DIR = "processed_mgic"
SYNTHETIC_MARKER = "synthetic_modelnet.json"
# PyG's ModelNet keeps its own processed tensors in processed/; the archive carries macOS metadata.
IGNORED = {CACHE_DIR, "processed", "__MACOSX", SYNTHETIC_MARKER}
MODELNET10_URL = "http://3dvision.princeton.edu/projects/2014/3DShapeNets/ModelNet10.zip"
# No official checksum is published for ModelNet10.zip (see download_modelnet10); set one here to pin it.
MODELNET10_SHA256: str | None = None

LAYOUT = """expected layout (ModelNet's own; the class folders may also sit in <root>/ModelNet10/ or <root>/raw/):
  <root>/
    bathtub/
      train/bathtub_0001.off  bathtub_0002.off  ...   (training needs it)
      test/bathtub_0107.off  ...        (testing needs it)
      val/...                           (optional: a validation split of your own)
    bed/
      train/  test/
    ...       one folder for each of the 10 classes: {classes}
  meshes are .off files; point clouds may be {points} instead"""


def layout_error(root: Path, problem: str) -> ValueError:
    """A ``ValueError`` stating ``problem`` under ``root`` followed by the expected tree."""
    tree = LAYOUT.format(classes=", ".join(CLASSES), points=" ".join(POINT_EXTENSIONS))
    return ValueError(f"ModelNet-10 data root {str(root)!r}: {problem}\n{tree}")


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name not in IGNORED)


def _listing(paths: list[Path], limit: int = 5) -> str:
    names = [p.name + ("/" if p.is_dir() else "") for p in paths[:limit]]
    return ", ".join(names) + (f", ... ({len(paths)} in all)" if len(paths) > limit else "")


def is_empty(root: Path) -> bool:
    """``True`` when ``root`` is missing or holds nothing but hidden entries and caches."""
    return not root.is_dir() or not _visible(root)


@dataclass
class Layout:
    """The files found under a root: ``files[split]`` lists ``(path, label)`` pairs, sorted by class
    (in :data:`CLASSES` order) and file name, for each split the root has (``"train"`` always,
    ``"val"`` and ``"test"`` when their folders are there)."""

    root: Path
    data_dir: Path
    source: str
    files: dict[str, list[tuple[Path, int]]]

    def require(self, split: str) -> list[tuple[Path, int]]:
        """``files[split]``, or a ``ValueError`` naming the missing split folders (``<data_dir>/bathtub/test``, ...)."""
        if split not in ALL_SPLITS:
            raise ValueError(f"`split` must be one of {ALL_SPLITS}, got {split!r}")
        if split not in self.files:
            folders = [str(self.data_dir / name / split) for name in CLASSES]
            listing = ", ".join(folders[:3]) + (f", ... ({len(folders)} in all)" if len(folders) > 3 else "")
            has = " and ".join(f"{name}/" for name in self.files)
            raise layout_error(self.data_dir, f"no {split} split: missing the folders {listing}; the class folders "
                                              f"hold only {has}")
        return self.files[split]


def find_layout(root: str | Path, source: str = "auto") -> Layout:
    """Check the folders under ``root`` and list the shape files of each split.

    ``<class>/train/``, ``<class>/test/`` and ``<class>/val/`` are each optional (``train/`` or
    ``test/`` must be there), but a split that some class has must be there for every class (:attr:`Layout.files`
    holds the splits found). ``source="auto"`` picks ``"meshes"`` when the split folders hold
    ``.off`` files and ``"points"`` when they hold point-cloud files; ``"synthetic"`` data are
    meshes. Raises ``ValueError`` (with the expected tree) for a missing or empty root, unknown or
    missing class folders, neither ``train/`` nor ``test/`` folders, a split folder missing for some
    classes only, an empty split folder, unsupported files, or files that do not fit ``source``.
    """
    root = Path(root)
    if source not in SOURCES:
        raise ValueError(f"`source` must be one of {SOURCES}, got {source!r}")
    if is_empty(root):
        where = "does not exist" if not root.exists() else "is empty"
        raise layout_error(root, f"the folder {where}; copy ModelNet-10 there, pass download=True (online), or use "
                                 "source='synthetic' for generated stand-in shapes")
    candidates = [root, root / "ModelNet10", root / "raw"]
    data_dir = next((c for c in candidates if c.is_dir() and any((c / name).is_dir() for name in CLASSES)), None)
    if data_dir is None:
        raise layout_error(root, f"no class folders found; it holds {_listing(_visible(root))}")
    folders = [p for p in _visible(data_dir) if p.is_dir()]
    unknown = [p for p in folders if p.name not in CLASSES]
    if unknown:
        raise layout_error(data_dir, f"unknown class folders: {_listing(unknown)}")
    missing = [name for name in CLASSES if not (data_dir / name).is_dir()]
    if missing:
        raise layout_error(data_dir, f"missing class folders: {', '.join(missing)}")
    files: dict[str, list[tuple[Path, int]]] = {}
    for split in ALL_SPLITS:
        missing = [name for name in CLASSES if not (data_dir / name / split).is_dir()]
        if len(missing) == len(CLASSES):
            continue  # a split this root does not have
        if missing:
            others = f" (the other classes have one: a {split} split needs every class)"
            folders = ", ".join(f"{name}/{split}/" for name in missing)
            raise layout_error(data_dir, f"missing split folder {folders}{others}")
        files[split] = []
        for label, name in enumerate(CLASSES):
            folder = data_dir / name / split
            entries = _visible(folder)
            unexpected = [p for p in entries if p.is_dir() or p.suffix.lower() not in MESH_EXTENSIONS + POINT_EXTENSIONS]
            if unexpected:
                raise layout_error(data_dir, f"{name}/{split}/ holds entries that are not shape files: {_listing(unexpected)}")
            if not entries:
                raise layout_error(data_dir, f"the class folder {name}/{split}/ is empty")
            files[split] += [(path, label) for path in entries]
    if "train" not in files and "test" not in files:
        raise layout_error(data_dir, "no split folders: every class folder needs train/ (to train) or test/ (to test)")
    meshes = [p for split in files for p, _ in files[split] if p.suffix.lower() in MESH_EXTENSIONS]
    points = [p for split in files for p, _ in files[split] if p.suffix.lower() in POINT_EXTENSIONS]
    if source == "auto":
        source = "synthetic" if (root / SYNTHETIC_MARKER).is_file() else "meshes" if meshes else "points"
    wanted, other = (points, meshes) if source == "points" else (meshes, points)
    if other:
        kinds = (".off meshes", "point-cloud files") if source == "points" else ("point-cloud files", ".off meshes")
        raise layout_error(data_dir, f"source={source!r} reads {kinds[1]}, but found {len(other)} {kinds[0]} (e.g. "
                                     f"{other[0].relative_to(data_dir)}) beside {len(wanted)}; keep one kind per root")
    return Layout(root=root, data_dir=data_dir, source=source, files=files)


def download_modelnet10(root: str | Path, *, url: str = MODELNET10_URL, sha256: str | None = MODELNET10_SHA256) -> Path:
    """Download and extract the official ModelNet-10 archive into ``root/ModelNet10`` (the URL that
    PyG's ``ModelNet(root, "10")`` uses). Only an empty ``root`` is written to.

    The archive is streamed to the hidden ``root/.ModelNet10.zip.part`` (hidden files do not make a root
    non-empty, so a broken-off download is resumed by the next call, see
    :func:`mgic_geo.data.archive.download`), checked, extracted through a scratch folder that is
    renamed into place only when every member was written (members escaping the folder, links and
    special files are refused), and deleted.

    Princeton publishes no checksum for ModelNet10.zip, and neither PyG nor torchvision pins one, so
    none is built in: the download is checked against the server's ``Content-Length`` and each
    member's CRC-32 when it is extracted. Pass ``sha256`` to pin the archive; without it, once the
    archive has extracted cleanly, its SHA-256 and size are printed (stderr) and its SHA-256 recorded in
    ``root/.ModelNet10.zip.sha256`` (``sha256sum`` format), so that a later download can be compared with it.

    Args:
        root (str | Path): an empty (or missing) folder.
        url (str): where to download from (``http(s)://`` or ``file://``).
        sha256 (str | None): the expected SHA-256 of the archive (hex), or ``None``.

    Returns:
        Path: ``root/ModelNet10``.

    Raises:
        ValueError: for a non-empty ``root``, a checksum mismatch, or an unsafe, truncated or
            corrupt archive (naming it and the member); the archive is then deleted.
        RuntimeError: naming the URL and saying how to place the files by hand, when the download
            fails (offline, HTTP error, broken-off transfer: its ``.part`` file is kept for a retry).
    """
    from mgic_geo.data.archive import download_and_extract

    by_hand = f"offline, extract ModelNet10.zip there by hand so that {Path(root)}/ModelNet10/bathtub/train/... exists"
    return download_and_extract(url, root, what="ModelNet-10", file_name="ModelNet10.zip", member="ModelNet10",
                                by_hand=by_hand, sha256=sha256, is_empty=is_empty)
