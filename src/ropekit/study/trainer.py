"""The training loop: AdamW, linear warmup then cosine decay, resumable checkpoints.

A run with a fixed step count is a pure function of its model initialisation, its
TrainConfig and the data. The batch of step i comes from ropekit.study.batching as a
function of seed and step. A checkpoint stores everything else that changes during
training: weights, optimizer moments, step, elapsed training time, loss accumulators and
random generator states. A run resumed from any checkpoint therefore ends with the same
weights as an uninterrupted one. Checkpoints are written atomically, so a run killed at
any moment, SIGKILL included, leaves the previous checkpoint or the new one.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ropekit._io import atomic_path
from ropekit.study.batching import training_batch
from ropekit.study.distributed import DistributedContext, all_reduce_mean, broadcast_float

logger = logging.getLogger("ropekit.study.trainer")

@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run.

    Attributes:
        train_length: bytes per training sequence (the context length L).
        batch_size: sequences per optimizer step, summed over all distributed ranks.
        steps: optimizer steps; None when ``time_budget`` decides the count.
        time_budget: seconds of training (evaluation excluded). The cosine decay then
            follows the elapsed fraction of the budget instead of the step count, and
            the run stops at the first step that ends past the budget. Such a run is not
            reproducible step for step, because its step count depends on the machine.
        learning_rate: peak learning rate of AdamW.
        min_learning_rate: learning rate at the end of the cosine decay.
        warmup_steps: steps of linear warmup from learning_rate / warmup_steps.
        weight_decay: decoupled weight decay of matrices and embeddings (not of norms or biases).
        betas: AdamW's moment decay rates.
        grad_clip: maximum global gradient norm; 0 disables clipping.
        seed: seed of the batch order (the caller seeds the model initialisation).
        checkpoint_every: steps between checkpoints; 0 writes only the checkpoint at the end.
        log_every: steps between loss records (training curve and train.log).
    """

    train_length: int
    batch_size: int
    steps: int | None = None
    time_budget: float | None = None
    learning_rate: float = 3e-3
    min_learning_rate: float = 3e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 25

    def __post_init__(self) -> None:
        if self.train_length < 2:
            raise ValueError(f"train_length must be at least 2, got {self.train_length}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if (self.steps is None) == (self.time_budget is None):
            raise ValueError(
                f"set exactly one of steps and time_budget, got steps={self.steps} and time_budget={self.time_budget}"
            )
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be positive, got {self.steps}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget must be a positive number of seconds, got {self.time_budget}")
        if not 0 < self.min_learning_rate <= self.learning_rate:
            raise ValueError(
                f"need 0 < min_learning_rate <= learning_rate, got {self.min_learning_rate} and {self.learning_rate}"
            )
        for name in ("warmup_steps", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be positive, got {self.log_every}")


@dataclass
class TrainOutcome:
    """Summary of a finished run."""

    steps: int
    train_seconds: float
    tokens_per_second: float
    final_train_loss: float
    curve: list[dict[str, float]] = field(default_factory=list)


def learning_rate_at(step: int, progress: float, config: TrainConfig) -> float:
    """Learning rate of 0-based ``step``: linear warmup, then cosine decay to the minimum.

    ``progress`` in [0, 1] is how far the decay has gone: (step - warmup) / (steps -
    warmup) for a run of fixed length, the elapsed fraction of the time budget otherwise.
    """
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))
    return config.min_learning_rate + (config.learning_rate - config.min_learning_rate) * cosine


def decay_progress(step: int, train_seconds: float, config: TrainConfig) -> float:
    """Return the ``progress`` argument of learning_rate_at for this run."""
    if config.time_budget is not None:
        return train_seconds / config.time_budget
    assert config.steps is not None
    return (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)


def build_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with weight decay on parameters of two or more dimensions only."""
    decayed = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    plain = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decayed, "weight_decay": config.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    # fused=True updates all parameters in a few fused kernels instead of a loop over tensors.
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=config.betas, fused=device.type in ("cpu", "cuda"))


class Trainer:
    """Train one model on a byte stream, with checkpoints and resume.

    ``model`` maps int64 inputs [batch, length] to logits [batch, length, vocab]. Under
    torch.distributed it is wrapped in DistributedDataParallel here; only rank 0 writes
    checkpoints.
    """

    def __init__(
        self,
        model: nn.Module,
        data: torch.Tensor,
        config: TrainConfig,
        *,
        device: torch.device,
        checkpoint_path: Path | None,
        context: DistributedContext | None = None,
        name: str = "run",
        progress: bool | None = True,
        log: logging.Logger | None = None,
    ) -> None:
        self.context = context or DistributedContext()
        if config.batch_size % self.context.world_size != 0:
            raise ValueError(
                f"batch_size={config.batch_size} must be divisible by the number of processes "
                f"({self.context.world_size})"
            )
        self.model = model
        self.data = data
        self.config = config
        self.device = device
        self.checkpoint_path = checkpoint_path
        self.name = name
        # True: always show the bar; None: only when stderr is a terminal; False: never.
        self.progress = progress if self.context.is_main else False
        self.log = log or logger
        self.optimizer = build_optimizer(model, config, device)
        self.network: nn.Module = model
        if self.context.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.network = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

        # State that a checkpoint stores besides weights and optimizer moments.
        self.step = 0
        self.train_seconds = 0.0
        self.curve: list[dict[str, float]] = []
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.loss_count = 0

    # Checkpoints -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "train_seconds": self.train_seconds,
            "finished": self.finished(),
            "curve": list(self.curve),
            "loss_sum": self.loss_sum.cpu(),
            "loss_count": self.loss_count,
            "rng_cpu": torch.get_rng_state(),
            "config": _config_record(self.config),
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["config"] != _config_record(self.config):
            raise ValueError(
                f"checkpoint of run {self.name!r} was written with training settings {state['config']}, "
                f"which differ from the current {_config_record(self.config)}; resume with the same settings "
                "or start a fresh run without --resume"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        self.curve = list(state["curve"])
        self.loss_sum = state["loss_sum"].to(self.device)
        self.loss_count = int(state["loss_count"])
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is None or not self.context.is_main:
            return
        with atomic_path(self.checkpoint_path) as temporary:
            torch.save(self.state_dict(), temporary)
        self.log.info("%s: checkpoint at step %d written to %s", self.name, self.step, self.checkpoint_path)

    def resume(self) -> bool:
        """Load the checkpoint if one exists; return whether one was loaded."""
        if self.checkpoint_path is None or not self.checkpoint_path.is_file():
            return False
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        self.load_state_dict(state)
        self.log.info("%s: resumed from step %d of %s", self.name, self.step, self.checkpoint_path)
        return True

    # Training ----------------------------------------------------------------------

    def finished(self) -> bool:
        """True once the run has taken all its steps or spent its time budget."""
        if self.config.time_budget is not None:
            return self.train_seconds >= self.config.time_budget
        return self.step >= (self.config.steps or 0)

    def train_step(self) -> torch.Tensor:
        """Run one optimizer step; return the (local) mean loss."""
        config = self.config
        inputs, targets = training_batch(
            self.data,
            seed=config.seed,
            step=self.step,
            batch_size=config.batch_size,
            length=config.train_length,
            rank=self.context.rank,
            world_size=self.context.world_size,
        )
        inputs, targets = inputs.to(self.device), targets.to(self.device)

        learning_rate = learning_rate_at(self.step, decay_progress(self.step, self.train_seconds, config), config)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate

        logits = self.network(inputs)  # [batch, length, vocab]
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        return loss.detach()

    def run(self) -> TrainOutcome:
        """Train to the end (from the current state) and return the outcome."""
        config = self.config
        self.network.train()
        bar = self._progress_bar()
        session_start = time.perf_counter()
        seconds_before = self.train_seconds

        while not self.finished():
            loss = self.train_step()
            self.loss_sum += loss.double()
            self.loss_count += 1
            self.step += 1
            elapsed = seconds_before + (time.perf_counter() - session_start)
            if config.time_budget is not None:
                # Every rank must see the same clock, which sets its learning rate and its last step.
                elapsed = broadcast_float(elapsed, self.context, self.device)
            previous_seconds, self.train_seconds = self.train_seconds, elapsed

            if self.step % config.log_every == 0 or self.finished():
                self._record_loss()
            if config.checkpoint_every and self.step % config.checkpoint_every == 0 and not self.finished():
                self.save_checkpoint()
            if bar is not None:
                bar.update(1 if config.time_budget is None else min(elapsed, config.time_budget) - previous_seconds)
                postfix = {"step": self.step}
                if self.curve:
                    postfix["loss"] = f"{self.curve[-1]['loss']:.3f}"
                bar.set_postfix(postfix, refresh=False)

        if bar is not None:
            bar.close()
        self.save_checkpoint()
        return self._outcome()

    def _record_loss(self) -> None:
        if self.loss_count == 0:
            return
        mean = all_reduce_mean(self.loss_sum / self.loss_count, self.context)
        tokens = self.step * self.config.batch_size * self.config.train_length
        last_step = self.step - 1
        record = {
            "step": self.step,
            "loss": float(mean.item()),
            "learning_rate": learning_rate_at(last_step, decay_progress(last_step, self.train_seconds, self.config), self.config),
            "seconds": self.train_seconds,
            "tokens": tokens,
        }
        self.curve.append(record)
        self.loss_sum.zero_()
        self.loss_count = 0
        self.log.info(
            "%s: step %d loss %.4f lr %.2e %.1f s %.0f tokens/s",
            self.name, self.step, record["loss"], record["learning_rate"], self.train_seconds,
            tokens / max(self.train_seconds, 1e-9),
        )

    def _outcome(self) -> TrainOutcome:
        tokens = self.step * self.config.batch_size * self.config.train_length
        return TrainOutcome(
            steps=self.step,
            train_seconds=self.train_seconds,
            tokens_per_second=tokens / max(self.train_seconds, 1e-9),
            final_train_loss=self.curve[-1]["loss"] if self.curve else math.nan,
            curve=list(self.curve),
        )

    def _progress_bar(self) -> Any:
        """Create a progress bar over steps, or over seconds when a time budget sets the end."""
        if self.progress is False:
            return None
        from tqdm.auto import tqdm

        if self.config.time_budget is not None:
            total, initial, unit = self.config.time_budget, min(self.train_seconds, self.config.time_budget), "s"
        else:
            total, initial, unit = self.config.steps, self.step, "step"
        return tqdm(
            total=total,
            initial=initial,
            desc=f"train {self.name}",
            unit=unit,
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.5,
            leave=False,
            # None lets tqdm turn the bar off when stderr is not a terminal.
            disable=None if self.progress is None else False,
            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}{postfix}]",
        )


def _config_record(config: TrainConfig) -> dict[str, Any]:
    """The settings a checkpoint must share with the run that resumes it."""
    record = asdict(config)
    record["betas"] = list(config.betas)
    return record
