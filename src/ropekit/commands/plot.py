"""``ropekit plot RESULTS.json``: draw a study's extrapolation curves.

The figure shows the chosen metric against evaluation length, one line per run, with one
panel per evaluation protocol. The written path goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

METRICS = ("loss", "bits_per_byte", "perplexity")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="RESULTS.json", help="results.json written by 'ropekit study'")
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="image to write, .png, .svg or .pdf (default: extrapolation.png beside RESULTS.json)",
    )
    parser.add_argument(
        "--metric",
        choices=METRICS,
        default="loss",
        help="value on the y axis: loss in nats per byte, bits per byte or perplexity (default: loss)",
    )


def run(args: argparse.Namespace) -> int:
    results_path = Path(args.results)
    out = Path(args.out) if args.out else results_path.parent / "extrapolation.png"
    try:
        with results_path.open(encoding="utf-8") as handle:
            results = json.load(handle)
    except OSError as error:
        print(f"ropekit plot: error: failed to read {results_path}: {error.strerror}", file=sys.stderr)
        return 2
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        print(f"ropekit plot: error: {results_path} is not valid JSON: {error}", file=sys.stderr)
        return 2

    from ropekit.viz import plot_extrapolation

    try:
        written = plot_extrapolation(results, out, metric=args.metric)
    except ValueError as error:
        print(f"ropekit plot: error: {results_path}: {error}", file=sys.stderr)
        return 2
    print(written)
    return 0
