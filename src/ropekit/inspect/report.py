"""Explain a model's positional encoding and attention cache: the report of ``ropekit inspect``.

``build_report`` returns one JSON-ready dict::

    {"source": {"kind", "location", "reference", "model_type"},
     "rope": {"rope_type", "theta", "head_dim", "rotary_dim", "interleaved",
              "attention_factor", "inv_freq", "wavelengths", "original_context",
              "context", "scaling", "shortest_wavelength", "longest_wavelength",
              "pairs_within_original_context", "freq_factors"},
     "attention": {"type", "num_layers", "num_heads", "num_kv_heads", "softmax_scale",
                   "kv_elements_per_token_per_layer",
                   "kv_bytes_per_token": {"bfloat16", "float8"},
                   "kv_bytes_per_token_all_layers": {"bfloat16", "float8"},
                   "comparison": {"mha" | "gqa" | "mqa" | "mla": {the same three keys}}}}

A wavelength is the number of positions over which one rotary pair turns a full
circle, 2 pi / inv_freq. Frequencies are those in use at the full context, so the
length-dependent scalings (dynamic NTK, longrope) show their long-context values.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from ropekit.inspect.sources import ModelSource

# Bytes per cached element for each storage type the report prices.
CACHE_DTYPE_BYTES = {"bfloat16": 2, "float8": 1}


def build_report(source: ModelSource) -> dict[str, Any]:
    """Return the inspection report of ``source`` as a JSON-ready dict.

    Raises:
        ValueError: the config lacks a field that RoPE or attention needs; the message
            of ``RopeConfig.from_hf`` or ``MLAConfig.from_hf`` names it.
    """
    config = source.config
    if source.mla is not None or config.get("kv_lora_rank") is not None:
        rope_config, attention = _latent_attention(config, source.mla)
    else:
        rope_config, attention = _per_head_attention(config, source.rope)

    if source.interleaved is not None:
        rope_config = dataclasses.replace(rope_config, interleaved=source.interleaved)
    return {
        "source": {
            "kind": source.kind,
            "location": source.location,
            "reference": source.reference,
            "model_type": config.get("model_type"),
        },
        "rope": _rope_section(rope_config, config, source.freq_factors),
        "attention": attention,
    }


def original_and_context(config: Mapping[str, Any], scaling: Mapping[str, Any] | None) -> tuple[int, int]:
    """Return (original_context, context) in tokens.

    original_context is the length the RoPE frequencies were pretrained for: the
    scaling's original_max_position_embeddings, else a top-level
    original_max_position_embeddings (Phi-3), else max_position_embeddings. context
    is max_position_embeddings when that exceeds the original length, else the original
    length times the scaling factor (linear, dynamic and YaRN configs that keep
    max_position_embeddings at the pretrained length), else the original length.
    """
    maximum = config.get("max_position_embeddings")
    scaling = scaling or {}
    original = scaling.get("original_max_position_embeddings") or config.get("original_max_position_embeddings")
    original = original or maximum
    if original is None:
        raise ValueError("the config has no 'max_position_embeddings' field, so the context length is unknown")

    if maximum is not None and maximum > original:
        return int(original), int(maximum)
    factor = scaling.get("factor")
    if factor is not None and factor > 1:
        return int(original), int(round(original * factor))
    return int(original), int(original)


def _rope_section(rope_config: Any, config: Mapping[str, Any], freq_factors: tuple[float, ...] | None) -> dict:
    import torch

    from ropekit import rope_frequencies

    scaling = _plain(rope_config.scaling) if rope_config.scaling else None
    original, context = original_and_context(config, scaling)
    inv_freq, attention_factor = rope_frequencies(rope_config, seq_len=context)
    if freq_factors is not None:
        # llama.cpp divides each pair's frequency by its factor (the freq_factors
        # argument of ggml_rope_ext), the form in which GGUF files carry Llama 3.1 scaling.
        if len(freq_factors) != inv_freq.numel():
            raise ValueError(
                f"the rope_freqs tensor has {len(freq_factors)} factors but RoPE has {inv_freq.numel()} pairs"
            )
        inv_freq = inv_freq / torch.tensor(freq_factors, dtype=torch.float64)

    wavelengths = (2 * math.pi / inv_freq).tolist()
    return {
        "rope_type": rope_config.rope_type,
        "theta": float(rope_config.theta),
        "head_dim": rope_config.head_dim,
        "rotary_dim": rope_config.rotary_dim,
        "interleaved": bool(rope_config.interleaved),
        "attention_factor": float(attention_factor),
        "inv_freq": inv_freq.tolist(),
        "wavelengths": wavelengths,
        "original_context": original,
        "context": context,
        "scaling": scaling,
        "shortest_wavelength": min(wavelengths),
        "longest_wavelength": max(wavelengths),
        "pairs_within_original_context": sum(1 for wavelength in wavelengths if wavelength <= original),
        "freq_factors": list(freq_factors) if freq_factors is not None else None,
    }


def _per_head_attention(config: Mapping[str, Any], rope_config: Any = None) -> tuple[Any, dict]:
    """Return the RoPE config and the attention section of an MHA, GQA or MQA model.

    ``rope_config`` is used when given; otherwise RoPE is read from ``config``.
    """
    from ropekit import RopeConfig

    if rope_config is None:
        rope_config = RopeConfig.from_hf(dict(config))
    num_heads = int(config["num_attention_heads"])
    num_kv_heads = int(config.get("num_key_value_heads") or num_heads)
    if num_heads % num_kv_heads != 0:
        raise ValueError(
            f"num_attention_heads ({num_heads}) is not a multiple of num_key_value_heads ({num_kv_heads})"
        )
    head_dim = rope_config.head_dim
    num_layers = int(config["num_hidden_layers"])

    if num_kv_heads == num_heads:
        attention_type = "mha"
    elif num_kv_heads == 1:
        attention_type = "mqa"
    else:
        attention_type = "gqa"
    # Gemma 2 and 3 scale scores by query_pre_attn_scalar^-0.5 instead of head_dim^-0.5.
    softmax_scale = float(config.get("query_pre_attn_scalar") or head_dim) ** -0.5

    # A key and a value of head_dim channels per cached head. The GQA row uses the
    # model's own key/value heads, or for MHA and MQA models the largest divisor of the
    # head count that is at most 8 and below it (8 as in Llama 3), as kv_cache_report does.
    gqa_heads = num_kv_heads if attention_type == "gqa" else _default_gqa_heads(num_heads)
    comparison = {
        "mha": _cache_sizes(num_heads, 2 * num_heads * head_dim, num_layers),
        "gqa": _cache_sizes(gqa_heads, 2 * gqa_heads * head_dim, num_layers),
        "mqa": _cache_sizes(1, 2 * head_dim, num_layers),
    }
    attention = {
        "type": attention_type,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": num_kv_heads,
        "head_dim": head_dim,
        "softmax_scale": softmax_scale,
        **{key: value for key, value in comparison[attention_type].items() if key != "kv_heads"},
        "comparison": comparison,
    }
    return rope_config, attention


def _latent_attention(config: Mapping[str, Any], mla_config: Any = None) -> tuple[Any, dict]:
    """Return the RoPE config and the attention section of a Multi-Head Latent Attention model.

    ``mla_config`` is used when given; otherwise it is read from ``config``.
    """
    import torch

    from ropekit import MLAConfig, kv_cache_report

    if mla_config is None:
        mla_config = MLAConfig.from_hf(dict(config))
    num_layers = int(config["num_hidden_layers"])
    reports = {
        "bfloat16": kv_cache_report(mla_config, num_layers=num_layers, dtype=torch.bfloat16),
        "float8": kv_cache_report(mla_config, num_layers=num_layers, dtype=torch.float8_e4m3fn),
    }

    comparison = {}
    for layout in reports["bfloat16"].layouts:
        name = layout.name.lower()
        comparison[name] = {
            "kv_heads": layout.kv_heads,
            "kv_elements_per_token_per_layer": layout.elements_per_token_per_layer,
            "kv_bytes_per_token": {
                dtype_name: report.layout(layout.name).bytes_per_token_per_layer
                for dtype_name, report in reports.items()
            },
            "kv_bytes_per_token_all_layers": {
                dtype_name: report.layout(layout.name).bytes_per_token for dtype_name, report in reports.items()
            },
        }
    attention = {
        "type": "mla",
        "num_layers": num_layers,
        "num_heads": mla_config.num_heads,
        "num_kv_heads": None,
        "kv_lora_rank": mla_config.kv_lora_rank,
        "qk_nope_head_dim": mla_config.qk_nope_head_dim,
        "qk_rope_head_dim": mla_config.qk_rope_head_dim,
        "v_head_dim": mla_config.v_head_dim,
        "softmax_scale": mla_config.softmax_scale,
        **{key: value for key, value in comparison["mla"].items() if key != "kv_heads"},
        "comparison": comparison,
    }
    return mla_config.rope, attention


def _default_gqa_heads(num_heads: int) -> int:
    divisors = [heads for heads in range(1, min(8, num_heads - 1) + 1) if num_heads % heads == 0]
    return max(divisors, default=1)


def _cache_sizes(kv_heads: int, elements_per_layer: int, num_layers: int) -> dict[str, Any]:
    return {
        "kv_heads": kv_heads,
        "kv_elements_per_token_per_layer": elements_per_layer,
        "kv_bytes_per_token": {name: elements_per_layer * size for name, size in CACHE_DTYPE_BYTES.items()},
        "kv_bytes_per_token_all_layers": {
            name: elements_per_layer * size * num_layers for name, size in CACHE_DTYPE_BYTES.items()
        },
    }


def _plain(scaling: Mapping[str, Any]) -> dict[str, Any]:
    """Return a JSON-ready copy of a RopeConfig scaling mapping (tuples become lists)."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in scaling.items()}
