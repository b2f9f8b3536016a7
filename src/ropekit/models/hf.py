"""Load Hugging Face checkpoints of the Llama layout: config.json plus safetensors files.

Supported ``model_type`` values and what differs between them:
- "llama": optional biases on q, k, v and o (``attention_bias``) and on the MLP (``mlp_bias``);
- "mistral": a sliding window over the last ``sliding_window`` positions in every layer;
- "qwen2": biases on q, k and v; a sliding window on the layers ``layer_types`` marks
  "sliding_attention";
- "phi3": fused ``qkv_proj`` and ``gate_up_proj`` matrices, split here into the Llama
  names, partial rotary (``partial_rotary_factor``) and a sliding window.
RoPE (theta, partial rotary, every rope_scaling type) is read by ``RopeConfig.from_hf``.

Weights are read with ``safetensors`` only, so loading never unpickles anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ropekit.models.config import DecoderConfig
from ropekit.rope import RopeConfig

logger = logging.getLogger("ropekit.models.hf")

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "phi3")

# Floating-point dtypes a checkpoint tensor may have; quantised or integer weights are rejected.
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def read_json(path: Path, what: str) -> dict[str, Any]:
    """Read a JSON object from ``path``; raise ValueError saying which file is invalid and why."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} {path} is not valid JSON ({error}); the file may be truncated or corrupt") from None
    if not isinstance(values, dict):
        raise ValueError(f"{what} {path} must contain a JSON object, got {type(values).__name__}")
    return values


def decoder_config_from_hf(values: Mapping[str, Any]) -> DecoderConfig:
    """Translate a Hugging Face config.json of a supported model type into a DecoderConfig."""
    model_type = values.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"unsupported model_type {model_type!r} in config.json; ropekit loads {', '.join(SUPPORTED_MODEL_TYPES)} "
            "checkpoints (the Llama layout) and GGUF files of the llama architecture"
        )
    activation = values.get("hidden_act", "silu")
    if activation != "silu":
        raise ValueError(f"unsupported hidden_act {activation!r}: the decoder's MLP is SwiGLU, which needs 'silu'")
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if key not in values:
            raise ValueError(f"config.json of model_type {model_type!r} is missing the required key {key!r}")

    num_heads = int(values["num_attention_heads"])
    head_dim = values.get("head_dim") or int(values["hidden_size"]) // num_heads
    rope = RopeConfig.from_hf(dict(values))
    sliding_window, sliding_layers = _sliding_window(values, model_type)
    attention_bias = bool(values.get("attention_bias", False))
    return DecoderConfig(
        vocab_size=int(values["vocab_size"]),
        hidden_size=int(values["hidden_size"]),
        num_layers=int(values["num_hidden_layers"]),
        num_heads=num_heads,
        num_kv_heads=int(values.get("num_key_value_heads") or num_heads),
        head_dim=int(head_dim),
        intermediate_size=int(values["intermediate_size"]),
        rms_norm_eps=float(values.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(values.get("tie_word_embeddings", False)),
        max_position_embeddings=int(values.get("max_position_embeddings", 2048)),
        position_encoding="rope",
        rope=rope,
        qkv_bias=True if model_type == "qwen2" else attention_bias,
        output_bias=attention_bias if model_type == "llama" else False,
        mlp_bias=bool(values.get("mlp_bias", False)) if model_type == "llama" else False,
        sliding_window=sliding_window,
        sliding_window_layers=sliding_layers,
    )


def _sliding_window(values: Mapping[str, Any], model_type: str) -> tuple[int | None, tuple[int, ...] | None]:
    """Return (window, layers that use it) as transformers 5.25 applies them per model type."""
    window = values.get("sliding_window")
    if model_type == "llama" or window is None:
        return None, None
    if model_type != "qwen2":
        return int(window), None

    # Qwen2Config drops the window unless use_sliding_window is set, whatever layer_types
    # contains. Without layer_types, the layers from max_window_layers (default 28) on use it.
    if not values.get("use_sliding_window", False):
        return None, None
    layer_types = values.get("layer_types")
    if layer_types is None:
        first = int(values.get("max_window_layers", 28))
        sliding = tuple(range(first, int(values["num_hidden_layers"])))
    else:
        sliding = tuple(index for index, kind in enumerate(layer_types) if kind == "sliding_attention")
    return (int(window), sliding) if sliding else (None, None)


def safetensors_files(directory: Path) -> list[Path]:
    """Return the safetensors files of a checkpoint directory, single file or sharded."""
    index_path = directory / INDEX_FILE
    if index_path.is_file():
        index = read_json(index_path, "safetensors index")
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index_path} has no 'weight_map' object naming the shard of each tensor")
        files = [directory / name for name in sorted(set(weight_map.values()))]
        missing = [str(path) for path in files if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"{index_path} names shards that are missing: {', '.join(missing)}")
        return files
    single = directory / SINGLE_FILE
    if single.is_file():
        return [single]
    others = sorted(directory.glob("*.safetensors"))
    if others:
        return others
    pickles = sorted(path.name for path in directory.glob("*.bin")) + sorted(path.name for path in directory.glob("*.pt"))
    hint = f" It contains {', '.join(pickles)}, which are pickle files that ropekit does not load." if pickles else ""
    raise FileNotFoundError(
        f"no {SINGLE_FILE}, {INDEX_FILE} or other *.safetensors file in {directory}.{hint} "
        "Convert the weights to safetensors first."
    )


def read_safetensors(files: list[Path]) -> dict[str, torch.Tensor]:
    """Read every tensor of ``files``; raise ValueError on a corrupt file or an unsupported dtype."""
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as handle:
                for name in handle.keys():
                    tensors[name] = handle.get_tensor(name)
        except (SafetensorError, OSError, RuntimeError) as error:
            raise ValueError(
                f"cannot read {path} as safetensors ({error}); the file may be truncated or corrupt"
            ) from None
    unsupported = sorted({f"{name}: {tensor.dtype}" for name, tensor in tensors.items() if tensor.dtype not in SUPPORTED_DTYPES})
    if unsupported:
        raise ValueError(
            f"unsupported tensor dtypes (ropekit loads float32, float16, bfloat16 and float64 weights, not "
            f"quantised ones): {', '.join(unsupported[:5])}"
        )
    return tensors


def hf_state_dict(tensors: Mapping[str, torch.Tensor], config: DecoderConfig, model_type: str) -> dict[str, torch.Tensor]:
    """Rename Hugging Face tensors to the decoder's names; split Phi-3's fused matrices."""
    state: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        key = name.removeprefix("model.")
        if key.endswith("rotary_emb.inv_freq"):
            continue  # a derived buffer some older checkpoints saved; RoPE recomputes it
        if model_type == "phi3" and key.endswith("self_attn.qkv_proj.weight"):
            prefix = key.removesuffix("qkv_proj.weight")
            q_rows = config.num_heads * config.head_dim
            kv_rows = config.num_kv_heads * config.head_dim
            if tensor.shape[0] != q_rows + 2 * kv_rows:
                raise ValueError(f"{name} has {tensor.shape[0]} rows, expected {q_rows + 2 * kv_rows} for q, k and v")
            q, k, v = tensor.split((q_rows, kv_rows, kv_rows), dim=0)
            state[prefix + "q_proj.weight"], state[prefix + "k_proj.weight"], state[prefix + "v_proj.weight"] = q, k, v
        elif model_type == "phi3" and key.endswith("mlp.gate_up_proj.weight"):
            prefix = key.removesuffix("gate_up_proj.weight")
            # Phi3MLP computes gate, up = gate_up_proj(x).chunk(2): the gate rows come first.
            state[prefix + "gate_proj.weight"], state[prefix + "up_proj.weight"] = tensor.chunk(2, dim=0)
        else:
            state[key] = tensor
    if config.tie_embeddings:
        state.pop("lm_head.weight", None)
    return state
