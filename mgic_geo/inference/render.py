"""Pictures of predicted clouds: 3-D scatter plots titled with the predicted and the true class."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from mgic_geo.validation import check_int

# Most panels of one picture of --render (render_clouds).
MAX_RENDER = 64


def render_clouds(clouds: Sequence[Tensor], predicted: Sequence[int], *, class_names: Sequence[str] | None = None,
                  true: Sequence[int | None] | None = None, labels: Sequence[str] | None = None,
                  path: str | os.PathLike | None = None, columns: int = 4):
    """A grid of 3-D scatter plots, one panel per cloud, titled with the prediction and, where known,
    the true class.

    Panel ``i`` shows ``clouds[i]`` (``[N, 3]``, coloured by height) under the title ``labels[i]`` (if
    given), ``pred: <class>`` and ``true: <class>`` (where ``true[i]`` is not ``None``); the title is
    green when the prediction is right, red when it is wrong, black when the truth is unknown. Classes
    are written as ``class_names[c]`` when given, else as their index. Drawn with matplotlib's Agg
    (no display needed; pyplot is not used).

    Args:
        columns (int): panels per row (fewer when there are fewer clouds).
        path (str | os.PathLike | None): where to write the picture (folders are created; the format follows the
            suffix: ``.png``, ``.pdf``, ``.svg`` ...), through a temporary file renamed at the end.

    Returns:
        the matplotlib ``Figure``, whose ``axes`` are the panels in order.

    Raises:
        ValueError: for no clouds, more than ``MAX_RENDER``, or lists of different lengths.

    Example::

        >>> import torch
        >>> from mgic_geo.inference import render_clouds
        >>> figure = render_clouds([torch.rand(50, 3), torch.rand(60, 3)], [2, 5], true=[2, 3],
        ...                        class_names=["a", "b", "c", "d", "e", "f"])
        >>> [ax.get_title() for ax in figure.axes]
        ['pred: c\\ntrue: c', 'pred: f\\ntrue: d']
    """
    count = len(clouds)
    if not 1 <= count <= MAX_RENDER:
        raise ValueError(f"render_clouds draws 1 to {MAX_RENDER} clouds, got {count}")
    for name, values in (("predicted", predicted), ("true", true), ("labels", labels)):
        if values is not None and len(values) != count:
            raise ValueError(f"`{name}` has {len(values)} entries for {count} clouds")
    check_int("columns", columns)
    from matplotlib.figure import Figure

    def named(label: int) -> str:
        label = int(label)
        return str(class_names[label]) if class_names is not None and 0 <= label < len(class_names) else str(label)

    columns = min(columns, count)
    rows = -(-count // columns)
    figure = Figure(figsize=(3.2 * columns, 3.4 * rows), dpi=100, layout="constrained")
    for index, cloud in enumerate(clouds):
        points = torch.as_tensor(cloud).detach().cpu().to(torch.float32).numpy()
        ax = figure.add_subplot(rows, columns, index + 1, projection="3d")
        ax.scatter(points[:, 0], points[:, 1], points[:, 2], s=3, c=points[:, 2], cmap="viridis", depthshade=False)
        if len(points):
            centre = (points.max(0) + points.min(0)) / 2
            half = float((points.max(0) - points.min(0)).max()) / 2 or 1.0
            ax.set(xlim=(centre[0] - half, centre[0] + half), ylim=(centre[1] - half, centre[1] + half),
                   zlim=(centre[2] - half, centre[2] + half))
        ax.set_box_aspect((1, 1, 1), zoom=1.25)
        ax.set_axis_off()
        known = true[index] if true is not None else None
        lines = ([str(labels[index])] if labels is not None else []) + [f"pred: {named(predicted[index])}"]
        colour = "black"
        if known is not None:
            lines.append(f"true: {named(known)}")
            colour = "green" if int(known) == int(predicted[index]) else "red"
        ax.set_title("\n".join(lines), color=colour, fontsize=9)
    if path is not None:
        from mgic_geo.training.plots import save_figure

        save_figure(figure, path)
    return figure


def picture_path(path: str | os.PathLike) -> Path:
    """``path`` checked as a picture to write, before any work: a format matplotlib writes, not a
    folder, its folder created.

    Args:
        path (str or os.PathLike): where ``mgic-geo predict --render-out`` will write the picture.

    Returns:
        Path: ``path``, its folder now existing.

    Raises:
        ValueError: naming ``--render-out``, for a suffix matplotlib cannot write, a folder, or a
            folder that cannot be created.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    formats = FigureCanvasAgg.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        raise ValueError(f"`--render-out` {path}: expected a picture file name ending in one of "
                         f"{', '.join('.' + f for f in sorted(formats))}")
    if path.is_dir():
        raise ValueError(f"`--render-out` {path}: is a folder, expected a picture file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"`--render-out` {path}: cannot be written ({err.strerror})") from None
    return path
