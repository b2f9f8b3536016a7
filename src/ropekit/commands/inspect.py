"""``ropekit inspect SOURCE [--json] [--plot FILE]``: explain a model's RoPE and KV cache."""

from __future__ import annotations

import argparse
import json
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="a config.json, a model directory, a .gguf file, or a preset name "
        "(llama-3.1-8b, qwen2-7b, phi-3-mini-128k, deepseek-v2-lite, deepseek-v3)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--plot", metavar="FILE", help="also draw the wavelength of every rotary pair into FILE (.png, .svg or .pdf)"
    )


def run(args: argparse.Namespace) -> int:
    from ropekit.inspect import build_report, format_report, load_source

    try:
        source = load_source(args.source)
        report = build_report(source)
    except (ValueError, TypeError) as error:
        print(f"ropekit inspect: error: {error}", file=sys.stderr)
        return 2

    if args.plot:
        from ropekit.inspect.plot import plot_report_wavelengths

        try:
            plot_report_wavelengths(report, args.plot)
        except ValueError as error:
            print(f"ropekit inspect: error: {error}", file=sys.stderr)
            return 2
        print(f"wrote {args.plot}", file=sys.stderr)

    text = json.dumps(report, indent=2) + "\n" if args.json else format_report(report)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader closed the pipe (as `| head` does). Point stdout at /dev/null so the
        # flush at exit does not raise again, and stop quietly like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0
