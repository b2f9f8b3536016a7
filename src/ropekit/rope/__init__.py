"""Rotary Positional Encoding (RoPE)."""

from ropekit.rope.apply import apply_rotary, rotate_half, rotate_interleaved
from ropekit.rope.config import RopeConfig
from ropekit.rope.embedding import RotaryEmbedding
from ropekit.rope.frequencies import rope_frequencies

__all__ = [
    "RopeConfig",
    "RotaryEmbedding",
    "apply_rotary",
    "rope_frequencies",
    "rotate_half",
    "rotate_interleaved",
]
