"""A float64 RoPE written with complex numbers, independent of ropekit's rotate_half path.

Pair i of a head, (a, b), is the complex number a + ib; RoPE multiplies it by
scale * exp(i * position * inv_freq[i]) (Su et al. 2021, RoFormer, eq. 12 and 34).
"""

from __future__ import annotations

import torch


def rotate_reference(
    x: torch.Tensor,
    positions: torch.Tensor,
    inv_freq: torch.Tensor,
    *,
    interleaved: bool,
    scale: float = 1.0,
) -> torch.Tensor:
    """Return x rotated in float64.

    x is [..., head_dim]; positions broadcast against x.shape[:-1]; inv_freq is [r/2].
    """
    angles = positions.to(torch.float64).unsqueeze(-1) * inv_freq.to(torch.float64)
    return rotate_by_angles(x, angles, interleaved=interleaved, scale=scale)


def rotate_by_angles(
    x: torch.Tensor, angles: torch.Tensor, *, interleaved: bool, scale: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """Return x rotated in float64 by per-pair angles [..., r/2] that broadcast against x.

    ``scale`` multiplies the rotated pairs (a float, or per-pair values like angles).
    """
    x = x.to(torch.float64)
    rotary_dim = 2 * angles.shape[-1]
    rotated, passed = x[..., :rotary_dim], x[..., rotary_dim:]
    if interleaved:
        real, imag = rotated[..., 0::2], rotated[..., 1::2]
    else:
        real, imag = rotated[..., : rotary_dim // 2], rotated[..., rotary_dim // 2 :]
    magnitude = torch.ones_like(angles) * scale
    turned = torch.complex(real, imag) * torch.polar(magnitude, angles)
    if interleaved:
        out = torch.stack((turned.real, turned.imag), dim=-1).flatten(-2)
    else:
        out = torch.cat((turned.real, turned.imag), dim=-1)
    return torch.cat((out, passed), dim=-1)
