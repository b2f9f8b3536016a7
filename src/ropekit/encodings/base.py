"""The interface shared by the additive (absolute) positional encodings."""

from __future__ import annotations

import torch
from torch import nn

from ropekit.encodings._checks import PositionsLike, resolve_forward_positions


class AdditivePositionalEncoding(nn.Module):
    """A map from token positions to vectors of width ``dim`` that are added to the input.

    Subclasses implement ``encode``. ``forward`` adds the encoding of each token's position
    to ``x`` of shape [batch, seq, dim].
    """

    dim: int

    def encode(self, positions: PositionsLike, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Return the encoding of ``positions``, a tensor of shape positions.shape + (dim,)."""
        raise NotImplementedError

    def forward(
        self,
        x: torch.Tensor,
        positions: PositionsLike | None = None,
        offset: int | torch.Tensor = 0,
    ) -> torch.Tensor:
        """Return ``x + encode(offset + positions)`` in x's dtype.

        ``positions`` has shape [seq] or [batch, seq] and defaults to 0..seq-1; ``offset``
        is an int or an integer tensor of shape [batch] (the tokens already in a cache).
        """
        resolved = resolve_forward_positions(x, self.dim, positions, offset)
        return x + self.encode(resolved, dtype=x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
