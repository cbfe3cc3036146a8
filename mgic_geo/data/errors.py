"""The error every data-file reader raises (:class:`DataFileError`, naming the file), and the check
every reader makes before it opens a file (:func:`check_data_file`).

Readers open only regular files (a symlink to one is fine) of at most :func:`max_file_bytes` bytes,
checked with ``os.stat`` before the file is opened: a FIFO would block the reader forever, a device
such as ``/dev/zero`` or a huge (maybe sparse) file would fill the memory. The limit is
:data:`MAX_FILE_BYTES` (256 MiB, far above any ModelNet, CIFAR or ImageNet file); the environment
variable ``MGIC_MAX_FILE_BYTES`` (a number of bytes, read at each check, so DataLoader workers see it
too) overrides it.
"""
from __future__ import annotations

import os
import stat

MAX_FILE_BYTES = 256 * 2**20  # the largest data file a reader opens, unless MGIC_MAX_FILE_BYTES says otherwise
MAX_FILE_BYTES_ENV = "MGIC_MAX_FILE_BYTES"


class DataFileError(ValueError):
    """A data file that cannot be read as what its name says; the message starts with the file's path.
    A ``ValueError``, so code that catches ``ValueError`` keeps working."""


def problem(path, text: str) -> DataFileError:
    """A :class:`DataFileError` for ``path``: its message is ``"<path>: <text>"``."""
    return DataFileError(f"{path}: {text}")


def max_file_bytes() -> int:
    """The size limit of one data file in bytes: ``$MGIC_MAX_FILE_BYTES`` when set, else :data:`MAX_FILE_BYTES`;
    a ``ValueError`` naming the variable when it is not a positive integer."""
    value = os.environ.get(MAX_FILE_BYTES_ENV, "").strip()
    if not value:
        return MAX_FILE_BYTES
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"${MAX_FILE_BYTES_ENV} must be a positive number of bytes, got {value[:40]!r}")
    return int(value)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def check_data_file(path) -> int:
    """Check, without opening it, that ``path`` is a regular file (or a symlink to one) of at most
    :func:`max_file_bytes` bytes; return its size.

    Raises:
        DataFileError: (a ``ValueError``) naming the file when it is missing, not a regular file (a
            FIFO, a device, a folder, ...) or larger than the limit.
    """
    try:
        info = os.stat(path)  # follows symlinks: a link to a regular file is one
    except FileNotFoundError:
        raise problem(path, "no such file") from None
    except OSError as err:
        raise problem(path, f"cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        link = " (through a symlink)" if os.path.islink(path) else ""
        raise problem(path, f"is {_kind(info.st_mode)}{link}, not a regular file; only regular files are read")
    limit = max_file_bytes()
    if info.st_size > limit:
        raise problem(path, f"is {info.st_size} bytes, more than the {limit}-byte limit for one data file; "
                            f"refused before reading (set ${MAX_FILE_BYTES_ENV} to raise the limit)")
    return info.st_size
