"""RoPE frequencies: inv_freq and the attention scale, in float64."""

from __future__ import annotations

import torch

from ropekit.rope.config import RopeConfig


def default_inv_freq(rotary_dim: int, theta: float) -> torch.Tensor:
    """Return theta ** (-2i / rotary_dim) for i in [0, rotary_dim / 2), in float64."""
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim
    return 1.0 / (theta**exponents)


def rope_frequencies(config: RopeConfig, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """Return (inv_freq, attention_scale) for ``config``.

    inv_freq is a float64 tensor of rotary_dim // 2 angular frequencies in radians per
    position; attention_scale multiplies cos and sin. seq_len matters only for scalings
    that depend on the current length (dynamic NTK, longrope).
    """
    if config.scaling is not None:
        raise NotImplementedError("RoPE scaling is not implemented yet")
    return default_inv_freq(config.rotary_dim, config.theta), 1.0
