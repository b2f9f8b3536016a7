"""ropekit: positional encodings for transformers.

Additive encodings (integer, binary, sinusoidal, learned), ALiBi, Rotary Positional
Encoding (RoPE) with the long-context scalings that real models use, and Multi-Head
Latent Attention (MLA) with decoupled RoPE and a latent KV cache.

Public names are imported on first use (PEP 562), so ``import ropekit`` stays cheap
and the command-line tool starts fast.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

__version__ = "0.1.0"

# Library code logs under the "ropekit" logger and never prints. The application
# (the CLI or the user's program) decides where log records go.
logging.getLogger("ropekit").addHandler(logging.NullHandler())

# Public name -> module that defines it.
_EXPORTS: dict[str, str] = {
    # Additive (absolute) encodings and ALiBi.
    "IntegerPositionalEncoding": "ropekit.encodings",
    "BinaryPositionalEncoding": "ropekit.encodings",
    "SinusoidalPositionalEncoding": "ropekit.encodings",
    "LearnedPositionalEmbedding": "ropekit.encodings",
    "ALiBi": "ropekit.encodings",
    # Rotary Positional Encoding.
    "RopeConfig": "ropekit.rope",
    "rope_frequencies": "ropekit.rope",
    "RotaryEmbedding": "ropekit.rope",
    "apply_rotary": "ropekit.rope",
    "rerotate": "ropekit.rope",
    "permute_qk_weights": "ropekit.rope",
    # Multi-Head Latent Attention.
    "MLAConfig": "ropekit.attention",
    "MultiHeadLatentAttention": "ropekit.attention",
    "LatentKVCache": "ropekit.attention",
    "kv_cache_report": "ropekit.attention",
    # Models and checkpoints.
    "load_model": "ropekit.models",
    "load_tokenizer": "ropekit.models",
    "save_model": "ropekit.models",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'ropekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
