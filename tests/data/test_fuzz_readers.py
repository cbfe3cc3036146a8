"""Fuzzed readers: any byte string given to a shape, point-cloud, image or CIFAR-10 batch reader gives
either a valid result or a ``DataFileError`` (a ``ValueError``) naming the file; never a hang, a crash,
another exception type or an allocation the file's size does not justify.

Each reader gets random bytes, and mutations (bit flips, cuts, insertions, splices, and header numbers
replaced by 0, -1, 2**31 - 1, 10**12, ...) of valid files generated here. A watchdog ends the process
with a traceback if one input takes more than ``WATCHDOG`` seconds (a hang), and each example has a
hypothesis deadline. The figures (inputs tried, accepted, refused per reader) are printed at the end of
the module (shown with ``-s``; also written to the terminal summary).

Short run (the normal suite: 150 examples per reader and kind, under a minute on 2 cores)::

    .venv/bin/python -m pytest tests/data/test_fuzz_readers.py -s

Long run (random seeds, the given number of examples per reader and kind; 1200: ~5 minutes on 2 cores)::

    MGIC_FUZZ_EXAMPLES=1200 .venv/bin/python -m pytest tests/data/test_fuzz_readers.py -s
"""
import faulthandler
import io
import os
import pickle
import re
import resource
import struct
import tempfile
import tracemalloc
import zlib
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image

from mgic_geo.data.cifar10_archive import read_cifar10_archive
from mgic_geo.data.image_files import load_image
from mgic_geo.data.readers import DataFileError, read_mesh, read_points

# hypothesis caches what it learns under ./.hypothesis unless told otherwise; keep the checkout clean
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "mgic-geo-hypothesis")
LONG = "MGIC_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("MGIC_FUZZ_EXAMPLES", "150"))
WATCHDOG = 60  # seconds for one input before the process is ended with a traceback
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=20), database=None, derandomize=not LONG,
                suppress_health_check=list(HealthCheck))
# header numbers that overflow, underflow or claim far more data than the file holds
NUMBERS = [b"0", b"-1", b"1", b"3", b"65536", b"2147483647", b"2147483648", b"4294967295", b"1000000000000",
           b"99999999999999999999", b"1e308", b"nan", b"-0"]
WORDS = [b"float", b"double", b"uchar", b"int", b"list", b"char", b"F", b"U", b"I", b"ascii", b"binary",
         b"binary_compressed", b"binary_big_endian", b"x", b"rgb", b"element", b"property", b"vertex", b"face",
         b"COUNT", b"SIZE", b"DATA", b"POINTS", b"end_header", b"OFF", b"#", b"\x00", b"\r", b"\t", b" "]
COUNTS: dict[str, Counter] = defaultdict(Counter)


# ---------------------------------------------------------------- seed corpus (valid files)


POINTS = np.random.default_rng(0).normal(size=(6, 3))
CUBE = ("OFF\n8 12 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n0 0 1\n1 0 1\n1 1 1\n0 1 1\n"
        "3 0 2 1\n3 0 3 2\n3 4 5 6\n3 4 6 7\n3 0 1 5\n3 0 5 4\n3 1 2 6\n3 1 6 5\n3 2 3 7\n3 2 7 6\n3 3 0 4\n3 3 4 7\n")


def ply(fmt: str) -> bytes:
    header = (f"ply\nformat {fmt} 1.0\ncomment made by a test\nelement vertex {len(POINTS)}\nproperty float x\n"
              "property float y\nproperty float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n")
    if fmt == "ascii":
        body = "".join(f"{x} {y} {z}\n" for x, y, z in POINTS) + "3 0 1 2\n"
        return (header + body).encode()
    order = "<" if fmt == "binary_little_endian" else ">"
    return header.encode() + POINTS.astype(order + "f4").tobytes() + struct.pack(order + "B3i", 3, 0, 1, 2)


def pcd(data: str) -> bytes:
    header = (f"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {len(POINTS)}\n"
              f"HEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(POINTS)}\nDATA {data}\n").encode()
    if data == "ascii":
        return header + "".join(f"{x} {y} {z}\n" for x, y, z in POINTS).encode()
    return header + POINTS.astype("<f4").tobytes()


def compressed_pcd(folder: Path) -> bytes:
    import open3d

    path = folder / "seed_compressed.pcd"
    cloud = open3d.geometry.PointCloud(open3d.utility.Vector3dVector(POINTS))
    assert open3d.io.write_point_cloud(str(path), cloud, write_ascii=False, compressed=True)
    assert b"DATA binary_compressed" in path.read_bytes()
    return path.read_bytes()


def npy(array: np.ndarray) -> bytes:
    handle = io.BytesIO()
    np.save(handle, array)
    return handle.getvalue()


def image(fmt: str, mode: str = "RGB", size=(5, 4)) -> bytes:
    handle = io.BytesIO()
    pixels = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(handle, fmt)
    return handle.getvalue()


NAMES = [f"class{i}" for i in range(10)]


def cifar_batch(protocol: int) -> bytes:
    data = np.random.default_rng(2).integers(0, 256, (2, 3072), dtype=np.uint8)
    return pickle.dumps({"batch_label": "testing batch 1 of 1", "labels": [3, 7], "data": data,
                         "filenames": ["a.png", "b.png"]}, protocol=protocol)


def cifar_meta(protocol: int) -> bytes:
    return pickle.dumps({"num_cases_per_batch": 2, "label_names": NAMES, "num_vis": 3072}, protocol=protocol)


# ---------------------------------------------------------------- readers under test


def check_cloud(points):
    assert isinstance(points, torch.Tensor) and points.dtype == torch.float64
    assert points.dim() == 2 and points.shape[1] == 3 and points.shape[0] > 0 and torch.isfinite(points).all()


def check_mesh(result):
    pos, face = result
    assert pos.dtype == torch.float32 and pos.dim() == 2 and pos.shape[1] == 3 and torch.isfinite(pos).all()
    assert face.dtype == torch.long and face.dim() == 2 and face.shape[0] == 3
    assert int(face.min()) >= 0 and int(face.max()) < len(pos)


def check_image(result):
    assert isinstance(result, Image.Image) and result.mode == "RGB" and result.width > 0 and result.height > 0


def check_cifar(result):
    images, labels, names = result
    assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3) and labels.shape == (len(images),)
    assert all(isinstance(n, str) for n in names) and (len(labels) == 0 or 0 <= labels.min() <= labels.max() < len(names))


def read_cifar(path: Path):
    return read_cifar10_archive(path.parent, train=False)


# name: (file names to write the input to, reader, result check, seeds(folder) -> list of bytes)
READERS = {
    "off": (["shape.off"], read_mesh, check_mesh, lambda folder: [CUBE.encode(), CUBE.replace("\n", "\r\n").encode(),
                                                                   b"OFF8 12 0\n" + CUBE.encode()[11:]]),
    "pcd": (["cloud.pcd"], read_points, check_cloud, lambda folder: [pcd("ascii"), pcd("binary"), compressed_pcd(folder)]),
    "ply": (["cloud.ply"], read_points, check_cloud,
            lambda folder: [ply("ascii"), ply("binary_little_endian"), ply("binary_big_endian")]),
    "xyz/pts/txt": (["cloud.xyz", "cloud.pts", "cloud.txt"], read_points, check_cloud, lambda folder: [
        "".join(f"{x} {y} {z}\n" for x, y, z in POINTS).encode(),
        (f"{len(POINTS)}\n" + "".join(f"{x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in POINTS)).encode(),
        "".join(f"{x},{y},{z},0,0,1\n" for x, y, z in POINTS).encode()]),
    "npy": (["cloud.npy"], read_points, check_cloud, lambda folder: [
        npy(POINTS), npy(POINTS.astype(np.float32)), npy(np.asfortranarray(POINTS)), npy((POINTS * 9).astype(np.int16))]),
    "png/jpeg": (["image.png", "image.jpg"], load_image, check_image, lambda folder: [
        image("PNG"), image("PNG", "L"), image("PNG", "P"), image("JPEG"), image("JPEG", "L")]),
    "cifar batch": (["cifar-10-batches-py/test_batch", "cifar-10-batches-py/batches.meta"], read_cifar, check_cifar,
                    lambda folder: [cifar_batch(2), cifar_meta(2), cifar_batch(5), cifar_meta(5)]),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, request):
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "cifar-10-batches-py").mkdir()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield folder
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 2**20  # ru_maxrss is in KiB on Linux
    lines = [(f"fuzzed readers ({'long run, random seeds' if LONG else 'short run, fixed seeds'}, "
              f"max_examples={EXAMPLES} per reader and kind; peak RSS grew by {grown:.2f} GiB):"),
             f"  {'reader':<13} {'kind':<9} {'tried':>7} {'accepted':>9} {'refused':>8}"]
    for key in sorted(COUNTS):
        reader, kind = key.split(":")
        counts = COUNTS[key]
        lines.append(f"  {reader:<13} {kind:<9} {counts['tried']:>7} {counts['accepted']:>9} {counts['refused']:>8}")
    print("\n" + "\n".join(lines))  # shown with -s
    request.config.pluginmanager.register(_Summary(lines), "mgic-fuzz-summary")  # and in the terminal summary
    assert grown < 2, f"the fuzzed readers raised the peak memory by {grown:.2f} GiB"


class _Summary:
    """A plugin that repeats the figures in pytest's terminal summary, which output capture does not hide."""

    def __init__(self, lines: list[str]):
        self.lines = lines

    def pytest_terminal_summary(self, terminalreporter):
        terminalreporter.write_sep("-", "fuzzed readers")
        for line in self.lines:
            terminalreporter.write_line(line)


def run_reader(folder: Path, reader: str, kind: str, data: bytes, target: int) -> None:
    names, read, check, _ = READERS[reader]
    path = folder / names[target % len(names)]
    if reader == "cifar batch":  # the other file of the pair holds a valid batch or meta file
        for name, valid in (("test_batch", cifar_batch(2)), ("batches.meta", cifar_meta(2))):
            (folder / "cifar-10-batches-py" / name).write_bytes(valid)
    path.write_bytes(data)
    COUNTS[f"{reader}:{kind}"]["tried"] += 1
    faulthandler.dump_traceback_later(WATCHDOG, exit=True)
    try:
        result = read(path)
    except DataFileError as err:
        assert str(path) in str(err), f"the error does not name the file: {err}"
        COUNTS[f"{reader}:{kind}"]["refused"] += 1
        return
    finally:
        faulthandler.cancel_dump_traceback_later()
    check(result)
    COUNTS[f"{reader}:{kind}"]["accepted"] += 1


@st.composite
def mutations(draw, seeds: list[bytes]) -> tuple[int, bytes]:
    """A seed file changed by one to four edits, most of them near the header, and the seed's index."""
    index = draw(st.integers(0, len(seeds) - 1))
    data = bytearray(seeds[index])
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(["flip", "cut", "insert", "delete", "number", "word", "splice"]))
        at = draw(st.integers(0, max(0, min(len(data), 400 if draw(st.booleans()) else len(data)) - 1)))
        if edit == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "cut":
            del data[at:]
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif edit == "delete":
            del data[at:at + draw(st.integers(1, 32))]
        elif edit in ("number", "word"):
            pattern = rb"-?\d+(\.\d+)?" if edit == "number" else rb"[A-Za-z_]+"
            spans = [m.span() for m in re.finditer(pattern, bytes(data[:600]))]
            if spans:
                start, end = draw(st.sampled_from(spans))
                data[start:end] = draw(st.sampled_from(NUMBERS if edit == "number" else WORDS))
        elif edit == "splice":  # a valid beginning, then anything
            data[at:] = draw(st.binary(max_size=256))
    return index, bytes(data)


@pytest.mark.parametrize("reader", list(READERS))
def test_random_bytes(workdir, reader):
    @FUZZ
    @given(data=st.binary(max_size=2048), target=st.integers(0, 2))
    def fuzz(data, target):
        run_reader(workdir, reader, "random", data, target)

    fuzz()


@pytest.mark.parametrize("reader", list(READERS))
def test_mutated_valid_files(workdir, reader):
    seeds = READERS[reader][3](workdir)
    for target, seed in enumerate(seeds):  # the seeds themselves are read back as they are
        run_reader(workdir, reader, "seed", seed, target)
    assert COUNTS[f"{reader}:seed"]["accepted"] == len(seeds)

    @FUZZ
    @given(mutated=mutations(seeds))
    def fuzz(mutated):
        target, data = mutated  # written where its seed was
        run_reader(workdir, reader, "mutated", data, target)

    fuzz()


# ---------------------------------------------------------------- headers claiming huge sizes, and known crashers


def refused(path: Path, data: bytes, read, message: str, peak_mib: float = 16) -> None:
    """``read(path)`` is a ``DataFileError`` naming the file and matching ``message``, and Python-side
    allocations (numpy's included) stay under ``peak_mib``: the claim is refused before allocating."""
    import open3d  # noqa: F401  (imported here so that its import is not counted as the reader's allocation)

    Image.init()
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(DataFileError, match=re.escape(str(path)) + ": .*" + message):
            read(path)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert peak < peak_mib, f"{path.name}: {peak:.1f} MiB allocated before the refusal"


def test_headers_claiming_huge_point_counts_are_refused_before_allocating(tmp_path):
    huge = 10**12
    refused(tmp_path / "huge.off", f"OFF\n{huge} 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n".encode(), read_mesh,
            f"is truncated: the header announces {huge} vertices")
    refused(tmp_path / "huge.ply", ply("ascii").replace(b"vertex 6", f"vertex {huge}".encode()), read_points,
            r"bad header: the count of element 'vertex' must be an integer in \[0, 2147483647\], got '1000000000000'")
    for fmt in ("ascii", "binary_little_endian"):
        refused(tmp_path / "big.ply", ply(fmt).replace(b"vertex 6", b"vertex 2000000000"), read_points,
                r"is truncated: the header announces 2000000000 vertex, 1 face \(\d+ bytes at least\), the file holds")
    for data in ("ascii", "binary"):
        claim = pcd(data).replace(b"WIDTH 6", b"WIDTH 2000000000").replace(b"POINTS 6", b"POINTS 2000000000")
        refused(tmp_path / "big.pcd", claim, read_points, r"is truncated: the header announces 2000000000 ")
    claim = pcd("binary").replace(b"WIDTH 6", f"WIDTH {huge}".encode()).replace(b"POINTS 6", f"POINTS {huge}".encode())
    refused(tmp_path / "huge.pcd", claim, read_points, r"bad header: WIDTH must be an integer in \[1, 2147483647\]")
    handle = io.BytesIO()
    np.lib.format.write_array_header_1_0(handle, {"descr": "<f8", "fortran_order": False, "shape": (huge, 3)})
    claim = handle.getvalue() + POINTS.tobytes()
    refused(tmp_path / "huge.npy", claim, read_points,
            re.escape(f"is truncated: its header announces a float64 array of shape ({huge}, 3) ({huge * 24} bytes), "
                      "the file holds 144 bytes after its header"))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` grey pixels (its data is a few bytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_images_claiming_huge_sizes_are_refused_before_decoding(tmp_path):
    refused(tmp_path / "bomb.png", png_claiming(10**5, 10**5), load_image,
            r"refused as a possible decompression bomb \(Image size \(10000000000 pixels\) exceeds limit")
    # above PIL's limit but below twice it, where PIL only warns
    assert Image.MAX_IMAGE_PIXELS < 12_000 * 10_000 < 2 * Image.MAX_IMAGE_PIXELS
    refused(tmp_path / "warned.png", png_claiming(12_000, 10_000), load_image,
            r"refused as a possible decompression bomb \(Image size \(120000000 pixels\) exceeds limit")
    refused(tmp_path / "small.png", png_claiming(5_000, 5_000), load_image,
            r"the PNG claims 5000 x 5000 pixels, more than its \d+ bytes can hold; refused before decoding")
    gif = io.BytesIO()
    Image.new("RGB", (4, 4)).save(gif, "GIF")
    refused(tmp_path / "really_a_gif.png", gif.getvalue(), load_image, "unreadable or truncated image")


@pytest.mark.parametrize("count", [b"1 1 -1", b"1 2147483647 1", b"1 1 element", b"1 1 4294967295", b"-1 1 1",
                                   b"1 1 99999999999999999999"])
def test_pcd_counts_that_crashed_open3d_are_refused(tmp_path, count):
    # each of these ended the interpreter with a segmentation fault inside open3d's PCD reader
    for data in ("ascii", "binary"):
        refused(tmp_path / "count.pcd", pcd(data).replace(b"COUNT 1 1 1", b"COUNT " + count), read_points,
                r"bad header: the COUNT of field '[xyz]' must be (an integer in \[1, 2147483647\]|1, got 2147483647)")
        # the same count on a field besides x y z: refused too, or bounded by the bytes the file holds
        bad = next(value for value in count.split() if value != b"1")
        extra = (pcd(data).replace(b"FIELDS x y z", b"FIELDS x y z w").replace(b"SIZE 4 4 4", b"SIZE 4 4 4 4")
                 .replace(b"TYPE F F F", b"TYPE F F F F").replace(b"COUNT 1 1 1", b"COUNT 1 1 1 " + bad))
        refused(tmp_path / "extra.pcd", extra, read_points, r"(bad header: the COUNT of field 'w' must be an integer in "
                                                             r"\[1, 2147483647\]|is truncated: the header announces)")


def test_ascii_pcd_rows_shorter_than_the_header_fields_are_refused(tmp_path):
    # open3d returns such a file without a warning, as points of uninitialised memory (values like 4.7e-310)
    short = (pcd("ascii").replace(b"FIELDS x y z", b"FIELDS x y z w").replace(b"SIZE 4 4 4", b"SIZE 4 4 4 4")
             .replace(b"TYPE F F F", b"TYPE F F F F").replace(b"COUNT 1 1 1", b"COUNT 1 1 1 1"))
    refused(tmp_path / "short.pcd", short, read_points, r"is truncated or malformed: the header announces 6 points of 4 "
                                                         r"values, the file has 6 data rows of \[3\] values")


def test_ply_and_pcd_without_a_header_reach_open3d_only_when_it_acts_on_nothing(tmp_path):
    # no PCD keyword and no 'ply' magic: open3d reads no header value and reports the file itself
    refused(tmp_path / "words.pcd", b"garbage\nmore garbage\n", read_points, r"malformed or truncated \(open3d:")
    refused(tmp_path / "words.ply", b"plyx\n", read_points, r"malformed or truncated \(open3d:")
    # a keyword anywhere (open3d matches them by prefix, even in a 1023-byte piece of a long line) means our checks
    refused(tmp_path / "late.pcd", b"x" * 1023 + b"COUNTS 1 1 -1\n", read_points, "bad header")


def test_cifar_batches_with_cpickle_memo_numbering_load(tmp_path):
    # Python 2's cPickle, which wrote the official batches, numbers its memo from 1 instead of 0
    import pickletools

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "batches.meta").write_bytes(cifar_meta(2))
    data = bytearray(cifar_batch(2))
    for opcode, _, position in pickletools.genops(bytes(data)):
        if opcode.name in ("BINPUT", "BINGET"):
            data[position + 1] += 1
    assert pickle.loads(bytes(data))["labels"] == [3, 7]
    (folder / "test_batch").write_bytes(bytes(data))
    images, labels, names = read_cifar10_archive(folder, train=False)
    assert images.shape == (2, 32, 32, 3) and labels.tolist() == [3, 7] and names == NAMES


def test_cifar_pickles_that_would_allocate_or_corrupt_are_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "batches.meta").write_bytes(cifar_meta(2))

    def read(path):
        return read_cifar10_archive(folder, train=False)

    batch = folder / "test_batch"
    # BINBYTES8 claiming 8 GiB in a 16-byte file: the unpickler would allocate them before reading
    refused(batch, b"\x80\x04\x8e" + struct.pack("<Q", 2**33) + b"abc.", read,
            r"not a readable CIFAR-10 python batch \(ValueError: expected 8589934592 bytes in a bytes8, but only 4 remain")
    # numpy.ndarray((10**9,), 'O') would allocate 8 GB and fill it with None
    refused(batch, b"\x80\x02cnumpy\nndarray\nJ\x00\xca\x9a;\x85X\x01\x00\x00\x00O\x86R.", read,
            r"not a readable CIFAR-10 python batch \(TypeError: 'object' object is not callable")
    # a dtype state whose flags (63) mark uint8 as holding Python objects (numpy's own __setstate__ takes
    # them, and numpy then reports internal errors): only the byte order of a state is used
    good = cifar_batch(2)
    assert good.count(b"\xff\xff\xff\xffK\x00t") == 1
    batch.write_bytes(good.replace(b"\xff\xff\xff\xffK\x00t", b"\xff\xff\xff\xffK?t"))
    images, labels, _ = read(batch)
    assert images.dtype == np.uint8 and not images.dtype.hasobject and images.sum() == pickle.loads(good)["data"].sum()
    batch.write_bytes(good.replace(b"X\x01\x00\x00\x00|", b"X\x01\x00\x00\x00!"))  # a byte order numpy does not know
    with pytest.raises(DataFileError, match=r"test_batch: .*refused a dtype state \(3, '!', None"):
        read(batch)
    # a memo index of 671 million: the unpickler would allocate a 10 GB memo table (found by fuzzing)
    refused(batch, good.replace(b"}q\x00", b"}rgb\x00", 1), read,
            r"refused the memo index 671113831 after 0 stored objects")
    # labels nested 40 deep with shared lists: numpy would build 2**40 of them
    labels = 0
    for _ in range(40):
        labels = [labels, labels]
    nested = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": labels}, protocol=2)
    assert len(nested) < 10_000
    refused(batch, nested, read, r"'labels' must be 2 integers in \[0, 10\), found 2")
