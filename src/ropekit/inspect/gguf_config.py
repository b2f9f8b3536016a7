"""Read the attention and RoPE metadata of a GGUF file as a Hugging Face style config.

GGUF stores hyperparameters as ``<architecture>.<key>`` entries (for example
``llama.attention.head_count``), named in the GGUF specification of the ggml project
(docs/gguf.md). This module maps them to the config.json field names that
``RopeConfig.from_hf`` and ``MLAConfig.from_hf`` read, and reports the two facts a
config.json does not carry: the pair layout and the per-pair frequency factors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ropekit._gguf import ROPE_FREQS_TENSOR, open_gguf, tensor_values

logger = logging.getLogger("ropekit.inspect")

GGUF_MAGIC = b"GGUF"

# RoPE pair layout per GGUF architecture, as llama.cpp applies it
# (llama_model_rope_type in src/llama-model.cpp). The converter permutes the q/k
# weights of Llama-family checkpoints so that adjacent channels form a pair
# (interleaved=True); the others keep the half ("NeoX") layout of transformers.
INTERLEAVED_ARCHITECTURES = frozenset(
    {"llama", "deepseek", "deepseek2", "baichuan", "internlm2", "minicpm", "command-r", "olmo",
     "granite", "granitemoe", "xverse", "arctic"}
)
HALF_ARCHITECTURES = frozenset(
    {"qwen", "qwen2", "qwen2moe", "qwen3", "qwen3moe", "phi2", "phi3", "gemma", "gemma2", "gemma3",
     "stablelm", "gptneox", "falcon", "starcoder2", "olmo2", "exaone", "nemotron", "phimoe"}
)

# GGUF suffix (after "<architecture>.") -> config.json field.
FIELD_MAP = {
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "attention.q_lora_rank": "q_lora_rank",
    "attention.kv_lora_rank": "kv_lora_rank",
}


@dataclass(frozen=True)
class GGUFConfig:
    """The attention and RoPE description read from a GGUF file.

    Attributes:
        architecture: the ``general.architecture`` value, for example "llama".
        config: config.json style fields derived from the metadata.
        interleaved: True when the file's q/k weights expect adjacent-pair RoPE.
        freq_factors: per-pair divisors of the frequencies from the ``rope_freqs``
            tensor, or None when the file has no such tensor.
    """

    architecture: str
    config: dict[str, Any]
    interleaved: bool
    freq_factors: tuple[float, ...] | None


def is_gguf_file(path: Path) -> bool:
    """Return True when ``path`` is a file that starts with the GGUF magic bytes."""
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(len(GGUF_MAGIC)) == GGUF_MAGIC


def read_gguf_config(path: str | Path) -> GGUFConfig:
    """Read the attention and RoPE metadata of the GGUF file at ``path``.

    Raises:
        ValueError: a required entry is missing (the message names the GGUF key), the
            architecture's RoPE layout is unknown, or a value has an unsupported form.
    """
    path = Path(path)
    reader = open_gguf(path)
    metadata = {name: field.contents() for name, field in reader.fields.items()}

    architecture = metadata.get("general.architecture")
    if not isinstance(architecture, str):
        raise ValueError(f"GGUF file {path} is missing the metadata key 'general.architecture'")
    interleaved = _pair_layout(architecture, path)

    config = _map_fields(metadata, architecture)
    for gguf_suffix in ("attention.head_count", "block_count", "embedding_length"):
        if FIELD_MAP[gguf_suffix] not in config:
            raise ValueError(f"GGUF file {path} is missing the metadata key '{architecture}.{gguf_suffix}'")
    _add_rope_fields(config, metadata, architecture)

    freq_factors = None
    for tensor in reader.tensors:
        if tensor.name == ROPE_FREQS_TENSOR:
            freq_factors = tuple(float(value) for value in tensor_values(tensor, path).reshape(-1))
    return GGUFConfig(architecture=architecture, config=config, interleaved=interleaved, freq_factors=freq_factors)


def _pair_layout(architecture: str, path: Path) -> bool:
    if architecture in INTERLEAVED_ARCHITECTURES:
        return True
    if architecture in HALF_ARCHITECTURES:
        return False
    known = ", ".join(sorted(INTERLEAVED_ARCHITECTURES | HALF_ARCHITECTURES))
    raise ValueError(
        f"GGUF file {path} has architecture {architecture!r}, whose RoPE pair layout ropekit does not know; "
        f"known architectures: {known}"
    )


def _map_fields(metadata: dict[str, Any], architecture: str) -> dict[str, Any]:
    config: dict[str, Any] = {"model_type": architecture}
    for gguf_suffix, hf_field in FIELD_MAP.items():
        value = metadata.get(f"{architecture}.{gguf_suffix}")
        if value is None:
            continue
        if isinstance(value, list):
            # Some files store one value per layer (for example head_count_kv).
            if len(set(value)) != 1:
                raise ValueError(
                    f"GGUF key '{architecture}.{gguf_suffix}' differs between layers ({value}); "
                    "ropekit inspect needs one value for all layers"
                )
            value = value[0]
        config[hf_field] = value
    return config


def _add_rope_fields(config: dict[str, Any], metadata: dict[str, Any], architecture: str) -> None:
    """Add rotary dimensions and rope_scaling to ``config`` from the rope.* keys."""
    rope_dim = metadata.get(f"{architecture}.rope.dimension_count")
    if config.get("kv_lora_rank") is not None:
        _add_latent_fields(config, metadata, architecture, rope_dim)
    elif rope_dim is not None:
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        if rope_dim != head_dim:
            config["partial_rotary_factor"] = rope_dim / head_dim

    scaling_type = metadata.get(f"{architecture}.rope.scaling.type")
    if scaling_type in (None, "none"):
        return
    if scaling_type not in ("linear", "yarn"):
        # GGUF longrope keeps its per-pair factors in tensors that this reader does not load.
        raise ValueError(
            f"GGUF key '{architecture}.rope.scaling.type' is {scaling_type!r}; "
            "ropekit inspect reads 'none', 'linear' and 'yarn'"
        )
    scaling: dict[str, Any] = {"rope_type": scaling_type}
    factor = metadata.get(f"{architecture}.rope.scaling.factor")
    if factor is not None:
        scaling["factor"] = factor
    original = metadata.get(f"{architecture}.rope.scaling.original_context_length")
    if original is not None:
        scaling["original_max_position_embeddings"] = original
    for gguf_suffix, hf_field in (("yarn_beta_fast", "beta_fast"), ("yarn_beta_slow", "beta_slow")):
        value = metadata.get(f"{architecture}.rope.scaling.{gguf_suffix}")
        if value is not None:
            scaling[hf_field] = value
    attention_factor = metadata.get(f"{architecture}.rope.scaling.attn_factor")
    if attention_factor is not None and attention_factor != 1.0:
        # llama.cpp multiplies its own YaRN magnitude scale by this value, while the
        # attention_factor of a config.json replaces it, so the two do not map.
        raise ValueError(
            f"GGUF key '{architecture}.rope.scaling.attn_factor' is {attention_factor}; "
            "ropekit inspect reads only files where it is absent or 1.0"
        )
    log_multiplier = metadata.get(f"{architecture}.rope.scaling.yarn_log_multiplier")
    if log_multiplier is not None:
        # llama.cpp's converter stores 0.1 * mscale_all_dim for DeepSeek-V2 and no mscale.
        # NOTE: mscale is taken equal to mscale_all_dim, as in the published DeepSeek-V2,
        # V2-Lite and V3 configs. A file converted from a config where they differ reads wrong.
        scaling["mscale_all_dim"] = log_multiplier / 0.1
        scaling["mscale"] = log_multiplier / 0.1
    config["rope_scaling"] = scaling


def _add_latent_fields(config: dict[str, Any], metadata: dict[str, Any], architecture: str, rope_dim: Any) -> None:
    """Add the DeepSeek-V2/V3 head sizes to ``config``.

    Older files store the per-head sizes in attention.key_length (qk_nope_head_dim +
    qk_rope_head_dim) and attention.value_length. Files written since llama.cpp stores the
    absorbed form put the per-head sizes in key_length_mla and value_length_mla instead,
    and set head_count_kv to 1, the single latent "head".
    """
    if rope_dim is None:
        raise ValueError(f"GGUF metadata is missing '{architecture}.rope.dimension_count'")
    key_length = config.pop("head_dim", None)
    value_length = metadata.get(f"{architecture}.attention.value_length")
    if metadata.get(f"{architecture}.attention.key_length_mla") is not None:
        key_length = metadata[f"{architecture}.attention.key_length_mla"]
        value_length = metadata.get(f"{architecture}.attention.value_length_mla")
    for name, value in (("attention.key_length", key_length), ("attention.value_length", value_length)):
        if value is None:
            raise ValueError(f"GGUF metadata is missing '{architecture}.{name}'")

    # Every MLA head reads the same latent, so there is no per-head key/value count.
    config.pop("num_key_value_heads", None)
    config.update(
        qk_rope_head_dim=rope_dim,
        qk_nope_head_dim=key_length - rope_dim,
        v_head_dim=value_length,
        model_type="deepseek_v2",
    )
