"""The runs a study compares: one decoder per positional encoding, and RoPE extensions.

Every run trains the same ropekit decoder (same width, depth, heads, MLP and training
settings); only the positional encoding, or MHA against MLA, changes. The RoPE model is
also evaluated, without further training, under four context extensions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# Encodings as the command line names them, in the order of the results table. "mla" is
# Multi-Head Latent Attention with decoupled RoPE, to compare against "rope" (MHA with RoPE).
ENCODINGS = ("none", "integer", "binary", "sinusoidal", "learned", "rope", "alibi", "mla")

# Training-free extensions of the RoPE model, by run name suffix: the rope_type given to
# ropekit.RopeConfig at evaluation lengths above the training length.
EXTENSIONS = {
    "linear": "linear",
    "ntk": "ntk",
    "dynamic": "dynamic",
    "yarn": "yarn",
}

# Multiples of the training length at which every run is evaluated.
LENGTH_MULTIPLES = (1, 2, 4, 8)


@dataclass(frozen=True)
class ModelSize:
    """Width and depth of the decoder that every run of a study shares."""

    hidden_size: int
    num_layers: int
    num_heads: int
    # Width of MLA's latent c_kv and of its rotated channels r.
    kv_lora_rank: int
    qk_rope_head_dim: int


# "small" has about 0.8M parameters with byte tokens: 4 layers x 128 wide, as in nanoGPT's
# CPU recipe for character-level Shakespeare. The other sizes scale it down for tests or
# up for machines with a GPU.
MODEL_SIZES = {
    "tiny": ModelSize(hidden_size=32, num_layers=2, num_heads=2, kv_lora_rank=16, qk_rope_head_dim=8),
    "mini": ModelSize(hidden_size=64, num_layers=2, num_heads=4, kv_lora_rank=32, qk_rope_head_dim=8),
    "small": ModelSize(hidden_size=128, num_layers=4, num_heads=4, kv_lora_rank=64, qk_rope_head_dim=16),
    "medium": ModelSize(hidden_size=256, num_layers=6, num_heads=8, kv_lora_rank=128, qk_rope_head_dim=16),
    "large": ModelSize(hidden_size=512, num_layers=8, num_heads=8, kv_lora_rank=256, qk_rope_head_dim=32),
}


@dataclass(frozen=True)
class RunSpec:
    """One trained model of the study."""

    name: str
    encoding: str
    attention: str


def run_specs(encodings: list[str]) -> list[RunSpec]:
    """Return the trained runs for the selected encodings, in table order."""
    unknown = [name for name in encodings if name not in ENCODINGS]
    if unknown:
        raise ValueError(f"unknown encodings {unknown}; choose from {', '.join(ENCODINGS)}")
    specs = []
    for name in ENCODINGS:
        if name not in encodings:
            continue
        if name == "mla":
            specs.append(RunSpec(name="mla", encoding="rope", attention="mla"))
        else:
            specs.append(RunSpec(name=name, encoding=name, attention="mha"))
    return specs


def build_decoder_config(spec: RunSpec, size: ModelSize, train_length: int) -> Any:
    """Return the ropekit.models.DecoderConfig of ``spec``.

    The positional encodings see max_position_embeddings = train_length, so RoPE's
    extensions treat it as the original context and the integer encoding divides by it.
    The learned table is the exception: it gets rows up to 8x the training length so that
    the model can be run at every evaluation length, and rows past the training length
    are never trained (the table cannot extrapolate).
    """
    from ropekit.attention import MLAConfig
    from ropekit.models import DecoderConfig
    from ropekit.rope import RopeConfig

    max_positions = train_length * max(LENGTH_MULTIPLES) if spec.encoding == "learned" else train_length
    common: dict[str, Any] = {
        "vocab_size": 256,
        "hidden_size": size.hidden_size,
        "num_layers": size.num_layers,
        "num_heads": size.num_heads,
        "tie_embeddings": True,
        "max_position_embeddings": max_positions,
    }
    if spec.attention == "mla":
        mla = MLAConfig.simple(size.hidden_size, size.kv_lora_rank, size.num_heads, rope_dim=size.qk_rope_head_dim)
        rope = RopeConfig(head_dim=size.qk_rope_head_dim, interleaved=True, max_position_embeddings=train_length)
        mla = type(mla)(**{**_fields(mla), "rope": rope})
        return DecoderConfig(**common, position_encoding="rope", attention="mla", mla=mla)
    if spec.encoding == "rope":
        head_dim = size.hidden_size // size.num_heads
        rope = RopeConfig(head_dim=head_dim, max_position_embeddings=train_length)
        return DecoderConfig(**common, position_encoding="rope", rope=rope)
    return DecoderConfig(**common, position_encoding=spec.encoding)


def build_model(spec: RunSpec, size: ModelSize, train_length: int, seed: int) -> torch.nn.Module:
    """Build the decoder of ``spec`` with weights drawn from ``seed``."""
    from ropekit.models import Decoder

    config = build_decoder_config(spec, size, train_length)
    torch.manual_seed(seed)
    return Decoder(config)


def extension_scaling(extension: str, train_length: int) -> dict[str, Any]:
    """Return the RoPE scaling spec of ``extension`` for a model trained at ``train_length``.

    The static extensions (linear interpolation, NTK-aware, YaRN) are set once for the
    longest evaluation length, factor = max(LENGTH_MULTIPLES), and that one setting is
    evaluated at every length, as a deployed model would be configured; so they also
    show what the scaling costs at the trained length. Dynamic NTK takes factor 1. Its
    base grows with the current sequence length n as theta * (n / train_length) **
    (d / (d - 2)), which is static NTK sized for each length. Lengths up to train_length
    stay unscaled.
    """
    if extension not in EXTENSIONS:
        raise ValueError(f"unknown RoPE extension {extension!r}; choose from {', '.join(EXTENSIONS)}")
    factor = float(max(LENGTH_MULTIPLES))
    rope_type = EXTENSIONS[extension]
    if rope_type == "linear":
        return {"rope_type": "linear", "factor": factor}
    if rope_type == "ntk":
        return {"rope_type": "ntk", "factor": factor}
    if rope_type == "dynamic":
        return {"rope_type": "dynamic", "factor": 1.0}
    return {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": train_length}


def _fields(config: Any) -> dict[str, Any]:
    import dataclasses

    return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
