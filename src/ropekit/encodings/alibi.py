"""Attention with Linear Biases (Press et al. 2021, "Train Short, Test Long")."""

from __future__ import annotations

import math

import torch
from torch import nn

from ropekit.encodings._checks import check_dtype, check_non_negative_int, check_positive_int


def alibi_slopes(num_heads: int) -> list[float]:
    """Return the ALiBi slope of each head as Python floats (Press et al. 2021, section 3).

    For a power of two n the slopes are the geometric sequence 2**(-8k / n), k = 1..n.
    Otherwise, with m the largest power of two below n, the first m slopes are those of m
    heads and the remaining n - m are the odd-indexed terms 2**(-8k / 2m), k = 1, 3, 5, ...,
    of the sequence for 2m heads, which interleave with the first m.
    """
    check_positive_int(num_heads, "num_heads")
    lower_power = 1 << (num_heads.bit_length() - 1)
    slopes = [2.0 ** (-8.0 * k / lower_power) for k in range(1, lower_power + 1)]
    extra = num_heads - lower_power
    slopes += [2.0 ** (-8.0 * k / (2 * lower_power)) for k in range(1, 2 * extra, 2)]
    return slopes


class ALiBi(nn.Module):
    """Per-head linear attention biases: -slope_h * (query position - key position).

    ALiBi adds no vector to the tokens. Each head h adds -slope_h * distance to the
    attention score of a query with a key ``distance`` positions behind it, so attention
    decays with distance at a rate that differs per head.

    Args:
        num_heads: number of attention heads, any positive int.
    """

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.num_heads = check_positive_int(num_heads, "num_heads")

    def slopes(self, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
        """Return the slope of each head, shape [num_heads]."""
        slopes = torch.tensor(alibi_slopes(self.num_heads), dtype=torch.float64, device=device)
        return slopes.to(check_dtype(dtype))

    def bias(
        self,
        q_len: int,
        k_len: int,
        offset: int = 0,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Return the causal bias, shape [num_heads, q_len, k_len], to add to attention scores.

        The queries sit at positions offset .. offset + q_len - 1 among the keys at
        positions 0 .. k_len - 1: query i is at position ``offset + i`` and key j at
        position j. So with a KV cache ``offset`` is the number of cached tokens and
        ``k_len`` is usually offset + q_len. The last query must not come after the last
        key (offset + q_len <= k_len); a negative offset or a query past the last key
        raises ValueError.
        Entry [h, i, j] is -slope_h * (offset + i - j) when key j is at or before the query,
        and -inf for a later key. The bias is therefore also the causal mask: pass it as a
        float ``attn_mask`` without ``is_causal``. The distances are multiplied in float64 and
        cast to ``dtype`` at the end.
        """
        check_positive_int(q_len, "q_len")
        check_positive_int(k_len, "k_len")
        check_non_negative_int(offset, "offset")
        if offset + q_len > k_len:
            raise ValueError(
                f"offset ({offset}) + q_len ({q_len}) = {offset + q_len} exceeds k_len ({k_len}): the last "
                f"query would sit at position {offset + q_len - 1}, past the last key at {k_len - 1}; "
                "expected offset + q_len <= k_len"
            )
        dtype = check_dtype(dtype)

        query_positions = torch.arange(offset, offset + q_len, dtype=torch.float64, device=device)
        key_positions = torch.arange(k_len, dtype=torch.float64, device=device)
        # Multiplying by key - query (rather than negating query - key) gives +0.0 on the
        # diagonal instead of -0.0.
        negative_distance = key_positions[None, :] - query_positions[:, None]  # [q_len, k_len]
        future = negative_distance > 0

        # One head at a time keeps the float64 intermediate at [q_len, k_len] instead of
        # [num_heads, q_len, k_len], which matters for long prefills.
        bias = torch.empty(self.num_heads, q_len, k_len, dtype=dtype, device=device)
        for head, slope in enumerate(alibi_slopes(self.num_heads)):
            bias[head] = (slope * negative_distance).masked_fill_(future, -math.inf)
        return bias

    def forward(self, q_len: int, k_len: int, offset: int = 0) -> torch.Tensor:
        """Return ``bias(q_len, k_len, offset)`` in float32 on the CPU."""
        return self.bias(q_len, k_len, offset)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}"
