"""Input validation shared by the additive encodings and ALiBi."""

from __future__ import annotations

from collections.abc import Sequence

import torch

PositionsLike = torch.Tensor | Sequence[int] | int


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` if it is a positive int, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {value!r} of type {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def check_non_negative_int(value: object, name: str) -> int:
    """Return ``value`` if it is an int >= 0, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 0, got {value!r} of type {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value}")
    return value


def as_positions(
    positions: PositionsLike, *, device: torch.device | None = None, name: str = "positions"
) -> torch.Tensor:
    """Convert ``positions`` to an int64 tensor of non-negative token positions.

    Accepts an integer tensor of any shape, a (nested) list or tuple of ints, or one int.
    A tensor keeps its device; a list or an int is placed on ``device`` (CPU when None).
    Float, bool and complex positions raise TypeError; negative positions raise ValueError.
    The sign check is skipped on the meta device, which has no values.
    """
    if isinstance(positions, torch.Tensor):
        if positions.dtype == torch.bool or positions.dtype.is_floating_point or positions.dtype.is_complex:
            raise TypeError(
                f"{name} must be an integer tensor, got dtype {positions.dtype}; "
                "convert with .long() if the values are whole numbers"
            )
        tensor = positions.long()
    elif isinstance(positions, bool):
        raise TypeError(f"{name} must be an int, a list of ints or an integer tensor, got the bool {positions!r}")
    elif isinstance(positions, int):
        tensor = torch.tensor(positions, dtype=torch.long, device=device)
    elif isinstance(positions, (list, tuple)):
        tensor = _list_to_positions(positions, device=device, name=name)
    else:
        raise TypeError(
            f"{name} must be an int, a list of ints or an integer tensor, got {type(positions).__name__}"
        )

    if tensor.device.type != "meta" and tensor.numel() > 0:
        smallest = int(tensor.min())
        if smallest < 0:
            raise ValueError(f"{name} must be >= 0, got the position {smallest}")
    return tensor


def _list_to_positions(values: Sequence[object], *, device: torch.device | None, name: str) -> torch.Tensor:
    flat: list[object] = []
    stack: list[object] = [values]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        else:
            flat.append(item)
    for item in flat:
        if isinstance(item, bool) or not isinstance(item, int):
            raise TypeError(f"{name} must contain only ints, got {item!r} of type {type(item).__name__}")
    try:
        return torch.tensor(values, dtype=torch.long, device=device)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name} must be a rectangular nested list of ints: {error}") from error


def check_dtype(dtype: object, name: str = "dtype") -> torch.dtype:
    """Return ``dtype`` if it is a floating-point torch dtype."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def resolve_forward_positions(
    x: object,
    dim: int,
    positions: PositionsLike | None,
    offset: int | torch.Tensor,
) -> torch.Tensor:
    """Validate ``x`` of shape [batch, seq, dim] and return the positions to encode.

    The result has shape [seq] or [batch, seq] and lives on x's device. ``offset`` (an int
    or an integer tensor of shape [batch]) is added to ``positions``, or to 0..seq-1 when
    ``positions`` is None, so a decoding step with a cache of ``offset`` tokens encodes
    the positions that follow the cache.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor of shape [batch, seq, {dim}], got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != dim:
        raise ValueError(f"x must have shape [batch, seq, {dim}], got {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    batch, seq, _ = x.shape

    if positions is None:
        resolved = torch.arange(seq, device=x.device)
    else:
        resolved = as_positions(positions, device=x.device)
        if resolved.shape not in (torch.Size([seq]), torch.Size([batch, seq])):
            raise ValueError(
                f"positions must have shape [{seq}] or [{batch}, {seq}] to match x of shape "
                f"{tuple(x.shape)}, got {tuple(resolved.shape)}"
            )
        if resolved.device != x.device:
            raise ValueError(f"positions are on {resolved.device} but x is on {x.device}; move them to x's device")

    if isinstance(offset, torch.Tensor):
        offset_tensor = as_positions(offset, name="offset")
        if offset_tensor.shape != torch.Size([batch]):
            raise ValueError(f"offset must be an int or a tensor of shape [{batch}], got shape {tuple(offset.shape)}")
        return resolved + offset_tensor.to(x.device).unsqueeze(-1)
    check_non_negative_int(offset, "offset")
    return resolved + offset if offset else resolved
