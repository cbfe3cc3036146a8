"""Semantic segmentation from paired image / mask folders, for Lightning.

Layout::

    <root>/
      train/images/<name>.png|jpg|jpeg   train/masks/<name>.png   (one mask per image, same stem)
      val/images/<name>.png|jpg|jpeg     val/masks/<name>.png

Masks are single-channel integer PNGs (PIL mode ``L`` or ``P``, the palette index being the class):
values ``0 .. num_classes - 1`` are classes and ``ignore_index`` (255 by default) marks pixels that
count for nothing. At :meth:`SegmentationFolderDataModule.setup` every pair is matched and the image
and mask sizes compared from their headers (cheap); pixel data are decoded and checked (truncation,
mask values) when each pair is first read. Nothing on disk is written.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from mgic_geo.data.base import BaseDataModule
from mgic_geo.data.errors import check_data_file
from mgic_geo.data.image_files import is_image_file, load_image
from mgic_geo.data.images import IMAGENET_MEAN, IMAGENET_STD
from mgic_geo.validation import check_int

SEGMENTATION_SPLITS = ("train", "val")
SEGMENTATION_LAYOUT = """expected:
  {root}/
    train/images/<name>.png|jpg|jpeg
    train/masks/<name>.png          (integer class per pixel, PIL mode L or P)
    val/images/<name>.png|jpg|jpeg
    val/masks/<name>.png"""


def _header_size(path: Path) -> tuple[int, int]:
    check_data_file(path)
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: unreadable image ({err})") from None


def find_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """The ``(image, mask)`` pairs of ``<root>/<split>``, sorted by name; ``ValueError`` for a wrong
    layout (with the expected tree), an image without a mask or a mask without an image (named), or an
    image and mask of different sizes (both named with their sizes)."""
    root = Path(root)
    tree = SEGMENTATION_LAYOUT.format(root=root)
    folders = {kind: root / split / kind for kind in ("images", "masks")}
    for kind, folder in folders.items():
        if not folder.is_dir():
            raise ValueError(f"segmentation data root {str(root)!r}: no {split}/{kind}/ folder\n{tree}")
    found = {kind: {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and is_image_file(p)}
             for kind, folder in folders.items()}
    for folder in folders.values():
        stems = [p.stem for p in folder.iterdir() if p.is_file() and is_image_file(p)]
        if len(stems) != len(set(stems)):
            twice = sorted({s for s in stems if stems.count(s) > 1})
            raise ValueError(f"{folder}: several files share the name(s) {', '.join(twice[:5])} (e.g. a .png and a .jpg)")
    if not found["images"]:
        raise ValueError(f"segmentation data root {str(root)!r}: {split}/images/ holds no images\n{tree}")
    lonely = sorted(set(found["images"]) - set(found["masks"]))
    if lonely:
        raise ValueError(f"image {found['images'][lonely[0]]} has no mask in {folders['masks']} (expected {lonely[0]}.png; "
                         f"{len(lonely)} image(s) without a mask in all)")
    orphan = sorted(set(found["masks"]) - set(found["images"]))
    if orphan:
        raise ValueError(f"mask {found['masks'][orphan[0]]} has no image in {folders['images']} "
                         f"({len(orphan)} mask(s) without an image in all)")
    pairs = [(found["images"][stem], found["masks"][stem]) for stem in sorted(found["images"])]
    for image, mask in pairs:
        image_size, mask_size = _header_size(image), _header_size(mask)
        if image_size != mask_size:
            raise ValueError(f"mask {mask} is {mask_size[0]}x{mask_size[1]} (width x height) but its image {image} is "
                             f"{image_size[0]}x{image_size[1]}")
    return pairs


def load_mask(path: str | Path, num_classes: int, ignore_index: int) -> np.ndarray:
    """An ``int64 [H, W]`` array of class indices; ``ValueError`` naming the file for an unreadable
    or non-integer (not ``L``/``P``) mask, or values that are neither classes nor ``ignore_index``; before
    it is opened, for a path that is not a regular file or is larger than :func:`~mgic_geo.data.errors.max_file_bytes`."""
    check_data_file(path)
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P"):
                raise ValueError(f"{path}: a mask must be a single-channel integer image (PIL mode L or P), found mode {image.mode}")
            mask = np.array(image, dtype=np.int64)
    except (OSError, SyntaxError) as err:
        raise ValueError(f"{path}: unreadable or truncated mask ({err})") from None
    bad = np.unique(mask[(mask >= num_classes) & (mask != ignore_index)])
    if len(bad):
        raise ValueError(f"{path}: mask values {bad[:10].tolist()} are neither classes (0..{num_classes - 1}) nor "
                         f"ignore_index ({ignore_index})")
    return mask


class SegmentationPairs(Dataset):
    """Item ``i`` is ``(image float [3, H, W] normalised, mask int64 [H, W])``.

    Args:
        pairs (list[tuple[Path, Path]]): ``(image, mask)`` paths.
        num_classes (int): classes in the masks.
        ignore_index (int): the mask value to ignore.
        crop_size (int | None): ``None`` keeps the full image (evaluation); an integer applies the training
            transform: random scale by a factor in ``scale_range`` (bilinear image, nearest mask), padding
            to ``crop_size`` (image 0 after normalisation, mask ``ignore_index``), a random
            ``crop_size``-square crop and a random horizontal flip, all drawn from torch's generator.
    """

    def __init__(self, pairs: list[tuple[Path, Path]], num_classes: int, ignore_index: int, *, crop_size: int | None = None,
                 scale_range: tuple[float, float] = (0.5, 2.0), mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.pairs, self.num_classes, self.ignore_index = pairs, num_classes, ignore_index
        self.crop_size, self.scale_range = crop_size, scale_range
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.pairs)

    def _augment(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        low, high = self.scale_range
        scale = low + (high - low) * torch.rand(()).item()
        height, width = mask.shape
        size = [max(1, round(height * scale)), max(1, round(width * scale))]
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
        crop = self.crop_size
        pad_h, pad_w = max(0, crop - size[0]), max(0, crop - size[1])
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
            mask = F.pad(mask, (0, pad_w, 0, pad_h), value=self.ignore_index)
        top = int(torch.randint(0, mask.shape[0] - crop + 1, ()).item())
        left = int(torch.randint(0, mask.shape[1] - crop + 1, ()).item())
        image, mask = image[:, top:top + crop, left:left + crop], mask[top:top + crop, left:left + crop]
        if torch.rand(()).item() < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return image, mask

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, mask_path = self.pairs[index]
        image = torch.from_numpy(np.array(load_image(image_path))).permute(2, 0, 1).float().div(255)
        mask = torch.from_numpy(load_mask(mask_path, self.num_classes, self.ignore_index))
        image = (image - self.mean) / self.std
        if self.crop_size is not None:
            image, mask = self._augment(image, mask)
        return image.contiguous(), mask.contiguous()


class SegmentationFolderDataModule(BaseDataModule):
    """Paired image / mask folders (see the module docstring) as ``(images float [B, 3, H, W],
    masks int64 [B, H, W])`` batches, images normalised with ImageNet's mean and std.

    Args:
        root (str): the data root.
        num_classes (int): classes in the masks (values ``0 .. num_classes - 1``).
        ignore_index (int): mask value of unlabelled pixels (padding gets it too).
        batch_size (int): training pairs per batch (the last incomplete batch is dropped).
        val_batch_size (int): validation pairs per batch; validation images keep their full size, so
            more than 1 needs images of one size.
        num_workers (int): ``DataLoader`` worker processes.
        augment (bool): the joint random scale / pad / crop / flip for training; ``False`` trains on
            full-size pairs (which then must share a size for ``batch_size > 1``).
        crop_size (int): side of the training crops.
        scale_range ((float, float)): ``(low, high)`` range of the random training scale factor.
        seed (int): seeds the training shuffle and the worker seeds.
    """

    sample_name = "pairs"

    def __init__(
        self,
        root: str = "datasets/segmentation",
        *,
        num_classes: int = 21,
        ignore_index: int = 255,
        batch_size: int = 8,
        val_batch_size: int = 1,
        num_workers: int = 0,
        augment: bool = True,
        crop_size: int = 512,
        scale_range: tuple[float, float] = (0.5, 2.0),
        seed: int = 0,
    ) -> None:
        check_int("num_classes", num_classes)
        check_int("ignore_index", ignore_index, minimum=0)
        if ignore_index < num_classes:
            raise ValueError(f"`ignore_index` ({ignore_index}) must not be a class index (num_classes={num_classes})")
        check_int("val_batch_size", val_batch_size)
        check_int("crop_size", crop_size)
        if (not isinstance(scale_range, (tuple, list)) or len(scale_range) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in scale_range)
                or not 0 < scale_range[0] <= scale_range[1]):
            raise ValueError(f"`scale_range` must be a (low, high) pair with 0 < low <= high, got {scale_range!r}")
        super().__init__(root, batch_size=batch_size, num_workers=num_workers, seed=seed, augment=augment)
        self.save_hyperparameters()
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.val_batch_size, self.crop_size, self.scale_range = val_batch_size, crop_size, tuple(map(float, scale_range))
        self.train_set: SegmentationPairs | None = None
        self.val_set: SegmentationPairs | None = None

    def setup(self, stage: str | None = None) -> None:
        """Match and check the training pairs (``stage`` ``"fit"`` or ``None``) and the validation pairs."""
        if stage in (None, "fit") and self.train_set is None:
            pairs = find_pairs(self.root, "train")
            self.check_train_size(len(pairs))
            self.train_set = SegmentationPairs(pairs, self.num_classes, self.ignore_index,
                                               crop_size=self.crop_size if self.augment else None, scale_range=self.scale_range)
        if self.val_set is None:
            self.val_set = SegmentationPairs(find_pairs(self.root, "val"), self.num_classes, self.ignore_index)

    @property
    def eval_batch_size(self) -> int:
        """Validation pairs per batch (``val_batch_size``)."""
        return self.val_batch_size

    def test_dataloader(self) -> DataLoader:
        """The validation split again."""
        return self.val_dataloader()
