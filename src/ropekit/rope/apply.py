"""The functional core of RoPE: rotate channel pairs by precomputed cos and sin.

Notation: x has shape [..., head_dim]; cos and sin have shape [..., rotary_dim] and
broadcast against x[..., :rotary_dim]. Channels from rotary_dim on pass through unchanged.

Two layouts pair the channels differently (Su et al. 2021, "RoFormer", eq. 34):
- half ("NeoX", rotate_half, ``interleaved=False``): pair i is (x[i], x[i + rotary_dim/2]);
  cos and sin hold the pair angles twice, concatenated: [a_0 .. a_{n-1}, a_0 .. a_{n-1}].
- interleaved (GPT-J, ``interleaved=True``): pair i is (x[2i], x[2i + 1]);
  cos and sin hold each pair angle twice in a row: [a_0, a_0, a_1, a_1, ...].
For a pair (x1, x2) rotated by angle a: (x1 cos a - x2 sin a, x2 cos a + x1 sin a).
"""

from __future__ import annotations

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Map the pairs (x1, x2) of the half layout to (-x2, x1)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotate_interleaved(x: torch.Tensor) -> torch.Tensor:
    """Map the adjacent pairs (x1, x2) of the interleaved layout to (-x2, x1)."""
    x1 = x[..., 0::2]
    x2 = x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def expand_to_layout(pair_values: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """Repeat per-pair values [..., r/2] into the channel layout [..., r].

    Half layout: [a_0 .. a_{n-1}, a_0 .. a_{n-1}]; interleaved: [a_0, a_0, a_1, a_1, ...].
    Both are exact copies, so no rounding happens here.
    """
    if interleaved:
        return pair_values.repeat_interleave(2, dim=-1)
    return torch.cat((pair_values, pair_values), dim=-1)


def apply_rotary(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    interleaved: bool = False,
) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` channels of ``x``; return a new tensor of x's dtype.

    This is the reference every fast path in ropekit must equal. The product is computed
    in the promoted dtype of x and cos (float32 tables with a bfloat16 x compute in
    float32) and cast back to x's dtype once.
    """
    if cos.shape != sin.shape:
        raise ValueError(f"cos and sin must have the same shape, got cos {tuple(cos.shape)} and sin {tuple(sin.shape)}")
    rotary_dim = cos.shape[-1]
    if rotary_dim % 2 != 0:
        raise ValueError(f"the last dimension of cos and sin (rotary_dim) must be even, got {rotary_dim}")
    if rotary_dim > x.shape[-1]:
        raise ValueError(
            f"cos and sin cover {rotary_dim} channels but x has only {x.shape[-1]} in its last dimension"
        )
    x_rot = x[..., :rotary_dim]
    x_pass = x[..., rotary_dim:]
    try:
        torch.broadcast_shapes(x_rot.shape, cos.shape)
    except RuntimeError as error:
        raise ValueError(
            f"cos and sin of shape {tuple(cos.shape)} do not broadcast against x[..., :{rotary_dim}] "
            f"of shape {tuple(x_rot.shape)}"
        ) from error

    compute_dtype = torch.promote_types(x.dtype, cos.dtype)
    x_rot = x_rot.to(compute_dtype)
    rotate = rotate_interleaved if interleaved else rotate_half
    rotated = (x_rot * cos.to(compute_dtype) + rotate(x_rot) * sin.to(compute_dtype)).to(x.dtype)
    if x_pass.shape[-1] == 0:
        return rotated
    return torch.cat((rotated, x_pass), dim=-1)
