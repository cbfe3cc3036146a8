"""Point clouds for inference: one file read as a fixed-size cloud, or a stream of synthetic ones.

- :func:`read_cloud`: one point-cloud or mesh file as a fixed-size, normalised cloud;
- :func:`synthetic_clouds`: a deterministic, lazy stream of ModelNet-10-like clouds
  (:func:`mgic_geo.data.synthetic.synthetic_mesh` shapes, sampled on their surface);
- :func:`true_class`: the class of a file in ModelNet's layout, read from its path.

Sampling (files and synthetic shapes): a mesh gives ``num_points`` points on its faces with
probability proportional to area; a point-cloud file gives ``num_points`` of its points without
replacement, or all of them plus random repeats when it has fewer (as PyG's ``SamplePoints`` and
``FixedPoints`` in :mod:`mgic_geo.data.modelnet`). The cloud is then centred and scaled into the
unit sphere (:func:`mgic_geo.data.modelnet.sample_cloud`, as for the datasets). The draws come from
private generators seeded from ``(seed, index)``, never from torch's global generator, so the clouds
depend on the seed and the position in the stream only.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from mgic_geo.data.layout import CLASSES
from mgic_geo.validation import check_int

# Split folders of ModelNet's layout <class>/<split>/<file> (true_class).
LAYOUT_SPLITS = ("train", "val", "test")


def read_cloud(path: str | os.PathLike, num_points: int, *, seed: int = 0, index: int = 0,
               min_points: int = 1) -> Tensor:
    """One file (``.off`` mesh or point-cloud file, :func:`mgic_geo.data.readers.read_shape`) as a
    float32 ``[num_points, 3]`` cloud in the unit sphere (module docstring: sampling).

    Args:
        seed (int): with ``index``, seeds the draw (the same file at the same index gives the same cloud).
        min_points (int): a point-cloud file with fewer points is an error (repeats would only pad it).
            One with at least ``min_points`` but fewer than ``num_points`` is padded with random repeats
            of its points, with a ``UserWarning`` naming the file and the count.

    Raises:
        ValueError: naming the file, for a file the readers reject (including, before it is opened, one that
            is not a regular file or is larger than :func:`~mgic_geo.data.errors.max_file_bytes`) or with too
            few points.
    """
    from mgic_geo.data.modelnet import sample_cloud, shape_seed
    from mgic_geo.data.readers import read_shape

    shape = read_shape(path)
    if "face" not in shape and len(shape["pos"]) < min_points:
        raise ValueError(f"{path}: has {len(shape['pos'])} points; the model needs at least {min_points} (its "
                         f"k={min_points - 1} neighbours plus the point itself)")
    if "face" not in shape and len(shape["pos"]) < num_points:  # kept, as the data module keeps it, but said
        count = len(shape["pos"])
        warnings.warn(f"{path}: has {count} points, fewer than num_points={num_points}; its cloud is all {count} "
                      f"points plus {num_points - count} random repeats", UserWarning, stacklevel=2)
    return sample_cloud(shape, num_points, seed=shape_seed(seed, index)).pos


def synthetic_clouds(count: int, num_points: int = 1024, *, seed: int = 0,
                     salt: Sequence[int] = ()) -> Iterator[Tensor]:
    """A lazy, deterministic stream of ``count`` float32 ``[num_points, 3]`` clouds.

    Cloud ``i`` is a shape of ModelNet-10 class ``CLASSES[i % 10]`` from
    :func:`mgic_geo.data.synthetic.synthetic_mesh` (random proportions, turn and noise), sampled on
    its surface and scaled into the unit sphere, all drawn from ``default_rng([seed, i, *salt])``:
    each cloud is made when it is asked for, and the same ``(seed, i, salt)`` always gives the same
    cloud.

    Args:
        count (int): clouds in the stream (0 or more).
        num_points (int): points per cloud.
        seed (int): the first word of every cloud's seed (0 or more).
        salt (Sequence[int]): further words of every cloud's seed, for a stream apart from the
            default one (``mgic-geo predict --model`` calibrates on ``salt=(1,)``).

    Returns:
        Iterator[Tensor]: the clouds, made one by one as they are asked for.

    Raises:
        ValueError: for a bad ``count``, ``num_points`` or ``seed``, at the call.

    Example::

        >>> from mgic_geo.data.clouds import synthetic_clouds
        >>> clouds = synthetic_clouds(100_000, num_points=256)  # nothing is generated yet
        >>> tuple(next(clouds).shape)
        (256, 3)
    """
    check_int("count", count, minimum=0)
    check_int("num_points", num_points)
    check_int("seed", seed, minimum=0)
    return _synthetic(count, num_points, seed, tuple(salt))


def _synthetic(count: int, num_points: int, seed: int, salt: tuple[int, ...]) -> Iterator[Tensor]:
    from mgic_geo.data.modelnet import sample_cloud
    from mgic_geo.data.synthetic import synthetic_mesh

    for index in range(count):
        rng = np.random.default_rng([seed, index, *salt])
        vertices, faces = synthetic_mesh(CLASSES[index % len(CLASSES)], rng)
        shape = {"pos": torch.from_numpy(vertices).float(), "face": torch.from_numpy(faces).t()}
        yield sample_cloud(shape, num_points, seed=int(rng.integers(2**62))).pos


def true_class(path: str | os.PathLike, names: Sequence[str] | None = CLASSES) -> int | None:
    """The class of a file in ModelNet's layout, ``.../<class>/<split>/<file>`` with ``<split>`` one of
    ``train``, ``val``, ``test`` and ``<class>`` one of ``names``: its index in ``names``; else ``None``.

    Example::

        >>> from mgic_geo.data.clouds import true_class
        >>> true_class("datasets/modelnet10/ModelNet10/chair/test/chair_0890.off")
        2
        >>> true_class("scans/chair_0890.off") is None
        True
    """
    parts = Path(path).parts
    if names is None or len(parts) < 3 or parts[-2] not in LAYOUT_SPLITS:
        return None
    names = list(names)
    return names.index(parts[-3]) if parts[-3] in names else None
