"""Training batches: random windows of a byte stream, fixed by (seed, step).

The batch of a step depends only on the seed and the step number, never on earlier
draws. A resumed run therefore reads exactly the batches of an uninterrupted run, and
every distributed rank can draw the same global batch and keep its own slice of it.
"""

from __future__ import annotations

import torch

# Large odd multiplier that spreads consecutive steps over unrelated generator seeds.
_STEP_MULTIPLIER = 0x9E3779B97F4A7C15
_SEED_MASK = (1 << 63) - 1


def batch_generator(seed: int, step: int) -> torch.Generator:
    """Return a CPU generator seeded for one training step."""
    generator = torch.Generator()
    generator.manual_seed((seed * _STEP_MULTIPLIER + step + 1) & _SEED_MASK)
    return generator


def training_batch(
    data: torch.Tensor,
    *,
    seed: int,
    step: int,
    batch_size: int,
    length: int,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw this rank's part of the global batch of ``step``.

    Returns (inputs, targets), both int64 of shape [batch_size // world_size, length],
    where targets are the inputs shifted left by one byte.
    """
    if data.dim() != 1 or data.dtype != torch.uint8:
        raise TypeError(f"data must be a 1-D uint8 tensor of bytes, got {data.dtype} of shape {tuple(data.shape)}")
    if length < 1 or data.numel() < length + 1:
        raise ValueError(f"length={length} needs at least {length + 1} bytes of data, got {data.numel()}")
    if batch_size % world_size != 0:
        raise ValueError(f"batch_size={batch_size} must be divisible by the world size {world_size}")

    generator = batch_generator(seed, step)
    starts = torch.randint(0, data.numel() - length, (batch_size,), generator=generator)
    local = batch_size // world_size
    starts = starts[rank * local : (rank + 1) * local]

    offsets = torch.arange(length + 1)
    windows = data[starts.unsqueeze(1) + offsets].long()  # [local, length + 1]
    return windows[:, :-1], windows[:, 1:]
