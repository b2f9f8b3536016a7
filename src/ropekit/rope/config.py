"""Configuration of Rotary Positional Encoding."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RopeConfig:
    """Rotary Positional Encoding of one attention head.

    Attributes:
        head_dim: channels per head of q and k.
        rotary_dim: leading channels that are rotated (partial rotary when smaller than
            head_dim); the rest pass through. Defaults to head_dim. Must be even.
        theta: the base of the frequencies, inv_freq[i] = theta ** (-2i / rotary_dim).
        interleaved: False for the half ("NeoX", rotate_half) layout of Llama in Hugging
            Face transformers; True for adjacent pairs as in GPT-J, RoFormer, llama2.c,
            GGUF llama and DeepSeek checkpoints.
        scaling: None, or a mapping with a "rope_type" key and that type's parameters.
        max_position_embeddings: the context length the model was trained for, if known.
    """

    head_dim: int
    rotary_dim: int | None = None
    theta: float = 10000.0
    interleaved: bool = False
    scaling: Mapping[str, Any] | None = None
    max_position_embeddings: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.head_dim, int) or self.head_dim <= 0:
            raise ValueError(f"head_dim must be a positive int, got {self.head_dim!r}")
        if self.rotary_dim is None:
            object.__setattr__(self, "rotary_dim", self.head_dim)
        if not isinstance(self.rotary_dim, int) or self.rotary_dim <= 0 or self.rotary_dim % 2 != 0:
            raise ValueError(f"rotary_dim must be a positive even int, got {self.rotary_dim!r}")
        if self.rotary_dim > self.head_dim:
            raise ValueError(
                f"rotary_dim ({self.rotary_dim}) must not exceed head_dim ({self.head_dim}); "
                "set rotary_dim <= head_dim for partial rotary"
            )
        if not self.theta > 0:
            raise ValueError(f"theta must be positive, got {self.theta!r}")
