"""torch.distributed set-up for the study under torchrun.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE in each process's environment; without
them the study runs as a single process and nothing here touches torch.distributed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

logger = logging.getLogger("ropekit.study.distributed")


@dataclass(frozen=True)
class DistributedContext:
    """Rank, local rank and number of processes of this process's job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and prints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: torch.device) -> tuple[DistributedContext, torch.device]:
    """Join the process group that torchrun describes, if any.

    Returns the context and the device this process uses: with CUDA each process takes
    the GPU of its LOCAL_RANK. The backend is nccl on CUDA and gloo otherwise.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(), device

    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    logger.info("joined process group: rank %d of %d on %s", rank, world_size, device)
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size), device


def teardown_distributed(context: DistributedContext) -> None:
    """Leave the process group joined by setup_distributed."""
    if context.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def broadcast_float(value: float, context: DistributedContext, device: torch.device) -> float:
    """Return rank 0's ``value`` on every rank."""
    if not context.enabled:
        return value
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def all_reduce_mean(value: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Return the mean of ``value`` over all ranks."""
    if not context.enabled:
        return value
    import torch.distributed as dist

    value = value.clone()
    dist.all_reduce(value)
    return value / context.world_size


def barrier(context: DistributedContext) -> None:
    """Wait for every rank."""
    if context.enabled:
        import torch.distributed as dist

        dist.barrier()
