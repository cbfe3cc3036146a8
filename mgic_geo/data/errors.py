"""The error every data-file reader raises: :class:`DataFileError`, naming the file."""
from __future__ import annotations


class DataFileError(ValueError):
    """A data file that cannot be read as what its name says; the message starts with the file's path.
    A ``ValueError``, so code that catches ``ValueError`` keeps working."""


def problem(path, text: str) -> DataFileError:
    """A :class:`DataFileError` for ``path``: its message is ``"<path>: <text>"``."""
    return DataFileError(f"{path}: {text}")
