"""Shared helpers for the ``ropekit bench`` targets: options and tables.

A target is a module with ``add_arguments(parser)`` and ``run(args) -> int`` (the same
contract as the CLI's command modules), listed in ``ropekit.commands.bench.TARGETS``.
This module and a target's ``add_arguments`` import no torch, so ``ropekit --help`` stays
fast; the timing helpers that need torch are in ``ropekit.bench.timing``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Names accepted by --dtypes; ropekit.bench.timing maps them to torch dtypes.
DTYPE_NAMES = ("float32", "bfloat16", "float16", "float64")


def add_timing_arguments(parser: argparse.ArgumentParser, *, repeats: int = 20, warmup: int = 5) -> None:
    """Add the options every target shares: --repeats, --warmup, --device, --threads, --json."""
    parser.add_argument("--repeats", type=positive_int, default=repeats, help="timed calls per row (default %(default)s)")
    parser.add_argument(
        "--warmup", type=non_negative_int, default=warmup, help="untimed calls before timing each row (default %(default)s)"
    )
    parser.add_argument(
        "--device",
        default=None,
        help="torch device to run on, for example cpu or cuda:0 (default: cuda when available, else cpu)",
    )
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="torch intra-op threads on the CPU (default: torch's own choice)"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the rows as JSON to PATH")


def positive_int(text: str) -> int:
    """Parse an integer option value that must be at least 1 (an argparse ``type``)."""
    value = _parse_int(text, "a positive integer")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """Parse an integer option value that must be at least 0 (an argparse ``type``)."""
    value = _parse_int(text, "a non-negative integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """Parse a finite number option value that must be greater than 0 (an argparse ``type``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _parse_int(text: str, expected: str) -> int:
    # argparse reports a plain ValueError as "invalid <function name> value", so convert it
    # to an ArgumentTypeError whose message argparse prints after the option name.
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def parse_list(text: str) -> list[str]:
    """Split a comma-separated option value and drop empty items. An empty result is invalid."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of at least one item, got {text!r}")
    return items


def parse_dtypes(text: str) -> list[str]:
    names = parse_list(text)
    for name in names:
        if name not in DTYPE_NAMES:
            raise argparse.ArgumentTypeError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPE_NAMES)}")
    return names


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Format rows as an aligned text table.

    ``columns`` contains (key, header, format spec) triples. A missing or None value prints as "-".
    """
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        cells.append(["-" if row.get(key) is None else format(row[key], spec) for key, _, spec in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]

    lines = []
    for line in cells:
        # The first column (a name) is left-aligned, numbers are right-aligned.
        padded = [cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in enumerate(zip(line, widths))]
        lines.append("  ".join(padded))
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
