"""Read the RoPE part of a Hugging Face model config (config.json) into a RopeConfig.

Keys read, as transformers 5.25 reads them:
- ``rope_theta`` at the top level or inside ``rope_parameters`` / ``rope_scaling``, else
  GPT-NeoX's ``rotary_emb_base`` (default 10000.0);
- the scaling mapping: transformers-v5 ``rope_parameters`` or legacy ``rope_scaling``,
  with the type under ``rope_type`` or ``type``; type "default" (and Qwen2-VL's "mrope")
  means no scaling;
- ``partial_rotary_factor`` at the top level or inside the scaling mapping, else
  GPT-NeoX's ``rotary_pct``: rotary_dim = int(head_dim * partial_rotary_factor);
- ``head_dim``, else ``hidden_size / num_attention_heads``, which must be whole;
  sizes must be positive integers (a whole float such as 64.0 is accepted);
- DeepSeek's MLA keys: ``qk_rope_head_dim`` is the rotated part of each head, so it
  becomes both head_dim and rotary_dim, and ``rope_interleave`` (default True for these
  checkpoints) the layout;
- ``original_max_position_embeddings`` at the top level (Phi-3) overrides the one in the
  scaling mapping for llama3, yarn and longrope, and ``max_position_embeddings`` fills it
  when both are absent;
- ``mrope_section`` and ``mrope_interleaved`` inside the scaling mapping (Qwen2-VL,
  Qwen3-VL).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ropekit.rope.config import RopeConfig

logger = logging.getLogger("ropekit.rope.hf")

# Keys of the scaling mapping that describe the base RoPE, not a scaling type.
_BASE_KEYS = ("rope_theta", "partial_rotary_factor", "mrope_section", "mrope_interleaved")

# Types whose original length transformers fills from the model config.
_TYPES_WITH_ORIGINAL_LENGTH = ("llama3", "yarn", "longrope", "deepseek_yarn")


def rope_config_from_hf(config: Mapping[str, Any] | str | os.PathLike[str] | Any) -> RopeConfig:
    """Build a RopeConfig from a Hugging Face config dict, a config.json path or its folder.

    Objects with a ``to_dict`` method (transformers' PretrainedConfig) are accepted too.
    Raises ValueError naming the missing key or the unknown rope type.
    """
    values = _load(config)
    head_dim, head_dim_source = _head_dim(values)
    interleaved = False
    if values.get("qk_rope_head_dim") is not None:
        interleaved = bool(values.get("rope_interleave", True))

    spec = _scaling_mapping(values)
    theta = spec.pop("rope_theta", None)
    if theta is None:
        theta = _first_present(values, ("rope_theta", "rotary_emb_base"), 10000.0)
    partial = spec.pop("partial_rotary_factor", None)
    if partial is None:
        partial = _first_present(values, ("partial_rotary_factor", "rotary_pct"), 1.0)
    mrope_section = spec.pop("mrope_section", None)
    mrope_interleaved = bool(spec.pop("mrope_interleaved", False))
    rotary_dim = int(head_dim * float(partial))
    if head_dim_source == "derived" and rotary_dim % 2:
        raise ValueError(
            f"head_dim derived from hidden_size ({values['hidden_size']}) / num_attention_heads "
            f"({values['num_attention_heads']}) is {head_dim}, which gives the odd rotary_dim {rotary_dim} "
            f"(partial_rotary_factor {partial}); RoPE needs an even one, so set head_dim in the config "
            "or fix those two fields"
        )

    max_length = _size(values, "max_position_embeddings")
    scaling = _finish_scaling(spec, values, max_length)
    return RopeConfig(
        head_dim=head_dim,
        rotary_dim=rotary_dim,
        theta=float(theta),
        interleaved=interleaved,
        scaling=scaling,
        max_position_embeddings=max_length,
        mrope_section=None if mrope_section is None else tuple(int(s) for s in mrope_section),
        mrope_interleaved=mrope_interleaved,
    )


def _load(config: Any) -> dict[str, Any]:
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ValueError(f"config path {str(path)!r} is not a file; pass a config.json or its folder")
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    raise TypeError(
        f"config must be a dict, a path to config.json or a transformers config, got {type(config).__name__}"
    )


def _first_present(values: Mapping[str, Any], keys: tuple[str, ...], default: Any) -> Any:
    """Return the value of the first key in ``keys`` that is set and not None, else ``default``."""
    for key in keys:
        if values.get(key) is not None:
            return values[key]
    return default


def _size(values: Mapping[str, Any], key: str) -> int | None:
    """Return ``values[key]`` as a positive int (None when absent); a whole float such as 64.0 counts."""
    value = values.get(key)
    if value is None:
        return None
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or value <= 0:
        raise ValueError(f"config key {key!r} must be a positive integer, got {value!r}")
    return int(value)


def _head_dim(values: Mapping[str, Any]) -> tuple[int, str]:
    """Return the rotated head size and where it came from: "qk_rope_head_dim", "head_dim" or "derived".

    DeepSeek's MLA configs rotate only qk_rope_head_dim channels of each head, so that key
    wins over head_dim there.
    """
    for key in ("qk_rope_head_dim", "head_dim"):
        size = _size(values, key)
        if size is not None:
            return size, key
    hidden_size, num_heads = _size(values, "hidden_size"), _size(values, "num_attention_heads")
    if hidden_size is None or num_heads is None:
        missing = [key for key in ("hidden_size", "num_attention_heads") if values.get(key) is None]
        raise ValueError(f"config has no 'head_dim' and lacks {missing} to derive it from")
    if hidden_size % num_heads:
        raise ValueError(
            f"head_dim derived from hidden_size ({hidden_size}) / num_attention_heads ({num_heads}) "
            f"= {hidden_size / num_heads:g} is not whole; set head_dim in the config or fix those two fields"
        )
    return hidden_size // num_heads, "derived"


def _scaling_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of rope_parameters (preferred) or rope_scaling, with rope_type set."""
    raw = values.get("rope_parameters") or values.get("rope_scaling") or {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"rope_parameters / rope_scaling must be a mapping, got {raw!r}")
    spec = dict(raw)
    rope_type = spec.pop("rope_type", None) or spec.pop("type", None) or "default"
    spec.pop("type", None)
    if rope_type == "mrope":  # Qwen2-VL's legacy name for default RoPE with mrope_section
        rope_type = "default"
    spec["rope_type"] = rope_type
    return spec


def _finish_scaling(spec: dict[str, Any], values: Mapping[str, Any], max_length: Any) -> dict[str, Any] | None:
    rope_type = spec["rope_type"]
    if rope_type == "default":
        leftover = sorted(set(spec) - {"rope_type"} - set(_BASE_KEYS))
        if leftover:
            logger.warning("ignoring keys %s of a default (unscaled) RoPE config", leftover)
        return None
    from ropekit.rope.scaling import get_scaling_type

    scaling_type = get_scaling_type(rope_type)
    unknown = sorted(set(spec) - {"rope_type"} - set(scaling_type.required) - set(scaling_type.optional))
    if unknown:
        # transformers also only warns about these; a checkpoint should still load.
        logger.warning("ignoring keys %s that rope_type %r does not use", unknown, rope_type)
        for key in unknown:
            del spec[key]
    if rope_type in _TYPES_WITH_ORIGINAL_LENGTH:
        if values.get("original_max_position_embeddings") is not None:
            spec["original_max_position_embeddings"] = _size(values, "original_max_position_embeddings")
        elif spec.get("original_max_position_embeddings") is None and max_length is not None:
            spec["original_max_position_embeddings"] = max_length
    return spec
