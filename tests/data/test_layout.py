"""Finding the ModelNet-10 layout under a root: the three accepted places, `auto` detection, every
layout error (with the expected tree), and the download path (mocked: tests never go online)."""
import io
import shutil
import urllib.error
import urllib.request
import urllib.response
import zipfile

import numpy as np
import pytest

from mgic_geo.data import CLASSES, ModelNet10DataModule, download_modelnet10, find_layout, write_synthetic_modelnet

TREE = r"(?s:.*)expected layout (?s:.*)bathtub/\n(?s:.*)train/bathtub_0001.off"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_modelnet(tmp_path_factory.mktemp("synthetic"), shapes_per_class=(2, 1))


def meshes(synthetic, tmp_path, sub=""):
    """A plain (marker-less) copy of the synthetic meshes at ``tmp_path/root/sub``."""
    root = tmp_path / "root"
    shutil.copytree(synthetic, root / sub, ignore=shutil.ignore_patterns("*.json"))
    return root


def snapshot(root):
    return {p.relative_to(root): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def test_auto_detects_meshes_points_and_synthetic(synthetic, tmp_path):
    layout = find_layout(meshes(synthetic, tmp_path))
    assert layout.source == "meshes" and len(layout.files["train"]) == 20 and len(layout.files["test"]) == 10
    assert [label for _, label in layout.files["test"]] == [i for i in range(10) for _ in range(1)]
    assert find_layout(synthetic).source == "synthetic"
    points = tmp_path / "points"
    for name in CLASSES:
        for split in ("train", "test"):
            (points / name / split).mkdir(parents=True)
            np.save(points / name / split / f"{name}_0001.npy", np.random.default_rng(0).random((20, 3)))
    assert find_layout(points).source == "points"


@pytest.mark.parametrize("sub", ["ModelNet10", "raw"])
def test_archive_and_pyg_subfolders_are_accepted(synthetic, tmp_path, sub):
    root = meshes(synthetic, tmp_path, sub)
    (root / "processed").mkdir()  # PyG's own cache beside raw/ is ignored
    layout = find_layout(root)
    assert layout.data_dir == root / sub and layout.source == "meshes"


def test_empty_or_missing_root(tmp_path):
    with pytest.raises(ValueError, match="does not exist; copy ModelNet-10 there, pass download=True" + TREE):
        find_layout(tmp_path / "nowhere")
    (tmp_path / ".hidden").mkdir()
    with pytest.raises(ValueError, match="is empty;.*source='synthetic'" + TREE):
        find_layout(tmp_path)


@pytest.mark.parametrize("change, message", [
    (lambda r: (r / "lamp" / "train").mkdir(parents=True), "unknown class folders: lamp/"),
    (lambda r: shutil.rmtree(r / "toilet"), "missing class folders: toilet"),
    (lambda r: shutil.rmtree(r / "chair" / "train"), "missing split folder chair/train/"),
    (lambda r: [shutil.rmtree(split) for split in sorted(r.glob("*/*"))],
     "no split folders: every class folder needs train/ \\(to train\\) or test/ \\(to test\\)"),
    (lambda r: [p.unlink() for p in (r / "desk" / "test").iterdir()], "the class folder desk/test/ is empty"),
    (lambda r: (r / "sofa" / "train" / "sofa_0009.obj").write_text("v 0 0 0"), "sofa/train/ holds entries that are not shape files: sofa_0009.obj"),
    (lambda r: (r / "sofa" / "train" / "extra").mkdir(), "holds entries that are not shape files: extra/"),
    (lambda r: np.save(r / "bed" / "test" / "bed_0009.npy", np.zeros((5, 3))),
     r"source='meshes' reads .off meshes, but found 1 point-cloud files \(e.g. bed/test/bed_0009.npy\)"),
])
def test_layout_errors_show_the_expected_tree_and_change_nothing(synthetic, tmp_path, change, message):
    root = meshes(synthetic, tmp_path)
    change(root)
    before = snapshot(root)
    with pytest.raises(ValueError, match=message + TREE):
        find_layout(root)
    assert snapshot(root) == before


def test_files_without_class_folders_and_wrong_source(synthetic, tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "chair_0001.off").write_text("OFF\n")
    with pytest.raises(ValueError, match="no class folders found; it holds chair_0001.off" + TREE):
        find_layout(tmp_path / "flat")
    with pytest.raises(ValueError, match=r"source='points' reads point-cloud files, but found 30 .off meshes"):
        find_layout(meshes(synthetic, tmp_path), "points")
    with pytest.raises(ValueError, match="`source` must be one of"):
        find_layout(synthetic, "mesh")


def fake_download(synthetic, calls):
    """Stands in for ``urllib.request.urlopen``: serves a ModelNet10.zip made of the synthetic shapes."""
    def urlopen(request, timeout=None):
        calls.append(request.full_url)
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as handle:
            for path in synthetic.rglob("*.off"):
                handle.write(path, f"ModelNet10/{path.relative_to(synthetic)}")
            handle.writestr("__MACOSX/._junk", "")
        data = archive.getvalue()
        return urllib.response.addinfourl(io.BytesIO(data), {"Content-Length": str(len(data))}, request.full_url, 200)
    return urlopen


def test_download_extracts_the_archive_into_an_empty_root(synthetic, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(urllib.request, "urlopen", fake_download(synthetic, calls))
    dm = ModelNet10DataModule(root=str(tmp_path / "modelnet"), download=True, num_points=64, batch_size=4)
    dm.prepare_data()
    dm.setup("fit")
    assert calls == ["http://3dvision.princeton.edu/projects/2014/3DShapeNets/ModelNet10.zip"]
    assert sorted(p.name for p in (tmp_path / "modelnet").iterdir()) == [".ModelNet10.zip.sha256", "ModelNet10",
                                                                          "processed_mgic"]
    assert dm.layout.source == "meshes" and len(dm.train_set) + len(dm.val_set) == 20  # val_fraction=0.1 by default
    with pytest.raises(ValueError, match="is not empty; downloads go only into an empty root"):
        download_modelnet10(tmp_path / "modelnet")


def test_offline_download_is_a_clear_error(tmp_path, monkeypatch):
    def offline(request, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    dm = ModelNet10DataModule(root=str(tmp_path / "modelnet"), download=True)
    with pytest.raises(RuntimeError, match=r"could not download ModelNet-10 from http://.*ModelNet10.zip .*name resolution.*by hand"):
        dm.prepare_data()
    assert list((tmp_path / "modelnet").iterdir()) == []  # the scratch folder is gone


def test_test_and_val_splits_are_optional_but_all_or_nothing(synthetic, tmp_path):
    root = meshes(synthetic, tmp_path)
    for name in CLASSES:
        shutil.rmtree(root / name / "test")
    layout = find_layout(root)
    assert sorted(layout.files) == ["train"] and len(layout.require("train")) == 20
    with pytest.raises(ValueError, match=rf"no test split: missing the folders {root / 'bathtub' / 'test'}, "
                                         rf"{root / 'bed' / 'test'}, .* \(10 in all\); the class folders hold only train/"
                                         + TREE):
        layout.require("test")
    for name in CLASSES:
        shutil.copytree(root / name / "train", root / name / "val")
    layout = find_layout(root)
    assert sorted(layout.files) == ["train", "val"] and len(layout.files["val"]) == 20
    shutil.rmtree(root / "sofa" / "val")
    with pytest.raises(ValueError, match=r"missing split folder sofa/val/ \(the other classes have one: a val split "
                                         r"needs every class\)" + TREE):
        find_layout(root)


def test_the_layout_scan_lists_special_files_without_opening_them(synthetic, tmp_path):
    """The scan only lists names (``iterdir``, ``is_dir``): a FIFO or a link to a device is listed, never
    opened, and reading it later is an error naming it (``tests/data/test_readers.py``)."""
    import os

    root = meshes(synthetic, tmp_path)
    fifo = root / "bed" / "train" / "bed_0099.off"
    os.mkfifo(fifo)
    os.symlink("/dev/zero", root / "bed" / "train" / "bed_0098.off")
    layout = find_layout(root)  # would block here if it opened the FIFO
    listed = [path for path, _ in layout.files["train"]]
    assert fifo in listed and root / "bed" / "train" / "bed_0098.off" in listed
