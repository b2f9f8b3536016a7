"""Time the RoPE apply on q and k against its peers; write benchmarks/results/rope_<device>.json.

A thin wrapper around ``ropekit bench rope`` that takes the same options, for example:

    python benchmarks/rope.py                              # decode and prefill, float32 and bfloat16
    python benchmarks/rope.py --shapes 2x16x4x64 --repeats 3 --peers copy,ropekit,transformers

Timings are only meaningful on an otherwise idle machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ropekit.cli import main

RESULTS = Path(__file__).resolve().parent / "results"


def run(argv: list[str]) -> int:
    if "--json" not in argv:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        for index, argument in enumerate(argv):
            if argument == "--device" and index + 1 < len(argv):
                device = argv[index + 1].split(":")[0]
            elif argument.startswith("--device="):
                device = argument.split("=", 1)[1].split(":")[0]
        argv = [*argv, "--json", str(RESULTS / f"rope_{device}.json")]
    return main(["bench", "rope", *argv])


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
