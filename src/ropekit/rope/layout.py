"""Conversion of q/k projection weights between the two RoPE channel layouts.

Per head, the interleaved layout pairs channels (2i, 2i + 1) and the half layout pairs
(i, i + r/2), r the rotary dim. Reordering the output rows of the q and k projections
moves every pair to the other layout's slots. Half-layout RoPE on the permuted weights
then gives the same attention scores as interleaved RoPE on the originals, and the
rotated q and k are the same vectors with their channels reordered.
"""

from __future__ import annotations

import torch

__all__ = ["half_to_interleaved_order", "interleaved_to_half_order", "permute_qk_weights"]


def interleaved_to_half_order(head_dim: int, rotary_dim: int | None = None) -> torch.Tensor:
    """Return the channel order that turns interleaved channels into half-layout channels.

    ``x_half = x_interleaved[..., order]``: half slot i takes interleaved channel 2i and
    slot i + r/2 takes channel 2i + 1. Channels from rotary_dim on stay in place.
    """
    rotary_dim = head_dim if rotary_dim is None else rotary_dim
    _check_dims(head_dim, rotary_dim)
    pairs = torch.arange(rotary_dim // 2)
    rotated = torch.cat((2 * pairs, 2 * pairs + 1))
    return torch.cat((rotated, torch.arange(rotary_dim, head_dim)))


def half_to_interleaved_order(head_dim: int, rotary_dim: int | None = None) -> torch.Tensor:
    """Return the inverse of ``interleaved_to_half_order``."""
    return torch.argsort(interleaved_to_half_order(head_dim, rotary_dim))


def permute_qk_weights(
    weight: torch.Tensor,
    num_heads: int,
    head_dim: int,
    to: str = "half",
    *,
    rotary_dim: int | None = None,
) -> torch.Tensor:
    """Reorder the output rows of a q or k projection from one RoPE layout to the other.

    Args:
        weight: [num_heads * head_dim, in_features] (a Linear weight) or
            [num_heads * head_dim] (a bias).
        num_heads: heads in this projection (the key-value heads for k under GQA).
        head_dim: channels per head.
        to: "half" converts weights made for interleaved RoPE (GGUF, Meta's original
            Llama, DeepSeek) to the half layout; "interleaved" converts back.
        rotary_dim: rotated channels per head for partial rotary (default head_dim); the
            other channels keep their rows.

    Returns a new tensor; ``permute_qk_weights(permute_qk_weights(w, h, d, "half"), h, d,
    "interleaved")`` returns w.
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if to not in ("half", "interleaved"):
        raise ValueError(f"to must be 'half' or 'interleaved', got {to!r}")
    for name, value in (("num_heads", num_heads), ("head_dim", head_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if weight.dim() not in (1, 2) or weight.shape[0] != num_heads * head_dim:
        raise ValueError(
            f"weight must have shape [num_heads * head_dim] or [num_heads * head_dim, in_features] = "
            f"[{num_heads * head_dim}, ...], got {tuple(weight.shape)}"
        )

    if to == "half":
        order = interleaved_to_half_order(head_dim, rotary_dim)
    else:
        order = half_to_interleaved_order(head_dim, rotary_dim)
    trailing = weight.shape[1:]
    per_head = weight.reshape(num_heads, head_dim, *trailing)  # [h, d, in] or [h, d]
    permuted = per_head[:, order.to(weight.device)]
    return permuted.reshape(weight.shape).contiguous()


def _check_dims(head_dim: int, rotary_dim: int) -> None:
    if isinstance(rotary_dim, bool) or not isinstance(rotary_dim, int) or rotary_dim <= 0 or rotary_dim % 2:
        raise ValueError(f"rotary_dim must be a positive even int, got {rotary_dim!r}")
    if rotary_dim > head_dim:
        raise ValueError(f"rotary_dim ({rotary_dim}) must not exceed head_dim ({head_dim})")
