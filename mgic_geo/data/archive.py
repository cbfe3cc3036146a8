"""Downloads that are verified before use, and archive extraction that cannot write outside its folder.

- :func:`download` streams a URL into ``<file>.part``; only a complete transfer whose size and checksum
  match is renamed to ``<file>``, so a ``.part`` file is never extracted or read as data. A ``.part``
  left by an interrupted transfer is resumed with an HTTP ``Range`` request when the server answers
  ``206 Partial Content`` for exactly that offset; otherwise it is discarded and the download restarts.
- :func:`extract` unpacks a zip or tar(.gz/.bz2/.xz) archive. Every member is checked before anything
  is written: a member whose path escapes the target folder (``../``, an absolute path, a drive letter),
  a link, a device or FIFO is refused with a ``ValueError`` naming the archive and the member. The
  members go into a hidden scratch folder beside the destination, which is renamed into place only
  when every member was written; on any failure the scratch folder is removed, so nothing is left
  half-extracted.
- :func:`download_and_extract` does both for a data set's archive, into an empty root only.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

CHUNK = 1 << 20
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EMFILE}


class DownloadError(OSError):
    """A transfer that failed or ended early; its ``.part`` file is kept so that a retry can resume it."""


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None,
           size: int | None = None) -> None:
    """Check a file's size and checksums; ``ValueError`` naming the file, the expected and the actual value."""
    path = Path(path)
    if size is not None and path.stat().st_size != size:
        raise ValueError(f"{path}: expected {size} bytes, the file has {path.stat().st_size}")
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected is None:
            continue
        actual = file_digest(path, algorithm)
        if actual != expected.lower():
            raise ValueError(f"{path}: {algorithm} checksum mismatch: expected {expected.lower()}, got {actual}")


def check_hex_digest(name: str, value: str | None, length: int) -> None:
    """``ValueError`` naming the argument unless ``value`` is ``None`` or ``length`` hex digits."""
    if value is not None and not (isinstance(value, str) and re.fullmatch(f"[0-9a-fA-F]{{{length}}}", value)):
        raise ValueError(f"`{name}` must be a {length}-digit hex string, got {value!r}")


def _content_range_start(response) -> int | None:
    """The first byte offset of a ``206`` answer's ``Content-Range: bytes <start>-<end>/<total>``."""
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", "") or "")
    return int(match.group(1)) if match else None


def download(url: str, destination: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None,
             size: int | None = None, timeout: float = 60.0, opener=None) -> Path:
    """Download ``url`` to ``destination`` through ``<destination>.part``, verified before it is renamed.

    Args:
        url (str): an ``http(s)://`` or ``file://`` URL.
        destination (str | os.PathLike): the file to create; its folder must exist. An existing file there is
            replaced only by a verified download.
        sha256 (str | None): expected SHA-256 (hex); ``None``: not checked.
        md5 (str | None): expected MD5 (hex); ``None``: not checked.
        size (int | None): expected size in bytes; ``None``: the server's ``Content-Length``, when sent, is checked.
        timeout (float): seconds to wait for the server on each socket operation.
        opener: ``urllib.request.urlopen``-like callable (tests substitute one).

    Returns:
        Path: ``destination``.

    Raises:
        DownloadError: (an ``OSError``) when the transfer fails or ends early; the ``.part`` file
            is kept for a retry to resume. ``urllib.error.URLError`` (also an ``OSError``) when the server
            cannot be reached or answers with an HTTP error.
        ValueError: on a size or checksum mismatch; the ``.part`` file is deleted, since resuming a
            wrong prefix cannot give the right file.
    """
    check_hex_digest("sha256", sha256, 64)
    check_hex_digest("md5", md5, 32)
    destination = Path(destination)
    part = destination.with_name(destination.name + ".part")
    opener = opener or urllib.request.urlopen
    for attempt in range(2):
        offset = part.stat().st_size if part.is_file() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            response = opener(request, timeout=timeout)
        except urllib.error.HTTPError as err:
            if err.code == 416 and offset and not attempt:
                part.unlink()  # the server has no bytes from `offset` on: the .part is not a prefix of its file
                continue
            raise
        status = getattr(response, "status", None)
        resumed = bool(offset) and status == 206 and _content_range_start(response) == offset
        if offset and status == 206 and not resumed and not attempt:
            response.close()  # a range other than the one asked for: start over without one
            part.unlink()
            continue
        break
    if not resumed:
        offset = 0  # the server ignored the Range header (or file://): start over
    with response:
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length and length.isdigit() else None
        received = offset
        try:
            with open(part, "ab" if resumed else "wb") as handle:
                for block in iter(lambda: response.read(CHUNK), b""):
                    handle.write(block)
                    received += len(block)
                    if size is not None and received > size:  # a server sending without end fills no disk
                        break
        except (http.client.HTTPException, OSError) as err:
            raise DownloadError(f"download of {url} broke off after {received} of {expected or 'unknown'} bytes "
                                f"({type(err).__name__}: {err}); {part} is kept and a retry resumes it") from err
    oversized = size is not None and received > size  # verify() below reports it
    if expected is not None and received != expected and not oversized:
        raise DownloadError(f"download of {url} broke off after {received} of {expected} bytes; {part} is kept and a "
                            "retry resumes it")
    try:
        verify(part, sha256=sha256, md5=md5, size=size)
    except ValueError as err:
        part.unlink()
        raise ValueError(f"download of {url} is corrupt and was deleted: {err}") from None
    os.replace(part, destination)
    return destination


def _member_problem(name: str) -> str | None:
    """Why the member path ``name`` could land outside the extraction folder, or ``None``."""
    if not name or "\x00" in name:
        return "has an empty name or a NUL character"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "climbs out of the target folder with '..'"
    return None


def _refuse(archive: Path, member: str, why: str) -> ValueError:
    return ValueError(f"archive {archive}: refused member {member!r}: it {why}; nothing was extracted")


def _check_zip(archive: Path, handle: zipfile.ZipFile) -> int:
    total = 0
    for info in handle.infolist():
        why = _member_problem(info.filename)
        kind = stat.S_IFMT(info.external_attr >> 16)  # Unix file type, 0 when the zip records none
        if why is None and kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            why = "is a symbolic link or special file"
        if why:
            raise _refuse(archive, info.filename, why)
        total += info.file_size
    return total


def _check_tar(archive: Path, handle: tarfile.TarFile) -> tuple[list[tarfile.TarInfo], int]:
    members = handle.getmembers()
    for member in members:
        why = _member_problem(member.name)
        if why is None and (member.issym() or member.islnk()):
            why = f"is a {'symbolic' if member.issym() else 'hard'} link to {member.linkname!r}"
        elif why is None and not (member.isfile() or member.isdir()):
            why = "is a device, FIFO or other special file"
        if why:
            raise _refuse(archive, member.name, why)
    return members, sum(m.size for m in members if m.isfile())


def _checked_member(archive: Path, member) -> str:
    """``member`` (a folder inside the archive) checked as the archive's members are, as ``a/b``."""
    if not isinstance(member, str):
        raise ValueError(f"archive {archive}: `member` must be the name of a folder inside it, got {type(member).__name__}")
    why = _member_problem(member)
    parts = [part for part in re.split(r"[/\\]", member) if part not in ("", ".")]
    if why is None and not parts:
        why = "names no folder inside the archive"
    if why:
        raise ValueError(f"archive {archive}: refused `member`={member!r}: it {why}; nothing was extracted")
    return "/".join(parts)


def extract(archive: str | os.PathLike, destination: str | os.PathLike, *, member: str | None = None) -> Path:
    """Safely extract a zip or tar(.gz/.bz2/.xz) archive (the format is told from the content).

    Args:
        archive (str | os.PathLike): the archive file; a ``.part`` file (an unfinished download) is refused.
        destination (str | os.PathLike): the folder to create; it must not exist yet.
        member (str | None): the folder inside the archive that becomes ``destination`` (e.g. ``"ModelNet10"``);
            ``None``: the whole archive does. Whatever else the archive holds is dropped. It is checked as the
            archive's members are, before anything is read: no ``..``, no absolute path or drive letter, and
            it must name a folder the archive holds.

    Returns:
        Path: ``destination``.

    Raises:
        ValueError: naming the archive (and the member) for a ``.part`` file, an unknown format,
            a truncated or corrupt archive, a member that escapes the target folder, a link or special file,
            a ``member`` that escapes the archive or that it does not hold, or more data than the disk has
            room for.
        FileExistsError: when ``destination`` exists.
    """
    archive, destination = Path(archive), Path(destination)
    if archive.name.endswith(".part"):
        raise ValueError(f"archive {archive}: an unfinished download (.part) is never extracted")
    if destination.exists():
        raise FileExistsError(f"extract {archive}: the destination {destination} exists already")
    if not archive.is_file():
        raise ValueError(f"archive {archive}: no such file")
    if member is not None:
        member = _checked_member(archive, member)
    destination.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{destination.name}.extract-", dir=destination.parent))
    content = scratch / "content"  # made with the usual permissions, unlike mkdtemp's private 0o700
    current = None  # the member being written, for the error message
    try:
        content.mkdir()
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as handle:
                    _check_room(archive, _check_zip(archive, handle), scratch)
                    for info in handle.infolist():
                        current = info.filename
                        handle.extract(info, content)  # reads each member to its end, so a bad CRC raises here
            elif tarfile.is_tarfile(archive):
                with tarfile.open(archive) as handle:
                    members, total = _check_tar(archive, handle)
                    _check_room(archive, total, scratch)
                    for info in members:
                        current = info.name
                        # the "data" filter repeats the checks above and drops set-uid bits and odd permissions
                        handle.extract(info, content, filter="data")
            else:
                raise ValueError(f"archive {archive}: not a zip or tar archive, or truncated")
        except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError) as err:
            if isinstance(err, OSError) and err.errno in _ENVIRONMENT_ERRNOS:
                raise  # the disk is full or read-only, the archive may be fine
            where = f" at member {current!r}" if current else ""
            raise ValueError(f"archive {archive} is truncated or corrupt{where} ({type(err).__name__}: {err}); "
                             "nothing was extracted") from None
        source = content / member if member else content
        if member and not source.is_dir():
            found = sorted(p.name for p in content.iterdir())[:5]
            raise ValueError(f"archive {archive}: holds no {member}/ folder (it holds {', '.join(found) or 'nothing'}); "
                             "nothing was extracted")
        source.rename(destination)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # our own scratch folder: whatever was not renamed into place
    return destination


def _check_room(archive: Path, total: int, folder: Path) -> None:
    free = shutil.disk_usage(folder).free
    if total > free:
        raise ValueError(f"archive {archive}: its members hold {total} bytes, {folder.parent} has {free} bytes free; "
                         "nothing was extracted")


def _has_no_visible_entries(root: Path) -> bool:
    return not root.is_dir() or all(p.name.startswith(".") for p in root.iterdir())


def download_and_extract(url: str, root: str | os.PathLike, *, what: str, file_name: str, member: str, by_hand: str,
                         md5: str | None = None, sha256: str | None = None, is_empty=_has_no_visible_entries,
                         mismatch_as_sentence: bool = False) -> Path:
    """Download an archive into the empty folder ``root`` and extract its folder ``member`` to ``root/member``.

    The archive is streamed to the hidden ``root/.<file_name>.part`` (hidden files leave a root empty,
    so a broken-off transfer is resumed by the next call, see :func:`download`), checked, extracted
    with :func:`extract` (renamed into place only when every member was written; members escaping the
    folder, links and special files are refused), and deleted, whether it extracted or not. Without
    ``md5`` or ``sha256``, once the archive has extracted cleanly its SHA-256 is recorded in
    ``root/.<file_name>.sha256`` (``sha256sum`` format) and printed with its size (stderr), so that a
    later download can be compared with it.

    Args:
        url (str): where to download from (``http(s)://`` or ``file://``).
        root (str or os.PathLike): the folder to fill; only an empty (or missing) one is written to.
        what (str): the data set's name in messages (``"CIFAR-10"``).
        file_name (str): the archive's file name (``"cifar-10-python.tar.gz"``).
        member (str): the folder inside the archive that becomes ``root/member``.
        by_hand (str): how to place the files by hand (a clause starting in lower case), appended
            to every error.
        md5 (str, optional): the archive's expected MD5 (hex).
        sha256 (str, optional): the archive's expected SHA-256 (hex).
        is_empty (callable): tells whether ``root`` counts as empty (default: no visible entries).
        mismatch_as_sentence (bool): append ``by_hand`` to a checksum mismatch as a sentence of its
            own instead of after a semicolon (the data sets' messages have always differed there).

    Returns:
        Path: ``root/member``.

    Raises:
        ValueError: for a malformed checksum, a non-empty ``root``, a checksum mismatch, or an unsafe,
            truncated or corrupt archive (naming it and the member); the archive is then deleted.
        RuntimeError: naming the URL and ``by_hand``, when the download fails (offline, HTTP error,
            broken-off transfer: its ``.part`` file is kept for a retry).
    """
    check_hex_digest("md5", md5, 32)
    check_hex_digest("sha256", sha256, 64)
    root = Path(root)
    if not is_empty(root):
        raise ValueError(f"download: {str(root)!r} is not empty; downloads go only into an empty root")
    as_sentence = f"{by_hand[0].upper()}{by_hand[1:]}"
    root.mkdir(parents=True, exist_ok=True)
    archive = root / f".{file_name}"
    try:
        try:
            download(url, archive, md5=md5, sha256=sha256)
        except OSError as err:  # URLError, DownloadError, socket errors
            raise RuntimeError(f"could not download {what} from {url} into {str(root)!r} ({err}); {by_hand}") from err
        except ValueError as err:
            raise ValueError(f"{err}. {as_sentence}" if mismatch_as_sentence else f"{err}; {by_hand}") from None
        unpinned = md5 is None and sha256 is None
        digest, size = (file_digest(archive), archive.stat().st_size) if unpinned else (None, None)
        try:
            destination = extract(archive, root / member, member=member)
        except ValueError as err:
            raise ValueError(f"{err}; the downloaded archive was deleted. {as_sentence}") from None
        if unpinned:  # recorded once the archive proved whole, so the record is worth comparing with
            record = root / f".{file_name}.sha256"
            record.write_text(f"{digest}  {file_name}\n")
            print(f"{what}: downloaded {size} bytes from {url} with SHA-256 {digest} (no official checksum "
                  f"exists; recorded in {record}; pass sha256= to pin it)", file=sys.stderr)
    finally:
        archive.unlink(missing_ok=True)  # extracted or broken, the archive itself is not kept
    return destination
