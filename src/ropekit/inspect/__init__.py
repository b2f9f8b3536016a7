"""Explain a model's RoPE configuration and attention cache before spending a run on it.

``inspect_source(source)`` reads a config.json, a model directory, a GGUF file or a
bundled preset and returns the report that ``ropekit inspect`` prints. The report contains
the RoPE parameters, the wavelength of every rotary pair, the context lengths, the
attention factor, the softmax scale and the KV-cache size per token against MHA, GQA
and MQA.
"""

from __future__ import annotations

import os
from typing import Any

from ropekit.inspect.presets import load_preset, preset_names
from ropekit.inspect.report import build_report, original_and_context
from ropekit.inspect.sources import ModelSource, load_source
from ropekit.inspect.text import format_report

__all__ = [
    "ModelSource",
    "build_report",
    "format_report",
    "inspect_source",
    "load_preset",
    "load_source",
    "original_and_context",
    "preset_names",
]


def inspect_source(source: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``source`` (config.json, model directory, GGUF file or preset name) and return its report."""
    return build_report(load_source(source))
