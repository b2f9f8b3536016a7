"""Figures: matplotlib with the Agg canvas, PNG, SVG or PDF by file suffix.

Each ``draw_*`` function returns a ``matplotlib.figure.Figure``. Each ``plot_*`` function
takes the output path, writes the figure there atomically and returns the path.
No function touches pyplot's global state. Colours come from the Okabe-Ito palette and
heatmaps use the cividis colour map, both readable with colour blindness.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ropekit.viz._figure import FORMATS, PALETTE, save_figure
from ropekit.viz.encodings import (
    draw_binary_bits,
    draw_encoding_heatmaps,
    draw_sinusoidal_channels,
    plot_binary_bits,
    plot_encoding_heatmaps,
    plot_sinusoidal_channels,
)
from ropekit.viz.rope import (
    draw_long_term_decay,
    draw_rotation,
    draw_wavelengths,
    figure_scalings,
    plot_long_term_decay,
    plot_rotation,
    plot_wavelengths,
    relative_upper_bound,
)
from ropekit.viz.study import (
    STUDY_RUN_STYLES,
    draw_extrapolation,
    draw_training_curves,
    extrapolation_series,
    plot_extrapolation,
    plot_training_curves,
    run_styles,
    style_for_run,
)

# File stem -> function that draws the figure. These need no study results.
TUTORIAL_FIGURES: dict[str, Callable[[str | os.PathLike[str]], Path]] = {
    "sinusoidal_channels": plot_sinusoidal_channels,
    "encoding_heatmaps": plot_encoding_heatmaps,
    "binary_bits": plot_binary_bits,
    "rope_rotation": plot_rotation,
    "rope_wavelengths": plot_wavelengths,
    "rope_long_term_decay": plot_long_term_decay,
}


def write_tutorial_figures(out_dir: str | os.PathLike[str], formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write every tutorial figure into ``out_dir`` in each of ``formats``; return the paths."""
    for image_format in formats:
        if image_format not in FORMATS:
            raise ValueError(f"formats must be drawn from {FORMATS}, got {image_format!r}")
    out_dir = Path(out_dir)
    return [
        plot(out_dir / f"{stem}.{image_format}")
        for stem, plot in TUTORIAL_FIGURES.items()
        for image_format in formats
    ]


__all__ = [
    "FORMATS",
    "PALETTE",
    "STUDY_RUN_STYLES",
    "TUTORIAL_FIGURES",
    "draw_binary_bits",
    "draw_encoding_heatmaps",
    "draw_extrapolation",
    "draw_long_term_decay",
    "draw_rotation",
    "draw_sinusoidal_channels",
    "draw_training_curves",
    "draw_wavelengths",
    "extrapolation_series",
    "figure_scalings",
    "plot_binary_bits",
    "plot_encoding_heatmaps",
    "plot_extrapolation",
    "plot_long_term_decay",
    "plot_rotation",
    "plot_sinusoidal_channels",
    "plot_training_curves",
    "plot_wavelengths",
    "relative_upper_bound",
    "run_styles",
    "save_figure",
    "style_for_run",
    "write_tutorial_figures",
]
