"""The ``--plot`` figure of ``ropekit inspect``: the model's wavelengths, drawn by ``ropekit.viz``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def plot_report_wavelengths(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Draw the wavelength of every rotary pair of ``report``'s model, unscaled and scaled, into ``path``.

    The figure is ``ropekit.viz.plot_wavelengths`` on the model's rotary_dim, theta,
    original context and extension factor (context / original context). The image
    format follows the suffix of ``path`` (.png, .svg or .pdf).

    Raises:
        ValueError: the suffix is not an image format, or the RoPE frequencies come from
            a GGUF rope_freqs tensor, which is not a scaling mapping the figure can draw.
    """
    from ropekit.viz import plot_wavelengths

    rope = report["rope"]
    if rope.get("freq_factors") is not None:
        raise ValueError(
            "--plot cannot draw frequencies divided by a GGUF rope_freqs tensor; "
            "use --json to read the wavelengths instead"
        )

    label = report["source"].get("model_type") or "model"
    scalings: dict[str, Any] = {"unscaled": None}
    if rope["scaling"] is not None:
        scalings[f"{label} ({rope['rope_type']})"] = rope["scaling"]
    return plot_wavelengths(
        path,
        scalings=scalings,
        head_dim=rope["rotary_dim"],
        theta=rope["theta"],
        original_context=rope["original_context"],
        factor=rope["context"] / rope["original_context"],
    )
