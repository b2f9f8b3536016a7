"""Fast RoPE apply for q and k together, dispatched by device and dtype.

Contract shared by every backend (each must equal ``ropekit.rope.apply_rotary``):
- q and k are [batch, seq, heads, head_dim] (``seq_dim=1``), [batch, heads, seq, head_dim]
  (``seq_dim=2``) or packed [total_tokens, heads, head_dim] (``seq_dim=0``); q and k may
  have different head counts.
- cos and sin are [seq, rotary_dim], [batch, seq, rotary_dim] or, packed,
  [total_tokens, rotary_dim], in the layout given by ``interleaved``, with the attention
  scale already applied.
"""

from __future__ import annotations

import torch

from ropekit.rope.apply import apply_rotary


def rotate_qk(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    interleaved: bool,
    seq_dim: int = 1,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k by the same cos and sin tables; return new tensors."""
    if backend not in ("auto", "reference"):
        raise ValueError(f"unknown RoPE backend {backend!r}; expected 'auto' or 'reference'")
    # Insert the heads axis so the tables broadcast over heads.
    if seq_dim == 2:
        cos, sin = cos.unsqueeze(-3), sin.unsqueeze(-3)
    else:
        cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    return apply_rotary(q, cos, sin, interleaved=interleaved), apply_rotary(k, cos, sin, interleaved=interleaved)
