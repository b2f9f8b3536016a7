"""Rotary Positional Encoding (RoPE): configuration, frequencies, apply, module, helpers."""

from ropekit.rope.apply import apply_rotary, expand_to_layout, rotate_half, rotate_interleaved
from ropekit.rope.config import RopeConfig
from ropekit.rope.embedding import RotaryEmbedding
from ropekit.rope.frequencies import default_inv_freq, rope_frequencies
from ropekit.rope.layout import half_to_interleaved_order, interleaved_to_half_order, permute_qk_weights
from ropekit.rope.rerotate import rerotate
from ropekit.rope.scaling import (
    ScalingType,
    get_scaling_type,
    register_scaling,
    scaling_types,
    softmax_scale_factor,
    yarn_mscale,
)

__all__ = [
    "RopeConfig",
    "RotaryEmbedding",
    "ScalingType",
    "apply_rotary",
    "default_inv_freq",
    "expand_to_layout",
    "get_scaling_type",
    "half_to_interleaved_order",
    "interleaved_to_half_order",
    "permute_qk_weights",
    "register_scaling",
    "rerotate",
    "rope_frequencies",
    "rotate_half",
    "rotate_interleaved",
    "scaling_types",
    "softmax_scale_factor",
    "yarn_mscale",
]
