"""``ropekit bench TARGET``: time ropekit against its peers in one process.

Each target is a module with ``add_arguments(parser)`` and ``run(args) -> int``. To add a
target, add one line to ``TARGETS``. The CLI imports every target module to build its
parser, so a target imports torch inside ``run``, which keeps ``ropekit --help`` fast.
"""

from __future__ import annotations

import argparse
import importlib

# target name -> (module, one-line help).
TARGETS: dict[str, tuple[str, str]] = {
    "rope": ("ropekit.bench.rope", "fused RoPE apply on q and k vs transformers, torch.compile and other peers"),
    "mla": ("ropekit.bench.mla", "MLA decode step, prefill and cache size vs transformers DeepseekV3Attention"),
    "train": ("ropekit.bench.train", "training tokens/s of ropekit's decoder vs transformers LlamaForCausalLM"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The CLI sets the description to its one-line command help, so replace it with the targets.
    parser.description = f"time ropekit against its peers (targets: {', '.join(TARGETS)})"
    targets = parser.add_subparsers(dest="target", metavar="TARGET", title="targets", required=True)
    for name, (module_name, help_text) in TARGETS.items():
        module = importlib.import_module(module_name)
        target_parser = targets.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(target_parser)
        target_parser.set_defaults(run_target=module.run)


def run(args: argparse.Namespace) -> int:
    return int(args.run_target(args) or 0)
