"""The ``ropekit`` command-line tool.

Each subcommand lives in ``ropekit.commands.<name>`` and provides
``add_arguments(parser)`` and ``run(args) -> int``. Those modules import torch and
the rest of the library inside ``run``, so ``ropekit --help`` stays fast.
Results go to stdout; progress and log records go to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ropekit import __version__
from ropekit._environment import check_environment

# (subcommand, module, one-line help). A subcommand is listed here only once it works.
COMMANDS: list[tuple[str, str, str]] = [
    ("bench", "ropekit.commands.bench", "time ropekit against its peers (targets: rope, mla, train)"),
    ("study", "ropekit.commands.study", "train one model per positional encoding on real text; evaluate at 1-8x its length"),
    ("inspect", "ropekit.commands.inspect", "explain a model's RoPE and KV cache from a config.json, GGUF file or preset"),
    ("demo", "ropekit.commands.demo", "tour the encodings from integer to RoPE and latent attention; write figures"),
    ("plot", "ropekit.commands.plot", "draw a study's extrapolation curves from its results.json"),
    ("generate", "ropekit.commands.generate", "continue a prompt with a local checkpoint (HF, GGUF or ropekit), streaming"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ropekit",
        description="Positional encodings for transformers: explore, inspect, benchmark and compare them.",
    )
    parser.add_argument("--version", action="version", version=f"ropekit {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more detail to stderr (repeat for debug records)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(module_name)
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(subparser)
        subparser.set_defaults(run=module.run, interrupt_hint=getattr(module, "INTERRUPT_HINT", None))
    return parser


def configure_logging(verbosity: int) -> None:
    if verbosity == 0:
        level = logging.WARNING
    elif verbosity == 1:
        level = logging.INFO
    else:
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("ropekit")
    logger.addHandler(handler)
    logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()  # imports every command, torch included: a second or two
    except KeyboardInterrupt:
        print("\nropekit: interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    configure_logging(args.verbose)
    try:
        # An invalid setting fails here, before a command writes or deletes anything.
        check_environment()
        return int(args.run(args) or 0)
    except (ValueError, OSError) as error:
        # Invalid input (a bad value, a missing or unreadable file) is the user's to fix:
        # print the message, not a traceback. With -vv the traceback is logged as a debug record.
        logging.getLogger("ropekit.cli").debug("%s failed", args.command, exc_info=True)
        print(f"ropekit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C is a normal way to stop a long command; 130 is the shell's code for SIGINT.
        hint = f"; {args.interrupt_hint}" if args.interrupt_hint else ""
        # A command may have stopped mid-line on stdout (generate streams text), so the
        # message starts on a line of its own.
        sys.stdout.flush()
        print(f"\nropekit {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
