"""Readers for one shape file: OFF meshes and point-cloud files.

Every reader either returns exactly what the file holds or raises :class:`DataFileError` (a
``ValueError``) naming the file and the problem; none of them changes the file. Any byte string gives
one or the other (``tests/data/test_fuzz_readers.py`` fuzzes them): no header count is trusted before
it is checked against the bytes the file holds, so a header claiming 10**12 points is refused before
anything is allocated for them.

- ``.off`` meshes go through PyG's OFF parser (``torch_geometric.io.parse_off``, the body of
  ``read_off``) after the text is tidied in memory. PyG copes with ModelNet's glued headers
  (``OFF8 12 0``), but ``read_off`` silently drops the last face of a file without a final newline
  and neither checks the counts in the header nor the face indices, so this module does.
  Faces with more than four corners (which PyG would drop) are fanned into triangles.
- ``.pcd`` and ``.ply`` go through open3d, after their header is checked here: open3d crashes the
  interpreter on some PCD headers (a COUNT of -1) and allocates whatever count a header claims. open3d
  prints a warning instead of raising on a broken file and may still return points (a truncated PLY
  gives its full count, a truncated ASCII PCD gives uninitialised rows), so its console output is
  captured and any warning becomes an error, and the point count is checked against the header.
- ``.xyz``, ``.pts`` and ``.txt`` (ModelNet-40-resampled style: comma or space separated, maybe with
  normals) are read with numpy, first three columns. open3d silently skips malformed rows of these,
  and it misreads ``.pts`` files that lack the leading point-count line. ``.npy`` needs an ``[N, >=3]``
  numeric array; its header is read first, so that ``np.load`` never allocates a shape the file cannot hold.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mgic_geo.data.layout import MESH_EXTENSIONS, POINT_EXTENSIONS


class DataFileError(ValueError):
    """A data file that cannot be read as what its name says; the message starts with the file's path.
    A ``ValueError``, so code that catches ``ValueError`` keeps working."""


def _problem(path, text: str) -> DataFileError:
    return DataFileError(f"{path}: {text}")


def _fan(row: str, number: int) -> list[str]:
    """Triangles of an OFF face row (a fan from its first corner), dropping trailing colour values."""
    tokens = row.split()
    if len(tokens) in (4, 5) and tokens[0] == str(len(tokens) - 1):
        return [row]  # a triangle or quad, as nearly all are; PyG splits quads and checks the integers
    try:
        corners = int(tokens[0])
        if corners < 3 or len(tokens) < corners + 1:
            raise ValueError
        [int(t) for t in tokens[1:corners + 1]]
    except ValueError:
        raise ValueError(f"face row {number} is {row!r}, expected '<n> <n vertex indices>' with n >= 3") from None
    v = tokens[1:corners + 1]
    return [f"3 {v[0]} {v[i]} {v[i + 1]}" for i in range(1, corners - 1)]


def read_mesh(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """Read a text OFF mesh.

    :param path: an ``.off`` file.
    :returns: ``(pos, face)``: float32 vertices ``[V, 3]`` and int64 triangles ``[3, F]``.
    :raises DataFileError: (a ``ValueError``) naming the file, for a file that is not OFF text, a bad
        header, fewer or more rows than the header announces, a malformed row, NaN/inf coordinates, a
        face index out of range, or a mesh without area.
    """
    from torch_geometric.io.off import parse_off

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _problem(path, "is not a text OFF file (binary OFF is not supported)") from None
    except OSError as err:
        raise _problem(path, f"cannot be read ({err.strerror})") from None
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines or not lines[0].startswith("OFF"):
        raise _problem(path, f"is not an OFF mesh: it must start with 'OFF', got {lines[0][:40] if lines else 'an empty file'!r}")
    counts, body = lines[0][3:].strip(), lines[1:]
    if not counts:  # the counts are on their own line, unless glued to 'OFF' as in ModelNet
        counts, body = (body[0], body[1:]) if body else ("", [])
    try:
        num_vertices, num_faces = (int(c) for c in counts.split()[:2])
        if num_vertices < 0 or num_faces < 0:
            raise ValueError
    except ValueError:
        raise _problem(path, f"bad OFF header: expected '<vertices> <faces> <edges>' counts, got {counts!r}") from None
    if len(body) != num_vertices + num_faces:
        state = "is truncated" if len(body) < num_vertices + num_faces else "has extra rows"
        raise _problem(path, f"{state}: the header announces {num_vertices} vertices and {num_faces} faces "
                             f"({num_vertices + num_faces} rows), the file has {len(body)}")
    if num_vertices < 3 or num_faces < 1:
        raise _problem(path, f"is an empty mesh ({num_vertices} vertices, {num_faces} faces)")
    try:
        faces = [tri for number, row in enumerate(body[num_vertices:], 1) for tri in _fan(row, number)]
        data = parse_off(["OFF", f"{num_vertices} {len(faces)} 0", *body[:num_vertices], *faces])
    except (ValueError, TypeError, RuntimeError, IndexError) as err:
        raise _problem(path, f"malformed row: {err}") from None
    pos, face = data.pos, data.face
    if pos.dim() != 2 or pos.shape[1] < 3:
        raise _problem(path, f"vertex rows must hold at least 3 numbers, got shape {tuple(pos.shape)}")
    pos = pos[:, :3].float().contiguous()
    if not torch.isfinite(pos).all():
        raise _problem(path, "has NaN or infinite vertex coordinates")
    if face.dim() != 2 or face.shape[0] != 3:
        raise _problem(path, f"has no triangles after parsing its {num_faces} faces")
    if face.min() < 0 or face.max() >= num_vertices:
        bad = int(face.max()) if face.max() >= num_vertices else int(face.min())
        raise _problem(path, f"a face uses vertex {bad}, but the mesh has vertices 0..{num_vertices - 1}")
    corners = pos.double()[face]
    area = torch.linalg.cross(corners[1] - corners[0], corners[2] - corners[0], dim=1).norm(dim=1).sum()
    if not area > 0:
        raise _problem(path, "all faces have zero area, so no points can be sampled on it")
    return pos, face.long()


def check_cloud(path, points: np.ndarray) -> np.ndarray:
    """``points[:, :3]`` as float64 after checking it is a non-empty ``[N, >=3]`` array of finite
    numbers with some extent; ``ValueError`` naming ``path`` otherwise."""
    if points.ndim != 2 or points.shape[1] < 3:
        raise _problem(path, f"expected a table of points with at least 3 columns (x y z), got shape {points.shape}")
    if points.shape[0] == 0:
        raise _problem(path, "holds no points")
    points = points[:, :3].astype(np.float64)
    if not np.isfinite(points).all():
        raise _problem(path, f"has NaN or infinite coordinates ({int((~np.isfinite(points)).any(1).sum())} points)")
    if np.ptp(points, axis=0).max() == 0:
        raise _problem(path, f"has no extent: all {len(points)} points coincide")
    return points


# Headers are checked here before open3d sees the file: open3d crashes the interpreter (segfault) on a PCD
# COUNT of -1, 2**31-1 or a non-number, and allocates whatever a PCD/PLY header claims (10**12 points:
# std::bad_alloc or the machine's memory). Only headers that pass these checks reach open3d, and every
# count is bounded by the bytes the file holds after its header.
HEADER_LIMIT = 1 << 16  # bytes; PCD and PLY headers are a few hundred
LINE_LIMIT = 1000  # characters; open3d reads PCD header lines into a 1024-byte buffer and splits longer ones
PCD_KEYWORDS = ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS", "DATA")
PCD_TYPES = {"F": (4, 8), "I": (1, 2, 4, 8), "U": (1, 2, 4, 8)}
PLY_TYPES = {"char": 1, "int8": 1, "uchar": 1, "uint8": 1, "short": 2, "int16": 2, "ushort": 2, "uint16": 2,
             "int": 4, "int32": 4, "uint": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}
PLY_FORMATS = ("ascii", "binary_little_endian", "binary_big_endian")
MAX_COUNT = 2**31 - 1  # open3d and rply keep counts in C ints


def _count(path: Path, keyword: str, token: str, minimum: int = 0) -> int:
    if not re.fullmatch(r"\d{1,10}", token) or not minimum <= int(token) <= MAX_COUNT:
        raise _problem(path, f"bad header: {keyword} must be an integer in [{minimum}, {MAX_COUNT}], got {token[:20]!r}")
    return int(token)


def _header_lines(path: Path, end: str) -> tuple[list[list[str]], int]:
    """The whitespace-split lines of a PCD/PLY header up to the one starting with ``end``, and the
    offset of the first byte after that line; refuses headers that are not short lines of printable ASCII."""
    with path.open("rb") as handle:
        head = handle.read(HEADER_LIMIT)
    lines, offset = [], 0
    for raw in head.split(b"\n")[:-1]:  # the last piece has no newline: not a complete line
        offset += len(raw) + 1
        if len(raw) > LINE_LIMIT or re.search(rb"[^\t\r\x20-\x7e]", raw):
            raise _problem(path, f"bad header: line {len(lines) + 1} is longer than {LINE_LIMIT} characters or not "
                                 f"printable ASCII ({raw[:40]!r})")
        lines.append(raw.decode("ascii").split())
        if lines[-1][:1] == [end]:
            return lines, offset
    raise _problem(path, f"bad header: no {end!r} line in its first {min(len(head), HEADER_LIMIT)} bytes"
                         + (" (the file is truncated)" if len(head) < HEADER_LIMIT else ""))


def _pcd_has_keywords(path: Path) -> bool:
    """Whether open3d's PCD header parser would act on any line of the file: it reads 1023-byte pieces
    (``fgets``), skips leading whitespace and matches keywords by prefix."""
    keywords = tuple(k.encode() for k in PCD_KEYWORDS) + (b"COLUMNS",)
    with path.open("rb") as handle:
        for piece in iter(lambda: handle.readline(1023), b""):
            if piece.split(b"\0", 1)[0].lstrip(b" \t\n\v\f\r").startswith(keywords):
                return True
    return False


def _check_pcd(path: Path) -> tuple[int, int | None]:
    """Check a PCD header against the PCD v0.7 format and the file's size; the announced point count
    and, for ASCII data, the number of values in each row."""
    lines, offset = _header_lines(path, "DATA")
    header: dict[str, list[str]] = {}
    for number, tokens in enumerate(lines, 1):
        if not tokens or tokens[0].startswith("#"):
            continue
        if tokens[0] not in PCD_KEYWORDS or tokens[0] in header:
            what = "repeats" if tokens[0] in header else "has an unknown keyword"
            raise _problem(path, f"bad header: line {number} {what} {tokens[0][:20]!r}; expected each of "
                                 f"{' '.join(PCD_KEYWORDS)} once")
        header[tokens[0]] = tokens[1:]
    missing = [k for k in ("FIELDS", "SIZE", "TYPE", "WIDTH", "POINTS") if k not in header]
    if missing:
        raise _problem(path, f"bad header: no {' '.join(missing)} line")
    fields = header["FIELDS"]
    counts = header.get("COUNT", ["1"] * len(fields))
    if not fields or any(len(header[k]) != len(fields) for k in ("SIZE", "TYPE")) or len(counts) != len(fields):
        raise _problem(path, f"bad header: FIELDS, SIZE, TYPE and COUNT must list the same number (>= 1) of values, got "
                             f"{len(fields)}, {len(header['SIZE'])}, {len(header['TYPE'])} and {len(counts)}")
    row_bytes = row_values = 0
    for name, size, kind, count in zip(fields, header["SIZE"], header["TYPE"], counts):
        if kind not in PCD_TYPES or not size.isdigit() or int(size) not in PCD_TYPES[kind]:
            raise _problem(path, f"bad header: field {name[:20]!r} has TYPE {kind[:10]!r} and SIZE {size[:10]!r}; expected "
                                 "TYPE F with SIZE 4 or 8, or TYPE I/U with SIZE 1, 2, 4 or 8")
        count = _count(path, f"the COUNT of field {name[:20]!r}", count, minimum=1)
        if name in ("x", "y", "z") and count != 1:
            raise _problem(path, f"bad header: the COUNT of field {name!r} must be 1, got {count}")
        row_bytes, row_values = row_bytes + int(size) * count, row_values + count
    if not {"x", "y", "z"} <= set(fields):
        raise _problem(path, f"bad header: FIELDS must include x y z, got {' '.join(fields)[:80]!r}")
    width = _count(path, "WIDTH", (header["WIDTH"] or [""])[0], minimum=1)
    height = _count(path, "HEIGHT", (header.get("HEIGHT") or ["1"])[0], minimum=1)
    points = _count(path, "POINTS", (header["POINTS"] or [""])[0], minimum=1)
    if width * height != points:
        raise _problem(path, f"bad header: POINTS is {points}, but WIDTH x HEIGHT is {width} x {height}")
    data = (header["DATA"] or [""])[0]
    available = path.stat().st_size - offset
    if data == "ascii":
        needed, what = points * (2 * row_values - 1), f"{points} text rows of {row_values} values"
    elif data == "binary":
        needed, what = points * row_bytes, f"{points} points of {row_bytes} bytes"
    elif data == "binary_compressed":
        with path.open("rb") as handle:
            handle.seek(offset)
            sizes = handle.read(8)
        compressed, raw = np.frombuffer(sizes, "<u4").tolist() if len(sizes) == 8 else (None, None)
        if raw != points * row_bytes:
            raise _problem(path, f"is malformed or truncated: the compressed data should unpack to {points} points of "
                                 f"{row_bytes} bytes, its size field says {raw}")
        needed, what = 8 + compressed, f"{compressed} bytes of compressed data"
    else:
        raise _problem(path, f"bad header: DATA must be ascii, binary or binary_compressed, got {data[:20]!r}")
    if needed > available:
        raise _problem(path, f"is truncated: the header announces {what} ({needed} bytes at least), the file holds "
                             f"{available} bytes after its header")
    return points, row_values if data == "ascii" else None


def _check_ply(path: Path) -> int:
    """Check a PLY header (as rply reads it) against the file's size; the announced vertex count."""
    lines, offset = _header_lines(path, "end_header")
    if lines[0] != ["ply"]:
        raise _problem(path, f"bad header: the first line must be 'ply', got {' '.join(lines[0])[:40]!r}")
    if len(lines) < 2 or lines[1][:1] != ["format"] or lines[1][1:] not in ([f, "1.0"] for f in PLY_FORMATS):
        raise _problem(path, f"bad header: the second line must be 'format <{'|'.join(PLY_FORMATS)}> 1.0'")
    if lines[-1] != ["end_header"]:
        raise _problem(path, f"bad header: expected a line 'end_header', got {' '.join(lines[-1])[:40]!r}")
    binary = lines[1][1] != "ascii"
    elements: list[tuple[str, int, list[list[str]]]] = []
    for number, tokens in enumerate(lines[2:-1], 3):
        if not tokens or tokens[0] in ("comment", "obj_info"):
            continue
        if tokens[0] == "element" and len(tokens) == 3:
            if any(name == tokens[1] for name, _, _ in elements):
                raise _problem(path, f"bad header: element {tokens[1]!r} appears twice")
            elements.append((tokens[1], _count(path, f"the count of element {tokens[1][:20]!r}", tokens[2]), []))
        elif elements and tokens[0] == "property" and (
                len(tokens) == 3 and tokens[1] in PLY_TYPES
                or len(tokens) == 5 and tokens[1] == "list" and tokens[2] in PLY_TYPES and tokens[3] in PLY_TYPES):
            elements[-1][2].append(tokens[1:])  # [type, name] or ["list", count type, value type, name]
        else:
            raise _problem(path, f"bad header: line {number} is {' '.join(tokens)[:60]!r}; expected 'element <name> "
                                 "<count>', 'property <type> <name>', 'property list <type> <type> <name>' or 'comment ...'")
    vertex = next((e for e in elements if e[0] == "vertex"), None)
    scalars = {p[1] for p in vertex[2] if len(p) == 2} if vertex else set()
    if not {"x", "y", "z"} <= scalars:
        raise _problem(path, "bad header: expected an element 'vertex' with scalar properties x, y and z")
    if vertex[1] == 0:
        raise _problem(path, "holds no points (element vertex 0)")
    # The fewest bytes each element can take: fixed-size values, or lists of length 0, in binary;
    # a one-character word and a separator per value in ASCII.
    needed = sum(count * sum(PLY_TYPES[p[0]] if len(p) == 2 else PLY_TYPES[p[1]] for p in properties) if binary
                 else count * (2 * len(properties)) for _, count, properties in elements) - (0 if binary else 1)
    available = path.stat().st_size - offset
    if needed > available:
        raise _problem(path, f"is truncated: the header announces {', '.join(f'{c} {n}' for n, c, _ in elements)} "
                             f"({needed} bytes at least), the file holds {available} bytes after its header")
    return vertex[1]


def _open3d_points(path: Path) -> np.ndarray:
    expected = ascii_values = None
    if path.suffix.lower() == ".pcd":
        if _pcd_has_keywords(path):
            expected, ascii_values = _check_pcd(path)
    else:
        with path.open("rb") as handle:
            magic = handle.read(4)
        if magic[:3] == b"ply" and magic[3:].isspace():  # rply's own test for a PLY file
            expected = _check_ply(path)
    # Otherwise open3d finds no header to act on (no PCD keyword, no 'ply' magic) and reports that itself.
    try:
        import open3d
    except (ImportError, OSError) as err:
        raise ImportError(f"reading {path} needs open3d, which failed to import ({err}); open3d needs the system "
                          "library libusb-1.0 (Debian: apt-get install libusb-1.0-0), or convert the file to .npy") from err
    # open3d reports a broken file as a warning and carries on; its warnings go through Python's
    # sys.stdout, the PLY library's through the C-level stderr, so both are caught and become errors.
    sys.stdout.flush()
    sys.stderr.flush()
    python_output = io.StringIO()
    with tempfile.TemporaryFile() as console, open3d.utility.VerbosityContextManager(open3d.utility.VerbosityLevel.Warning):
        saved = os.dup(1), os.dup(2)
        os.dup2(console.fileno(), 1)
        os.dup2(console.fileno(), 2)
        try:
            with contextlib.redirect_stdout(python_output), contextlib.redirect_stderr(python_output):
                cloud = open3d.io.read_point_cloud(str(path), remove_nan_points=False, remove_infinite_points=False)
        except (RuntimeError, MemoryError) as err:  # open3d turns C++ exceptions (std::bad_alloc, ...) into these
            raise _problem(path, f"is malformed or truncated (open3d raised {type(err).__name__}: {err})") from None
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        console.seek(0)
        messages = console.read().decode(errors="replace") + python_output.getvalue()
    messages = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", m).strip() for m in messages.splitlines() if m.strip())
    if messages:
        raise _problem(path, f"is malformed or truncated (open3d: {messages})")
    points = np.asarray(cloud.points)
    if expected is not None and len(points) != expected:
        raise _problem(path, f"the header announces {expected} points, open3d read {len(points)}")
    if ascii_values is not None:
        # open3d fills the missing rows or values of a truncated ASCII PCD with whatever memory held, silently.
        rows = [line.split() for line in path.read_bytes().split(b"\nDATA", 1)[-1].splitlines()[1:] if line.strip()]
        lengths = sorted({len(row) for row in rows})
        if len(rows) != expected or lengths != [ascii_values]:
            raise _problem(path, f"is truncated or malformed: the header announces {expected} points of {ascii_values} "
                                 f"values, the file has {len(rows)} data rows of {lengths} values")
    return points


def _text_points(path: Path) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _problem(path, "is not a text file of numbers") from None
    lines = [line.split("#", 1)[0].replace(",", " ").strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    announced = None
    if lines and len(lines[0].split()) == 1 and lines[0].isdigit():  # the .pts point-count line
        announced, lines = int(lines[0]), lines[1:]
    if not lines:
        raise _problem(path, "holds no points")
    try:
        points = np.loadtxt(io.StringIO("\n".join(lines)), ndmin=2, dtype=np.float64)
    except ValueError as err:
        raise _problem(path, f"is not a table of numbers ({err})") from None
    if announced is not None and announced != len(points):
        raise _problem(path, f"the first line announces {announced} points, the file has {len(points)} rows")
    return points


def _npy_points(path: Path) -> np.ndarray:
    """An ``.npy`` array whose header was checked first: a numeric ``[N, >=3]`` array whose bytes the file
    holds (``np.load`` would otherwise allocate whatever shape the header claims)."""
    with path.open("rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy format version {version}")
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(handle)
        # numpy reports a malformed header mostly as ValueError, but also as tokenize.TokenError, SyntaxError,
        # TypeError, ... (found by fuzzing): whatever its header parser raises, the file is not a readable .npy
        except Exception as err:  # noqa: BLE001
            raise _problem(path, f"is not a readable .npy array ({type(err).__name__}: {err})") from None
        offset = handle.tell()
    if dtype.kind not in "iuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise _problem(path, f"holds {dtype} values, expected numbers")
    if len(shape) != 2 or shape[1] < 3:
        raise _problem(path, f"expected a table of points with at least 3 columns (x y z), got shape {shape}")
    needed, available = shape[0] * shape[1] * dtype.itemsize, path.stat().st_size - offset
    if needed > available:
        raise _problem(path, f"is truncated: its header announces a {dtype} array of shape {shape} ({needed} bytes), "
                             f"the file holds {available} bytes after its header")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise _problem(path, f"is not a readable .npy array ({err})") from None


def read_points(path: str | os.PathLike) -> Tensor:
    """Read a point-cloud file (``.pcd`` ASCII or binary, ``.ply``, ``.xyz``, ``.pts``, ``.txt``, ``.npy``).

    :param path: the file; its extension picks the reader (see the module docstring).
    :returns: float64 coordinates ``[N, 3]`` in the file's units (extra columns such as normals,
        intensities or colours are dropped).
    :raises DataFileError: (a ``ValueError``) naming the file, for an unsupported extension, a malformed
        or truncated file, no points, NaN/inf coordinates, or points that all coincide.
    :raises ImportError: for ``.pcd``/``.ply`` when open3d cannot be imported.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in POINT_EXTENSIONS:
        raise _problem(path, f"unsupported point-cloud extension {suffix!r}; expected one of {' '.join(POINT_EXTENSIONS)}")
    if not path.is_file():
        raise _problem(path, "no such file")
    if suffix in (".pcd", ".ply"):
        points = _open3d_points(path)
    elif suffix == ".npy":
        points = _npy_points(path)
    else:
        points = _text_points(path)
    return torch.from_numpy(check_cloud(path, points))


def read_shape(path: str | os.PathLike) -> dict[str, Tensor]:
    """``{"pos", "face"}`` of a mesh (:func:`read_mesh`) or ``{"pos"}`` of a point cloud
    (:func:`read_points`, float64), picked by the file's extension."""
    suffix = Path(path).suffix.lower()
    if suffix in MESH_EXTENSIONS:
        pos, face = read_mesh(path)
        return {"pos": pos, "face": face}
    return {"pos": read_points(path)}
