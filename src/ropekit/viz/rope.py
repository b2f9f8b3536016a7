"""Figures of Rotary Positional Encoding: rotation, wavelengths and long-term decay."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from matplotlib.figure import Figure
from typing import Any

import numpy as np
import torch

from ropekit.rope import RopeConfig, RotaryEmbedding, rope_frequencies
from ropekit.viz._figure import PALETTE, SEQUENTIAL_CMAP, new_figure, save_figure, series_style

# The configuration the scaling figures compare on: Llama 3 head size and base, trained
# for 8192 positions and extended 8 times (Llama 3.1 uses the same base and factor).
FIGURE_HEAD_DIM = 128
FIGURE_THETA = 500000.0
FIGURE_CONTEXT = 8192
FIGURE_FACTOR = 8.0


def figure_scalings(
    *, rotary_dim: int = FIGURE_HEAD_DIM, original_context: int = FIGURE_CONTEXT, factor: float = FIGURE_FACTOR
) -> dict[str, dict[str, Any] | None]:
    """Return the scaling specs the figures compare, by label, for one extension factor.

    The LongRoPE factors are an illustrative ramp, not the result of LongRoPE's search:
    short factors are all 1 and long factors rise linearly from 1 on the fastest pair to
    ``factor`` on the slowest.
    """
    pairs = rotary_dim // 2
    long_factor = [1.0 + (factor - 1.0) * i / max(pairs - 1, 1) for i in range(pairs)]
    return {
        "default": None,
        "linear": {"rope_type": "linear", "factor": factor},
        "NTK-aware": {"rope_type": "ntk", "factor": factor},
        "dynamic NTK": {"rope_type": "dynamic", "factor": factor},
        "YaRN": {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original_context},
        "llama3": {
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": original_context,
        },
        "LongRoPE": {
            "rope_type": "longrope",
            "factor": factor,
            "short_factor": [1.0] * pairs,
            "long_factor": long_factor,
            "original_max_position_embeddings": original_context,
        },
    }


def scaled_frequencies(
    scalings: Mapping[str, Mapping[str, Any] | None],
    *,
    head_dim: int,
    theta: float,
    original_context: int,
    seq_len: int,
) -> dict[str, tuple[torch.Tensor, float]]:
    """Return (inv_freq, attention_scale) of every scaling at the current length ``seq_len``.

    ``original_context`` is the trained length, the max_position_embeddings of each config.
    """
    frequencies = {}
    for label, scaling in scalings.items():
        config = RopeConfig(head_dim=head_dim, theta=theta, scaling=scaling, max_position_embeddings=original_context)
        frequencies[label] = rope_frequencies(config, seq_len=seq_len)
    return frequencies



def extended_frequencies(
    scalings: Mapping[str, Mapping[str, Any] | None] | None,
    *,
    head_dim: int,
    theta: float,
    original_context: int,
    factor: float,
) -> tuple[int, dict[str, tuple[torch.Tensor, float]]]:
    """Return the extended length factor x original_context and every scaling's frequencies there.

    ``scalings`` None means the figures' default set, ``figure_scalings``.
    """
    if scalings is None:
        scalings = figure_scalings(rotary_dim=head_dim, original_context=original_context, factor=factor)
    extended = int(factor * original_context)
    frequencies = scaled_frequencies(
        scalings, head_dim=head_dim, theta=theta, original_context=original_context, seq_len=extended
    )
    return extended, frequencies

def draw_rotation(
    *,
    head_dim: int = 16,
    theta: float = 10000.0,
    pairs: tuple[int, ...] = (0, 2, 3, 5),
    num_positions: int = 32,
) -> Figure:
    """Draw where RoPE moves the 2-D vector (1, 0) of several pairs at positions 0..num_positions-1.

    The vectors are rotated by ``RotaryEmbedding`` itself (interleaved layout, so pair i
    is channels 2i and 2i + 1). Each panel is one pair, and the colour of a point is its
    position. Fast pairs wrap around the circle many times, slow pairs barely move.
    """
    config = RopeConfig(head_dim=head_dim, theta=theta, interleaved=True)
    for pair in pairs:
        if not 0 <= pair < head_dim // 2:
            raise ValueError(f"pairs must lie in 0..{head_dim // 2 - 1} for head_dim={head_dim}, got pair {pair}")
    rotary = RotaryEmbedding(config)
    unit = torch.zeros(1, num_positions, 1, head_dim, dtype=torch.float64)  # [batch, seq, heads, head_dim]
    unit[..., 0::2] = 1.0  # (1, 0) in every pair
    rotated, _ = rotary(unit, unit.clone(), torch.arange(num_positions))
    inv_freq, _ = rope_frequencies(config)

    figure, axes = new_figure(1, len(pairs), figsize=(3.4 * len(pairs), 3.8))
    circle = np.linspace(0.0, 2.0 * math.pi, 200)
    for ax, pair in zip(axes, pairs):
        x = rotated[0, :, 0, 2 * pair].numpy()
        y = rotated[0, :, 0, 2 * pair + 1].numpy()
        ax.plot(np.cos(circle), np.sin(circle), color="0.8", linewidth=0.8)
        ax.plot(x, y, color=PALETTE[0], linewidth=0.6, alpha=0.5)
        points = ax.scatter(x, y, c=np.arange(num_positions), cmap=SEQUENTIAL_CMAP, s=18, zorder=3)
        ax.set_aspect("equal")
        ax.set_xlim(-1.2, 1.2)
        ax.set_ylim(-1.2, 1.2)
        ax.set_xlabel("channel 2i")
        ax.set_ylabel("channel 2i + 1")
        ax.set_title(f"pair i={pair}: {inv_freq[pair].item():.3g} rad/position", fontsize="medium")
    figure.colorbar(points, ax=axes, label="position")
    figure.suptitle(f"RoPE rotates each pair by position x inv_freq (head_dim={head_dim}, theta={theta:g})")
    return figure


def plot_rotation(
    path: str | os.PathLike[str],
    *,
    head_dim: int = 16,
    theta: float = 10000.0,
    pairs: tuple[int, ...] = (0, 2, 3, 5),
    num_positions: int = 32,
) -> Path:
    """Save the figure of ``draw_rotation`` to ``path`` and return the path."""
    return save_figure(draw_rotation(head_dim=head_dim, theta=theta, pairs=pairs, num_positions=num_positions), path)


def draw_wavelengths(
    *,
    scalings: Mapping[str, Mapping[str, Any] | None] | None = None,
    head_dim: int = FIGURE_HEAD_DIM,
    theta: float = FIGURE_THETA,
    original_context: int = FIGURE_CONTEXT,
    factor: float = FIGURE_FACTOR,
) -> Figure:
    """Draw the wavelength 2 pi / inv_freq of every rotary pair under each scaling.

    Length-dependent scalings (dynamic NTK, LongRoPE) are evaluated at the extended length
    ``factor * original_context``. Pairs above the dotted line do not complete one turn
    within the trained context.
    """
    extended, frequencies = extended_frequencies(
        scalings, head_dim=head_dim, theta=theta, original_context=original_context, factor=factor
    )

    figure, (ax,) = new_figure()
    for index, (label, (inv_freq, _)) in enumerate(frequencies.items()):
        ax.plot((2.0 * math.pi / inv_freq).numpy(), label=label, **series_style(index))
    ax.axhline(original_context, color="0.4", linestyle=":", linewidth=1.0, label=f"trained context {original_context}")
    if extended > original_context:
        ax.axhline(extended, color="0.6", linestyle=(0, (1, 4)), linewidth=1.0, label=f"extended context {extended}")
    ax.set_yscale("log")
    ax.set_xlabel("rotary pair i")
    ax.set_ylabel("wavelength (positions per turn)")
    ax.set_title(f"RoPE wavelengths, head_dim={head_dim}, theta={theta:g}, factor {factor:g}")
    ax.legend(fontsize="small", ncols=2)
    return figure


def plot_wavelengths(
    path: str | os.PathLike[str],
    *,
    scalings: Mapping[str, Mapping[str, Any] | None] | None = None,
    head_dim: int = FIGURE_HEAD_DIM,
    theta: float = FIGURE_THETA,
    original_context: int = FIGURE_CONTEXT,
    factor: float = FIGURE_FACTOR,
) -> Path:
    """Save the figure of ``draw_wavelengths`` to ``path`` and return the path."""
    figure = draw_wavelengths(
        scalings=scalings, head_dim=head_dim, theta=theta, original_context=original_context, factor=factor
    )
    return save_figure(figure, path)


def relative_upper_bound(inv_freq: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """Return RoFormer's long-term decay bound at each relative distance, in float64.

    Su et al. 2021 (RoFormer, section 3.4.3) bound the RoPE score through an Abel
    transformation by the mean over pairs i of |S_i|, S_i = sum_{k<i} exp(j * distance *
    theta_k), which decays as the distance grows.
    """
    angles = distances.to(torch.float64)[:, None] * inv_freq.to(torch.float64)[None, :]  # [distance, pair]
    partial_sums = torch.polar(torch.ones_like(angles), angles).cumsum(dim=-1)
    return partial_sums.abs().mean(dim=-1)


def draw_long_term_decay(
    *,
    scalings: Mapping[str, Mapping[str, Any] | None] | None = None,
    head_dim: int = FIGURE_HEAD_DIM,
    theta: float = FIGURE_THETA,
    original_context: int = FIGURE_CONTEXT,
    factor: float = FIGURE_FACTOR,
    num_points: int = 400,
) -> Figure:
    """Draw RoFormer's bound on the attention score against relative distance, per scaling.

    The bound is multiplied by attention_scale**2 because the scale multiplies both the
    query and the key. Distances run from 1 to ``factor * original_context``.
    """
    extended, frequencies = extended_frequencies(
        scalings, head_dim=head_dim, theta=theta, original_context=original_context, factor=factor
    )
    distances = torch.unique(torch.logspace(0.0, math.log10(extended), num_points, dtype=torch.float64).round())

    figure, (ax,) = new_figure()
    for index, (label, (inv_freq, attention_scale)) in enumerate(frequencies.items()):
        bound = relative_upper_bound(inv_freq, distances) * attention_scale**2
        ax.plot(distances.numpy(), bound.numpy(), label=label, linewidth=1.2, **series_style(index))
    ax.axvline(original_context, color="0.4", linestyle=":", linewidth=1.0, label=f"trained context {original_context}")
    ax.set_xscale("log")
    ax.set_xlabel("relative distance m - n (positions)")
    ax.set_ylabel("relative upper bound of the score")
    ax.set_title(f"Long-term decay (RoFormer bound), head_dim={head_dim}, theta={theta:g}")
    ax.legend(fontsize="small", ncols=2)
    return figure


def plot_long_term_decay(
    path: str | os.PathLike[str],
    *,
    scalings: Mapping[str, Mapping[str, Any] | None] | None = None,
    head_dim: int = FIGURE_HEAD_DIM,
    theta: float = FIGURE_THETA,
    original_context: int = FIGURE_CONTEXT,
    factor: float = FIGURE_FACTOR,
    num_points: int = 400,
) -> Path:
    """Save the figure of ``draw_long_term_decay`` to ``path`` and return the path."""
    figure = draw_long_term_decay(
        scalings=scalings,
        head_dim=head_dim,
        theta=theta,
        original_context=original_context,
        factor=factor,
        num_points=num_points,
    )
    return save_figure(figure, path)
