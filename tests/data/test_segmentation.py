"""Segmentation folders: paired batches, joint augmentation that keeps image and mask aligned, and a
clear error for every bad pair; nothing on disk changes."""
import numpy as np
import pytest
import torch
from PIL import Image

from mgic_geo.data import SegmentationFolderDataModule
from mgic_geo.data.images import IMAGENET_MEAN, IMAGENET_STD
from mgic_geo.data.segmentation import find_pairs


def snapshot(root):
    return {p.relative_to(root): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def write_pairs(root, count=3, size=(24, 20)):
    """Images whose red channel is ``50 * class`` of the mask (so alignment can be checked), masks with
    classes 0..2 and ignored (255) pixels; one mask is a palette PNG."""
    rng = np.random.default_rng(0)
    width, height = size
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(count):
            mask = rng.choice(np.array([0, 1, 2, 255], np.uint8), size=(height, width), p=[0.4, 0.3, 0.2, 0.1])
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            image[..., 0] = np.where(mask == 255, 250, mask * 50)
            Image.fromarray(image).save(root / split / "images" / f"p{i}.png")
            mask_image = Image.fromarray(mask)
            if i == 1:
                mask_image = mask_image.convert("P")
                assert np.array_equal(np.array(mask_image), mask)
            mask_image.save(root / split / "masks" / f"p{i}.png")
    return root


def red(images):
    """The red channel back in 0..255."""
    return (images[:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255


def test_batches_shapes_and_alignment(tmp_path):
    root = write_pairs(tmp_path / "seg")
    before = snapshot(root)
    dm = SegmentationFolderDataModule(str(root), num_classes=3, batch_size=2, crop_size=16, scale_range=(1.0, 1.0))
    dm.setup("fit")
    for _ in range(3):
        images, masks = next(iter(dm.train_dataloader()))
        assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float32
        assert masks.shape == (2, 16, 16) and masks.dtype == torch.int64
        # scale 1: crop and flip are exact, so each pixel still carries its own class
        assert torch.allclose(red(images), torch.where(masks == 255, 250, masks * 50).float(), atol=1e-3)
    images, masks = next(iter(dm.val_dataloader()))
    assert images.shape == (1, 3, 20, 24) and masks.shape == (1, 20, 24)
    assert torch.equal(masks[0], torch.from_numpy(np.array(Image.open(root / "val" / "masks" / "p0.png"), dtype=np.int64)))
    assert next(iter(dm.test_dataloader()))[1].shape == (1, 20, 24)
    assert snapshot(root) == before


def test_random_scale_pads_with_ignore_index_and_flips(tmp_path):
    root = write_pairs(tmp_path / "seg")
    dm = SegmentationFolderDataModule(str(root), num_classes=3, batch_size=3, crop_size=40, scale_range=(0.5, 1.5))
    dm.setup("fit")
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (3, 3, 40, 40) and masks.shape == (3, 40, 40)
    assert set(masks.unique().tolist()) <= {0, 1, 2, 255} and (masks == 255).float().mean() > 0.5  # mostly padding
    draws = [dm.train_set[0][1] for _ in range(6)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    plain = SegmentationFolderDataModule(str(root), num_classes=3, batch_size=3, augment=False)
    plain.setup("fit")
    images, masks = next(iter(plain.train_dataloader()))
    assert images.shape == (3, 3, 20, 24) and torch.equal(plain.train_set[0][1], plain.train_set[0][1])


def test_mask_size_mismatch_names_both(tmp_path):
    root = write_pairs(tmp_path / "seg")
    Image.new("L", (10, 12)).save(root / "train" / "masks" / "p2.png")
    before = snapshot(root)
    with pytest.raises(ValueError, match=r"mask .*train/masks/p2\.png is 10x12 \(width x height\) but its image "
                                         r".*train/images/p2\.png is 24x20"):
        SegmentationFolderDataModule(str(root), num_classes=3, batch_size=1).setup("fit")
    assert snapshot(root) == before


def test_missing_partners_and_layout(tmp_path):
    root = write_pairs(tmp_path / "seg")
    (root / "val" / "masks" / "p1.png").unlink()
    with pytest.raises(ValueError, match=r"image .*val/images/p1\.png has no mask in .*val/masks \(expected p1\.png"):
        find_pairs(root, "val")
    Image.new("L", (24, 20)).save(root / "train" / "masks" / "extra.png")
    with pytest.raises(ValueError, match=r"mask .*train/masks/extra\.png has no image"):
        find_pairs(root, "train")
    with pytest.raises(ValueError, match=r"no val/images/ folder\nexpected:\n.*\n +train/images/<name>"):
        find_pairs(tmp_path / "nothing", "val")
    (tmp_path / "empty" / "val" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "val" / "masks").mkdir()
    with pytest.raises(ValueError, match=r"val/images/ holds no images"):
        find_pairs(tmp_path / "empty", "val")


def test_bad_masks_and_images_are_named_on_read(tmp_path):
    root = write_pairs(tmp_path / "seg")
    Image.fromarray(np.full((20, 24), 7, np.uint8)).save(root / "val" / "masks" / "p0.png")
    dm = SegmentationFolderDataModule(str(root), num_classes=3, batch_size=1)
    dm.setup("validate")
    with pytest.raises(ValueError, match=r"val/masks/p0\.png: mask values \[7\] are neither classes \(0\.\.2\) nor ignore_index \(255\)"):
        dm.val_set[0]
    Image.new("RGB", (24, 20)).save(root / "val" / "masks" / "p1.png")
    with pytest.raises(ValueError, match=r"val/masks/p1\.png: a mask must be a single-channel .* found mode RGB"):
        dm.val_set[1]
    image = root / "val" / "images" / "p2.png"
    image.write_bytes(image.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"val/images/p2\.png: unreadable or truncated image"):
        dm.val_set[2]


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "`batch_size` must be a positive integer"),
    ({"num_classes": 3, "ignore_index": 2}, r"`ignore_index` \(2\) must not be a class index"),
    ({"scale_range": (2.0, 1.0)}, "`scale_range` must be a"),
    ({"crop_size": -1}, "`crop_size` must be a positive integer"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SegmentationFolderDataModule("unused", **kwargs)


def test_batch_size_larger_than_the_training_pairs(tmp_path):
    root = write_pairs(tmp_path / "seg")
    with pytest.raises(ValueError, match=r"`batch_size` \(4\) exceeds the 3 training pairs"):
        SegmentationFolderDataModule(str(root), num_classes=3, batch_size=4).setup("fit")
