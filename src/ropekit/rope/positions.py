"""Input checks and token positions for RotaryEmbedding.forward.

Shapes: b batch, s positions per sequence, t packed tokens, h heads, d head_dim,
a position axes (1 unless the config has mrope_section or axial_dims).
"""

from __future__ import annotations

import torch


def check_integer(name: str, tensor: torch.Tensor) -> None:
    """Raise TypeError unless ``tensor`` is an integer tensor."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be an integer torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor (int32 or int64), got dtype {tensor.dtype}")


def check_qk(q: torch.Tensor, k: torch.Tensor, head_dim: int, packed: bool, seq_dim: int) -> None:
    """Check the dtypes and shapes of q and k for padded ([b, s, h, d] or [b, h, s, d]) or packed input."""
    for name, tensor in (("q", q), ("k", k)):
        if not isinstance(tensor, torch.Tensor) or not tensor.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor, got {getattr(tensor, 'dtype', type(tensor))}")
        if tensor.shape[-1] != head_dim:
            raise ValueError(
                f"{name} must have head_dim = {head_dim} channels in its last dimension, "
                f"got shape {tuple(tensor.shape)}"
            )

    if packed:
        if seq_dim not in (0, 1):
            raise ValueError(
                f"with cu_seqlens the tokens are on dimension 0, so seq_dim must be 0 or left at its default, "
                f"got {seq_dim}"
            )
        for name, tensor in (("q", q), ("k", k)):
            if tensor.dim() != 3:
                raise ValueError(
                    f"with cu_seqlens {name} must be [total_tokens, heads, head_dim], got {tuple(tensor.shape)}"
                )
        if q.shape[0] != k.shape[0]:
            raise ValueError(f"q and k must have the same number of tokens, got {q.shape[0]} and {k.shape[0]}")
        return

    if seq_dim not in (1, 2):
        raise ValueError(f"seq_dim must be 1 ([b, s, h, d]) or 2 ([b, h, s, d]), got {seq_dim}")
    for name, tensor in (("q", q), ("k", k)):
        if tensor.dim() != 4:
            raise ValueError(
                f"{name} must be 4-D [batch, seq, heads, head_dim] or [batch, heads, seq, head_dim], "
                f"got {tuple(tensor.shape)}"
            )
    if q.shape[0] != k.shape[0] or q.shape[seq_dim] != k.shape[seq_dim]:
        raise ValueError(
            f"q and k must share batch and sequence sizes, got q {tuple(q.shape)} and k {tuple(k.shape)} "
            f"with seq_dim={seq_dim}"
        )


def padded_positions(
    q: torch.Tensor, positions: torch.Tensor | None, offset: int | torch.Tensor, seq_dim: int, n_axes: int
) -> torch.Tensor:
    """Return the positions of padded q: [s] or [b, s], with a leading [a] axis when n_axes > 1."""
    batch, seq = q.shape[0], q.shape[seq_dim]
    if positions is None:
        if n_axes > 1:
            raise ValueError(
                f"this config has {n_axes} position axes; pass positions of shape [{n_axes}, seq] or "
                f"[{n_axes}, batch, seq]"
            )
        positions = torch.arange(seq, device=q.device)
    else:
        check_integer("positions", positions)
        per_axis = positions.shape[1:] if n_axes > 1 else positions.shape
        leading_ok = n_axes == 1 or (positions.dim() >= 1 and positions.shape[0] == n_axes)
        rows_ok = len(per_axis) == 2 and per_axis[0] in (1, batch) and per_axis[1] == seq
        if not (leading_ok and (tuple(per_axis) == (seq,) or rows_ok)):
            if n_axes == 1:
                expected = f"[{seq}] or [{batch}, {seq}]"
            else:
                expected = f"[{n_axes}, {seq}] or [{n_axes}, {batch}, {seq}]"
            raise ValueError(
                f"positions must have shape {expected} to match q {tuple(q.shape)}, got {tuple(positions.shape)}"
            )
        positions = positions.to(q.device)
        if len(per_axis) == 2 and per_axis[0] == 1:
            positions = positions.squeeze(-2)  # [(a,) 1, s] -> [(a,) s]

    shift = offset_tensor(offset, batch, "batch row", q.device)
    if shift is None:
        return positions
    if shift.dim() == 0:
        return positions + shift
    return positions + shift.unsqueeze(-1)  # [b, 1] broadcasts against [(a,) b, s]


def packed_positions(cu_seqlens: torch.Tensor, total: int, offset: int | torch.Tensor) -> torch.Tensor:
    """Return positions [t] of packed tokens, restarting at 0 in every sequence."""
    check_cu_seqlens(cu_seqlens, total)
    cu_seqlens = cu_seqlens.to(torch.int64)
    tokens = torch.arange(total, device=cu_seqlens.device)

    # The sequence of each token is the number of sequence ends at or before it.
    sequence = torch.searchsorted(cu_seqlens[1:], tokens, right=True)  # [t]
    positions = tokens - cu_seqlens[sequence]

    shift = offset_tensor(offset, cu_seqlens.shape[0] - 1, "packed sequence", cu_seqlens.device)
    if shift is None:
        return positions
    if shift.dim() == 0:
        return positions + shift
    return positions + shift[sequence]


def offset_tensor(offset: int | torch.Tensor, rows: int, row_name: str, device: torch.device) -> torch.Tensor | None:
    """Return offset as a 0-d or [rows] tensor on ``device``, or None for the int 0."""
    if isinstance(offset, torch.Tensor):
        check_integer("offset", offset)
        if offset.dim() == 0:
            return offset.to(device)
        if offset.dim() != 1 or offset.shape[0] != rows:
            raise ValueError(
                f"offset must be an int or a [{rows}] tensor (one per {row_name}), got shape {tuple(offset.shape)}"
            )
        return offset.to(device)
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"offset must be an int or an integer tensor, got {offset!r}")
    return None if offset == 0 else torch.tensor(offset, device=device)


def check_cu_seqlens(cu_seqlens: torch.Tensor, total: int) -> None:
    """Check that cu_seqlens is [n + 1] integers from 0, non-decreasing, ending at ``total``."""
    check_integer("cu_seqlens", cu_seqlens)
    if cu_seqlens.dim() != 1 or cu_seqlens.shape[0] < 2:
        raise ValueError(f"cu_seqlens must be 1-D [n_sequences + 1], got shape {tuple(cu_seqlens.shape)}")
    if torch.compiler.is_compiling():
        # NOTE: the value checks read the tensor, which would break the compiled graph, so
        # compiled calls trust cu_seqlens. Eager calls check it.
        return
    values = cu_seqlens.tolist()
    if values[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {values}")
    if any(later < earlier for earlier, later in zip(values, values[1:])):
        raise ValueError(f"cu_seqlens must be non-decreasing (cumulative lengths), got {values}")
    if values[-1] != total:
        raise ValueError(f"cu_seqlens must end at the token count {total}, got {values}")


def check_shifted_positions(positions: torch.Tensor, offset: int | torch.Tensor) -> None:
    """Raise ValueError when a negative offset moves any position below 0.

    Only a negative offset is checked, so explicit negative positions stay valid. A tensor
    offset costs one read of its smallest value. Compiled graphs and CUDA graph capture
    skip the check because neither allows reading a tensor back to the host.
    """
    if isinstance(offset, torch.Tensor):
        if torch.compiler.is_compiling() or (offset.is_cuda and torch.cuda.is_current_stream_capturing()):
            return
        if offset.numel() == 0 or int(offset.min()) >= 0:
            return
    elif offset >= 0:
        return
    if positions.numel() == 0:
        return
    lowest = int(positions.min())
    if lowest < 0:
        shown = offset.tolist() if isinstance(offset, torch.Tensor) else offset
        raise ValueError(
            f"offset {shown} moves a position below 0 (the lowest is {lowest}); positions count from 0, "
            "so the offset must be at least minus the smallest position"
        )
