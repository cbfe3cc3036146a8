"""The procedural ModelNet-10 stand-ins: deterministic bytes, valid OFF, and no overwriting."""
import pytest
from torch_geometric.io import read_off

from mgic_geo.data import CLASSES, read_mesh, write_synthetic_modelnet


def snapshot(root):
    return {p.relative_to(root): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_shapes(tmp_path):
    first = snapshot(write_synthetic_modelnet(tmp_path / "a", shapes_per_class=(2, 1), seed=3))
    second = snapshot(write_synthetic_modelnet(tmp_path / "b", shapes_per_class=(2, 1), seed=3))
    other = snapshot(write_synthetic_modelnet(tmp_path / "c", shapes_per_class=(2, 1), seed=4))
    assert {k: v[0] for k, v in first.items()} == {k: v[0] for k, v in second.items()}
    meshes = [k for k in first if k.suffix == ".off"]
    assert len(meshes) == 10 * 3 and set(meshes) == {k for k in other if k.suffix == ".off"}
    assert all(first[k][0] != other[k][0] for k in meshes)
    assert len({first[k][0] for k in meshes}) == len(meshes)  # every shape differs


def test_layout_counts_and_valid_off(tmp_path):
    root = write_synthetic_modelnet(tmp_path, shapes_per_class=(3, 2), seed=0)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(CLASSES)
    for name in CLASSES:
        assert sorted(p.name for p in (root / name / "train").iterdir()) == [f"{name}_{i:04d}.off" for i in (1, 2, 3)]
        assert sorted(p.name for p in (root / name / "test").iterdir()) == [f"{name}_{i:04d}.off" for i in (4, 5)]
        path = root / name / "test" / f"{name}_0004.off"
        assert path.read_text().startswith("OFF\n")
        data = read_off(str(path))  # PyG's own reader, unaided
        pos, face = read_mesh(path)
        assert data.face.shape == face.shape and data.face.shape[1] >= 12 and pos.abs().max() > 0


def test_rerun_is_a_no_op_and_fills_in_missing_files_only(tmp_path):
    root = write_synthetic_modelnet(tmp_path, shapes_per_class=(2, 1))
    before = snapshot(root)
    write_synthetic_modelnet(root, shapes_per_class=(2, 1))
    assert snapshot(root) == before
    (root / "sofa" / "train" / "sofa_0002.off").unlink()
    write_synthetic_modelnet(root, shapes_per_class=(2, 1))
    after = snapshot(root)
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}


def test_other_parameters_or_foreign_data_are_refused_untouched(tmp_path):
    root = write_synthetic_modelnet(tmp_path / "synthetic", shapes_per_class=(2, 1))
    before = snapshot(root)
    with pytest.raises(ValueError, match=r"synthetic_modelnet.json records .*'seed': 0.* but .*'seed': 1.* nothing was changed"):
        write_synthetic_modelnet(root, shapes_per_class=(2, 1), seed=1)
    with pytest.raises(ValueError, match=r"'shapes_per_class': \[2, 1\].*'shapes_per_class': \[3, 1\]"):
        write_synthetic_modelnet(root, shapes_per_class=(3, 1))
    assert snapshot(root) == before
    user = tmp_path / "user"
    (user / "chair").mkdir(parents=True)
    (user / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="refusing to write synthetic shapes into .*user.* not written by"):
        write_synthetic_modelnet(user)
    assert sorted(p.name for p in user.rglob("*")) == ["chair", "notes.txt"]


@pytest.mark.parametrize("kwargs, message", [
    ({"shapes_per_class": (0, 1)}, r"`shapes_per_class\[0\]` must be a positive integer, got 0"),
    ({"shapes_per_class": (1, 2.5)}, r"`shapes_per_class\[1\]` must be a positive integer, got 2.5"),
    ({"shapes_per_class": 5}, r"`shapes_per_class` must be a \(train, test\) pair"),
    ({"seed": -1}, "`seed` must be a non-negative integer, got -1"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_synthetic_modelnet(tmp_path / "root", **kwargs)
    assert not (tmp_path / "root").exists()
