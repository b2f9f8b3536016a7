"""Opening GGUF files, shared by the model loader and ``ropekit inspect`` (imports gguf lazily)."""

from __future__ import annotations

import os
from typing import Any


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
