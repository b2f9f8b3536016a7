"""Load GGUF files of the ``llama`` architecture with the ``gguf`` package.

Weights: GGUF llama files store q and k projections in the adjacent-pair (interleaved)
RoPE layout. llama.cpp's convert_hf_to_gguf.py permutes Hugging Face's half-layout q/k
rows back to adjacent pairs, and llama2.c checkpoints were trained in that layout, so the
decoder runs them with ``RopeConfig(interleaved=True)`` and the weights as stored.
``ropekit.permute_qk_weights(..., to="half")`` converts them for half-layout RoPE.

Tensors: F32, F16, BF16 and F64 are copied; quantised tensors (Q8_0, Q4_K and the other block
formats that gguf-py implements) are dequantised to float32 with ``gguf.quants.dequantize``.
A type gguf-py cannot dequantise raises ValueError that names it.

RoPE: ``llama.rope.freq_base`` gives theta. ``llama.rope.scaling.type`` linear or yarn maps
to the same scaling type. A ``rope_freqs.weight`` tensor, which llama.cpp writes for Llama 3.1
style scaling, contains one divisor per rotary pair and maps to the ``frequency_factors`` type.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ropekit._gguf import ROPE_FREQS_TENSOR, open_gguf, tensor_values
from ropekit.models.config import DecoderConfig
from ropekit.models.tokenizers import SentencePieceTokenizer
from ropekit.rope import RopeConfig

logger = logging.getLogger("ropekit.models.gguf")

# GGUF tensor name -> decoder parameter name; "{i}" is the block index.
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "embed_tokens", "output_norm": "norm", "output": "lm_head"}


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def _required(reader: Any, key: str, path: Path) -> Any:
    value = _field(reader, key)
    if value is None:
        raise ValueError(f"GGUF file {path} has no metadata key {key!r}, which a llama model needs")
    return value


def decoder_config_from_gguf(reader: Any, path: Path) -> DecoderConfig:
    """Translate llama.* metadata into a DecoderConfig."""
    architecture = _field(reader, "general.architecture")
    if architecture != "llama":
        raise ValueError(f"unsupported GGUF architecture {architecture!r} in {path}; ropekit loads 'llama' GGUF files")
    if int(_field(reader, "llama.expert_count", 0) or 0) > 0:
        raise ValueError(f"{path} is a mixture-of-experts llama model (llama.expert_count > 0), which ropekit does not load")
    hidden_size = int(_required(reader, "llama.embedding_length", path))
    num_heads = int(_required(reader, "llama.attention.head_count", path))
    head_dim = int(_field(reader, "llama.attention.key_length", hidden_size // num_heads))
    rotary_dim = int(_field(reader, "llama.rope.dimension_count", head_dim))
    context = int(_field(reader, "llama.context_length", 2048))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    vocab_size = int(_field(reader, "llama.vocab_size", len(tokens) if tokens else 0))
    if vocab_size <= 0:
        vocab_size = _tensor_rows(reader, "token_embd.weight", path)

    rope = RopeConfig(
        head_dim=head_dim,
        rotary_dim=rotary_dim,
        theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        interleaved=True,
        scaling=_rope_scaling(reader, path, rotary_dim),
        max_position_embeddings=context,
    )
    has_output = any(tensor.name == "output.weight" for tensor in reader.tensors)
    return DecoderConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_layers=int(_required(reader, "llama.block_count", path)),
        num_heads=num_heads,
        num_kv_heads=int(_field(reader, "llama.attention.head_count_kv", num_heads)),
        head_dim=head_dim,
        intermediate_size=int(_required(reader, "llama.feed_forward_length", path)),
        rms_norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        tie_embeddings=not has_output,
        max_position_embeddings=context,
        position_encoding="rope",
        rope=rope,
    )


def _tensor_rows(reader: Any, name: str, path: Path) -> int:
    for tensor in reader.tensors:
        if tensor.name == name:
            return int(tensor.data.shape[0])
    raise ValueError(f"GGUF file {path} has neither llama.vocab_size, tokenizer.ggml.tokens nor {name}")


def _rope_scaling(reader: Any, path: Path, rotary_dim: int) -> dict[str, Any] | None:
    """Return the RoPE scaling spec of the rope_freqs.weight tensor or the llama.rope.scaling.* keys, or None."""
    kind = _field(reader, "llama.rope.scaling.type")
    factor = _field(reader, "llama.rope.scaling.factor")
    frequency_factors = _frequency_factors(reader, path, rotary_dim)
    if frequency_factors is not None:
        if kind not in (None, "none"):
            raise ValueError(
                f"{path} has both rope_freqs.weight and llama.rope.scaling.type {kind!r}; ropekit applies one "
                "RoPE scaling at a time, so it cannot load this file"
            )
        return {"rope_type": "frequency_factors", "factors": frequency_factors}
    if kind in (None, "none"):
        return None
    if factor is None:
        raise ValueError(f"{path} sets llama.rope.scaling.type {kind!r} but no llama.rope.scaling.factor")
    original = _field(reader, "llama.rope.scaling.original_context_length")
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(factor)}
    if kind == "yarn":
        spec: dict[str, Any] = {"rope_type": "yarn", "factor": float(factor)}
        if original is not None:
            spec["original_max_position_embeddings"] = int(original)
        return spec
    raise ValueError(f"unsupported llama.rope.scaling.type {kind!r} in {path}; expected 'linear' or 'yarn'")


def _frequency_factors(reader: Any, path: Path, rotary_dim: int) -> list[float] | None:
    """Return the per-pair RoPE divisors of the rope_freqs.weight tensor, or None without one."""
    for tensor in reader.tensors:
        if tensor.name != ROPE_FREQS_TENSOR:
            continue
        factors = torch.from_numpy(tensor_values(tensor, path)).reshape(-1).double()
        if factors.numel() != rotary_dim // 2:
            raise ValueError(
                f"{ROPE_FREQS_TENSOR} of {path} contains {factors.numel()} factors, but RoPE with "
                f"llama.rope.dimension_count {rotary_dim} has {rotary_dim // 2} pairs"
            )
        invalid = ~(torch.isfinite(factors) & (factors > 0))
        if bool(invalid.any()):
            index = int(invalid.nonzero()[0])
            raise ValueError(
                f"{ROPE_FREQS_TENSOR} of {path} must contain positive, finite factors, got {factors[index].item()} "
                f"at index {index}"
            )
        return factors.tolist()
    return None


def gguf_state_dict(reader: Any, path: Path) -> dict[str, torch.Tensor]:
    """Read the llama tensors under the decoder's parameter names (float32 copies)."""
    state: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        if tensor.name == ROPE_FREQS_TENSOR:
            continue  # read into the RoPE config by _frequency_factors, not a parameter
        state[_decoder_name(tensor.name, path)] = torch.from_numpy(tensor_values(tensor, path))
    return state


def _decoder_name(name: str, path: Path) -> str:
    stem, _, suffix = name.rpartition(".")
    if stem in _TOP_NAMES:
        return f"{_TOP_NAMES[stem]}.{suffix}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _BLOCK_NAMES:
        return f"layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}.{suffix}"
    raise ValueError(f"unexpected tensor {name!r} in llama GGUF file {path}")


def tokenizer_from_gguf(reader: Any, path: Path) -> SentencePieceTokenizer:
    """Build the SentencePiece-style tokenizer embedded in a GGUF file."""
    model = _field(reader, "tokenizer.ggml.model")
    if model != "llama":
        raise ValueError(
            f"unsupported GGUF tokenizer model {model!r} in {path}; ropekit reads the SentencePiece-style 'llama' one"
        )
    tokens = _required(reader, "tokenizer.ggml.tokens", path)
    scores = _field(reader, "tokenizer.ggml.scores") or [0.0] * len(tokens)
    token_types = _field(reader, "tokenizer.ggml.token_type")

    def special(key: str) -> int | None:
        value = _field(reader, key)
        # 0xFFFFFFFF marks an absent token in GGUF metadata.
        return None if value is None or int(value) >= len(tokens) else int(value)

    return SentencePieceTokenizer(
        tokens,
        scores,
        token_types,
        bos_id=special("tokenizer.ggml.bos_token_id"),
        eos_id=special("tokenizer.ggml.eos_token_id"),
        unknown_id=special("tokenizer.ggml.unknown_token_id"),
        add_space_prefix=bool(_field(reader, "tokenizer.ggml.add_space_prefix", True)),
        add_bos_token=bool(_field(reader, "tokenizer.ggml.add_bos_token", True)),
    )
