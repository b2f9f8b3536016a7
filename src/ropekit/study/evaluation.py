"""Evaluation of a byte-level language model at a given context length.

Two protocols, for a window length n (a multiple of the training length):

- "non_overlapping": consecutive windows of n bytes with every byte scored. The context
  of a scored byte ranges from 0 to n - 1 bytes.
- "sliding": windows of n bytes that advance by ceil(n / 2); only the last ceil(n / 2)
  bytes of each window are scored, so each scored byte sees at least floor(n / 2) bytes
  of context and the scored regions of consecutive windows tile the text.

Losses are mean cross-entropies in nats per byte (one token is one byte); bits per byte
is that divided by ln 2, and perplexity is its exponential.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PROTOCOLS = ("non_overlapping", "sliding")


@dataclass(frozen=True)
class EvalResult:
    """Loss of one model at one length under one protocol."""

    length: int
    protocol: str
    loss: float
    tokens: int

    @property
    def bits_per_byte(self) -> float:
        return self.loss / math.log(2.0)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.loss < 700.0 else math.inf

    def to_dict(self) -> dict[str, object]:
        """Describe the result as results.json stores it."""
        return {
            "length": self.length,
            "protocol": self.protocol,
            "loss": self.loss,
            "bits_per_byte": self.bits_per_byte,
            "perplexity": self.perplexity,
        }


def window_plan(num_bytes: int, length: int, protocol: str, max_tokens: int) -> tuple[torch.Tensor, int]:
    """Choose the windows to score.

    Returns (starts, scored) where starts are the first byte of each window and the
    last ``scored`` bytes of each window are scored. When the data hold more windows
    than ``max_tokens`` scored bytes need, an evenly spaced subset is kept.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if length < 2:
        raise ValueError(f"evaluation length must be at least 2, got {length}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")

    stride = length if protocol == "non_overlapping" else length - length // 2
    scored = stride
    # A window reads length + 1 bytes: the inputs and, shifted by one, the targets.
    count = (num_bytes - length - 1) // stride + 1 if num_bytes >= length + 1 else 0
    if count == 0:
        raise ValueError(f"evaluation at length {length} needs at least {length + 1} bytes, got {num_bytes}")

    wanted = max(1, math.ceil(max_tokens / scored))
    indices = torch.arange(count) if count <= wanted else (torch.arange(wanted) * count) // wanted
    return indices * stride, scored


@torch.no_grad()
def evaluate(
    model: Callable[[torch.Tensor], torch.Tensor],
    data: torch.Tensor,
    *,
    length: int,
    protocol: str,
    max_tokens: int,
    batch_tokens: int = 16384,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    on_windows: Callable[[int], None] | None = None,
) -> EvalResult:
    """Return the mean loss of ``model`` on ``data`` at ``length`` under ``protocol``.

    ``model`` maps int64 inputs [batch, length] to logits [batch, length, 256]. Under
    torch.distributed each rank scores every world_size-th window and the sums are
    all-reduced, so every rank returns the same result. ``on_windows`` is called with
    the number of windows after each batch (for progress bars).
    """
    starts, scored = window_plan(int(data.numel()), length, protocol, max_tokens)
    my_starts = starts[rank::world_size]
    per_batch = max(1, batch_tokens // length)
    offsets = torch.arange(length + 1)

    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    total_tokens = torch.zeros((), dtype=torch.float64, device=device)
    for first in range(0, my_starts.numel(), per_batch):
        batch_starts = my_starts[first : first + per_batch]
        windows = data[batch_starts.unsqueeze(1) + offsets].long().to(device)  # [b, length + 1]
        inputs, targets = windows[:, :-1], windows[:, 1:]

        logits = model(inputs)[:, -scored:]  # [b, scored, vocab]
        losses = F.cross_entropy(logits.float().flatten(0, 1), targets[:, -scored:].flatten(), reduction="sum")
        total_loss += losses.double()
        total_tokens += targets[:, -scored:].numel()
        if on_windows is not None:
            on_windows(int(batch_starts.numel()))

    if world_size > 1:
        import torch.distributed as dist

        # gloo and nccl both reduce float64.
        dist.all_reduce(total_loss)
        dist.all_reduce(total_tokens)

    tokens = int(total_tokens.item())
    return EvalResult(length=length, protocol=protocol, loss=float(total_loss.item() / tokens), tokens=tokens)


def count_windows(num_bytes: int, length: int, protocol: str, max_tokens: int, rank: int = 0, world_size: int = 1) -> int:
    """Return how many windows this rank scores (the total of a progress bar)."""
    starts, _ = window_plan(num_bytes, length, protocol, max_tokens)
    return int(starts[rank::world_size].numel())
