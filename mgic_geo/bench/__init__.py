"""Benchmarks (``mgic-geo bench NAME``): figures printed side by side in one run."""
