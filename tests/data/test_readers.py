"""Shape-file readers: OFF meshes (PyG's parser behind checks), point-cloud files in six formats, and
an error naming the file for every kind of bad input."""
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.io import read_off
from torch_geometric.transforms import FixedPoints, SamplePoints

from mgic_geo.data import NormalizeUnitSphere, read_mesh, read_points

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "modelnet10-real-sample" / "bathtub" / "train"
CUBE_VERTICES = "0 0 0\n1 0 0\n1 1 0\n0 1 0\n0 0 1\n1 0 1\n1 1 1\n0 1 1\n"
CUBE_FACES = ("3 0 2 1\n3 0 3 2\n3 4 5 6\n3 4 6 7\n3 0 1 5\n3 0 5 4\n"
              "3 1 2 6\n3 1 6 5\n3 2 3 7\n3 2 7 6\n3 3 0 4\n3 3 4 7\n")


def real_meshes():
    files = sorted(REAL.glob("bathtub_000*.off"))
    if not files:
        pytest.skip(f"the real ModelNet sample meshes are not there ({REAL.resolve()})")
    return files


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


def distance_to_surface(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """For each point, the smallest distance to any triangle's plane among triangles whose (slightly
    padded) barycentric range contains the point's projection."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    normal = np.cross(b - a, c - a)
    area2 = np.linalg.norm(normal, axis=1)
    keep = area2 > 1e-12
    a, b, c, normal, area2 = a[keep], b[keep], c[keep], normal[keep] / area2[keep, None], area2[keep]
    best = np.full(len(points), np.inf)
    for start in range(0, len(points), 128):
        p = points[start:start + 128, None, :]
        height = np.einsum("pfk,fk->pf", p - a, normal)
        q = p - height[..., None] * normal
        u = np.einsum("pfk,fk->pf", np.cross(c - b, q - b), normal) / area2
        v = np.einsum("pfk,fk->pf", np.cross(a - c, q - c), normal) / area2
        inside = (u >= -1e-4) & (v >= -1e-4) & (u + v <= 1 + 1e-4)
        best[start:start + 128] = np.where(inside, np.abs(height), np.inf).min(axis=1)
    return best


def test_real_meshes_read_with_the_counts_of_their_header():
    for path in real_meshes():
        vertices, faces = (int(n) for n in path.read_text().splitlines()[1].split()[:2])
        pos, face = read_mesh(path)
        assert pos.dtype == torch.float32 and pos.shape == (vertices, 3) and torch.isfinite(pos).all()
        assert face.dtype == torch.long and face.shape == (3, faces) and int(face.max()) < vertices


def test_real_meshes_sample_on_the_surface_into_the_unit_sphere():
    for path in real_meshes()[1::2]:  # bathtub_0002 and _0004: small enough for a brute-force check
        pos, face = read_mesh(path)
        torch.manual_seed(0)
        cloud = SamplePoints(1024)(Data(pos=pos, face=face)).pos
        assert cloud.shape == (1024, 3)
        scale = float(pos.abs().max())
        assert distance_to_surface(cloud.double().numpy(), pos.double().numpy(), face.t().numpy()).max() < 1e-4 * scale
        unit = NormalizeUnitSphere()(Data(pos=cloud)).pos
        assert unit.norm(dim=1).max() == pytest.approx(1.0, abs=1e-5)
        assert unit.mean(0).abs().max() < 1e-5


def test_modelnet_glued_header_is_read_and_the_file_left_alone(tmp_path):
    path = write(tmp_path / "glued.off", f"OFF8 12 0\n{CUBE_VERTICES}{CUBE_FACES}")
    before = path.read_bytes(), path.stat().st_mtime_ns
    pos, face = read_mesh(path)
    assert pos.shape == (8, 3) and face.shape == (3, 12)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_crlf_comments_blank_lines_and_a_missing_final_newline_keep_every_face(tmp_path):
    text = f"OFF\r\n# a comment\r\n\r\n8 12 0\r\n{CUBE_VERTICES}{CUBE_FACES}".replace("\n", "\r\n").rstrip()
    path = write(tmp_path / "crlf.off", text)
    assert read_mesh(path)[1].shape == (3, 12)
    no_newline = write(tmp_path / "no_newline.off", f"OFF\n8 12 0\n{CUBE_VERTICES}{CUBE_FACES}".rstrip())
    assert read_mesh(no_newline)[1].shape == (3, 12)
    assert read_off(str(no_newline)).face.shape == (3, 11)  # why PyG's read_off is not called directly


def test_quads_and_polygons_become_triangles(tmp_path):
    square = "0 0 0\n1 0 0\n1 1 0\n0 1 0\n0.5 1.5 0\n"
    path = write(tmp_path / "poly.off", f"OFF\n5 2 0\n{square}4 0 1 2 3\n5 0 1 2 4 3\n")
    pos, face = read_mesh(path)
    assert face.shape == (3, 2 + 3)
    with_colour = write(tmp_path / "colour.off", f"OFF\n5 1 0\n{square}3 0 1 2 255 0 0\n")
    assert read_mesh(with_colour)[1].tolist() == [[0], [1], [2]]


@pytest.mark.parametrize("text, message", [
    ("", "must start with 'OFF', got 'an empty file'"),
    ("PLY\n3 1 0\n", "must start with 'OFF', got 'PLY'"),
    ("OFF\nthree 1 0\n", "bad OFF header"),
    (f"OFF\n8 12 0\n{CUBE_VERTICES}{CUBE_FACES[:40]}", "is truncated: the header announces 8 vertices and 12 faces"),
    (f"OFF\n8 11 0\n{CUBE_VERTICES}{CUBE_FACES}", "has extra rows"),
    (f"OFF\n8 12 0\n{CUBE_VERTICES.replace('1 1 0', '1 x 0')}{CUBE_FACES}", "malformed row"),
    (f"OFF\n8 12 0\n{CUBE_VERTICES.replace('1 1 0', '1 1')}{CUBE_FACES}", "malformed row"),
    (f"OFF\n8 12 0\n{CUBE_VERTICES.replace('1 1 0', '1 nan 0')}{CUBE_FACES}", "NaN or infinite"),
    (f"OFF\n8 12 0\n{CUBE_VERTICES}{CUBE_FACES.replace('3 0 2 1', '3 0 2 9')}", "uses vertex 9, but the mesh has vertices 0..7"),
    (f"OFF\n8 12 0\n{CUBE_VERTICES}{CUBE_FACES.replace('3 0 2 1', '2 0 2')}", "face row 1 is '2 0 2'"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n", "zero area"),
    ("OFF\n3 0 0\n0 0 0\n1 0 0\n2 0 0\n", "empty mesh"),
])
def test_bad_meshes_name_the_file_and_the_problem(tmp_path, text, message):
    path = write(tmp_path / "bad.off", text)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="bad.off: .*" + re.escape(message)):
        read_mesh(path)
    assert path.read_bytes() == before


def test_binary_off_is_refused(tmp_path):
    path = tmp_path / "binary.off"
    path.write_bytes(b"OFF BINARY\n\xff\xfe\x00\x01")
    with pytest.raises(ValueError, match="binary.off: is not a text OFF file"):
        read_mesh(path)


def write_cloud(path: Path, points: np.ndarray, **options) -> Path:
    import open3d

    suffix = path.suffix
    if suffix in (".pcd", ".ply"):
        cloud = open3d.geometry.PointCloud(open3d.utility.Vector3dVector(points))
        assert open3d.io.write_point_cloud(str(path), cloud, write_ascii=options.get("ascii", False))
    elif suffix == ".npy":
        np.save(path, points)
    elif suffix == ".txt":
        normals = np.tile([0.0, 0.0, 1.0], (len(points), 1))
        np.savetxt(path, np.hstack([points, normals]), delimiter=",", fmt="%.8f")
    else:
        with path.open("w") as handle:
            if options.get("count"):
                handle.write(f"{len(points)}\n")
            np.savetxt(handle, points, fmt="%.8f")
    return path


FORMATS = [("cloud.pcd", {"ascii": True}), ("cloud.pcd", {}), ("cloud.ply", {}), ("cloud.xyz", {}), ("cloud.pts", {}),
           ("cloud.pts", {"count": True}), ("cloud.txt", {}), ("cloud.npy", {})]


@pytest.mark.parametrize("name, options", FORMATS, ids=[f"{n}-{'-'.join(o) or 'plain'}" for n, o in FORMATS])
def test_every_point_format_reads_back_and_huge_units_land_in_the_unit_sphere(tmp_path, name, options):
    rng = np.random.default_rng(1)
    points = rng.normal(size=(300, 3)) * [3e4, 1e4, 5e3] + [1e5, -2e5, 4e4]  # max |coord| ~ 2e5
    path = write_cloud(tmp_path / name, points, **options)
    read = read_points(path)
    assert read.dtype == torch.float64 and read.shape == (300, 3)
    np.testing.assert_allclose(read.numpy(), points, rtol=1e-6, atol=0.05)  # binary PCD stores float32
    torch.manual_seed(0)
    cloud = NormalizeUnitSphere()(FixedPoints(1024, replace=False, allow_duplicates=True)(Data(pos=read.float()))).pos
    assert cloud.shape == (1024, 3) and cloud.norm(dim=1).max() <= 1 + 1e-5 and cloud.abs().max() > 0.5


@pytest.mark.parametrize("name, content, message", [
    ("empty.xyz", "", "holds no points"),
    ("comments.txt", "# nothing\n", "holds no points"),
    ("nan.xyz", "0 0 0\n1 nan 0\n1 1 1\n", "NaN or infinite coordinates"),
    ("inf.txt", "0,0,0\n1,inf,0\n", "NaN or infinite coordinates"),
    ("ragged.xyz", "0 0 0\n1 1\n2 2 2\n", "is not a table of numbers"),
    ("words.xyz", "0 0 0\nfoo bar baz\n", "is not a table of numbers"),
    ("two_columns.xyz", "0 0\n1 1\n", "at least 3 columns"),
    ("count.pts", "5\n0 0 0\n1 1 1\n", "announces 5 points, the file has 2 rows"),
    ("same.xyz", "1 2 3\n1 2 3\n", "all 2 points coincide"),
    ("garbage.pcd", "garbage\n", "malformed or truncated (open3d:"),
    ("empty.ply", "", "malformed or truncated (open3d:"),
    ("cloud.obj", "v 0 0 0\n", "unsupported point-cloud extension '.obj'"),
])
def test_bad_point_files_name_the_file_and_the_problem(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    with pytest.raises(ValueError, match=f"{name}: .*" + re.escape(message)):
        read_points(path)
    assert path.read_text() == content


@pytest.mark.parametrize("name", ["cloud.pcd", "cloud.ply"])
@pytest.mark.parametrize("ascii_rows", [True, False])
def test_truncated_open3d_files_are_errors_not_partial_clouds(tmp_path, name, ascii_rows):
    whole = write_cloud(tmp_path / name, np.random.default_rng(0).random((100, 3)), ascii=ascii_rows)
    data = whole.read_bytes()
    cut = tmp_path / f"cut{whole.suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"cut{whole.suffix}: .*(truncated|header announces)"):
        read_points(cut)


def test_bad_npy_arrays(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros(6))
    with pytest.raises(ValueError, match=r"flat.npy: expected a table of points .* got shape \(6,\)"):
        read_points(tmp_path / "flat.npy")
    np.save(tmp_path / "words.npy", np.array([["a", "b", "c"]]))
    with pytest.raises(ValueError, match="words.npy: holds <U1 values, expected numbers"):
        read_points(tmp_path / "words.npy")
    np.save(tmp_path / "none.npy", np.zeros((0, 3)))
    with pytest.raises(ValueError, match="none.npy: holds no points"):
        read_points(tmp_path / "none.npy")
    write(tmp_path / "fake.npy", "not numpy")
    with pytest.raises(ValueError, match="fake.npy: is not a readable .npy array"):
        read_points(tmp_path / "fake.npy")


def test_missing_open3d_is_an_import_error_naming_the_file(tmp_path, monkeypatch):
    path = write_cloud(tmp_path / "cloud.ply", np.random.default_rng(0).random((10, 3)))
    monkeypatch.setitem(sys.modules, "open3d", None)
    with pytest.raises(ImportError, match="reading .*cloud.ply needs open3d"):
        read_points(path)
    np.save(tmp_path / "cloud.npy", np.random.default_rng(0).random((10, 3)))
    assert read_points(tmp_path / "cloud.npy").shape == (10, 3)  # the other formats need no open3d


# ----------------------------------------------------------------------------------------------
# Special and huge files: refused from os.stat, before they are opened (issue 16, item 6)


def no_hang(call, fifo=None, seconds: float = 20.0):
    """Run ``call()`` in a thread and return what it raised; fail if it is still running after ``seconds``
    (a reader that opened ``fifo``: it is then released by opening and closing a writer end)."""
    import os
    import threading

    outcome = []

    def target():
        try:
            call()
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001
            outcome.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if fifo is not None:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        pytest.fail(f"{call} still running after {seconds} s (it opened a FIFO or read a huge file)")
    return outcome[0]


@pytest.mark.parametrize("name", ["bed_0099.off", "cloud.xyz", "cloud.pcd", "cloud.ply", "cloud.npy"])
def test_a_fifo_is_refused_without_being_opened(tmp_path, name):
    import os

    from mgic_geo.data.readers import read_shape

    fifo = tmp_path / name
    os.mkfifo(fifo)
    error = no_hang(lambda: read_shape(fifo), fifo)
    assert isinstance(error, ValueError) and str(error) == (
        f"{fifo}: is a FIFO (named pipe), not a regular file; only regular files are read")


def test_a_symlink_to_a_device_is_refused_and_one_to_a_regular_file_is_read(tmp_path):
    import os

    from mgic_geo.data.readers import read_shape

    zero = tmp_path / "zero.off"
    os.symlink("/dev/zero", zero)
    error = no_hang(lambda: read_shape(zero))
    assert str(error) == f"{zero}: is a character device (through a symlink), not a regular file; only regular files are read"
    target = write(tmp_path / "cube.txt.real", f"OFF\n8 12 0\n{CUBE_VERTICES}{CUBE_FACES}")
    link = tmp_path / "cube.off"
    os.symlink(target, link)
    assert read_shape(link)["face"].shape == (3, 12)
    folder = tmp_path / "folder.xyz"
    folder.mkdir()
    assert str(no_hang(lambda: read_points(folder))) == f"{folder}: is a folder, not a regular file; only regular files are read"


@pytest.mark.parametrize("name", ["huge.xyz", "huge.off", "huge.npy", "huge.pcd"])
def test_a_huge_sparse_file_is_refused_before_reading(tmp_path, name):
    from mgic_geo.data.errors import MAX_FILE_BYTES
    from mgic_geo.data.readers import read_shape

    assert MAX_FILE_BYTES == 256 * 2**20
    huge = tmp_path / name
    with open(huge, "wb") as handle:
        handle.truncate(2**30)  # 1 GiB, sparse: no disk space used
    error = no_hang(lambda: read_shape(huge))
    assert str(error) == (f"{huge}: is 1073741824 bytes, more than the 268435456-byte limit for one data file; "
                          "refused before reading (set $MGIC_MAX_FILE_BYTES to raise the limit)")


def test_the_size_limit_follows_the_environment_variable(tmp_path, monkeypatch):
    path = write(tmp_path / "cloud.xyz", "0 0 0\n1 0 0\n0 1 0\n")
    monkeypatch.setenv("MGIC_MAX_FILE_BYTES", "10")
    with pytest.raises(ValueError, match=re.escape(f"{path}: is 18 bytes, more than the 10-byte limit")):
        read_points(path)
    monkeypatch.setenv("MGIC_MAX_FILE_BYTES", "18")
    assert read_points(path).shape == (3, 3)
    monkeypatch.setenv("MGIC_MAX_FILE_BYTES", "1GB")
    with pytest.raises(ValueError, match=re.escape("$MGIC_MAX_FILE_BYTES must be a positive number of bytes, got '1GB'")):
        read_points(path)


def test_the_image_readers_refuse_fifos_and_huge_files(tmp_path, monkeypatch):
    import os

    from mgic_geo.data.cifar10_archive import read_cifar10_names
    from mgic_geo.data.image_files import load_image
    from mgic_geo.data.segmentation import load_mask

    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    message = f"{fifo}: is a FIFO (named pipe), not a regular file; only regular files are read"
    assert str(no_hang(lambda: load_image(fifo), fifo)) == message
    assert str(no_hang(lambda: load_mask(fifo, 3, 255), fifo)) == message
    os.mkfifo(tmp_path / "batches.meta")
    assert str(no_hang(lambda: read_cifar10_names(tmp_path), tmp_path / "batches.meta")).startswith(
        f"{tmp_path / 'batches.meta'}: is a FIFO (named pipe), not a regular file")
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as handle:
        handle.truncate(2**30)
    assert str(no_hang(lambda: load_image(huge))).startswith(f"{huge}: is 1073741824 bytes, more than the 268435456-byte")


# ----------------------------------------------------------------------------------------------
# A value that is not a number: an error naming the file and the line (issue 16, item 7)

PCD_HEADER = ("VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 3\nHEIGHT 1\n"
              "VIEWPOINT 0 0 0 1 0 0 0\nPOINTS 3\nDATA ascii\n")
PLY_HEADER = "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\nend_header\n"


@pytest.mark.parametrize("name, content, message", [
    ("a.pcd", PCD_HEADER + "0 0 0\n1 abc 1\n2 3 4\n", "line 12: 'abc' is not a number (the line is '1 abc 1')"),
    ("b.pcd", PCD_HEADER + "0 0 0\n1 2 1\n2 3 4x\n", "line 13: '4x' is not a number (the line is '2 3 4x')"),
    ("c.ply", PLY_HEADER + "0 0 0\n1 abc 1\n2 3 4\n", "line 9: 'abc' is not a number (the line is '1 abc 1')"),
    ("d.xyz", "1 2 3\n# a comment\n\n4 five 6\n7 8 9\n",
     "is not a table of numbers: line 4: 'five' is not a number (the line is '4 five 6')"),
    ("e.txt", "1,2,3\n4,5,--6\n", "is not a table of numbers: line 2: '--6' is not a number (the line is '4 5 --6')"),
])
def test_a_non_number_names_the_file_and_the_line(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    with pytest.raises(ValueError) as error:
        read_points(path)
    assert str(error.value) == f"{path}: {message}"


def test_numbers_in_every_spelling_are_still_read(tmp_path):
    path = write(tmp_path / "ok.pcd", PCD_HEADER + "0 0 0\n1e0 -2.5E+1 .5\n+3. 4 5\n")
    assert read_points(path).tolist() == [[0, 0, 0], [1, -25, 0.5], [3, 4, 5]]
