"""Re-rotation of keys that are already rotated (cache eviction, change of scaling)."""

from __future__ import annotations

import torch

from ropekit.rope.apply import apply_rotary, expand_to_layout
from ropekit.rope.config import RopeConfig
from ropekit.rope.frequencies import rope_frequencies

__all__ = ["rerotate"]


def rerotate(
    x: torch.Tensor,
    delta: int | torch.Tensor,
    config: RopeConfig,
    *,
    positions: torch.Tensor | None = None,
    to_config: RopeConfig | None = None,
    seq_len: int | None = None,
) -> torch.Tensor:
    """Rotate already-rotated keys (or queries) as if their positions moved by ``delta``.

    Without ``to_config`` the channel pair i turns by delta * inv_freq[i] (angles in
    float64), so a key rotated at position p becomes the key rotated at p + delta, and
    ``rerotate(rerotate(x, d, c), -d, c)`` returns x up to rounding. The attention scale is
    not applied again.

    With ``to_config`` (same head_dim, rotary_dim and layout, another scaling), keys rotated
    at ``positions`` under ``config`` become keys rotated at positions + delta under
    ``to_config``: pair i turns by (positions + delta) * new_inv_freq[i] -
    positions * old_inv_freq[i], and the ratio of the two attention scales is applied.

    Args:
        x: [..., head_dim] in the layout of ``config``.
        delta: an int, or an integer tensor broadcastable to x.shape[:-1] (for keys of
            shape [batch, seq, heads, head_dim] a per-token delta is [batch, seq, 1]).
        config: the RoPE the keys were rotated with.
        positions: integer tensor broadcastable to x.shape[:-1]; required with to_config.
        to_config: the RoPE the keys should carry afterwards.
        seq_len: the current length that selected the frequencies of the length-dependent
            scalings ("dynamic", "longrope"); None means the trained length.
    """
    if not isinstance(config, RopeConfig):
        raise TypeError(f"config must be a RopeConfig, got {type(config).__name__}")
    if x.shape[-1] != config.head_dim:
        raise ValueError(
            f"x must have head_dim = {config.head_dim} channels in its last dimension, got {tuple(x.shape)}"
        )
    if config.n_axes != 1 or config.xpos_scale_base is not None:
        raise ValueError(
            "rerotate supports plain one-axis RoPE; configs with mrope_section, axial_dims or xPos are not supported"
        )
    delta_tensor = _integer_tensor("delta", delta, x)
    old_inv_freq, old_scale = rope_frequencies(config, seq_len)
    old_inv_freq = old_inv_freq.to(x.device)

    if to_config is None:
        if positions is not None:
            raise ValueError("positions is used only with to_config; pass to_config or drop positions")
        angles = delta_tensor.to(torch.float64).unsqueeze(-1) * old_inv_freq
        scale = 1.0
    else:
        _check_compatible(config, to_config)
        if positions is None:
            raise ValueError("to_config needs positions (the positions the keys were rotated at)")
        position_tensor = _integer_tensor("positions", positions, x).to(torch.float64).unsqueeze(-1)
        new_inv_freq, new_scale = rope_frequencies(to_config, seq_len)
        new_inv_freq = new_inv_freq.to(x.device)
        angles = (position_tensor + delta_tensor.to(torch.float64).unsqueeze(-1)) * new_inv_freq
        angles = angles - position_tensor * old_inv_freq
        scale = new_scale / old_scale

    compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    cos = expand_to_layout((angles.cos() * scale).to(compute_dtype), config.interleaved)
    sin = expand_to_layout((angles.sin() * scale).to(compute_dtype), config.interleaved)
    return apply_rotary(x, cos, sin, interleaved=config.interleaved)


def _integer_tensor(name: str, value: int | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise TypeError(f"{name} must be an int or an integer tensor, got dtype {value.dtype}")
        tensor = value.to(x.device)
    elif isinstance(value, int) and not isinstance(value, bool):
        tensor = torch.tensor(value, device=x.device)
    else:
        raise TypeError(f"{name} must be an int or an integer tensor, got {value!r}")
    try:
        torch.broadcast_shapes(tensor.shape, x.shape[:-1])
    except RuntimeError as error:
        raise ValueError(
            f"{name} of shape {tuple(tensor.shape)} does not broadcast against x.shape[:-1] = {tuple(x.shape[:-1])}"
        ) from error
    return tensor


def _check_compatible(config: RopeConfig, to_config: RopeConfig) -> None:
    for name in ("head_dim", "rotary_dim", "interleaved"):
        if getattr(config, name) != getattr(to_config, name):
            raise ValueError(
                f"to_config.{name} ({getattr(to_config, name)!r}) must equal config.{name} "
                f"({getattr(config, name)!r}); re-rotation keeps the channel layout"
            )
    if to_config.n_axes != 1 or to_config.xpos_scale_base is not None:
        raise ValueError("to_config must be plain one-axis RoPE, without mrope_section, axial_dims or xPos")
