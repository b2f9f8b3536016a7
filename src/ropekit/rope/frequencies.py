"""RoPE frequencies: inv_freq and the attention scale, in float64."""

from __future__ import annotations

import torch

from ropekit.rope.config import RopeConfig
from ropekit.rope.scaling import default_inv_freq, get_scaling_type

__all__ = ["default_inv_freq", "rope_frequencies"]


def rope_frequencies(
    config: RopeConfig, seq_len: int | torch.Tensor | None = None
) -> tuple[torch.Tensor, float]:
    """Return (inv_freq, attention_scale) for ``config``.

    inv_freq is a float64 tensor of rotary_dim // 2 angular frequencies in radians per
    position; attention_scale multiplies cos and sin. ``seq_len`` (the current length,
    largest position + 1) matters only for the length-dependent scalings "dynamic" and
    "longrope"; None means the trained length. With ``axial_dims`` every axis gets its
    own block of frequencies theta ** (-2i / axial_dims[a]), concatenated in axis order.
    """
    if not isinstance(config, RopeConfig):
        raise TypeError(f"config must be a RopeConfig, got {type(config).__name__}")
    length = _length_tensor(seq_len)

    if config.axial_dims is not None:
        device = None if length is None else length.device
        blocks = [default_inv_freq(dim, config.theta, device) for dim in config.axial_dims]
        return torch.cat(blocks), 1.0

    # Every compute function places its result on seq_len's device; a length-independent
    # type reads nothing else from it.
    inv_freq, attention_scale = get_scaling_type(config.rope_type).compute(config, length)
    return inv_freq, float(attention_scale)


def _length_tensor(seq_len: int | torch.Tensor | None) -> torch.Tensor | None:
    """Check seq_len and return it as a 0-d int64 tensor (or None)."""
    if seq_len is None:
        return None
    if isinstance(seq_len, torch.Tensor):
        if seq_len.dtype.is_floating_point or seq_len.dtype == torch.bool or seq_len.numel() != 1:
            raise TypeError(f"seq_len must be an int or a one-element integer tensor, got {seq_len!r}")
        return seq_len.reshape(()).to(torch.int64)
    if isinstance(seq_len, bool) or not isinstance(seq_len, int):
        raise TypeError(f"seq_len must be an int or None, got {seq_len!r}")
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1, got {seq_len}")
    return torch.tensor(seq_len, dtype=torch.int64)
