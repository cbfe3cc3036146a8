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
same classes in every split) is checked at :meth:`setup`, before any image is decoded; each image is
decoded and checked when it is first read (:mod:`mgic_geo.data.image_files`; the archive:
:mod:`mgic_geo.data.cifar10_archive`). Nothing on disk is ever written, except by
``source="synthetic"`` (into an empty root) and ``download=True`` (into an empty root).
"""
from __future__ import annotations

from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from mgic_geo.data.base import BaseDataModule
from mgic_geo.data.cifar10_archive import (
    CIFAR10_ARCHIVE_DIR,
    CIFAR10_LAYOUT,
    ArrayImages,
    download_cifar10,
    read_cifar10_archive,
    read_cifar10_names,
)
from mgic_geo.data.generated import check_count_pair
from mgic_geo.data.image_files import ClassFolder, scan_class_folders
from mgic_geo.data.image_synthetic import (
    IMAGE_SPLITS,
    SYNTHETIC_IMAGES_MARKER,
    write_synthetic_image_folder,
)
from mgic_geo.data.split import check_fraction, stratified_split
from mgic_geo.validation import check_int

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_SOURCES = ("auto", "archive", "folder", "synthetic")
DEFAULT_VAL_FRACTION = 0.1


class FitSize:
    """Resize to ``size x size`` (bilinear) only when the image is not that size already.

    Args:
        size (int): the side of the output image.
    """

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.size == (self.size, self.size) else image.resize((self.size, self.size), Image.BILINEAR)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.size})"


class _ClassificationDataModule(BaseDataModule):
    """Splits shared by the image data modules (loaders: :class:`~mgic_geo.data.base.BaseDataModule`).

    ``eval_set`` is the root's own evaluation split (what :meth:`test_dataloader` serves, also as
    ``test_set``), ``val_set`` what :meth:`val_dataloader` serves: a held-out share of the training
    images, or ``eval_set`` (see the module docstring), or nothing. A subclass sets ``class_names``
    and the transforms, and defines :meth:`_has_eval_split`, :meth:`_no_eval_split`,
    :meth:`_training_images` and :meth:`_evaluation_images`.

    Args:
        root (str): the data root.
        val_fraction (float, optional): the share of each class's training images held out for
            validation, in ``[0, 1)``; ``None``: see :meth:`held_out_fraction`.
        split_seed (int): which images are held out (:func:`mgic_geo.data.split.stratified_split`).
        **kwargs: ``batch_size``, ``num_workers``, ``seed`` and the flags of
            :class:`~mgic_geo.data.base.BaseDataModule`.
    """

    sample_name = "images"
    eval_set: Dataset | None = None
    #: where validation comes from after :meth:`setup`: ``"held_out"`` (a share of the training
    #: images), ``"eval_split"`` (the root's evaluation split, which testing serves too) or ``None``
    validation: str | None = None
    _class_names: list[str] | None = None

    def __init__(self, root: str, *, val_fraction: float | None, split_seed: int, **kwargs) -> None:
        if val_fraction is not None:
            check_fraction("val_fraction", val_fraction)
        check_int("split_seed", split_seed, minimum=0)
        super().__init__(root, **kwargs)
        self.val_fraction = None if val_fraction is None else float(val_fraction)
        self.split_seed = split_seed

    @property
    def test_set(self) -> Dataset | None:
        """The root's evaluation split (``eval_set``), which :meth:`test_dataloader` serves."""
        return self.eval_set

    @property
    def class_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

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
                self.check_train_size(len(train))
            if validate and self.val_set is None and val is not None:
                self.val_set, self.validation = val, "held_out" if len(val) else None
        if has_eval and self.eval_set is None:
            self.eval_set = self._evaluation_images()
        if validate and self.val_set is None:  # nothing held out
            if self.val_fraction is None and has_eval:
                self.val_set, self.validation = self.eval_set, "eval_split"
            else:
                self.val_set, self.validation = [], None


class CIFAR10DataModule(_ClassificationDataModule):
    """CIFAR-10 as ``(images [B, 3, image_size, image_size], labels [B])`` batches from the official
    python archive, class folders, or generated stand-in images.

    CIFAR-10 has no validation split. On a root with a test split (the archive's ``test_batch``, or
    ``test/`` class folders) :meth:`val_dataloader` serves it by default, as before: numbers for
    monitoring only, since testing evaluates the same images. Pass ``val_fraction`` to validate on a
    held-out share of the training images instead. On a root holding only ``train/`` (e.g. the CIFAR-10
    training split as an image folder) ``val_fraction`` defaults to 0.1 (5,000 of the 50,000 images),
    and :meth:`test_dataloader` raises a ``ValueError`` naming the missing ``test/`` folder.

    Args:
        root (str): the data root (see ``source``).
        source (str): ``"auto"`` (archive if ``<root>/cifar-10-batches-py`` exists, else the synthetic
            marker's images, else class folders; an empty root with ``download=True`` downloads),
            ``"archive"`` (``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``),
            ``"folder"`` (``<root>/{train,test}/<class>/*.png|jpg``, ``test/`` optional) or ``"synthetic"`` (write
            :func:`write_synthetic_image_folder` images into ``root`` if missing, read them as folders).
        batch_size (int): images per batch; the training loader drops the last incomplete batch.
        num_workers (int): ``DataLoader`` worker processes (0: load in the main process).
        augment (bool): random crop (padding ``image_size // 8``, 4 for 32) and horizontal flip for
            training; ``False`` keeps only the resizing and normalisation.
        download (bool): fetch the official archive into an empty root (:func:`download_cifar10`: checked against its
            published MD5 before it is opened, extracted safely).
        seed (int): seeds the training shuffle and the worker seeds.
        val_fraction (float, optional): the share of each class's training images held out for validation, in
            ``[0, 1)`` (0: no validation); ``None``: 0.1 on a root without a test split, else validate
            on the test split (monitoring only).
        split_seed (int): which images are held out (:func:`mgic_geo.data.split.stratified_split`:
            stratified per class, the same images for the same seed and files).
        synthetic_images ((int, int)): ``(train, test)`` images per class for ``source="synthetic"``.
        synthetic_seed (int): seed of the synthetic images (separate from ``seed``).
        image_size (int): side of the batched images; images of another size are resized (bilinear).

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
        if source not in CIFAR10_SOURCES:
            raise ValueError(f"`source` must be one of {CIFAR10_SOURCES}, got {source!r}")
        check_int("synthetic_seed", synthetic_seed, minimum=0)
        check_int("image_size", image_size, minimum=8)
        pair = check_count_pair("synthetic_images", synthetic_images)
        super().__init__(root, val_fraction=val_fraction, split_seed=split_seed, batch_size=batch_size,
                         num_workers=num_workers, seed=seed, augment=augment, download=download)
        self.save_hyperparameters()
        self.source, self.image_size = source, image_size
        self.synthetic_images, self.synthetic_seed = pair, synthetic_seed
        self.resolved: str | None = None  # "archive" or "folder" once found
        normalize = [T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
        fit = [FitSize(image_size)]
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
        return ClassFolder(self.root / "train", self.train_transform)

    def _evaluation_images(self):
        if self._resolve() == "archive":
            images, labels, _ = read_cifar10_archive(self.root / CIFAR10_ARCHIVE_DIR, train=False)
            return ArrayImages(images, labels, self.eval_transform)
        return ClassFolder(self.root / "test", self.eval_transform)


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

    Args:
        root (str): the data root.
        batch_size (int): images per batch; the training loader drops the last incomplete batch.
        num_workers (int): ``DataLoader`` worker processes.
        augment (bool): the random training transform (see above).
        seed (int): seeds the training shuffle and the worker seeds.
        val_fraction (float, optional): the share of each class's training images held out for validation, in
            ``[0, 1)`` (0: no validation); ``None``: 0.1 on a root without ``val/``, else validate on ``val/``.
        split_seed (int): which images are held out (:func:`mgic_geo.data.split.stratified_split`).
        image_size (int): side of the batched images (224 for ImageNet).
        resize_size (int, optional): shorter side before the evaluation centre crop; ``None``:
            ``image_size * 256 / 224``.
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
        check_int("image_size", image_size)
        resize_size = round(image_size * 256 / 224) if resize_size is None else resize_size
        check_int("resize_size", resize_size, minimum=image_size)
        super().__init__(root, val_fraction=val_fraction, split_seed=split_seed, batch_size=batch_size,
                         num_workers=num_workers, seed=seed, augment=augment)
        self.save_hyperparameters()
        self.image_size, self.resize_size = image_size, resize_size
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

    def _has_eval_split(self) -> bool:
        return (self.root / "val").is_dir()

    def _no_eval_split(self) -> ValueError:
        return ValueError(f"image data root {str(self.root)!r}: no val/ folder to test on: {str(self.root / 'val')!r} "
                          "does not exist (this root holds the training split only; validation uses a held-out share "
                          "of it, `val_fraction`)")

    def _training_images(self):
        return ClassFolder(self.root / "train", self.train_transform)

    def _evaluation_images(self):
        return ClassFolder(self.root / "val", self.eval_transform)
