"""Resolve what ``ropekit inspect SOURCE`` names into a Hugging Face style config."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ropekit.inspect.gguf_config import is_gguf_file, read_gguf_config
from ropekit.inspect.presets import load_preset, preset_names

# Older config.json names of RoPE fields (GPT-NeoX, Pythia) -> the names RopeConfig.from_hf reads.
FIELD_ALIASES = {"rotary_pct": "partial_rotary_factor", "rotary_emb_base": "rope_theta"}

# Fields without which no attention report can be made, with what each one is.
REQUIRED_FIELDS = {
    "num_attention_heads": "the number of query heads",
    "num_hidden_layers": "the number of decoder layers",
}

# Counts and sizes the report reads: each must be a positive whole number when present.
SIZE_FIELDS = (
    "num_attention_heads",
    "num_hidden_layers",
    "num_key_value_heads",
    "hidden_size",
    "head_dim",
    "max_position_embeddings",
    "original_max_position_embeddings",
    "q_lora_rank",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
)

# The model_type that ``ropekit.save_model`` writes into config.json.
ROPEKIT_MODEL_TYPE = "ropekit"


@dataclass(frozen=True)
class ModelSource:
    """A model description ready to inspect.

    Attributes:
        kind: "preset", "config" (a config.json file), "directory" or "gguf".
        location: the preset name or the file path that was read.
        config: the config.json style fields.
        reference: where the values come from (a preset's published config.json URL),
            or None for local files.
        interleaved: the RoPE pair layout when the source fixes it (GGUF files), or
            None to keep what the config's reader decides.
        freq_factors: per-pair divisors of the RoPE frequencies (a GGUF ``rope_freqs``
            tensor), or None.
        rope: the exact RopeConfig when the source stores one (a ropekit checkpoint's
            DecoderConfig), or None to read RoPE from ``config``.
        mla: the exact MLAConfig of a ropekit checkpoint with latent attention, or None to
            read it from ``config``.
    """

    kind: str
    location: str
    config: dict[str, Any]
    reference: str | None = None
    interleaved: bool | None = None
    freq_factors: tuple[float, ...] | None = None
    rope: Any = None
    mla: Any = None


def load_source(source: str | os.PathLike[str]) -> ModelSource:
    """Read ``source``: a config.json, a model directory, a GGUF file or a preset name.

    An existing path wins over a preset of the same name. A directory is read through
    its config.json, or through its only ``*.gguf`` file when it has no config.json.

    Raises:
        ValueError: the source does not exist, is not a model config, or lacks a field
            that the report needs (the message names the field).
    """
    path = Path(source)
    if path.is_dir():
        return _load_directory(path)
    if path.is_file():
        return _load_file(path, kind="config")
    if isinstance(source, str) and source.strip().lower() in preset_names():
        preset = load_preset(source)
        config = _validated(preset["config"], where=f"preset {preset['name']}")
        return ModelSource(kind="preset", location=preset["name"], config=config, reference=preset["source"])
    raise ValueError(
        f"{str(source)!r} is neither an existing file or directory nor a preset; "
        f"give a config.json, a model directory, a .gguf file or one of: {', '.join(preset_names())}"
    )


def _load_directory(path: Path) -> ModelSource:
    config_path = path / "config.json"
    if config_path.is_file():
        return _load_file(config_path, kind="directory")
    gguf_files = sorted(path.glob("*.gguf"))
    if len(gguf_files) == 1:
        return _load_file(gguf_files[0], kind="directory")
    if len(gguf_files) > 1:
        names = ", ".join(file.name for file in gguf_files)
        raise ValueError(f"directory {path} has no config.json and several GGUF files ({names}); name one of them")
    raise ValueError(f"directory {path} has neither a config.json nor a .gguf file")


def _load_file(path: Path, kind: str) -> ModelSource:
    if is_gguf_file(path):
        gguf_config = read_gguf_config(path)
        config = _validated(gguf_config.config, where=f"GGUF file {path}")
        return ModelSource(
            kind="gguf",
            location=str(path),
            config=config,
            interleaved=gguf_config.interleaved,
            freq_factors=gguf_config.freq_factors,
        )

    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is neither a GGUF file nor a JSON model config: {error}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} contains a JSON {type(config).__name__}, not the object of a model config.json")
    if config.get("model_type") == ROPEKIT_MODEL_TYPE:
        return _ropekit_source(config, path, kind)
    return ModelSource(kind=kind, location=str(path), config=_validated(config, where=str(path)))


def _ropekit_source(values: dict[str, Any], path: Path, kind: str) -> ModelSource:
    """Read the config.json that ``ropekit.save_model`` writes: {"model_type": "ropekit", "decoder": {...}}.

    The report's fields get their Hugging Face names, and the RopeConfig (or MLAConfig) is
    passed on whole, so its layout and scaling are reported exactly as the model uses them.
    """
    from ropekit.models.config import DecoderConfig

    decoder_values = values.get("decoder")
    if not isinstance(decoder_values, dict):
        raise ValueError(f"{path} has model_type 'ropekit' but no 'decoder' object")
    try:
        decoder = DecoderConfig.from_dict(decoder_values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path} has an invalid ropekit decoder config: {error}") from None
    if decoder.position_encoding != "rope":
        raise ValueError(
            f"{path} describes a ropekit decoder with position_encoding {decoder.position_encoding!r}, not RoPE; "
            "ropekit inspect explains models with rotary position encoding"
        )

    config: dict[str, Any] = {
        "model_type": ROPEKIT_MODEL_TYPE,
        "vocab_size": decoder.vocab_size,
        "hidden_size": decoder.hidden_size,
        "num_hidden_layers": decoder.num_layers,
        "num_attention_heads": decoder.num_heads,
        "max_position_embeddings": decoder.max_position_embeddings,
    }
    if decoder.attention == "mla":
        mla = decoder.mla
        config.update(
            q_lora_rank=mla.q_lora_rank,
            kv_lora_rank=mla.kv_lora_rank,
            qk_nope_head_dim=mla.qk_nope_head_dim,
            qk_rope_head_dim=mla.qk_rope_head_dim,
            v_head_dim=mla.v_head_dim,
        )
        return ModelSource(kind=kind, location=str(path), config=config, rope=mla.rope, mla=mla)
    config.update(num_key_value_heads=decoder.num_kv_heads, head_dim=decoder.head_dim)
    return ModelSource(kind=kind, location=str(path), config=config, rope=decoder.rope)


def _validated(config: dict[str, Any], where: str) -> dict[str, Any]:
    """Return the text model's config, checking the fields every report needs.

    Multimodal configs keep the language model's fields under "text_config"; those are
    used when the top level has no attention heads.
    """
    if "num_attention_heads" not in config and isinstance(config.get("text_config"), dict):
        config = config["text_config"]
    for field, meaning in REQUIRED_FIELDS.items():
        if field not in config:
            raise ValueError(f"{where} is not a usable model config: the field {field!r} ({meaning}) is missing")

    config = dict(config)
    for field in SIZE_FIELDS:
        if config.get(field) is not None:
            config[field] = _positive_whole_number(config[field], field, where)
    for old_name, new_name in FIELD_ALIASES.items():
        if old_name in config and new_name not in config:
            config[new_name] = config[old_name]

    # BERT-style configs name their position scheme; only a rotary one has RoPE to explain.
    embedding_type = config.get("position_embedding_type")
    if embedding_type not in (None, "rotary", "rope"):
        raise ValueError(
            f"{where} has position_embedding_type {embedding_type!r}, not RoPE; "
            "ropekit inspect explains models with rotary position encoding"
        )
    return config


def _positive_whole_number(value: Any, field: str, where: str) -> int:
    """Return ``value`` as an int, accepting integral floats such as 64.0; raise ValueError otherwise."""
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or value <= 0:
        raise ValueError(f"{where} has {field} = {value!r}; expected a positive whole number")
    return int(value)
