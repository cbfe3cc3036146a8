"""ModelNet10DataModule end to end on small roots in tmp_path: batches, seeding, augmentation, the
train/val/test splits, the parsed-shape cache and where it goes, point-cloud roots, the real shared
training split (read only, cached under tmp_path), bad files and bad arguments. Raw files are never changed."""
import hashlib
import re
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import mgic_geo.data.shape_cache as shape_cache
from mgic_geo.data import CLASSES, ModelNet10DataModule, write_synthetic_modelnet
from mgic_geo.data.modelnet import ModelNetShapes, sample_cloud
from mgic_geo.data.readers import read_shape
from mgic_geo.data.shape_cache import default_cache_dir, writable_by_mode
from mgic_geo.data.split import validation_counts

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
REAL = SHARED / "modelnet10-real-sample" / "bathtub" / "train"
REAL_TRAIN = SHARED / "modelnet10-train"  # the official train split as 1,024-point PCD files, no test/ folders
REAL_TRAIN_SIZES = [106, 515, 889, 200, 200, 465, 200, 680, 392, 344]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_modelnet(tmp_path_factory.mktemp("synthetic"), shapes_per_class=(3, 2))


def copy(synthetic, tmp_path) -> Path:
    """A plain (marker-less, so ``auto`` sees meshes) copy of the synthetic root."""
    return Path(shutil.copytree(synthetic, tmp_path / "root", ignore=shutil.ignore_patterns("*.json")))


def raw(root):
    return {p.relative_to(root): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and "processed_mgic" not in p.parts}


def module(root, **kwargs) -> ModelNet10DataModule:
    """A set-up datamodule; no validation split unless ``val_fraction`` is given."""
    options = {"num_points": 64, "batch_size": 4, "val_fraction": 0.0, **kwargs}
    dm = ModelNet10DataModule(root=str(root), **options)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_batches_have_the_promised_shapes_and_types(synthetic, tmp_path):
    root = copy(synthetic, tmp_path)
    before = raw(root)
    dm = module(root, augment=False, val_fraction=0.1)
    assert dm.num_classes == 10 and dm.class_names == list(CLASSES) and dm.layout.source == "meshes"
    train, val = list(dm.train_dataloader()), list(dm.val_dataloader())
    assert len(train) == 20 // 4  # drop_last; one of the three training shapes per class is held out
    assert sorted(torch.cat([b.y for b in val]).tolist()) == list(range(10))
    for batch in train + val:
        size = batch.num_graphs
        assert batch.pos.dtype == torch.float32 and batch.pos.shape == (size * 64, 3)
        assert batch.batch.shape == (size * 64,) and torch.equal(batch.batch, torch.arange(size).repeat_interleave(64))
        assert batch.y.dtype == torch.long and batch.y.shape == (size,)
        radius = torch.stack([batch.pos[batch.batch == i].norm(dim=1).max() for i in range(size)])
        assert torch.allclose(radius, torch.ones(size), atol=1e-5)  # every cloud normalised (no augmentation)
    assert sorted(torch.cat([b.y for b in dm.test_dataloader()]).tolist()) == [c for c in range(10) for _ in range(2)]
    assert (root / "processed_mgic" / "v1" / "chair" / "train").is_dir()
    assert raw(root) == before


def test_test_sampling_is_seeded_across_datamodules_and_epochs(synthetic, tmp_path):
    root = copy(synthetic, tmp_path)
    first, second = module(root, val_fraction=0.1), module(root, val_fraction=0.1)
    epochs = [torch.cat([b.pos for b in dm.test_dataloader()]) for dm in (first, first, second)]
    assert torch.equal(epochs[0], epochs[1]) and torch.equal(epochs[0], epochs[2])
    validation = [torch.cat([b.pos for b in dm.val_dataloader()]) for dm in (first, first, second)]
    assert validation[0].shape == (10 * 64, 3)
    assert torch.equal(validation[0], validation[1]) and torch.equal(validation[0], validation[2])
    other_seed = module(root, seed=1)
    assert not torch.equal(torch.cat([b.pos for b in other_seed.test_dataloader()]), epochs[0])


def test_training_draws_fresh_augmented_points_and_a_seeded_order(synthetic, tmp_path):
    root = copy(synthetic, tmp_path)
    dm = module(root)
    a, b = dm.train_set[0].pos, dm.train_set[0].pos
    assert not torch.equal(a, b)
    loader = dm.train_dataloader()
    order = [torch.cat([batch.y for batch in loader]) for _ in range(2)]
    assert not torch.equal(order[0], order[1])  # reshuffled each epoch
    assert not torch.equal(torch.cat([batch.y for batch in dm.train_dataloader()]), order[0])  # and on a reload
    again = torch.cat([batch.y for batch in module(root).train_dataloader()])
    assert torch.equal(again, order[0])  # ... from a generator seeded with `seed`
    radii = torch.stack([dm.train_set[i].pos.norm(dim=1).max() for i in range(30)])
    assert (radii - 1).abs().max() > 0.05  # scaled and shifted out of the unit sphere's surface


def test_augment_false_is_the_identity_after_normalisation(synthetic, tmp_path):
    dm = module(copy(synthetic, tmp_path), augment=False)
    assert dm.train_transform is None and dm.train_set.transform is None
    torch.manual_seed(7)
    item = dm.train_set[5]
    torch.manual_seed(7)
    plain = sample_cloud(dm.cache.load(dm.train_set.files[5][0]), dm.train_set.num_points)
    assert torch.equal(item.pos, plain.pos)
    assert ModelNet10DataModule(root="x").train_transform is not None


def test_the_cache_is_reused_and_refreshed_when_a_raw_file_changes(synthetic, tmp_path, monkeypatch):
    root = copy(synthetic, tmp_path)
    module(root)
    cache = sorted((root / "processed_mgic").rglob("*.pt"))
    assert len(cache) == 50

    def no_parsing(path):
        raise AssertionError(f"{path} parsed again")
    monkeypatch.setattr(shape_cache, "read_shape", no_parsing)
    dm = module(root)
    next(iter(dm.train_dataloader()))
    monkeypatch.undo()
    edited = root / "bed" / "test" / "bed_0005.off"
    text = edited.read_text()
    edited.write_text(text.replace("OFF\n", "OFF\n# edited\n", 1))
    dm = module(root)
    entries = sorted((root / "processed_mgic" / "v1" / "bed" / "test").glob("bed_0005.off.*.pt"))
    assert len(entries) == 1 and entries[0] not in cache  # re-parsed, the stale entry replaced
    assert len(sorted((root / "processed_mgic").rglob("*.pt"))) == 50


def test_an_unwritable_cache_falls_back_to_memory_with_one_warning(synthetic, tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(shape_cache.torch, "save", read_only)
    with pytest.warns(UserWarning, match="cannot write the shape cache") as caught:
        dm = module(copy(synthetic, tmp_path))
    assert len([w for w in caught if "shape cache" in str(w.message)]) == 1
    assert len(dm.cache.memory) == 50 and dm.train_set[0].pos.shape == (64, 3)


def write_points_root(root: Path) -> None:
    """Ten classes of little clouds, a different format per class, one with huge units, one sparse."""
    import open3d

    rng = np.random.default_rng(0)
    formats = [".npy", ".xyz", ".txt", ".pts", ".pcd", ".ply", ".npy", ".xyz", ".txt", ".npy"]
    for label, (name, suffix) in enumerate(zip(CLASSES, formats)):
        for split, numbers in (("train", (1, 2, 3)), ("test", (4,))):
            (root / name / split).mkdir(parents=True)
            for number in numbers:
                points = rng.normal(size=(200, 3)) * (1 + label)
                if name == "bed":
                    points = points * 1e5 + 3e5  # huge units
                if name == "toilet" and split == "test":
                    points = points[:10]  # fewer points than num_points
                path = root / name / split / f"{name}_{number:04d}{suffix}"
                if suffix == ".npy":
                    np.save(path, points)
                elif suffix in (".pcd", ".ply"):
                    open3d.io.write_point_cloud(str(path), open3d.geometry.PointCloud(open3d.utility.Vector3dVector(points)))
                else:
                    np.savetxt(path, points, delimiter="," if suffix == ".txt" else " ")


def test_a_point_cloud_root_is_detected_and_normalised(tmp_path):
    root = tmp_path / "points"
    write_points_root(root)
    before = raw(root)
    dm = module(root, augment=False)
    assert dm.layout.source == "points" and len(dm.train_set) == 30 and len(dm.test_set) == 10
    huge = [i for i, (path, _) in enumerate(dm.train_set.files) if "bed" in path.name]
    for i in huge:
        pos = dm.train_set[i].pos
        assert pos.norm(dim=1).max() == pytest.approx(1.0, abs=1e-5)
    sparse = dm.test_set[[p.name for p, _ in dm.test_set.files].index("toilet_0004.npy")].pos
    assert sparse.shape == (64, 3) and len(torch.unique(sparse, dim=0)) == 10  # all 10 points, repeated
    batch = next(iter(dm.train_dataloader()))
    assert batch.pos.shape == (4 * 64, 3)
    assert raw(root) == before


def test_workers_get_distinct_seeds_and_the_same_test_clouds(synthetic, tmp_path):
    root = copy(synthetic, tmp_path)
    test_serial = torch.cat([b.pos for b in module(root).test_dataloader()])
    runs = []
    for _ in range(2):
        parallel = module(root, num_workers=2)
        assert torch.equal(torch.cat([b.pos for b in parallel.test_dataloader()]), test_serial)
        parallel.train_set.files = parallel.train_set.files[:1] * 16  # one shape: only the seeds differ
        runs.append(torch.cat([b.pos for b in parallel.train_dataloader()]).view(16, -1))
    assert len(torch.unique(runs[0], dim=0)) == 16  # no two workers (or draws) repeat each other
    assert torch.equal(runs[0], runs[1])  # worker seeds follow `seed`


def test_real_meshes_run_through_the_datamodule(synthetic, tmp_path):
    real = sorted(REAL.glob("bathtub_000[124].off"))
    if not real:
        pytest.skip(f"the real ModelNet sample meshes are not there ({REAL.resolve()})")
    root = copy(synthetic, tmp_path)
    for path in (root / "bathtub" / "train").iterdir():
        path.unlink()
    for path in real:
        shutil.copy2(path, root / "bathtub" / "train" / path.name)
    dm = module(root, augment=False)
    index = [p.name for p, _ in dm.train_set.files].index("bathtub_0002.off")
    pos = dm.train_set[index].pos
    assert pos.shape == (64, 3) and pos.norm(dim=1).max() == pytest.approx(1.0, abs=1e-5)
    assert raw(root)[Path("bathtub/train/bathtub_0002.off")][0] == (REAL / "bathtub_0002.off").read_bytes()


def break_files(root: Path) -> list[Path]:
    truncated = root / "chair" / "train" / "chair_0002.off"
    truncated.write_text("\n".join(truncated.read_text().splitlines()[:20]) + "\n")
    nan = root / "sofa" / "test" / "sofa_0004.off"
    lines = nan.read_text().splitlines()
    lines[2] = "nan 0 0"
    nan.write_text("\n".join(lines) + "\n")
    return [truncated, nan]


def test_bad_files_are_errors_naming_them(synthetic, tmp_path):
    root = copy(synthetic, tmp_path)
    break_files(root)
    before = raw(root)
    dm = ModelNet10DataModule(root=str(root), num_points=64, batch_size=4)
    dm.prepare_data()  # bad files are reported by setup, once
    with pytest.raises(ValueError, match=r"2 unreadable shape file\(s\) \(skip_bad=True drops them with a warning\): "
                                         r".*chair_0002.off: is truncated.*sofa_0004.off: has NaN or infinite"):
        dm.setup("fit")
    with pytest.raises(ValueError, match=r"1 unreadable .*sofa_0004.off: has NaN"):
        ModelNet10DataModule(root=str(root)).setup("test")
    assert raw(root) == before


def test_skip_bad_drops_them_with_one_warning(synthetic, tmp_path):
    root = copy(synthetic, tmp_path)
    break_files(root)
    before = raw(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm = module(root, skip_bad=True)
    messages = [str(w.message) for w in caught if "skip_bad" in str(w.message)]
    assert len(messages) == 1 and "dropped 2 unreadable shape file(s)" in messages[0]
    assert "chair_0002.off" in messages[0] and "sofa_0004.off" in messages[0]
    assert len(dm.train_set) == 29 and len(dm.test_set) == 19
    assert raw(root) == before
    for path in (root / "desk" / "test").iterdir():
        path.write_text("OFF\n")
    with pytest.warns(UserWarning, match="dropped 4"), pytest.raises(ValueError, match="no readable test shapes left .* desk"):
        module(root, skip_bad=True)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_points": 0}, "`num_points` must be a positive integer, got 0"),
    ({"batch_size": 0}, "`batch_size` must be a positive integer, got 0"),
    ({"batch_size": 2.0}, "`batch_size` must be a positive integer, got 2.0"),
    ({"num_workers": -1}, "`num_workers` must be a non-negative integer, got -1"),
    ({"source": "mesh"}, r"`source` must be one of \('auto', 'meshes', 'points', 'synthetic'\), got 'mesh'"),
    ({"seed": -3}, "`seed` must be a non-negative integer"),
    ({"synthetic_shapes": (4,)}, r"`synthetic_shapes` must be a \(train, test\) pair"),
    ({"synthetic_shapes": (4, 0)}, r"`synthetic_shapes\[1\]` must be a positive integer"),
    ({"augment": "yes"}, "`augment` must be True or False, got 'yes'"),
    ({"val_fraction": 1.0}, r"`val_fraction` must be a number in \[0, 1\) \(the share of each class's training files"),
    ({"val_fraction": -0.1}, r"`val_fraction` must be a number in \[0, 1\)"),
    ({"split_seed": -1}, "`split_seed` must be a non-negative integer"),
    ({"cache_dir": ""}, "`cache_dir` must be a folder path or None, got ''"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelNet10DataModule(root="unused", **kwargs)


def test_root_problems_through_the_datamodule(synthetic, tmp_path):
    with pytest.raises(ValueError, match="is empty; copy ModelNet-10 there, pass download=True"):
        ModelNet10DataModule(root=str(tmp_path)).prepare_data()
    with pytest.raises(ValueError, match=r"`batch_size` \(64\) exceeds the 30 training shapes"):
        module(copy(synthetic, tmp_path), batch_size=64)
    user = copy(synthetic, tmp_path / "user")
    before = raw(user)
    with pytest.raises(ValueError, match="refusing to write synthetic shapes"):
        ModelNet10DataModule(root=str(user), source="synthetic").prepare_data()
    assert raw(user) == before


def test_synthetic_source_writes_once_and_refuses_other_parameters(tmp_path):
    root = tmp_path / "synthetic"
    dm = module(root, source="synthetic", synthetic_shapes=(2, 1))
    assert len(dm.train_set) == 20 and dm.layout.source == "synthetic"
    before = raw(root)
    module(root, source="synthetic", synthetic_shapes=(2, 1), seed=5)  # another training seed shares the root
    assert module(root).layout.source == "synthetic"  # auto recognises it
    with pytest.raises(ValueError, match="records synthetic data written with"):
        module(root, source="synthetic", synthetic_shapes=(3, 1))
    assert raw(root) == before


def test_configurable_from_the_command_line(tmp_path):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(ModelNet10DataModule, "data")
    config = parser.parse_args(["--data.root", str(tmp_path), "--data.source", "synthetic",
                                "--data.synthetic_shapes", "[2, 1]", "--data.num_points", "32", "--data.batch_size", "4"])
    dm = ModelNet10DataModule(**config.data.as_dict())
    assert dm.synthetic_shapes == (2, 1) and dm.num_points == 32 and dm.source == "synthetic"


def test_lightning_trainer_runs_an_epoch(tmp_path):
    import lightning.pytorch as pl

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(3, 10)

        def step(self, batch):
            from torch_geometric.nn import global_max_pool

            return torch.nn.functional.cross_entropy(self.head(global_max_pool(batch.pos, batch.batch)), batch.y)

        def training_step(self, batch, index):
            return self.step(batch)

        def validation_step(self, batch, index):
            self.log("val_loss", self.step(batch), batch_size=batch.num_graphs)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = ModelNet10DataModule(root=str(tmp_path / "synthetic"), source="synthetic", synthetic_shapes=(2, 1),
                              num_points=32, batch_size=4)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", default_root_dir=str(tmp_path))
    trainer.fit(Tiny(), datamodule=dm)
    assert trainer.global_step == 10 // 4  # val_fraction=0.1 holds out one of the two training shapes per class
    assert trainer.num_val_batches == [3]  # the 10 held-out shapes



# --- splits ------------------------------------------------------------------------------------------------------

def paths(pairs):
    return [path for path, _ in pairs]


def test_validation_is_a_seeded_stratified_part_of_the_training_files(synthetic, tmp_path):
    root = copy(synthetic, tmp_path)
    dm = ModelNet10DataModule(root=str(root), num_points=64, batch_size=4)  # val_fraction=0.1 by default
    train, val, test = (dm.split_files(split) for split in ("train", "val", "test"))
    assert dm.validation == "held_out" and len(train) == 20 and len(val) == 10 and len(test) == 20
    assert not set(paths(train)) & set(paths(val)) and not (set(paths(train)) | set(paths(val))) & set(paths(test))
    assert sorted(train + val) == sorted(dm.layout.files["train"])
    assert all(path.parent.name == "train" for path in paths(val))
    assert sorted(label for _, label in val) == list(range(10))  # 3 files a class: at least one held out each
    assert val == ModelNet10DataModule(root=str(root), seed=5).split_files("val")  # `seed` does not move it
    assert val != ModelNet10DataModule(root=str(root), split_seed=1).split_files("val")
    half = ModelNet10DataModule(root=str(root), val_fraction=0.5).split_files("val")
    assert sorted(Counter(label for _, label in half).values()) == [1] * 5 + [2] * 5  # 1.5 a class, 15 in all

    dm = module(root, val_fraction=0.1)  # augment=True: the validation clouds are still plain and seeded
    assert paths(dm.val_set.files) == paths(val) and paths(dm.train_set.files) == paths(train)
    clouds = [torch.cat([b.pos for b in dm.val_dataloader()]) for _ in range(2)]
    assert torch.equal(clouds[0], clouds[1])
    radius = torch.stack([dm.val_set[i].pos.norm(dim=1).max() for i in range(10)])
    assert torch.allclose(radius, torch.ones(10), atol=1e-5)


def test_val_fraction_zero_means_no_validation(synthetic, tmp_path):
    dm = module(copy(synthetic, tmp_path), val_fraction=0.0)
    assert dm.val_dataloader() == [] and dm.validation is None and dm.split_files("val") == []
    assert len(dm.train_set) == 30


def test_a_val_folder_is_the_validation_split_and_val_fraction_is_ignored(synthetic, tmp_path):
    root = copy(synthetic, tmp_path)
    for name in CLASSES:
        (root / name / "val").mkdir()
        shutil.move(root / name / "train" / f"{name}_0001.off", root / name / "val" / f"{name}_0001.off")
    dm = module(root, val_fraction=0.5)
    assert dm.validation == "folder" and len(dm.train_set) == 20 and len(dm.val_set) == 10
    assert all(path.parent.name == "val" for path in paths(dm.split_files("val")))
    assert all(path.parent.name == "train" for path in paths(dm.split_files("train")))
    assert len(torch.cat([b.y for b in dm.val_dataloader()])) == 10 and len(dm.test_set) == 20


def test_a_root_without_a_test_split_trains_and_validates_but_cannot_test(synthetic, tmp_path):
    root = copy(synthetic, tmp_path)
    for name in CLASSES:
        shutil.rmtree(root / name / "test")
    dm = module(root, val_fraction=0.1)
    assert len(dm.train_set) == 20 and len(dm.val_set) == 10 and dm.test_set is None and dm.split_files("test") == []
    assert len(list(dm.val_dataloader())) == 3
    message = rf"ModelNet-10 data root '{root}': no test split: missing the folders {root / 'bathtub' / 'test'}, "
    with pytest.raises(ValueError, match=message):
        dm.test_dataloader()
    with pytest.raises(ValueError, match=message):
        ModelNet10DataModule(root=str(root)).setup("test")
    dm = ModelNet10DataModule(root=str(root), num_points=64, batch_size=4)
    dm.setup()  # every split the root has
    assert dm.test_set is None and len(dm.train_set) + len(dm.val_set) == 30


# --- where the cache goes ----------------------------------------------------------------------------------------

def test_the_cache_leaves_a_read_only_root_alone_even_as_root(synthetic, tmp_path, monkeypatch):
    root = copy(synthetic, tmp_path)
    assert writable_by_mode(root) and default_cache_dir(root) == root / "processed_mgic"
    monkeypatch.setenv("MGIC_CACHE_DIR", str(tmp_path / "cache"))
    root.chmod(0o555)
    try:
        assert not writable_by_mode(root)  # whoever runs this: os.access would say True for root
        digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
        assert default_cache_dir(root) == tmp_path / "cache" / "shapes" / digest
        dm = module(root)
        assert dm.cache.dir == tmp_path / "cache" / "shapes" / digest / "v1"
        assert len(list(dm.cache.dir.rglob("*.pt"))) == 50 and not (root / "processed_mgic").exists()
        monkeypatch.delenv("MGIC_CACHE_DIR")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert default_cache_dir(root) == tmp_path / "xdg" / "mgic_geo" / "shapes" / digest
    finally:
        root.chmod(0o755)
    other = copy(synthetic, tmp_path / "other")
    dm = module(other, cache_dir=str(tmp_path / "mine"))
    assert dm.cache.dir == tmp_path / "mine" / "v1" and len(list((tmp_path / "mine").rglob("*.pt"))) == 50
    assert not (other / "processed_mgic").exists()


# --- the real training split in ../shared/data (read only) --------------------------------------------------------

def real_train_root() -> Path:
    if not (REAL_TRAIN / "bathtub" / "train").is_dir():
        pytest.skip(f"the shared ModelNet-10 train split is not there ({REAL_TRAIN.resolve()})")
    return REAL_TRAIN


def test_the_real_train_split_is_split_stratified_and_has_no_test_split(tmp_path):
    root = real_train_root()
    before = sorted(p.name for p in root.iterdir())
    dm = ModelNet10DataModule(root=str(root), batch_size=8, cache_dir=str(tmp_path / "cache"))
    train, val = dm.split_files("train"), dm.split_files("val")
    assert dm.layout.source == "points" and dm.split_files("test") == []
    assert len(train) + len(val) == 3991 and len(val) == 399
    sizes = Counter(label for _, label in train + val)
    assert [sizes[c] for c in range(10)] == REAL_TRAIN_SIZES
    held_out = Counter(label for _, label in val)
    assert [held_out[c] for c in range(10)] == validation_counts(REAL_TRAIN_SIZES, 0.1) == [11, 52, 89, 20, 20, 46, 20,
                                                                                             68, 39, 34]
    assert all(abs(held_out[c] - REAL_TRAIN_SIZES[c] / 10) < 1 for c in range(10))
    assert not set(paths(train)) & set(paths(val)) and len(set(paths(train + val))) == 3991
    again = ModelNet10DataModule(root=str(root), cache_dir=str(tmp_path / "cache"))
    assert again.split_files("val") == val
    assert ModelNet10DataModule(root=str(root), split_seed=1, cache_dir=str(tmp_path / "cache")).split_files("val") != val
    with pytest.raises(ValueError, match=rf"no test split: missing the folders {root / 'bathtub' / 'test'}"):
        dm.test_dataloader()
    assert sorted(p.name for p in root.iterdir()) == before and not (root / "processed_mgic").exists()


def test_real_point_clouds_are_read_and_cached_outside_the_shared_data(tmp_path, monkeypatch):
    root = real_train_root()
    dm = ModelNet10DataModule(root=str(root), cache_dir=str(tmp_path / "cache"))
    val = dm.split_files("val")
    files = [next(pair for pair in val if pair[1] == label) for label in (0, 2, 9)]  # bathtub, chair, toilet
    for path, _ in files:
        raw_points = read_shape(path)["pos"]
        assert raw_points.shape == (1024, 3) and torch.isfinite(raw_points).all()
    shapes = ModelNetShapes(files, dm.cache, 1024, seed=0)
    for index, (_, label) in enumerate(files):
        cloud = shapes[index]
        assert cloud.pos.shape == (1024, 3) and cloud.pos.dtype == torch.float32 and cloud.y.item() == label
        assert cloud.pos.norm(dim=1).max() == pytest.approx(1.0, abs=1e-5)
        assert cloud.pos.mean(dim=0).abs().max() < 1e-4  # centred on the centroid
        assert torch.equal(shapes[index].pos, cloud.pos)  # seeded: the same points every time
    assert len(list((tmp_path / "cache" / "v1").rglob("*.pt"))) == 3
    # without cache_dir the read-only root sends the cache to the per-user folder, here under tmp_path
    monkeypatch.setenv("MGIC_CACHE_DIR", str(tmp_path / "user"))
    default = ModelNet10DataModule(root=str(root))
    default.split_files("train")
    assert default.cache.dir.is_relative_to(tmp_path / "user")
    assert not (root / "processed_mgic").exists()


def test_a_root_with_only_a_test_split_is_tested_and_refuses_to_train(tmp_path):
    """Released weights are evaluated on roots that hold the test split alone."""
    source = tmp_path / "full"
    write_synthetic_modelnet(source, shapes_per_class=(1, 2), seed=0)
    root = tmp_path / "test-only"
    for folder in sorted(source.glob("*/test")):
        (root / folder.parent.name).mkdir(parents=True)
        shutil.copytree(folder, root / folder.parent.name / "test")
    dm = ModelNet10DataModule(root=str(root), num_points=32, batch_size=4)
    dm.prepare_data()
    dm.setup("test")
    assert len(dm.test_set) == 20 and dm.split_files("train") == []
    with pytest.raises(ValueError, match=r"no train split: missing the folders .*bathtub/train"):
        ModelNet10DataModule(root=str(root), num_points=32, batch_size=4).setup("fit")


def test_loaded_shapes_stay_in_memory_within_the_budget(synthetic, tmp_path, monkeypatch):
    root = copy(synthetic, tmp_path)
    dm = module(root)
    cache = dm.train_set.cache
    first = [cache.load(file) for file, _ in dm.train_set.files]
    assert cache.loaded and cache.loaded_bytes == sum(t.numel() * t.element_size() for s in first for t in s.values())

    def no_reading(*args, **kwargs):
        raise AssertionError("a cache entry was read from disk again")
    monkeypatch.setattr(shape_cache.torch, "load", no_reading)
    again = [cache.load(file) for file, _ in dm.train_set.files]
    assert all(a is b for a, b in zip(first, again))
    monkeypatch.undo()
    # a raw file edited during the run is read afresh (its entry path changes with size and mtime)
    file = dm.train_set.files[0][0]
    file.write_text(file.read_text().replace("OFF\n", "OFF\n# edited\n", 1))
    assert cache.load(file) is not first[0]
    # nothing is kept past the budget
    monkeypatch.setattr(shape_cache, "MEMORY_BYTES", 0)
    fresh = shape_cache.ShapeCache(cache.dir.parent, cache.data_dir)
    fresh.load(dm.train_set.files[1][0])
    assert not fresh.loaded and fresh.loaded_bytes == 0


# ----------------------------------------------------------------------------------------------
# Issue 16: special files in a root, damaged cache entries, clouds shorter than num_points


def test_a_fifo_in_the_root_is_reported_not_opened(synthetic, tmp_path):
    import os
    import threading

    root = copy(synthetic, tmp_path)
    fifo = root / "bed" / "train" / "bed_0099.off"
    os.mkfifo(fifo)
    os.symlink("/dev/zero", root / "chair" / "test" / "chair_0099.off")
    before = raw(root)
    outcome = []

    def setup():
        try:
            module(root)
        except ValueError as err:
            outcome.append(err)

    thread = threading.Thread(target=setup, daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # release a reader that opened it
        pytest.fail("setup opened the FIFO")
    message = str(outcome[0])
    assert message.startswith("2 unreadable shape file(s)")
    assert f"{fifo}: is a FIFO (named pipe), not a regular file; only regular files are read" in message
    assert f"{root / 'chair' / 'test' / 'chair_0099.off'}: is a character device (through a symlink)" in message
    with pytest.warns(UserWarning, match="dropped 2 unreadable"):
        dm = module(root, skip_bad=True)
    assert fifo not in [path for path, _ in dm.train_set.files]
    assert raw(root) == before


def entry_of(dm, file: Path) -> Path:
    return dm.cache._entry(file)


def test_a_damaged_cache_entry_is_rebuilt_with_a_warning(synthetic, tmp_path):
    root = copy(synthetic, tmp_path)
    before = raw(root)
    dm = module(root, augment=False)
    file = dm.train_set.files[0][0]
    entry = entry_of(dm, file)
    good = torch.load(entry, weights_only=True)
    assert set(good) == {"pos", "face", "sha256"} and good["sha256"] == shape_cache.checksum(
        {"pos": good["pos"], "face": good["face"]})

    cases = {  # what is written over the entry: the warning's reason
        "nan": ({**good, "pos": torch.full_like(good["pos"], float("nan"))}, "'pos' has NaN or infinite coordinates"),
        "checksum": ({**good, "pos": good["pos"] * 2}, "its tensors do not match the SHA-256 stored with them"),
        "count": ({**good, "pos": good["pos"][:3]}, "'face' uses vertices 0..")  ,
        "dtype": ({**good, "pos": good["pos"].double()}, "'pos' is torch.float64 of shape"),
        "old nan": ({"pos": torch.full_like(good["pos"], float("nan")), "face": good["face"]},
                    "'pos' has NaN or infinite coordinates"),
        "garbage": (None, "torch.load cannot read it"),
    }
    for name, (content, reason) in cases.items():
        if content is None:
            entry.write_bytes(b"not a zip file")
        else:
            torch.save(content, entry)
        fresh = ModelNet10DataModule(root=str(root), num_points=64, batch_size=4, val_fraction=0.0, augment=False)
        fresh.setup("fit")
        with pytest.warns(UserWarning, match=re.escape(f"shape cache entry {entry} is damaged: {reason}")):
            pos = fresh.train_set[0].pos
        assert torch.isfinite(pos).all(), name
        assert torch.equal(torch.load(entry, weights_only=True)["pos"], good["pos"]), name  # rebuilt
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ModelNet10DataModule(root=str(root), num_points=64, batch_size=4, val_fraction=0.0).setup("fit")
            fresh.cache.loaded.clear()
            fresh.train_set[0]  # no warning once rebuilt
    # an entry written before entries carried a checksum is still used when it passes the checks
    torch.save({"pos": good["pos"], "face": good["face"]}, entry)
    fresh = module(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(fresh.cache.load(file)["pos"], good["pos"])
    assert raw(root) == before


def test_clouds_shorter_than_num_points_are_padded_with_one_warning_each(tmp_path):
    root = tmp_path / "points"
    write_points_root(root)  # toilet/test/toilet_0004.npy has 10 points
    short = root / "bed" / "train" / "bed_0002.xyz"
    np.savetxt(short, np.random.default_rng(1).normal(size=(5, 3)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm = ModelNet10DataModule(root=str(root), num_points=32, batch_size=4, val_fraction=0.0)
        dm.setup("fit")
        for _ in range(2):  # two epochs
            list(dm.train_dataloader())
        dm.setup("test")
        list(dm.test_dataloader())
    padded = sorted(str(w.message) for w in caught if "random repeats" in str(w.message))
    assert padded == [
        f"{short}: has 5 points, fewer than num_points=32; its clouds are all 5 points plus 27 random repeats",
        f"{root / 'toilet' / 'test' / 'toilet_0004.npy'}: has 10 points, fewer than num_points=32; its clouds are all "
        "10 points plus 22 random repeats",
    ]
    index = [path for path, _ in dm.train_set.files].index(short)
    assert dm.train_set[index].pos.shape == (32, 3)  # the behaviour is kept: padded
