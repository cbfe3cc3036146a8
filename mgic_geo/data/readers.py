"""Readers for one shape file: OFF meshes and point-cloud files.

Every reader either returns exactly what the file holds or raises :class:`DataFileError` (a
``ValueError``) naming the file and the problem; none of them changes the file. Before a file is
opened, :func:`~mgic_geo.data.errors.check_data_file` checks that it is a regular file (a symlink to
one is fine; a FIFO or device is refused, never opened) no larger than
:func:`~mgic_geo.data.errors.max_file_bytes` (256 MiB, ``$MGIC_MAX_FILE_BYTES`` changes it). Any byte string gives
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
  captured and any warning becomes an error, and the point count is checked against the header. ASCII
  bodies are checked here first: every value must be a number (open3d reads a PCD value ``abc`` as 0).
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

from mgic_geo.data.errors import DataFileError  # noqa: F401  (raised by every reader, importable from here)
from mgic_geo.data.errors import check_data_file
from mgic_geo.data.errors import problem as _problem
from mgic_geo.data.layout import MESH_EXTENSIONS, POINT_EXTENSIONS
from mgic_geo.data.point_headers import check_pcd, check_ply, first_non_number, non_number_problem, pcd_has_keywords


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

    Args:
        path (str | os.PathLike): an ``.off`` file.

    Returns:
        tuple[Tensor, Tensor]: ``(pos, face)``: float32 vertices ``[V, 3]`` and int64 triangles ``[3, F]``.

    Raises:
        DataFileError: (a ``ValueError``) naming the file, for a file that is not OFF text, a bad
            header, fewer or more rows than the header announces, a malformed row, NaN/inf coordinates, a
            face index out of range, or a mesh without area; or, before it is opened, for a path that is not a
            regular file (a FIFO, a device) or is larger than :func:`~mgic_geo.data.errors.max_file_bytes`.
    """
    from torch_geometric.io.off import parse_off

    path = Path(path)
    check_data_file(path)
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


def _open3d_points(path: Path) -> np.ndarray:
    expected = ascii_values = None
    if path.suffix.lower() == ".pcd":
        if pcd_has_keywords(path):
            expected, ascii_values = check_pcd(path)
    else:
        with path.open("rb") as handle:
            magic = handle.read(4)
        if magic[:3] == b"ply" and magic[3:].isspace():  # rply's own test for a PLY file
            expected = check_ply(path)
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
        # name the first line (as numbered in the file) holding something that is not a number, if any
        found = first_non_number(line.split("#", 1)[0].replace(",", " ") for line in text.splitlines())
        if found is not None:
            raise non_number_problem(path, found, "is not a table of numbers: ") from None
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

    Args:
        path (str | os.PathLike): the file; its extension picks the reader (see the module docstring).

    Returns:
        Tensor: float64 coordinates ``[N, 3]`` in the file's units (extra columns such as normals,
            intensities or colours are dropped).

    Raises:
        DataFileError: (a ``ValueError``) naming the file, for an unsupported extension, a malformed
            or truncated file, a value that is not a number (naming the line, for text files), no points,
            NaN/inf coordinates, or points that all coincide; or, before it is opened, for a path that is not
            a regular file (a FIFO, a device) or is larger than :func:`~mgic_geo.data.errors.max_file_bytes`.
        ImportError: for ``.pcd``/``.ply`` when open3d cannot be imported.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in POINT_EXTENSIONS:
        raise _problem(path, f"unsupported point-cloud extension {suffix!r}; expected one of {' '.join(POINT_EXTENSIONS)}")
    check_data_file(path)
    if suffix in (".pcd", ".ply"):
        points = _open3d_points(path)
    elif suffix == ".npy":
        points = _npy_points(path)
    else:
        points = _text_points(path)
    return torch.from_numpy(check_cloud(path, points))


def read_shape(path: str | os.PathLike) -> dict[str, Tensor]:
    """``{"pos", "face"}`` of a mesh (:func:`read_mesh`) or ``{"pos"}`` of a point cloud
    (:func:`read_points`, float64), picked by the file's extension; :class:`DataFileError` as they raise it."""
    suffix = Path(path).suffix.lower()
    if suffix in MESH_EXTENSIONS:
        pos, face = read_mesh(path)
        return {"pos": pos, "face": face}
    return {"pos": read_points(path)}
