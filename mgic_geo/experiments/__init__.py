"""Experiments that reproduce the paper's tables and figures (``mgic-geo experiment NAME``)."""
