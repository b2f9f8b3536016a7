"""Configuration of the ropekit decoder."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ropekit.rope import RopeConfig

# Positional encodings the decoder can use. "rope" rotates q and k in every layer, "alibi"
# biases the attention scores, the additive ones are added to the token embeddings once.
POSITION_ENCODINGS = ("rope", "alibi", "sinusoidal", "learned", "integer", "binary", "none")
ATTENTION_TYPES = ("mha", "mla")


@dataclass(frozen=True)
class DecoderConfig:
    """A Llama-family decoder: embedding, blocks, final RMSNorm, language-model head.

    Each block is RMSNorm -> attention -> residual add -> RMSNorm -> SwiGLU MLP -> residual add
    (Touvron et al. 2023, "LLaMA"; SwiGLU from Shazeer 2020).

    Attributes:
        vocab_size: tokens in the vocabulary.
        hidden_size: width of the residual stream.
        num_layers: number of blocks.
        num_heads: query heads per attention layer.
        num_kv_heads: key/value heads (GQA when fewer than num_heads, MQA when 1).
            Defaults to num_heads.
        head_dim: channels per head. Defaults to hidden_size // num_heads.
        intermediate_size: hidden width of the SwiGLU MLP. Defaults to the LLaMA rule,
            2/3 of 4 * hidden_size rounded up to a multiple of 8.
        rms_norm_eps: epsilon inside every RMSNorm.
        tie_embeddings: share one matrix between the token embedding and the head.
        max_position_embeddings: the context length the model is trained for (tokens). The
            learned and normalised integer encodings have exactly this many positions.
        position_encoding: one of "rope", "alibi", "sinusoidal", "learned", "integer",
            "binary", "none".
        rope: RoPE of each head when position_encoding is "rope" (layout, theta, partial
            rotary, scaling). Defaults to RopeConfig(head_dim, max_position_embeddings=...).
        attention: "mha" (also GQA and MQA) or "mla" (Multi-Head Latent Attention).
        mla: an ``ropekit.MLAConfig`` when attention is "mla"; it carries its own RoPE.
        qkv_bias: biases on the q, k and v projections (Qwen2 uses them).
        output_bias: a bias on the attention output projection.
        mlp_bias: biases on the three MLP projections.
        sliding_window: when set, attention covers only the last sliding_window positions.
        sliding_window_layers: indices of the layers that use the sliding window; None
            means every layer (Mistral), a tuple selects some (Qwen2's layer_types).
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    intermediate_size: int | None = None
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = False
    max_position_embeddings: int = 2048
    position_encoding: str = "rope"
    rope: RopeConfig | None = None
    attention: str = "mha"
    mla: Any = None
    qkv_bias: bool = False
    output_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None
    sliding_window_layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "max_position_embeddings"):
            _check_positive_int(name, getattr(self, name))
        if self.num_kv_heads is None:
            object.__setattr__(self, "num_kv_heads", self.num_heads)
        if self.head_dim is None:
            if self.hidden_size % self.num_heads != 0:
                raise ValueError(
                    f"hidden_size ({self.hidden_size}) is not divisible by num_heads ({self.num_heads}); "
                    "set head_dim explicitly"
                )
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if self.intermediate_size is None:
            object.__setattr__(self, "intermediate_size", _llama_intermediate_size(self.hidden_size))
        for name in ("num_kv_heads", "head_dim", "intermediate_size"):
            _check_positive_int(name, getattr(self, name))
        if self.num_heads % self.num_kv_heads != 0:
            raise ValueError(f"num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads})")
        if not self.rms_norm_eps > 0:
            raise ValueError(f"rms_norm_eps must be positive, got {self.rms_norm_eps!r}")

        if self.position_encoding not in POSITION_ENCODINGS:
            raise ValueError(
                f"position_encoding must be one of {', '.join(POSITION_ENCODINGS)}; got {self.position_encoding!r}"
            )
        if self.attention not in ATTENTION_TYPES:
            raise ValueError(f"attention must be 'mha' or 'mla', got {self.attention!r}")
        self._check_rope()
        self._check_mla()
        self._check_sliding_window()

    def _check_sliding_window(self) -> None:
        if self.sliding_window is not None:
            _check_positive_int("sliding_window", self.sliding_window)
        if self.sliding_window_layers is None:
            return
        layers = tuple(self.sliding_window_layers)
        object.__setattr__(self, "sliding_window_layers", layers)
        if self.sliding_window is None:
            raise ValueError("sliding_window_layers is set but sliding_window is None; set the window size too")
        invalid = [index for index in layers if not isinstance(index, int) or not 0 <= index < self.num_layers]
        if invalid:
            raise ValueError(f"sliding_window_layers contains {invalid}, which are not layer indices in [0, {self.num_layers})")

    def window_of_layer(self, index: int) -> int | None:
        """Return the sliding window of layer ``index``, or None when it attends to everything."""
        if self.sliding_window_layers is None or index in self.sliding_window_layers:
            return self.sliding_window
        return None

    def _check_rope(self) -> None:
        if self.position_encoding != "rope" or self.attention == "mla":
            if self.rope is not None:
                raise ValueError(
                    f"rope is set but position_encoding is {self.position_encoding!r} and attention is "
                    f"{self.attention!r}; a RopeConfig is used only with position_encoding='rope' and "
                    "attention='mha' (MLA carries its RoPE in its MLAConfig)"
                )
            return
        if self.rope is None:
            rope = RopeConfig(head_dim=self.head_dim, max_position_embeddings=self.max_position_embeddings)
            object.__setattr__(self, "rope", rope)
        elif isinstance(self.rope, Mapping):
            object.__setattr__(self, "rope", rope_config_from_dict(self.rope))
        if not isinstance(self.rope, RopeConfig):
            raise TypeError(f"rope must be a RopeConfig or a mapping of its fields, got {type(self.rope).__name__}")
        if self.rope.head_dim != self.head_dim:
            raise ValueError(f"rope.head_dim ({self.rope.head_dim}) must equal head_dim ({self.head_dim})")

    def _check_mla(self) -> None:
        if self.attention != "mla":
            if self.mla is not None:
                raise ValueError("mla is set but attention is 'mha'; set attention='mla' to use it")
            return
        if self.position_encoding != "rope":
            raise ValueError(
                f"attention='mla' uses its own decoupled RoPE; position_encoding must be 'rope', "
                f"got {self.position_encoding!r}"
            )
        from ropekit.attention import MLAConfig

        if self.mla is None:
            raise ValueError("attention='mla' needs an MLAConfig in the mla field")
        if isinstance(self.mla, Mapping):
            values = dict(self.mla)
            if isinstance(values.get("rope"), Mapping):
                values["rope"] = rope_config_from_dict(values["rope"])
            object.__setattr__(self, "mla", MLAConfig(**values))
        if not isinstance(self.mla, MLAConfig):
            raise TypeError(f"mla must be an MLAConfig or a mapping of its fields, got {type(self.mla).__name__}")
        for name in ("hidden_size", "num_heads"):
            if getattr(self.mla, name) != getattr(self, name):
                raise ValueError(
                    f"mla.{name} ({getattr(self.mla, name)}) must equal the decoder's {name} ({getattr(self, name)})"
                )

    def with_rope_scaling(self, scaling: Mapping[str, Any] | None) -> DecoderConfig:
        """Return a copy whose RoPE uses ``scaling`` (a spec such as {"rope_type": "yarn", ...}).

        A RoPE config without max_position_embeddings takes the decoder's, so scaling types
        that need the trained length (yarn, llama3, dynamic, ...) find it.
        """
        if self.attention == "mla":
            mla_rope = getattr(self.mla, "rope", None)
            if mla_rope is None:
                raise ValueError("this MLAConfig has no rope field whose scaling could be replaced")
            return dataclasses.replace(self, mla=dataclasses.replace(self.mla, rope=self._scaled_rope(mla_rope, scaling)))
        if self.position_encoding != "rope":
            raise ValueError(f"the model uses position_encoding={self.position_encoding!r}, so it has no RoPE to scale")
        return dataclasses.replace(self, rope=self._scaled_rope(self.rope, scaling))

    def _scaled_rope(self, rope: RopeConfig, scaling: Mapping[str, Any] | None) -> RopeConfig:
        length = rope.max_position_embeddings or self.max_position_embeddings
        return dataclasses.replace(rope, scaling=scaling, max_position_embeddings=length)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict that ``from_dict`` turns back into this config."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        if self.rope is not None:
            values["rope"] = _dataclass_dict(self.rope)
        if self.mla is not None:
            values["mla"] = _dataclass_dict(self.mla)
        return _plain(values)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DecoderConfig:
        """Build a config from ``to_dict`` output; unknown keys raise ValueError."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DecoderConfig fields: {', '.join(unknown)}; expected a subset of {sorted(known)}")
        return cls(**values)


def rope_config_from_dict(values: Mapping[str, Any]) -> RopeConfig:
    """Build a RopeConfig from the plain dict that ``DecoderConfig.to_dict`` writes."""
    values = dict(values)
    for name in ("mrope_section", "axial_dims"):
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    return RopeConfig(**values)


def _dataclass_dict(instance: Any) -> dict[str, Any]:
    """Return the fields of a (possibly nested) dataclass as plain dicts and lists."""
    values = {}
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        values[field.name] = _dataclass_dict(value) if dataclasses.is_dataclass(value) else _plain(value)
    return values


def _plain(value: Any) -> Any:
    """Convert mappings, tuples and nested dataclass dicts into JSON-friendly dicts and lists."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _llama_intermediate_size(hidden_size: int) -> int:
    """Return 2/3 of 4 * hidden_size rounded up to a multiple of 8.

    SwiGLU has three matrices instead of two, so LLaMA shrinks the MLP width by 2/3 to keep
    the parameter count of a 4x GELU MLP (Touvron et al. 2023, "LLaMA").
    """
    width = int(2 * 4 * hidden_size / 3)
    return 8 * ((width + 7) // 8)
