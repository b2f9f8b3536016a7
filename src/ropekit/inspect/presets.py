"""Model presets: published config.json values stored as package data.

Each file in ``presets/`` is one JSON object::

    {"name": "llama-3.1-8b",
     "model": "meta-llama/Llama-3.1-8B",
     "source": "https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json",
     "note": "...",
     "config": {...the attention and position fields of that config.json...}}

``config`` keeps the field names and values of the published file, so it goes through
the same ``from_hf`` readers as a config.json on disk.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

# Keys that every preset file must carry.
PRESET_KEYS = ("name", "model", "source", "config")


def preset_names() -> list[str]:
    """Return the names of the bundled presets, sorted."""
    folder = resources.files("ropekit.inspect") / "presets"
    return sorted(entry.name.removesuffix(".json") for entry in folder.iterdir() if entry.name.endswith(".json"))


def load_preset(name: str) -> dict[str, Any]:
    """Load the preset called ``name`` (case-insensitive) and return its JSON object.

    Raises:
        ValueError: ``name`` is not a bundled preset (the message lists them), or the
            preset file lacks one of ``PRESET_KEYS``.
    """
    if not isinstance(name, str):
        raise TypeError(f"preset name must be a str, got {type(name).__name__}")
    names = preset_names()
    key = name.strip().lower()
    if key not in names:
        raise ValueError(f"unknown preset {name!r}; the presets are: {', '.join(names)}")

    text = (resources.files("ropekit.inspect") / "presets" / f"{key}.json").read_text(encoding="utf-8")
    preset = json.loads(text)
    missing = [field for field in PRESET_KEYS if field not in preset]
    if missing:
        raise ValueError(f"preset file {key}.json is missing the field(s) {', '.join(missing)}")
    return preset
