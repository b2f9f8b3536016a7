"""The sources of each token's cos and sin table row.

The fused backends take either an int64 [batch, seq] tensor of rows, or an ``AffineRows``
formula. The formula covers the common cases (one table row per token, a table shared by
the batch, positions 0 .. seq - 1 plus an int offset) without building a tensor, which on
a GPU would cost a kernel launch per call.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class AffineRows(NamedTuple):
    """Table rows by formula: row(b, s) = b * batch_stride + s * seq_stride + offset."""

    batch_stride: int
    seq_stride: int
    offset: int

    def tensor(self, batch: int, seq: int, device: torch.device | str) -> torch.Tensor:
        """Return the rows as an int64 [batch, seq] tensor."""
        batch_part = torch.arange(batch, device=device).unsqueeze(1) * self.batch_stride
        seq_part = torch.arange(seq, device=device) * self.seq_stride
        return batch_part + seq_part + self.offset

    def bounds(self, batch: int, seq: int) -> tuple[int, int]:
        """Return the (lowest, highest) row over batch x seq tokens (both strides are non-negative)."""
        highest = (batch - 1) * self.batch_stride + (seq - 1) * self.seq_stride + self.offset
        return self.offset, highest


Rows = torch.Tensor | AffineRows


def row_arguments(rows: Rows) -> tuple[torch.Tensor | None, tuple[int, int], int]:
    """Return (rows tensor or None, (batch stride, seq stride), offset) for a kernel launch.

    A kernel computes index = b * batch stride + s * seq stride, then reads rows[index]
    from the tensor, or, without one, uses index + offset as the row.
    """
    if isinstance(rows, AffineRows):
        return None, (rows.batch_stride, rows.seq_stride), rows.offset
    return rows, (rows.stride(0), rows.stride(1)), 0
