"""Figure creation and atomic saving without pyplot's global state.

Figures are plain ``matplotlib.figure.Figure`` objects drawn by the Agg canvas, so no
backend is selected globally, no figure is registered with pyplot and nothing leaks
between calls.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ropekit._io import atomic_path

logger = logging.getLogger("ropekit.viz")

# The Okabe-Ito palette, whose colours stay distinguishable with the common forms of colour
# blindness. Yellow (#F0E442) comes last because it is faint on white.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")

# Line styles cycle with the colours so that lines stay distinct past eight series and
# in greyscale prints.
LINE_STYLES = ("-", "--", "-.", ":")

# A sequential colour map that is perceptually uniform and readable with colour blindness.
SEQUENTIAL_CMAP = "cividis"

FORMATS = ("png", "svg", "pdf")


def series_style(index: int) -> dict[str, str]:
    """Return the colour and line style of series number ``index``."""
    return {
        "color": PALETTE[index % len(PALETTE)],
        "linestyle": LINE_STYLES[(index // len(PALETTE)) % len(LINE_STYLES)],
    }


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = (7.0, 4.5)) -> tuple[Figure, list[Axes]]:
    """Create a figure with an Agg canvas and return it with its axes as a flat list."""
    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(nrows, ncols, squeeze=False)
    return figure, [ax for row in axes for ax in row]


def format_of(path: str | os.PathLike[str]) -> str:
    """Return the image format named by the suffix of ``path``; raise ValueError if unsupported."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ValueError(f"path {str(path)!r} must end in one of {', '.join('.' + f for f in FORMATS)}")
    return suffix


def save_figure(figure: Figure, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Write ``figure`` to ``path`` atomically and return the path.

    The image is written to a temporary file in the same folder and renamed over ``path``,
    so a reader never sees a partial file. The format comes from the suffix (.png, .svg or
    .pdf). The folder is created when missing.
    """
    path = Path(path)
    image_format = format_of(path)
    with atomic_path(path) as temporary, open(temporary, "xb") as handle:
        figure.savefig(handle, format=image_format, dpi=dpi)
    logger.info("wrote %s", path)
    return path
