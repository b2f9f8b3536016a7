"""Torch backend: the fused apply written with vectorised torch operations.

It runs on every device and dtype torch supports, and is the fallback when the CPU kernel
cannot be built or Triton is missing. It makes a few passes over q and k (gather the
table rows, two products per half, two writes), fewer than the textbook
``x * cos + rotate_half(x) * sin`` because it never materialises ``rotate_half(x)``.
"""

from __future__ import annotations

import torch

from ropekit.kernels.rows import AffineRows, Rows


def rotate(
    q: torch.Tensor,
    k: torch.Tensor,
    q_out: torch.Tensor,
    k_out: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    rows: Rows,
    *,
    interleaved: bool,
    conjugate: bool,
    copy_tail: bool,
) -> None:
    """Rotate q into q_out and k into k_out; the arguments are those of ``cpu_backend.rotate``."""
    if isinstance(rows, AffineRows):
        rows = rows.tensor(q.shape[0], q.shape[1], q.device)
    cos_rows = cos[rows].unsqueeze(2)  # [batch, seq, 1, half]
    sin_rows = sin[rows].unsqueeze(2)
    if conjugate:
        sin_rows = -sin_rows
    rotate_one(q, q_out, cos_rows, sin_rows, interleaved, copy_tail)
    rotate_one(k, k_out, cos_rows, sin_rows, interleaved, copy_tail)


def rotate_one(
    x: torch.Tensor, out: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool, copy_tail: bool
) -> None:
    half = cos.shape[-1]
    rotary_dim = 2 * half
    if interleaved:
        first, second = slice(0, rotary_dim, 2), slice(1, rotary_dim, 2)
    else:
        first, second = slice(0, half), slice(half, rotary_dim)

    # Both halves are computed before either is written, so out may be x (in place).
    x1 = x[..., first].to(cos.dtype)
    x2 = x[..., second].to(cos.dtype)
    rotated_first = x1 * cos - x2 * sin
    rotated_second = x2 * cos + x1 * sin
    out[..., first] = rotated_first
    out[..., second] = rotated_second
    if copy_tail and rotary_dim < x.shape[-1]:
        out[..., rotary_dim:] = x[..., rotary_dim:]
