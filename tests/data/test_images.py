"""Image classification data: the synthetic generator, CIFAR-10 from the archive / folders / synthetic
images, ImageNet-style folders, and a clear error for every bad input; nothing on disk changes."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mgic_geo.data import (
    CIFAR10DataModule,
    ImageFolderDataModule,
    load_image,
    read_cifar10_archive,
    write_synthetic_image_folder,
)
from mgic_geo.data.image_synthetic import PATTERNS, SYNTHETIC_IMAGES_MARKER
from mgic_geo.data.images import CIFAR10_MEAN, CIFAR10_STD

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def snapshot(root):
    return {p.relative_to(root): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def write_archive(root, *, per_train_batch=1, test=5, seed=0):
    """A tiny archive in the official format: 5 training images (one per batch) and 5 test images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": NAMES, "num_cases_per_batch": per_train_batch, "num_vis": 3072}, handle, protocol=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        count = test if name == "test_batch" else per_train_batch
        batch = {"batch_label": name, "data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in rng.integers(0, 10, count)], "filenames": [f"{name}_{i}.png" for i in range(count)]}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    return root


def write_folder(root, splits=("train", "test"), classes=("ant", "bee", "cow"), per_class=2, sizes=((32, 32), (40, 36))):
    rng = np.random.default_rng(1)
    for split in splits:
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                width, height = sizes[i % len(sizes)]
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                suffix = ".png" if i % 2 == 0 else ".jpg"
                Image.fromarray(pixels).save(root / split / name / f"{name}_{i}{suffix}")
    return root


# --- the synthetic generator -------------------------------------------------------------------------------------

def test_synthetic_images_are_deterministic_valid_pngs(tmp_path):
    first = snapshot(write_synthetic_image_folder(tmp_path / "a", images_per_class=(2, 1), size=16, seed=3))
    second = snapshot(write_synthetic_image_folder(tmp_path / "b", images_per_class=(2, 1), size=16, seed=3))
    other = snapshot(write_synthetic_image_folder(tmp_path / "c", images_per_class=(2, 1), size=16, seed=4))
    pngs = [k for k in first if k.suffix == ".png"]
    assert len(pngs) == 10 * 3 and {k: v[0] for k, v in first.items()} == {k: v[0] for k, v in second.items()}
    assert all(first[k][0] != other[k][0] for k in pngs) and len({first[k][0] for k in pngs}) == len(pngs)
    assert sorted(p.name for p in (tmp_path / "a" / "train").iterdir()) == sorted(PATTERNS)
    for path in pngs:
        with Image.open(tmp_path / "a" / path) as image:
            image.verify()
        with Image.open(tmp_path / "a" / path) as image:
            assert image.format == "PNG" and image.mode == "RGB" and image.size == (16, 16)


def test_synthetic_rerun_is_a_no_op_and_foreign_roots_are_refused(tmp_path):
    root = write_synthetic_image_folder(tmp_path / "s", classes=3, images_per_class=(1, 1), size=8)
    before = snapshot(root)
    write_synthetic_image_folder(root, classes=3, images_per_class=(1, 1), size=8)
    assert snapshot(root) == before
    with pytest.raises(ValueError, match=r"synthetic_images.json records .*'seed': 0.* but .*'seed': 1.* nothing was changed"):
        write_synthetic_image_folder(root, classes=3, images_per_class=(1, 1), size=8, seed=1)
    assert snapshot(root) == before
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"refusing to write synthetic images into .*user.*\(no synthetic_images.json\)"):
        write_synthetic_image_folder(user)
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]
    with pytest.raises(ValueError, match="`classes` must be at most 10"):
        write_synthetic_image_folder(tmp_path / "x", classes=11)
    with pytest.raises(ValueError, match="`images_per_class` must be a"):
        write_synthetic_image_folder(tmp_path / "x", images_per_class=3)


# --- CIFAR-10: the three sources ---------------------------------------------------------------------------------

def batches(dm):
    dm.prepare_data()
    dm.setup("fit")
    return next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader())), next(iter(dm.test_dataloader()))


def test_archive_is_detected_and_read_exactly(tmp_path):
    root = write_archive(tmp_path)
    before = snapshot(root)
    dm = CIFAR10DataModule(str(root), batch_size=5, augment=False)
    train, val, test = batches(dm)
    assert dm.resolved == "archive" and dm.class_names == NAMES and dm.num_classes == 10
    for images, labels in (train, val, test):
        assert images.shape == (5, 3, 32, 32) and images.dtype == torch.float32 and labels.shape == (5,)
        assert labels.dtype == torch.int64
    raw, labels, names = read_cifar10_archive(root / "cifar-10-batches-py", train=False)
    assert raw.shape == (5, 32, 32, 3) and names == NAMES
    expected = (torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255 - torch.tensor(CIFAR10_MEAN).view(3, 1, 1)) \
        / torch.tensor(CIFAR10_STD).view(3, 1, 1)
    assert torch.allclose(val[0], expected, atol=1e-6) and val[1].tolist() == labels.tolist()
    with open(root / "cifar-10-batches-py" / "test_batch", "rb") as handle:  # channel-first rows, as in the official files
        row = pickle.load(handle)["data"][0]
    assert (raw[0, 0, :, 0] == row[:32]).all() and (raw[0, 0, :, 2] == row[2048:2080]).all()
    assert snapshot(root) == before


def test_folder_is_detected_and_resized(tmp_path):
    root = write_folder(tmp_path / "f")
    before = snapshot(root)
    dm = CIFAR10DataModule(str(root), batch_size=4)
    train, val, _ = batches(dm)
    assert dm.resolved == "folder" and dm.class_names == ["ant", "bee", "cow"] and dm.num_classes == 3
    assert train[0].shape == (4, 3, 32, 32) and val[0].shape == (4, 3, 32, 32)  # the 40x36 images were resized
    assert sorted(val[1].tolist()) == [0, 0, 1, 1]
    small = CIFAR10DataModule(str(root), source="folder", batch_size=2, image_size=16)
    assert batches(small)[0][0].shape == (2, 3, 16, 16)
    assert snapshot(root) == before


def test_synthetic_source_then_auto_reads_it(tmp_path):
    root = tmp_path / "syn"
    dm = CIFAR10DataModule(str(root), source="synthetic", synthetic_images=(2, 1), batch_size=8)
    train, val, _ = batches(dm)
    assert (root / SYNTHETIC_IMAGES_MARKER).is_file() and dm.class_names == sorted(PATTERNS)
    assert train[0].shape == (8, 3, 32, 32) and val[0].shape == (8, 3, 32, 32) and len(dm.eval_set) == 10
    before = snapshot(root)
    again = CIFAR10DataModule(str(root), batch_size=4)
    assert batches(again)[1][0].shape == (4, 3, 32, 32) and again.resolved == "folder"
    assert snapshot(root) == before


def test_augmentation_on_and_off(tmp_path):
    root = write_synthetic_image_folder(tmp_path, images_per_class=(1, 1), size=32)
    plain = CIFAR10DataModule(str(root), augment=False, batch_size=2)
    plain.setup("fit")
    assert torch.equal(plain.train_set[0][0], plain.train_set[0][0])
    assert torch.equal(plain.train_set[0][0], plain.eval_transform(load_image(plain.train_set.samples[0][0])))
    augmented = CIFAR10DataModule(str(root), augment=True, batch_size=2)
    augmented.setup("fit")
    draws = [augmented.train_set[0][0] for _ in range(8)]
    assert all(d.shape == (3, 32, 32) for d in draws)
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    assert torch.equal(augmented.eval_set[0][0], augmented.eval_set[0][0])  # evaluation is never random
    # seeded shuffling: the same seed gives the same training order
    orders = [torch.cat([y for _, y in CIFAR10DataModule(str(root), augment=False, batch_size=2, seed=5).train_dataloader()])
              for _ in range(2)]
    assert torch.equal(orders[0], orders[1])


def test_image_folder_datamodule(tmp_path):
    root = write_folder(tmp_path / "imagenet", splits=("train", "val"), sizes=((30, 20), (24, 40)))
    before = snapshot(root)
    dm = ImageFolderDataModule(str(root), batch_size=3, image_size=16)
    train, val, test = batches(dm)
    assert dm.num_classes == 3 and dm.resize_size == 18
    for images, labels in (train, val, test):
        assert images.shape == (3, 3, 16, 16) and images.dtype == torch.float32 and labels.dtype == torch.int64
    plain = ImageFolderDataModule(str(root), batch_size=3, image_size=16, augment=False)
    plain.setup("fit")
    assert torch.equal(plain.train_set[0][0], plain.train_set[0][0])
    cifar_style = ImageFolderDataModule(str(write_folder(tmp_path / "cifar_style")), batch_size=3)
    cifar_style.setup("fit")  # no val/ (its test/ is not ImageFolderDataModule's): one of two images per class held out
    assert len(cifar_style.train_set) == len(cifar_style.val_set) == 3 and cifar_style.validation == "held_out"
    with pytest.raises(ValueError, match=r"no val/ folder to test on: '.*cifar_style/val' does not exist"):
        cifar_style.test_dataloader()
    with pytest.raises(ValueError, match="`resize_size` must be an integer >= 224"):
        ImageFolderDataModule(str(root), resize_size=200)
    assert snapshot(root) == before


# --- bad input ---------------------------------------------------------------------------------------------------

def test_truncated_or_non_image_files_are_named_on_first_read(tmp_path):
    root = write_folder(tmp_path / "f")
    victim = root / "train" / "bee" / "bee_0.png"
    victim.write_bytes(victim.read_bytes()[:200])
    before = snapshot(root)
    dm = CIFAR10DataModule(str(root), batch_size=6, augment=False)
    dm.setup("fit")
    with pytest.raises(ValueError, match=r"bee_0\.png: unreadable or truncated image"):
        list(dm.train_dataloader())
    (root / "test" / "cow" / "cow_0.png").write_text("not a picture")
    with pytest.raises(ValueError, match=r"cow_0\.png: unreadable or truncated image .*cannot identify"):
        list(dm.val_dataloader())
    assert {k: v for k, v in snapshot(root).items() if k.name != "cow_0.png"} == {k: v for k, v in before.items() if k.name != "cow_0.png"}


def test_layout_errors_name_the_problem(tmp_path):
    root = write_folder(tmp_path / "differ", classes=("ant", "bee"))
    (root / "train" / "cat").mkdir()
    Image.new("RGB", (32, 32)).save(root / "train" / "cat" / "c.png")
    (root / "test" / "dog").mkdir()
    Image.new("RGB", (32, 32)).save(root / "test" / "dog" / "d.png")
    with pytest.raises(ValueError, match=r"class folders differ between train/ and test/ \(only in train/: cat; only in test/: dog\)"):
        CIFAR10DataModule(str(root)).setup("fit")
    empty = write_folder(tmp_path / "empty")
    (empty / "test" / "owl").mkdir()
    (empty / "train" / "owl").mkdir()
    (empty / "train" / "owl" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"class folder '.*train/owl' holds no images"):
        CIFAR10DataModule(str(empty), source="folder").setup("fit")
    half = tmp_path / "half"
    (half / "train" / "ant").mkdir(parents=True)
    for source in ("auto", "folder"):  # train/ alone is a folder root (test/ is optional): its empty class is named
        with pytest.raises(ValueError, match=r"class folder '.*half/train/ant' holds no images"):
            CIFAR10DataModule(str(half), source=source).setup("fit")
    (tmp_path / "other" / "pictures").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"cannot tell the layout \(found pictures\).*\nexpected one of:\n.*cifar-10-batches-py"):
        CIFAR10DataModule(str(tmp_path / "other")).setup("fit")
    with pytest.raises(ValueError, match=r"no cifar-10-batches-py/ folder .*download=True"):
        CIFAR10DataModule(str(half), source="archive").setup("fit")
    with pytest.raises(ValueError, match=r"cannot tell the layout \(found nothing\).*source='synthetic'"):
        CIFAR10DataModule(str(tmp_path / "missing")).setup("fit")
    assert not (tmp_path / "missing").exists()


def test_broken_archives_name_the_file(tmp_path):
    root = write_archive(tmp_path / "a")
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ValueError, match=r"missing file '.*data_batch_3'\nexpected one of"):
        CIFAR10DataModule(str(root)).setup("fit")
    root = write_archive(tmp_path / "b")
    test_batch = root / "cifar-10-batches-py" / "test_batch"
    test_batch.write_bytes(test_batch.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"test_batch: not a readable CIFAR-10 python batch"):
        CIFAR10DataModule(str(root)).setup("test")
    root = write_archive(tmp_path / "c")
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as handle:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, handle)
    with pytest.raises(ValueError, match=r"test_batch: 'data' must be a uint8 array \[N, 3072\], found \(\(2, 100\)"):
        CIFAR10DataModule(str(root)).setup("test")
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as handle:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, handle)
    with pytest.raises(ValueError, match=r"test_batch: 'labels' must be 2 integers in \[0, 10\)"):
        CIFAR10DataModule(str(root)).setup("test")



class _RunsCode:
    def __reduce__(self):
        import os

        return os.system, ("touch pwned",)


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_batch_pickling_anything_but_arrays_is_refused_unrun(tmp_path, monkeypatch, protocol):
    root = write_archive(tmp_path / "a")
    monkeypatch.chdir(tmp_path)
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as handle:
        pickle.dump({"data": _RunsCode(), "labels": [0]}, handle, protocol=protocol)
    with pytest.raises(ValueError, match=r"test_batch: not a readable CIFAR-10 python batch \(UnpicklingError: refused to "
                                         r"load the global (posix|os)\.system"):
        CIFAR10DataModule(str(root)).setup("test")
    assert not (tmp_path / "pwned").exists()
    # arrays pickled with protocol 5 (newer Pythons' default) still load
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as handle:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, handle, protocol=protocol)
    dm = CIFAR10DataModule(str(root))
    dm.setup("test")
    assert len(dm.eval_set) == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "`batch_size` must be a positive integer, got 0"),
    ({"batch_size": True}, "`batch_size` must be a positive integer, got True"),
    ({"source": "zip"}, r"`source` must be one of \('auto', 'archive', 'folder', 'synthetic'\), got 'zip'"),
    ({"num_workers": -1}, "`num_workers` must be a non-negative integer"),
    ({"augment": "yes"}, "`augment` must be True or False"),
    ({"synthetic_images": (1,)}, "`synthetic_images` must be a"),
    ({"image_size": 4}, "`image_size` must be an integer >= 8"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CIFAR10DataModule("unused", **kwargs)


def test_batch_size_larger_than_the_training_set(tmp_path):
    root = write_archive(tmp_path)
    with pytest.raises(ValueError, match=r"`batch_size` \(6\) exceeds the 5 training images"):
        CIFAR10DataModule(str(root), batch_size=6).setup("fit")


def test_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError, match=r"could not download CIFAR-10 from https://.*cifar-10-python\.tar\.gz .*offline.* by hand"):
        CIFAR10DataModule(str(tmp_path / "c"), download=True).prepare_data()  # auto + empty root + download: the archive
    with pytest.raises(ValueError, match="no cifar-10-batches-py/ folder"):
        CIFAR10DataModule(str(write_folder(tmp_path / "f")), source="archive", download=True).prepare_data()  # not empty


# --- validation splits -------------------------------------------------------------------------------------------

def keys(dataset):
    return [str(path) for path, _ in dataset.samples]


def test_a_train_only_folder_validates_on_a_stratified_held_out_split(tmp_path):
    root = write_folder(tmp_path / "f", splits=("train",), per_class=10)
    before = snapshot(root)
    dm = CIFAR10DataModule(str(root), batch_size=4)  # auto: train/ alone is a folder root
    dm.setup("fit")
    assert dm.resolved == "folder" and dm.validation == "held_out" and dm.class_names == ["ant", "bee", "cow"]
    assert len(dm.train_set) == 27 and len(dm.val_set) == 3 and sorted(dm.val_set.targets) == [0, 1, 2]
    assert not set(keys(dm.train_set)) & set(keys(dm.val_set))
    assert dm.val_set.transform is dm.eval_transform and dm.train_set.transform is dm.train_transform
    assert torch.equal(dm.val_set[0][0], dm.val_set[0][0])  # never augmented
    assert sorted(torch.cat([y for _, y in dm.val_dataloader()]).tolist()) == [0, 1, 2]
    again = CIFAR10DataModule(str(root), batch_size=4, seed=7)  # `seed` shuffles, it does not move the split
    again.setup("validate")
    assert keys(again.val_set) == keys(dm.val_set) and again.train_set is None
    other = CIFAR10DataModule(str(root), batch_size=4, split_seed=1)
    other.setup("fit")
    assert keys(other.val_set) != keys(dm.val_set)
    with pytest.raises(ValueError, match=r"no test split to test on: the folder '.*f/test' does not exist"):
        dm.test_dataloader()
    folders = ImageFolderDataModule(str(root), batch_size=4, image_size=16, val_fraction=0.2)
    folders.setup("fit")
    assert len(folders.val_set) == 6 and len(folders.train_set) == 24
    with pytest.raises(ValueError, match=r"no val/ folder to test on: '.*f/val' does not exist"):
        folders.test_dataloader()
    plain = CIFAR10DataModule(str(root), batch_size=4, val_fraction=0)
    plain.setup("fit")
    assert plain.val_dataloader() == [] and plain.validation is None and len(plain.train_set) == 30
    assert snapshot(root) == before


def test_an_explicit_val_fraction_holds_out_training_images_beside_a_test_split(tmp_path):
    root = write_folder(tmp_path / "f", per_class=10)
    default = CIFAR10DataModule(str(root), batch_size=4)
    default.setup("fit")
    assert default.validation == "eval_split" and default.val_set is default.eval_set and len(default.train_set) == 30
    held = CIFAR10DataModule(str(root), batch_size=4, val_fraction=0.2)
    held.setup("fit")
    assert held.validation == "held_out" and len(held.val_set) == 6 and len(held.train_set) == 24
    assert all("/train/" in key for key in keys(held.val_set))
    assert sorted(torch.cat([y for _, y in held.test_dataloader()]).tolist()) == [c for c in range(3) for _ in range(10)]
    archive = write_archive(tmp_path / "a", per_train_batch=8)  # 40 training images, random labels
    dm = CIFAR10DataModule(str(archive), batch_size=4, val_fraction=0.25)
    dm.setup("fit")
    raw, labels, _ = read_cifar10_archive(archive / "cifar-10-batches-py", train=True)
    assert len(dm.train_set) + len(dm.val_set) == 40 and len(dm.eval_set) == 5
    assert sum(any((image == row).all() for row in raw) for image in dm.val_set.images) == len(dm.val_set)
    counts = np.bincount(labels, minlength=10)
    held_out = np.bincount(dm.val_set.labels, minlength=10)
    assert all(abs(held_out[c] - counts[c] / 4) < 1 or (counts[c] >= 2 and held_out[c] == 1) for c in range(10))
    with pytest.raises(ValueError, match=r"`val_fraction` must be a number in \[0, 1\)"):
        CIFAR10DataModule(str(archive), val_fraction=1)
    with pytest.raises(ValueError, match="`split_seed` must be a non-negative integer"):
        ImageFolderDataModule(str(root), split_seed=-1)


CIFAR10_TRAIN = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cifar10-train.tar.gz"


def test_the_real_cifar10_train_folder_holds_out_5000_images_and_cannot_be_tested(tmp_path):
    import tarfile

    if not CIFAR10_TRAIN.is_file():
        pytest.skip(f"the shared CIFAR-10 train split is not there ({CIFAR10_TRAIN.resolve()})")
    with tarfile.open(CIFAR10_TRAIN) as archive:
        archive.extractall(tmp_path, filter="data")  # under tmp_path, never beside the shared archive
    dm = CIFAR10DataModule(str(tmp_path), batch_size=100)
    dm.setup("fit")
    assert dm.resolved == "folder" and len(dm.class_names) == 10
    assert len(dm.train_set) == 45_000 and len(dm.val_set) == 5_000
    assert np.bincount(dm.val_set.targets).tolist() == [500] * 10
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (100, 3, 32, 32) and labels.dtype == torch.int64
    with pytest.raises(ValueError, match=r"no test split to test on: the folder '.*/test' does not exist"):
        dm.test_dataloader()
