"""Shared fixtures: the folder of real data (a text corpus and a GGUF model), when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # Triton reads TRITON_INTERPRET when it first wraps a kernel, and torch.compile tests
    # import Triton early, so it is set here, before any test module is imported. On a
    # machine without a GPU the Triton kernels then run in Triton's CPU interpreter.
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Real inputs (a text corpus and a GGUF model): the folder shared/data beside the project
# root, or the folder that ROPEKIT_TEST_DATA names.
SHARED_DATA = Path(
    os.environ.get("ROPEKIT_TEST_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)

# The tests use small tensors, which run no faster on several intra-op threads.
torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    """Return the folder of real data, or skip the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real data folder {SHARED_DATA} is absent; it holds tinyshakespeare.txt and stories260K.gguf "
            "(set ROPEKIT_TEST_DATA to another folder that holds them)"
        )
    return SHARED_DATA


@pytest.fixture
def tinyshakespeare(shared_data: Path) -> Path:
    path = shared_data / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture
def stories260k(shared_data: Path) -> Path:
    path = shared_data / "stories260K.gguf"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path
