"""A trained table of position vectors, as in GPT-2."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ropekit.encodings._checks import PositionsLike, as_positions, check_dtype, check_positive_int
from ropekit.encodings.base import AdditivePositionalEncoding


class LearnedPositionalEmbedding(AdditivePositionalEncoding):
    """One trained vector per position 0..max_len-1 (GPT-2's ``wpe``).

    The table cannot extrapolate: a position of ``max_len`` or more raises ValueError
    naming the position and ``max_len``.

    Args:
        dim: width of the encoding (the model width).
        max_len: number of positions in the table.
        init_std: standard deviation of the normal initialisation of the table.
    """

    def __init__(self, dim: int, max_len: int, *, init_std: float = 0.02) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.max_len = check_positive_int(max_len, "max_len")
        if isinstance(init_std, bool) or not isinstance(init_std, (int, float)) or not init_std > 0:
            raise ValueError(f"init_std must be a positive number, got {init_std!r}")
        self.init_std = float(init_std)
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the table from N(0, init_std**2); call it after ``to_empty()``."""
        nn.init.normal_(self.weight, mean=0.0, std=self.init_std)

    def encode(self, positions: PositionsLike, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Return the rows of the table for ``positions``, shape positions.shape + (dim,).

        ``dtype`` defaults to the table's dtype; gradients flow to the table either way.
        """
        device = self.weight.device
        positions = as_positions(positions, device=device)
        if positions.device != device:
            raise ValueError(f"positions are on {positions.device} but the table is on {device}; move one of them")
        if positions.numel() > 0 and device.type != "meta":
            largest = int(positions.max())
            if largest >= self.max_len:
                raise ValueError(
                    f"position {largest} is outside the learned table of max_len={self.max_len} positions "
                    f"(valid positions are 0..{self.max_len - 1})"
                )
        rows = F.embedding(positions, self.weight)
        return rows if dtype is None else rows.to(check_dtype(dtype))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_len={self.max_len}, init_std={self.init_std}"
