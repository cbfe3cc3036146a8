"""Verified downloads and safe extraction (mgic_geo.data.archive), and the ModelNet-10 / CIFAR-10 downloads
built on them. Nothing goes online: downloads come from ``file://`` URLs or a small HTTP server on
localhost, and archives are built in ``tmp_path``."""
import hashlib
import http.server
import io
import re
import tarfile
import threading
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mgic_geo.data import (
    CIFAR10DataModule,
    ModelNet10DataModule,
    download_modelnet10,
    write_synthetic_modelnet,
)
from mgic_geo.data.archive import DownloadError, download, extract, file_digest
from mgic_geo.data.cifar10_archive import (
    CIFAR10_MD5,
    CIFAR10_URL,
    download_cifar10,
    read_cifar10_archive,
)

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, so that a transfer spans several read chunks


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as handle:
        for name, data in members.items():
            handle.writestr(name, data)
    return path


def add_tar_member(handle: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
                   link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    handle.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make_tar(path: Path, members: list[tuple], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as handle:
        for member in members:
            add_tar_member(handle, *member)
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class Server:
    """An HTTP server on localhost serving ``payload``, with or without ``Range`` support, optionally
    breaking the connection after ``cut`` bytes while announcing the full length."""

    def __init__(self, payload: bytes, ranges: bool = True):
        self.payload, self.ranges, self.cut, self.requests = payload, ranges, None, []
        self.wrong_range = False  # answer a Range request with bytes from 0 on, as 206
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.headers.get("Range"))
                start, status = 0, 200
                wanted = self.headers.get("Range")
                if wanted and server.ranges:
                    start, status = 0 if server.wrong_range else int(wanted.split("=")[1].rstrip("-")), 206
                    if start >= len(server.payload):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                body = server.payload[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
                self.end_headers()
                self.wfile.write(body if server.cut is None else body[:server.cut])
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/file.bin"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


# no proxy from the environment: the server is on this machine
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({})).open


# ---------------------------------------------------------------- extraction


def test_a_good_zip_and_tar_extract_into_place_with_nothing_left_over(tmp_path):
    zipped = make_zip(tmp_path / "a.zip", {"top/one.txt": b"1", "top/sub/two.txt": b"22", "__MACOSX/._junk": b""})
    assert extract(zipped, tmp_path / "out", member="top") == tmp_path / "out"
    assert (tmp_path / "out" / "sub" / "two.txt").read_bytes() == b"22"
    assert leftovers(tmp_path) == ["a.zip", "out"]  # the scratch folder (and __MACOSX) is gone
    for mode, name in (("w:gz", "b.tar.gz"), ("w", "b.tar")):
        tarred = make_tar(tmp_path / name, [("top/", b"", tarfile.DIRTYPE), ("top/x.txt", b"x")], mode)
        target = tmp_path / f"whole-{mode[-2:]}"
        extract(tarred, target)
        assert (target / "top" / "x.txt").read_bytes() == b"x"
        assert target.stat().st_mode & 0o777 == (tmp_path / "out").stat().st_mode & 0o777  # not mkdtemp's 0o700
    assert zipped.read_bytes()[:2] == b"PK"  # the archive itself is left alone


@pytest.mark.parametrize("name, why", [
    ("top/../../evil.txt", "climbs out of the target folder with '..'"),
    ("..\\evil.txt", "climbs out of the target folder with '..'"),
    ("/tmp/evil.txt", "is an absolute path"),
    ("C:/evil.txt", "is an absolute path"),
])
def test_zip_members_escaping_the_folder_are_refused_before_anything_is_written(tmp_path, name, why):
    archive = make_zip(tmp_path / "slip.zip", {"top/fine.txt": b"fine", name: b"evil"})
    with pytest.raises(ValueError, match=f"archive .*slip.zip: refused member {re.escape(repr(name))}: it {re.escape(why)}; "
                                         "nothing was extracted"):
        extract(archive, tmp_path / "out" / "dest", member="top")
    assert leftovers(tmp_path / "out") == []  # neither the destination nor a scratch folder
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("members, why", [
    ([("top/link", b"", tarfile.SYMTYPE, "/etc/passwd")], "is a symbolic link to '/etc/passwd'"),
    ([("top/f", b"data"), ("top/hard", b"", tarfile.LNKTYPE, "top/f")], "is a hard link to 'top/f'"),
    ([("top/dev", b"", tarfile.CHRTYPE)], "is a device, FIFO or other special file"),
    ([("top/fifo", b"", tarfile.FIFOTYPE)], "is a device, FIFO or other special file"),
    ([("/abs.txt", b"x")], "is an absolute path"),
    ([("top/../../up.txt", b"x")], "climbs out of the target folder"),
])
def test_tar_links_devices_and_escaping_paths_are_refused(tmp_path, members, why):
    archive = make_tar(tmp_path / "bad.tar.gz", [("top/ok.txt", b"ok"), *members])
    with pytest.raises(ValueError, match=f"archive .*bad.tar.gz: refused member '{members[-1][0]}': it {why}"):
        extract(archive, tmp_path / "out", member="top")
    assert leftovers(tmp_path) == ["bad.tar.gz"]


def test_zip_symlink_members_are_refused(tmp_path):
    info = zipfile.ZipInfo("top/link")
    info.external_attr = (0o120777 << 16)  # how Info-ZIP stores a symbolic link
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as handle:
        handle.writestr(info, "/etc/passwd")
    with pytest.raises(ValueError, match="link.zip: refused member 'top/link': it is a symbolic link or special file"):
        extract(tmp_path / "link.zip", tmp_path / "out")


def test_truncated_and_corrupt_archives_leave_nothing_half_extracted(tmp_path):
    big = np.random.default_rng(0).bytes(300_000)  # incompressible, so a cut lands inside the data
    members = [("top/a.bin", big), ("top/b.bin", big), ("top/c.bin", big)]
    whole = make_tar(tmp_path / "whole.tar.gz", members).read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: len(whole) * 2 // 3])  # the first member is complete, the later ones are not
    with pytest.raises(ValueError, match="archive .*cut.tar.gz is truncated or corrupt.*nothing was extracted"):
        extract(cut, tmp_path / "out", member="top")
    zipped = make_zip(tmp_path / "whole.zip", {name: data for name, data in members}).read_bytes()
    (tmp_path / "cut.zip").write_bytes(zipped[: len(zipped) // 2])  # no central directory: not a zip any more
    with pytest.raises(ValueError, match="cut.zip: not a zip or tar archive, or truncated"):
        extract(tmp_path / "cut.zip", tmp_path / "out")
    flipped = bytearray(zipped)
    flipped[len(zipped) // 2] ^= 0xFF  # inside the second member's data: its CRC no longer matches
    (tmp_path / "crc.zip").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=r"crc.zip is truncated or corrupt at member 'top/b.bin' \(BadZipFile: .*CRC"):
        extract(tmp_path / "crc.zip", tmp_path / "out", member="top")
    assert leftovers(tmp_path) == ["crc.zip", "cut.tar.gz", "cut.zip", "whole.tar.gz", "whole.zip"]


def test_an_archive_larger_than_the_free_disk_space_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    archive = make_zip(tmp_path / "big.zip", {"top/zeros": bytes(100_000)})  # compresses to a few hundred bytes
    monkeypatch.setattr(shutil, "disk_usage", lambda path: namedtuple("usage", "total used free")(10**6, 0, 50_000))
    with pytest.raises(ValueError, match="big.zip: its members hold 100000 bytes, .* has 50000 bytes free; nothing"):
        extract(archive, tmp_path / "out")
    assert leftovers(tmp_path) == ["big.zip"]


def test_extract_refuses_part_files_existing_destinations_and_a_missing_member(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"top/x": b"x"})
    part = tmp_path / "a.zip.part"
    part.write_bytes(archive.read_bytes())  # even a complete-looking .part is an unfinished download
    with pytest.raises(ValueError, match=r"a.zip.part: an unfinished download \(.part\) is never extracted"):
        extract(part, tmp_path / "out")
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="the destination .*out exists already"):
        extract(archive, tmp_path / "out")
    with pytest.raises(ValueError, match=r"a.zip: holds no other/ folder \(it holds top\); nothing was extracted"):
        extract(archive, tmp_path / "dest", member="other")
    assert leftovers(tmp_path) == ["a.zip", "a.zip.part", "out"]


# ---------------------------------------------------------------- downloads


def test_download_from_a_file_url_is_verified_then_renamed(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    target = tmp_path / "target.bin"
    assert download(source.as_uri(), target, sha256=sha256(PAYLOAD), md5=hashlib.md5(PAYLOAD).hexdigest()) == target
    assert target.read_bytes() == PAYLOAD and not (tmp_path / "target.bin.part").exists()


def test_a_wrong_checksum_deletes_the_download_and_creates_nothing(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    wrong = "0" * 64
    with pytest.raises(ValueError, match=f"download of file://.*source.bin is corrupt and was deleted: .*target.bin.part: "
                                         f"sha256 checksum mismatch: expected {wrong}, got {sha256(PAYLOAD)}"):
        download(source.as_uri(), tmp_path / "target.bin", sha256=wrong)
    with pytest.raises(ValueError, match="md5 checksum mismatch"):
        download(source.as_uri(), tmp_path / "target.bin", md5="f" * 32)
    with pytest.raises(ValueError, match=r"expected 10 bytes, the file has 1048576"):
        download(source.as_uri(), tmp_path / "target.bin", size=10)
    assert leftovers(tmp_path) == ["source.bin"]
    with pytest.raises(ValueError, match="`sha256` must be a 64-digit hex string, got 'abc'"):
        download(source.as_uri(), tmp_path / "target.bin", sha256="abc")


def test_a_part_leftover_is_restarted_when_the_server_ignores_range(tmp_path):
    target = tmp_path / "target.bin"
    (tmp_path / "target.bin.part").write_bytes(b"garbage from an older, different download")  # 41 bytes
    with Server(PAYLOAD, ranges=False) as server:
        download(server.url, target, sha256=sha256(PAYLOAD), opener=DIRECT)
    assert server.requests == ["bytes=41-"]  # asked to resume, got the whole file, started over
    assert target.read_bytes() == PAYLOAD and leftovers(tmp_path) == ["target.bin"]


def test_a_broken_off_transfer_keeps_its_part_and_the_retry_resumes_it(tmp_path):
    target = tmp_path / "target.bin"
    with Server(PAYLOAD) as server:
        server.cut = 300_000
        with pytest.raises(DownloadError, match=r"download of http://127.0.0.1:\d+/file.bin broke off after 300000 of "
                                                r"1048576 bytes.*target.bin.part is kept and a retry resumes it"):
            download(server.url, target, sha256=sha256(PAYLOAD), opener=DIRECT)
        assert (tmp_path / "target.bin.part").stat().st_size == 300_000 and not target.exists()
        server.cut = None
        download(server.url, target, sha256=sha256(PAYLOAD), opener=DIRECT)
    assert server.requests == [None, "bytes=300000-"]
    assert target.read_bytes() == PAYLOAD and leftovers(tmp_path) == ["target.bin"]


def test_a_resumed_part_with_a_wrong_prefix_fails_the_checksum_and_is_deleted(tmp_path):
    (tmp_path / "target.bin.part").write_bytes(b"\xff" * 1000)  # not what the server holds
    with Server(PAYLOAD) as server:
        with pytest.raises(ValueError, match="corrupt and was deleted: .*sha256 checksum mismatch"):
            download(server.url, tmp_path / "target.bin", sha256=sha256(PAYLOAD), opener=DIRECT)
        assert server.requests == ["bytes=1000-"]
        assert leftovers(tmp_path) == []
        # a .part as long as the file (or longer): the server answers 416 and the download starts over
        (tmp_path / "target.bin.part").write_bytes(b"\xff" * len(PAYLOAD))
        download(server.url, tmp_path / "target.bin", sha256=sha256(PAYLOAD), opener=DIRECT)
    assert (tmp_path / "target.bin").read_bytes() == PAYLOAD


def test_a_206_answer_for_another_range_is_not_appended(tmp_path):
    (tmp_path / "target.bin.part").write_bytes(PAYLOAD[:1000])
    with Server(PAYLOAD) as server:
        server.wrong_range = True
        download(server.url, tmp_path / "target.bin", sha256=sha256(PAYLOAD), opener=DIRECT)
    assert server.requests == ["bytes=1000-", None]  # discarded, then asked for the whole file
    assert (tmp_path / "target.bin").read_bytes() == PAYLOAD


def test_a_server_sending_more_than_the_expected_size_is_cut_off(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    with pytest.raises(ValueError, match=r"is corrupt and was deleted: .*expected 1000 bytes, the file has"):
        download(source.as_uri(), tmp_path / "target.bin", size=1000)
    assert leftovers(tmp_path) == ["source.bin"]


def test_an_unreachable_server_is_an_oserror_naming_it(tmp_path):
    with pytest.raises(urllib.error.URLError):
        download((tmp_path / "missing.bin").as_uri(), tmp_path / "target.bin")
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- ModelNet-10 and CIFAR-10


@pytest.fixture(scope="module")
def modelnet_zip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("modelnet")
    write_synthetic_modelnet(folder / "shapes", shapes_per_class=(2, 1), seed=0)
    members = {f"ModelNet10/{p.relative_to(folder / 'shapes')}": p.read_bytes() for p in (folder / "shapes").rglob("*.off")}
    return make_zip(folder / "ModelNet10.zip", {**members, "__MACOSX/._junk": b""})


def test_modelnet_download_from_a_url_records_and_prints_its_sha256(modelnet_zip, tmp_path, capsys):
    root = tmp_path / "modelnet"
    (root / ".ModelNet10.zip.part").parent.mkdir()
    (root / ".ModelNet10.zip.part").write_bytes(b"left over")  # hidden: the root still counts as empty
    assert download_modelnet10(root, url=modelnet_zip.as_uri()) == root / "ModelNet10"
    digest = file_digest(modelnet_zip)
    assert f"SHA-256 {digest} (no official checksum exists" in capsys.readouterr().err
    assert (root / ".ModelNet10.zip.sha256").read_text() == f"{digest}  ModelNet10.zip\n"
    assert leftovers(root) == [".ModelNet10.zip.sha256", "ModelNet10"]
    assert len(list((root / "ModelNet10").rglob("*.off"))) == 30
    dm = ModelNet10DataModule(root=str(root), num_points=64, batch_size=4, val_fraction=0)
    dm.setup("fit")
    assert dm.layout.source == "meshes" and len(dm.train_set) == 20
    with pytest.raises(ValueError, match="is not empty; downloads go only into an empty root"):
        download_modelnet10(root, url=modelnet_zip.as_uri())


def test_modelnet_download_with_a_wrong_sha256_or_an_unsafe_archive_leaves_the_root_empty(modelnet_zip, tmp_path):
    root = tmp_path / "modelnet"
    with pytest.raises(ValueError, match=r"sha256 checksum mismatch: expected 0{64}, got .*; offline, extract "
                                         r"ModelNet10.zip there by hand"):
        download_modelnet10(root, url=modelnet_zip.as_uri(), sha256="0" * 64)
    assert leftovers(root) == []
    evil = make_zip(tmp_path / "evil.zip", {"ModelNet10/bathtub/train/a.off": b"OFF\n", "ModelNet10/../../evil": b"x"})
    with pytest.raises(ValueError, match="refused member 'ModelNet10/../../evil'.*the downloaded archive was deleted"):
        download_modelnet10(root, url=evil.as_uri(), sha256=file_digest(evil))
    assert leftovers(root) == [] and not (tmp_path / "evil").exists()
    with pytest.raises(ValueError, match="`sha256` must be a 64-digit hex string"):
        download_modelnet10(root, url=evil.as_uri(), sha256="not hex")


def test_modelnet_datamodule_offline_download_is_a_clear_error(tmp_path, monkeypatch):
    requested = []

    def offline(request, timeout=None):
        requested.append(request.full_url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    dm = ModelNet10DataModule(root=str(tmp_path / "modelnet"), download=True)
    with pytest.raises(RuntimeError, match=r"could not download ModelNet-10 from http://.*ModelNet10.zip .*name "
                                           r"resolution.*by hand"):
        dm.prepare_data()
    assert requested == ["http://3dvision.princeton.edu/projects/2014/3DShapeNets/ModelNet10.zip"]
    assert leftovers(tmp_path / "modelnet") == []


def test_cifar10_constants_are_torchvisions():
    from torchvision.datasets import CIFAR10

    assert (CIFAR10_URL, CIFAR10_MD5) == (CIFAR10.url, CIFAR10.tgz_md5)


def cifar_tar(path: Path, extra: list[tuple] = ()) -> Path:
    import pickle

    rng = np.random.default_rng(0)
    names = [f"class{i}" for i in range(10)]
    files = {"batches.meta": pickle.dumps({"label_names": names}, protocol=2)}
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        files[name] = pickle.dumps(batch, protocol=2)
    members = [(f"cifar-10-batches-py/{name}", data) for name, data in files.items()]
    return make_tar(path, [*members, *extra])


def test_cifar10_download_checks_the_md5_before_extracting(tmp_path, monkeypatch):
    archive = cifar_tar(tmp_path / "cifar.tar.gz")
    root = tmp_path / "cifar"
    with pytest.raises(ValueError, match=f"md5 checksum mismatch: expected {CIFAR10_MD5}, got .*Offline, extract "
                                         "cifar-10-python.tar.gz there by hand"):
        download_cifar10(root, url=archive.as_uri())  # our stand-in archive is not the official one
    assert leftovers(root) == []
    monkeypatch.setattr("mgic_geo.data.cifar10_archive.CIFAR10_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    assert download_cifar10(root, url=archive.as_uri()) == root / "cifar-10-batches-py"
    assert leftovers(root) == ["cifar-10-batches-py"]
    images, _, names = read_cifar10_archive(root / "cifar-10-batches-py", train=True)
    assert images.shape == (20, 32, 32, 3) and names[0] == "class0"
    with pytest.raises(ValueError, match="is not empty; downloads go only into an empty root"):
        download_cifar10(root, url=archive.as_uri())
    evil = cifar_tar(tmp_path / "evil.tar.gz", [("cifar-10-batches-py/x", b"", tarfile.SYMTYPE, "/etc/passwd")])
    monkeypatch.setattr("mgic_geo.data.cifar10_archive.CIFAR10_MD5", hashlib.md5(evil.read_bytes()).hexdigest())
    with pytest.raises(ValueError, match="refused member 'cifar-10-batches-py/x': it is a symbolic link"):
        download_cifar10(tmp_path / "other", url=evil.as_uri())
    assert leftovers(tmp_path / "other") == []


def test_cifar10_datamodule_offline_download_is_a_clear_error(tmp_path, monkeypatch):
    def offline(request, timeout=None):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError, match=r"could not download CIFAR-10 from https://.*cifar-10-python\.tar\.gz "
                                           r".*offline.* by hand"):
        CIFAR10DataModule(str(tmp_path / "c"), download=True).prepare_data()
    assert leftovers(tmp_path / "c") == []


@pytest.mark.parametrize("member, why", [
    ("../../../victim", "climbs out of the target folder with '..'"),
    ("top/../../victim", "climbs out of the target folder with '..'"),
    ("/etc", "is an absolute path"),
    ("C:/victim", "is an absolute path"),
    ("./", "names no folder inside the archive"),
    ("", "has an empty name or a NUL character"),
])
def test_the_member_argument_is_checked_like_the_archive_members(tmp_path, member, why):
    victim = tmp_path / "x" / "y" / "victim"  # where ../../../victim led from the scratch folder
    victim.mkdir(parents=True)
    (victim / "precious.txt").write_text("keep me")
    archive = make_zip(tmp_path / "a.zip", {"top/a.txt": b"a"})
    out = tmp_path / "x" / "y" / "z" / "dest"
    with pytest.raises(ValueError, match=re.escape(f"archive {archive}: refused `member`={member!r}: it {why}; "
                                                   "nothing was extracted")):
        extract(archive, out, member=member)
    assert (victim / "precious.txt").read_text() == "keep me"
    assert not out.exists() and leftovers(victim.parent) == ["victim"]


def test_a_member_must_be_a_folder_the_archive_holds(tmp_path):
    archive = make_tar(tmp_path / "a.tar.gz", [("top/sub/a.txt", b"a"), ("top/b.txt", b"b")])
    with pytest.raises(ValueError, match=r"holds no top/b.txt/ folder"):
        extract(archive, tmp_path / "dest", member="top/b.txt")  # a file, not a folder
    with pytest.raises(ValueError, match="`member` must be the name of a folder inside it, got int"):
        extract(archive, tmp_path / "dest", member=3)
    assert extract(archive, tmp_path / "dest", member="./top//sub/") == tmp_path / "dest"
    assert (tmp_path / "dest" / "a.txt").read_bytes() == b"a"
