"""Device names accepted by the CLI commands and the study runner, turned into torch devices."""

from __future__ import annotations

import re

import torch

CHOICES = "auto, cpu, cuda or cuda:N"

_NAME = re.compile(r"(cpu|cuda)(?::(\d+))?")


def resolve_device(name: str | None) -> torch.device:
    """Return the torch.device for ``name``.

    None and "auto" mean cuda when torch reports a CUDA device, and cpu otherwise. "cpu",
    "cuda" and "cuda:N" are taken as given, after checking that CUDA is available and that
    N is below ``torch.cuda.device_count()``. Anything else raises ValueError.
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(name, str):
        raise TypeError(f"device must be a str or None, got {type(name).__name__}")
    match = _NAME.fullmatch(name)
    if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
        raise ValueError(f"invalid device {name!r}; expected {CHOICES}")
    if match.group(1) == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but CUDA is not available; expected cpu or auto")
    if match.group(2) is None:
        return torch.device("cuda")
    index = int(match.group(2))
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(
            f"device {name!r} was requested but torch reports {count} CUDA device(s); expected cuda:0 to cuda:{count - 1}"
        )
    return torch.device("cuda", index)
