"""Procedural stand-in images in the class-folder layout, so image pipelines run offline.

Each class is a pattern drawn in a random foreground colour on a contrasting random background, with
random frequency / phase / position / size and Gaussian pixel noise::

    stripes_horizontal  stripes_vertical  stripes_diagonal  checkerboard  disc
    ring                square            cross             dots          gradient

Classes differ by shape, never by colour, so a small CNN learns them. Every image follows from
``seed``, the class, the split and the image's number, so files are byte-identical across runs and
adding images does not change the existing ones.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from mgic_geo.data.generated import check_count_pair, claim_generated_root
from mgic_geo.validation import check_int

GENERATOR_VERSION = 1
SYNTHETIC_IMAGES_MARKER = "synthetic_images.json"
PATTERNS = ("stripes_horizontal", "stripes_vertical", "stripes_diagonal", "checkerboard", "disc", "ring", "square",
            "cross", "dots", "gradient")
IMAGE_SPLITS = ("train", "test")


def _pattern(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``[size, size]`` float mask in [0, 1] of one random instance of pattern ``name``."""
    y, x = np.mgrid[0:size, 0:size] / size
    freq, phase = rng.uniform(2.5, 5.0), rng.uniform(0, 2 * np.pi)
    cx, cy = rng.uniform(0.35, 0.65, size=2)
    radius = rng.uniform(0.18, 0.32)
    if name == "stripes_horizontal":
        return (np.sin(2 * np.pi * freq * y + phase) > 0).astype(float)
    if name == "stripes_vertical":
        return (np.sin(2 * np.pi * freq * x + phase) > 0).astype(float)
    if name == "stripes_diagonal":
        sign = rng.choice([-1.0, 1.0])
        return (np.sin(2 * np.pi * freq * (x + sign * y) / np.sqrt(2) + phase) > 0).astype(float)
    if name == "checkerboard":
        shift = rng.uniform(0, 1, size=2)
        return ((np.floor(x * freq + shift[0]) + np.floor(y * freq + shift[1])) % 2).astype(float)
    distance = np.hypot(x - cx, y - cy)
    if name == "disc":
        return (distance < radius).astype(float)
    if name == "ring":
        return (np.abs(distance - radius) < 0.06).astype(float)
    if name == "square":
        return (np.maximum(np.abs(x - cx), np.abs(y - cy)) < radius * 0.85).astype(float)
    if name == "cross":
        width = rng.uniform(0.06, 0.1)
        return ((np.abs(x - cx) < width) | (np.abs(y - cy) < width)).astype(float)
    if name == "dots":
        period = 1 / rng.uniform(3.0, 5.0)
        dx = (x - cx) % period - period / 2
        dy = (y - cy) % period - period / 2
        return (np.hypot(dx, dy) < period * 0.25).astype(float)
    if name == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle)
        return np.clip(ramp / np.sqrt(0.5) + 0.5, 0, 1)
    raise ValueError(f"no synthetic image pattern {name!r}; known: {', '.join(PATTERNS)}")


def synthetic_image(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``uint8 [size, size, 3]`` image of pattern ``name``."""
    mask = _pattern(name, size, rng)[..., None]
    foreground = rng.uniform(0, 1, size=3)
    background = (foreground + rng.uniform(0.35, 0.65, size=3)) % 1.0  # each channel differs by 0.35 to 0.65
    image = background * (1 - mask) + foreground * mask + rng.normal(scale=0.05, size=(size, size, 3))
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def write_synthetic_image_folder(root: str | os.PathLike, *, classes: int = 10, images_per_class: tuple[int, int] = (500, 100),
                                 size: int = 32, seed: int = 0) -> Path:
    """Write procedural images as ``<root>/{train,test}/<class>/<class>_NNNN.png`` (RGB PNG).

    ``root`` must be empty (or missing), or hold an earlier run with the same parameters, recorded in
    ``<root>/synthetic_images.json``; then only missing files are written, nothing is overwritten.

    Args:
        root (str | os.PathLike): the folder to fill.
        classes (int): how many of the ten patterns (:data:`PATTERNS`, in order) to use, 1 to 10.
        images_per_class (tuple[int, int]): ``(train, test)`` images of each class.
        size (int): image side in pixels (at least 8).
        seed (int): seed of the whole set.

    Returns:
        Path: ``root`` as a ``Path``.

    Raises:
        ValueError: for bad arguments, or a non-empty ``root`` not written by this function or
            written with other parameters (nothing is deleted or overwritten; pick another root).

    Example::

        >>> import tempfile
        >>> from mgic_geo.data import write_synthetic_image_folder
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     root = write_synthetic_image_folder(tmp, classes=2, images_per_class=(2, 1), size=16)
        ...     print(sorted(str(p.relative_to(root)) for p in (root / "test").rglob("*.png")))
        ['test/stripes_horizontal/stripes_horizontal_0003.png', 'test/stripes_vertical/stripes_vertical_0003.png']
    """
    check_int("classes", classes)
    if classes > len(PATTERNS):
        raise ValueError(f"`classes` must be at most {len(PATTERNS)} (the synthetic patterns), got {classes}")
    counts = check_count_pair("images_per_class", images_per_class)
    check_int("size", size, minimum=8)
    check_int("seed", seed, minimum=0)
    root = Path(root)
    wanted = {"generator": "mgic_geo.data.write_synthetic_image_folder", "version": GENERATOR_VERSION, "classes": classes,
              "images_per_class": list(counts), "size": size, "seed": seed}
    claim_generated_root(root, SYNTHETIC_IMAGES_MARKER, wanted, what="synthetic images",
                         writer="write_synthetic_image_folder")
    names = sorted(PATTERNS[:classes])  # the class order ImageFolder will see
    for split_index, split in enumerate(IMAGE_SPLITS):
        first = 1 if split == "train" else counts[0] + 1
        for name in names:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(first, first + counts[split_index]):
                path = folder / f"{name}_{number:04d}.png"
                if not path.exists():
                    rng = np.random.default_rng([seed, PATTERNS.index(name), split_index, number])
                    partial = path.with_name(f".{path.name}.partial")
                    Image.fromarray(synthetic_image(name, size, rng)).save(partial, format="PNG")
                    os.replace(partial, path)
    return root
