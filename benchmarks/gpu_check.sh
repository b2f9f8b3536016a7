#!/usr/bin/env bash
# Check the Triton RoPE kernel on a CUDA GPU in one go, then benchmark it against its peers.
#
#   benchmarks/gpu_check.sh                 # tests, then decode and prefill in float32 and bfloat16
#   benchmarks/gpu_check.sh --repeats 50    # extra options go to `ropekit bench rope`
#
# The tests run the compiled kernel on CUDA tensors (TRITON_INTERPRET is cleared), including
# torch.compile and the gradients; the JSON lands in benchmarks/results/rope_cuda.json.
# flash-attn and Liger-Kernel rows appear when those packages are installed, otherwise the
# table lists them as skipped with the reason.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
unset TRITON_INTERPRET

"$PYTHON" - <<'PY'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit("gpu_check.sh needs a CUDA device; torch reports none")
import triton

print(f"{torch.cuda.get_device_name()}: torch {torch.__version__}, triton {triton.__version__}", file=sys.stderr)
PY

"$PYTHON" -m pytest -q tests/test_kernels.py
"$PYTHON" benchmarks/rope.py --device cuda --repeats 100 --warmup 10 "$@"
