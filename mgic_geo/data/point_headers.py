"""Checks of PCD and PLY headers against their formats and the bytes the file holds, and of ASCII
bodies (every value a number), made before open3d sees a file (:func:`~mgic_geo.data.readers.read_points`)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mgic_geo.data.errors import problem as _problem


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
# A decimal number as C's strtod reads it (no hex), or nan/inf: open3d reads a PCD value such as 'abc' as 0,
# silently, so ASCII bodies are checked here.
NUMBER = r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[nN][aA][nN]|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?)"
_ROW = re.compile(rf"\s*(?:{NUMBER}(?:\s+{NUMBER})*)?\s*", re.ASCII)
_NUMBER = re.compile(NUMBER, re.ASCII)


def first_non_number(lines, first: int = 1) -> tuple[int, str, str] | None:
    """``(line number, token, line)`` of the first whitespace-separated token of ``lines`` (strings,
    numbered from ``first``) that is not a decimal number (or nan/inf); ``None`` when all are numbers."""
    for number, line in enumerate(lines, first):
        if not _ROW.fullmatch(line):
            token = next((t for t in line.split() if not _NUMBER.fullmatch(t)), line)
            return number, token, line
    return None


def non_number_problem(path: Path, found: tuple[int, str, str], prefix: str = ""):
    """The error for a ``found`` of :func:`first_non_number`, naming the file and the line:
    ``"<path>: <prefix>line <n>: '<token>' is not a number (the line is '<line>')"``."""
    number, token, line = found
    return _problem(path, f"{prefix}line {number}: {token[:40]!r} is not a number (the line is {line.strip()[:80]!r})")


def _check_ascii_body(path: Path, offset: int, lines_before: int) -> None:
    with path.open("rb") as handle:
        handle.seek(offset)
        body = handle.read().decode("latin-1")
    found = first_non_number(body.split("\n"), lines_before + 1)
    if found is not None:
        raise non_number_problem(path, found)


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


def pcd_has_keywords(path: Path) -> bool:
    """Whether open3d's PCD header parser would act on any line of the file: it reads 1023-byte pieces
    (``fgets``), skips leading whitespace and matches keywords by prefix."""
    keywords = tuple(k.encode() for k in PCD_KEYWORDS) + (b"COLUMNS",)
    with path.open("rb") as handle:
        for piece in iter(lambda: handle.readline(1023), b""):
            if piece.split(b"\0", 1)[0].lstrip(b" \t\n\v\f\r").startswith(keywords):
                return True
    return False


def check_pcd(path: Path) -> tuple[int, int | None]:
    """Check a PCD header against the PCD v0.7 format and the file's size, and that every value of an
    ASCII body is a number; the announced point count and, for ASCII data, the number of values in each row."""
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
    if data == "ascii":
        _check_ascii_body(path, offset, len(lines))
    return points, row_values if data == "ascii" else None


def check_ply(path: Path) -> int:
    """Check a PLY header (as rply reads it) against the file's size, and that every value of an ASCII
    body is a number; the announced vertex count."""
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
    if not binary:
        _check_ascii_body(path, offset, len(lines))
    return vertex[1]
