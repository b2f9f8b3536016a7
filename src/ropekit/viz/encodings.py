"""Figures of the additive encodings: sinusoidal channels, heatmaps and binary bits."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

import torch

from ropekit.encodings import (
    ALiBi,
    BinaryPositionalEncoding,
    IntegerPositionalEncoding,
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
)
from ropekit.viz._figure import SEQUENTIAL_CMAP, new_figure, save_figure, series_style


def draw_sinusoidal_channels(
    *,
    dim: int = 64,
    num_positions: int = 128,
    channels: tuple[int, ...] = (0, 1, 8, 9, 24, 25),
) -> Figure:
    """Draw selected channels of the sinusoidal encoding against position.

    Low channels oscillate fast and high channels slowly, each sine paired with the cosine
    of the same angle.
    """
    for channel in channels:
        if not 0 <= channel < dim:
            raise ValueError(f"channels must lie in 0..{dim - 1} for dim={dim}, got channel {channel}")
    values = SinusoidalPositionalEncoding(dim).encode(torch.arange(num_positions), dtype=torch.float64)

    figure, (ax,) = new_figure()
    for index, channel in enumerate(channels):
        kind = "sin" if channel % 2 == 0 else "cos"
        ax.plot(values[:, channel].numpy(), label=f"channel {channel} ({kind}, pair {channel // 2})", **series_style(index))
    ax.set_xlabel("position p")
    ax.set_ylabel("encoding value")
    ax.set_title(f"Sinusoidal encoding, dim={dim}: channels against position")
    ax.legend(loc="upper right", fontsize="small", ncols=2)
    return figure


def plot_sinusoidal_channels(
    path: str | os.PathLike[str],
    *,
    dim: int = 64,
    num_positions: int = 128,
    channels: tuple[int, ...] = (0, 1, 8, 9, 24, 25),
) -> Path:
    """Save the figure of ``draw_sinusoidal_channels`` to ``path`` and return the path."""
    return save_figure(draw_sinusoidal_channels(dim=dim, num_positions=num_positions, channels=channels), path)


def draw_encoding_heatmaps(*, dim: int = 64, num_positions: int = 128) -> Figure:
    """Draw a heatmap (position by channel) of every additive encoding and one ALiBi head.

    The learned table is shown at its random initialisation (seed 0), before training.
    """
    positions = torch.arange(num_positions)
    bits = max(1, (num_positions - 1).bit_length())
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)
        learned = LearnedPositionalEmbedding(dim, max_len=num_positions)
    finally:
        torch.random.set_rng_state(generator_state)

    panels = [
        (f"integer, normalized by {num_positions}", IntegerPositionalEncoding(dim, max_len=num_positions, normalize=True).encode(positions), "channel"),
        (f"binary, {bits} bits", BinaryPositionalEncoding(bits).encode(positions), "bit (least significant first)"),
        ("sinusoidal", SinusoidalPositionalEncoding(dim).encode(positions), "channel"),
        ("learned (initialisation)", learned.encode(positions).detach(), "channel"),
    ]
    figure, axes = new_figure(1, 5, figsize=(17.0, 4.2))
    for ax, (title, values, xlabel) in zip(axes, panels):
        image = ax.imshow(values.float().numpy(), aspect="auto", cmap=SEQUENTIAL_CMAP, interpolation="nearest")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("position")
        figure.colorbar(image, ax=ax)

    alibi_bias = ALiBi(8).bias(num_positions, num_positions)[0]
    ax = axes[-1]
    image = ax.imshow(alibi_bias.numpy(), aspect="auto", cmap=SEQUENTIAL_CMAP, interpolation="nearest")
    ax.set_title("ALiBi bias, head 1 of 8 (blank: masked)")
    ax.set_xlabel("key position")
    ax.set_ylabel("query position")
    figure.colorbar(image, ax=ax)
    return figure


def plot_encoding_heatmaps(path: str | os.PathLike[str], *, dim: int = 64, num_positions: int = 128) -> Path:
    """Save the figure of ``draw_encoding_heatmaps`` to ``path`` and return the path."""
    return save_figure(draw_encoding_heatmaps(dim=dim, num_positions=num_positions), path)


def draw_binary_bits(*, num_bits: int = 8, num_positions: int = 64) -> Figure:
    """Draw the bits of positions 0..num_positions-1: low bits flip fastest."""
    if num_positions > 1 << num_bits:
        raise ValueError(f"num_positions={num_positions} needs more than num_bits={num_bits} bits")
    bits = BinaryPositionalEncoding(num_bits).encode(torch.arange(num_positions))  # [position, bit]

    figure, (ax,) = new_figure(figsize=(9.0, 3.2))
    ax.imshow(bits.T.numpy(), aspect="auto", cmap="Greys", interpolation="nearest", origin="lower", vmin=0, vmax=1)
    ax.set_xlabel("position")
    ax.set_ylabel("bit (0 = least significant)")
    ax.set_yticks(range(num_bits))
    ax.set_title("Binary encoding: bit j flips every 2**j positions (black = 1)")
    return figure


def plot_binary_bits(path: str | os.PathLike[str], *, num_bits: int = 8, num_positions: int = 64) -> Path:
    """Save the figure of ``draw_binary_bits`` to ``path`` and return the path."""
    return save_figure(draw_binary_bits(num_bits=num_bits, num_positions=num_positions), path)
