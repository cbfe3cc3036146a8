"""Procedural stand-ins for the ten ModelNet-10 classes, written as genuine OFF meshes.

They exist so the demo and the tests run offline through the same mesh path as the real data; they
are geometric stand-ins, not ModelNet: each class is a few boxes and cylinders arranged the way the
furniture is (z is up, as in ModelNet)::

    bathtub      open-topped tub: floor and four walls
    bed          mattress on a base, tall headboard at one end
    chair        seat on four legs, backrest
    desk         top on two full-depth side panels, back panel
    dresser      tall cabinet with three drawer fronts
    monitor      thin screen on a neck and a flat foot
    night_stand  small cabinet on four short legs, one drawer front
    sofa         wide seat, back and two arms
    table        round top on a central pedestal with a round foot
    toilet       elliptic bowl in front of a cistern box

Every shape varies: each proportion is scaled by its own factor in [0.8, 1.25], the shape turns by a
random angle about z, vertices get Gaussian noise (0.5 % of its size), and the whole is scaled into
random units (0.1 to 100) and moved, as real ModelNet files are. Everything follows from ``seed``,
the class, the split and the shape's number, so the files are byte-identical across runs and adding
shapes does not change the existing ones.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mgic_geo.data.generated import check_count_pair, claim_generated_root, write_atomically
from mgic_geo.data.layout import CLASSES, SPLITS, SYNTHETIC_MARKER
from mgic_geo.validation import check_int

GENERATOR_VERSION = 1
_BOX_FACES = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                       [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]])


def _box(x0, y0, z0, x1, y1, z1):
    corners = np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0],
                        [x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]], dtype=float)
    return corners, _BOX_FACES


def _cylinder(cx, cy, z0, z1, rx, ry, top_scale=1.0, segments=20):
    """An elliptic cylinder (a frustum when ``top_scale != 1``) with closed ends."""
    angle = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([np.cos(angle) * rx, np.sin(angle) * ry], axis=1)
    bottom = np.column_stack([ring + (cx, cy), np.full(segments, z0)])
    top = np.column_stack([ring * top_scale + (cx, cy), np.full(segments, z1)])
    vertices = np.vstack([bottom, top, [[cx, cy, z0], [cx, cy, z1]]])
    i, j = np.arange(segments), (np.arange(segments) + 1) % segments
    n = segments
    faces = np.vstack([np.column_stack([i, j, j + n]), np.column_stack([i, j + n, i + n]),
                       np.column_stack([np.full(n, 2 * n), j, i]), np.column_stack([np.full(n, 2 * n + 1), i + n, j + n])])
    return vertices, faces


def _legs(x0, y0, x1, y1, height, width):
    return [_box(x, y, 0, x + width, y + width, height) for x in (x0, x1 - width) for y in (y0, y1 - width)]


def _parts(name: str, f) -> list:
    """The parts of one shape of class ``name``; ``f(value)`` varies a base proportion."""
    if name == "bathtub":
        length, width, height, wall = f(1.6), f(0.75), f(0.55), f(0.06)
        return [_box(0, 0, 0, length, width, wall), _box(0, 0, 0, wall, width, height),
                _box(length - wall, 0, 0, length, width, height), _box(0, 0, 0, length, wall, height),
                _box(0, width - wall, 0, length, width, height)]
    if name == "bed":
        length, width, base, mattress = f(2.0), f(1.5), f(0.3), f(0.25)
        return [_box(0, 0, 0, length, width, base), _box(0.02, 0.02, base, length - 0.02, width - 0.02, base + mattress),
                _box(-f(0.08), 0, 0, 0, width, f(1.1))]
    if name == "chair":
        seat, height, thick, leg = f(0.45), f(0.45), f(0.05), f(0.04)
        return _legs(0, 0, seat, seat, height, leg) + [_box(0, 0, height, seat, seat, height + thick),
                                                       _box(0, seat - thick, height + thick, seat, seat, height + f(0.5))]
    if name == "desk":
        length, depth, height, panel = f(1.2), f(0.6), f(0.75), f(0.04)
        return [_box(0, 0, height - panel, length, depth, height), _box(0, 0, 0, panel, depth, height),
                _box(length - panel, 0, 0, length, depth, height),
                _box(0, depth - panel, f(0.3), length, depth, height)]
    if name == "dresser":
        width, depth, height = f(1.0), f(0.5), f(1.1)
        fronts = [_box(0.05 * width, -0.02, z, 0.95 * width, 0, z + 0.27 * height) for z in height * np.array([0.05, 0.37, 0.69])]
        return [_box(0, 0, 0, width, depth, height), *fronts]
    if name == "monitor":
        width, height, thick = f(0.6), f(0.38), f(0.04)
        lift = f(0.12)
        return [_box(-width / 2, -thick / 2, lift, width / 2, thick / 2, lift + height),
                _box(-0.03, 0.01, 0, 0.03, 0.05, lift + 0.05), _box(-f(0.13), -0.06, 0, f(0.13), f(0.14), 0.02)]
    if name == "night_stand":
        width, depth, height, legs = f(0.45), f(0.4), f(0.45), f(0.1)
        return _legs(0, 0, width, depth, legs, 0.04) + [_box(0, 0, legs, width, depth, legs + height),
                                                        _box(0.05 * width, -0.02, legs + 0.6 * height, 0.95 * width, 0, legs + 0.9 * height)]
    if name == "sofa":
        length, depth, seat, back, arm = f(2.0), f(0.9), f(0.4), f(0.8), f(0.2)
        return [_box(0, 0, 0, length, depth, seat), _box(0, depth - f(0.2), 0, length, depth, back),
                _box(-arm, 0, 0, 0, depth, f(0.6)), _box(length, 0, 0, length + arm, depth, f(0.6))]
    if name == "table":
        radius, height, thick = f(0.5), f(0.72), f(0.04)
        return [_cylinder(0, 0, height - thick, height, radius, radius * f(1.0)),
                _cylinder(0, 0, 0, height - thick, f(0.06), f(0.06)), _cylinder(0, 0, 0, 0.03, f(0.3), f(0.3))]
    if name == "toilet":
        bowl = f(0.4)
        return [_cylinder(0, 0, 0, bowl, f(0.17), f(0.13), top_scale=1.35),
                _box(-f(0.2), f(0.17), 0, f(0.2), f(0.17) + f(0.18), f(0.75))]
    raise ValueError(f"no synthetic shape for class {name!r}")


def synthetic_mesh(name: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``[V, 3]`` and triangles ``[F, 3]`` of one random shape of class ``name``."""
    parts = _parts(name, lambda value: value * rng.uniform(0.8, 1.25))
    offsets = np.cumsum([0] + [len(v) for v, _ in parts])
    vertices = np.vstack([v for v, _ in parts])
    faces = np.vstack([fc + o for (_, fc), o in zip(parts, offsets)])
    vertices -= vertices.mean(axis=0)
    vertices += rng.normal(scale=0.005 * np.abs(vertices).max(), size=vertices.shape)
    angle = rng.uniform(0, 2 * np.pi)
    turn = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    units = 10 ** rng.uniform(-1, 2)
    return (vertices @ turn.T + rng.uniform(-1, 1, size=3)) * units, faces


def off_text(vertices: np.ndarray, faces: np.ndarray) -> str:
    """An OFF file's text: header, one ``x y z`` row per vertex, one ``3 i j k`` row per triangle."""
    rows = [f"OFF\n{len(vertices)} {len(faces)} 0"]
    rows += [f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    rows += [f"3 {i} {j} {k}" for i, j, k in faces]
    return "\n".join(rows) + "\n"


def write_synthetic_modelnet(root: str | os.PathLike, *, shapes_per_class: tuple[int, int] = (40, 10), seed: int = 0) -> Path:
    """Write procedural ModelNet-10 stand-ins as ``<root>/<class>/{train,test}/<class>_NNNN.off``.

    ``root`` must be empty (or missing), or hold an earlier run with the same parameters, recorded in
    ``<root>/synthetic_modelnet.json``; then only missing files are written, nothing is overwritten.
    Train shapes are numbered from 1, test shapes continue after them, as in ModelNet.

    Args:
        root (str | os.PathLike): the folder to fill.
        shapes_per_class (tuple[int, int]): ``(train, test)`` shapes of each class.
        seed (int): seed of the whole set (see the module docstring for what varies).

    Returns:
        Path: ``root`` as a ``Path``.

    Raises:
        ValueError: for a non-empty ``root`` not written by this function, or written with other
            parameters (nothing is deleted or overwritten; pick another root).

    Example::

        >>> import tempfile
        >>> from mgic_geo.data import write_synthetic_modelnet
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     root = write_synthetic_modelnet(tmp, shapes_per_class=(2, 1))
        ...     print(sorted(p.name for p in (root / "chair" / "test").iterdir()))
        ['chair_0003.off']
    """
    counts = check_count_pair("shapes_per_class", shapes_per_class)
    check_int("seed", seed, minimum=0)
    root = Path(root)
    wanted = {"generator": "mgic_geo.data.write_synthetic_modelnet", "version": GENERATOR_VERSION,
              "shapes_per_class": list(counts), "seed": seed}
    claim_generated_root(root, SYNTHETIC_MARKER, wanted, what="synthetic shapes", writer="write_synthetic_modelnet")
    for label, name in enumerate(CLASSES):
        for split_index, split in enumerate(SPLITS):
            folder = root / name / split
            folder.mkdir(parents=True, exist_ok=True)
            first = 1 if split == "train" else counts[0] + 1
            for number in range(first, first + counts[split_index]):
                path = folder / f"{name}_{number:04d}.off"
                if not path.exists():
                    rng = np.random.default_rng([seed, label, split_index, number])
                    write_atomically(path, off_text(*synthetic_mesh(name, rng)))
    return root

