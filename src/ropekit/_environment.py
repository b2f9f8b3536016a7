"""Environment variables that change ropekit's behaviour, parsed in one place (no torch import)."""

from __future__ import annotations

import os

HUGE_PAGES_VARIABLE = "ROPEKIT_HUGE_PAGES"


def huge_pages_enabled() -> bool:
    """Return False when ROPEKIT_HUGE_PAGES is 0 and True when it is 1 or unset; raise ValueError otherwise."""
    value = os.environ.get(HUGE_PAGES_VARIABLE, "1").strip()
    if value not in ("0", "1"):
        raise ValueError(f"{HUGE_PAGES_VARIABLE} must be 0 or 1, got {value!r}; unset it to keep the default (1)")
    return value == "1"


def check_environment() -> None:
    """Raise ValueError for any ropekit environment variable with an invalid value."""
    huge_pages_enabled()
