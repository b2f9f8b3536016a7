"""The RotaryEmbedding module."""

from __future__ import annotations

import torch
from torch import nn

from ropekit.kernels import rotate_qk

from ropekit.rope.config import RopeConfig
from ropekit.rope.frequencies import rope_frequencies


class RotaryEmbedding(nn.Module):
    """Rotate queries and keys by their positions.

    Tensors are [batch, seq, heads, head_dim] by default and [batch, heads, seq, head_dim]
    with ``seq_dim=2``. q and k may have different head counts (GQA, MQA).
    """

    def __init__(self, config: RopeConfig) -> None:
        super().__init__()
        self.config = config

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Return cos and sin of shape positions.shape + (rotary_dim,) in the config's layout.

        Angles (position x inv_freq) are formed in float64 and cast to ``dtype`` at the end.
        """
        if positions.dtype.is_floating_point or positions.dtype == torch.bool:
            raise TypeError(f"positions must be an integer tensor, got dtype {positions.dtype}")
        inv_freq, attention_scale = rope_frequencies(self.config)
        angles = positions.to(torch.float64).unsqueeze(-1) * inv_freq.to(positions.device)
        if self.config.interleaved:
            angles = angles.repeat_interleave(2, dim=-1)
        else:
            angles = torch.cat((angles, angles), dim=-1)
        cos = (angles.cos() * attention_scale).to(dtype)
        sin = (angles.sin() * attention_scale).to(dtype)
        return cos, sin

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        positions: torch.Tensor | None = None,
        *,
        offset: int | torch.Tensor = 0,
        cu_seqlens: torch.Tensor | None = None,
        seq_dim: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if cu_seqlens is not None:
            raise NotImplementedError("packed sequences (cu_seqlens) are not implemented yet")
        seq_len = q.shape[seq_dim]
        if positions is None:
            positions = torch.arange(seq_len, device=q.device)
        positions = positions + (offset if isinstance(offset, int) else offset.view(-1, 1))
        cos, sin = self.cos_sin(positions)  # [seq, rotary_dim] or [batch, seq, rotary_dim]
        return rotate_qk(q, k, cos, sin, interleaved=self.config.interleaved, seq_dim=seq_dim)
