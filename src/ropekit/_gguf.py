"""Reading GGUF files, shared by the model loader and ``ropekit inspect`` (imports gguf lazily)."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

# A tensor of per-pair RoPE divisors that llama.cpp writes for Llama 3.1 style scaling.
ROPE_FREQS_TENSOR = "rope_freqs.weight"


def open_gguf(path: str | os.PathLike[str]) -> Any:
    """Open a GGUF file with gguf.GGUFReader; raise ValueError when it is not a valid GGUF file."""
    try:
        from gguf import GGUFReader
    except ImportError as error:
        raise ImportError("reading GGUF files needs the 'gguf' package: pip install gguf") from error
    try:
        return GGUFReader(str(path))
    except (ValueError, OSError, IndexError, KeyError, TypeError) as error:
        raise ValueError(f"cannot read {path} as a GGUF file ({error}); the file may be truncated or corrupt") from None


def tensor_values(tensor: Any, path: str | os.PathLike[str]) -> np.ndarray:
    """Return a GGUF tensor's values as a new float32 array of row-major shape [rows, columns].

    gguf-py already reverses GGML's dimension order, so tensor.data has the PyTorch shape
    (an nn.Linear weight is [out_features, in_features]). BF16 arrives as raw uint16, and a
    quantised tensor as raw bytes of shape [rows, bytes per row], which
    ``gguf.quants.dequantize`` turns into [rows, columns] float32. Raises ValueError for a
    type that gguf-py cannot dequantise.
    """
    from gguf import GGMLQuantizationType, quants

    kind = tensor.tensor_type
    if kind == GGMLQuantizationType.BF16:
        # The 16 bits of a bfloat16 value are the upper 16 bits of the float32 of equal value.
        bits = np.asarray(tensor.data).view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32)
    if kind in (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.F64):
        return np.array(tensor.data, dtype=np.float32)  # a copy, so the memory map can be closed
    try:
        values = quants.dequantize(tensor.data, kind)
    except NotImplementedError:
        raise ValueError(
            f"tensor {tensor.name} of {path} has type {kind.name}, which gguf {_gguf_version()} cannot dequantise; "
            "convert the file to F16, BF16 or a type such as Q8_0 or Q4_K with llama.cpp's llama-quantize"
        ) from None
    return np.ascontiguousarray(values, dtype=np.float32)


def _gguf_version() -> str:
    try:
        return version("gguf")
    except PackageNotFoundError:
        return "(version unknown)"
