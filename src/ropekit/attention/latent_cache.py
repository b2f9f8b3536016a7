"""The latent KV cache of Multi-Head Latent Attention.

Per token it stores only what MLA needs to rebuild every head's key and value: the
normalised latent c_kv (kv_lora_rank values) and the rotated shared key k_pe
(qk_rope_head_dim values). Nothing per head is stored.

Notation for shapes: b batch, s new tokens, t stored tokens, c kv_lora_rank,
r qk_rope_head_dim.
"""

from __future__ import annotations

import logging

import torch

from ropekit.attention.mla import MLAConfig

logger = logging.getLogger("ropekit.attention.latent_cache")


class LatentKVCache:
    """Preallocated per-layer cache of c_kv and rotated k_pe, one row per sequence.

    Rows may contain different numbers of tokens. Each row fills its own slots from 0 on,
    and ``lengths`` counts the stored ones. Positions in a row must increase from one append
    to the next; ``next_positions`` keeps, per row, the smallest position the next token
    may have.

    Attributes:
        c_kv: [b, max_len, c] buffer of normalised latents.
        k_pe: [b, max_len, r] buffer of rotated shared rope keys.
        lengths: [b] int64, tokens stored per row.
        next_positions: [b] int64, one past the last stored position per row.
        grow: when True, an append past ``max_len`` doubles the buffers (or more, as needed)
            instead of raising ValueError.
    """

    def __init__(
        self,
        batch_size: int,
        max_len: int,
        config: MLAConfig,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        *,
        grow: bool = False,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("max_len", max_len)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(config, MLAConfig):
            raise TypeError(f"config must be a ropekit.MLAConfig, got {type(config).__name__}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")

        device = torch.device("cpu") if device is None else torch.device(device)
        self.config = config
        self.grow = bool(grow)
        self.c_kv = torch.zeros(batch_size, max_len, config.kv_lora_rank, dtype=dtype, device=device)
        self.k_pe = torch.zeros(batch_size, max_len, config.qk_rope_head_dim, dtype=dtype, device=device)
        self.lengths = torch.zeros(batch_size, dtype=torch.int64, device=device)
        self.next_positions = torch.zeros(batch_size, dtype=torch.int64, device=device)

    @property
    def batch_size(self) -> int:
        return self.c_kv.shape[0]

    @property
    def max_len(self) -> int:
        """Slots per row currently allocated."""
        return self.c_kv.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.c_kv.dtype

    @property
    def device(self) -> torch.device:
        return self.c_kv.device

    def bytes_per_token(self) -> int:
        """Return the bytes one token occupies in this layer's cache: (c + r) * element size."""
        return self.config.cache_elements_per_token * self.c_kv.element_size()

    def reset(self) -> None:
        """Forget every stored token; the buffers stay allocated."""
        self.lengths.zero_()
        self.next_positions.zero_()

    def check_compatible(self, tensor: torch.Tensor, name: str = "x") -> None:
        """Raise ValueError unless ``tensor`` has this cache's dtype and device."""
        if tensor.dtype != self.dtype:
            raise ValueError(
                f"{name} has dtype {tensor.dtype} but the cache stores {self.dtype}; "
                f"build the cache with dtype={tensor.dtype} or cast the input"
            )
        if tensor.device != self.device:
            raise ValueError(
                f"{name} is on device {tensor.device} but the cache is on {self.device}; "
                "build the cache on the input's device or move the input"
            )

    def check_positions(self, positions: torch.Tensor, counts: torch.Tensor) -> None:
        """Raise ValueError when new positions do not continue every row in increasing order.

        positions is [b, s]; counts [b] is the number of real tokens at the start of each row,
        the only ones checked.
        """
        real = torch.arange(positions.shape[1], device=positions.device) < counts.unsqueeze(1)  # [b, s]
        first = positions[:, 0]
        behind = (counts > 0) & (first < self.next_positions)
        if bool(behind.any()):
            row = int(behind.nonzero()[0, 0])
            raise ValueError(
                f"positions go backwards in the cache: row {row} continues at position {int(first[row])} "
                f"but already holds tokens up to position {int(self.next_positions[row]) - 1}"
            )
        steps = positions[:, 1:] - positions[:, :-1]
        not_increasing = (steps <= 0) & real[:, 1:]
        if bool(not_increasing.any()):
            row, index = (int(v) for v in not_increasing.nonzero()[0])
            raise ValueError(
                f"positions must increase along the sequence: row {row} has position {int(positions[row, index + 1])} "
                f"after {int(positions[row, index])}"
            )

    def append(
        self,
        c_kv: torch.Tensor,
        k_pe: torch.Tensor,
        positions: torch.Tensor,
        counts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Store new tokens after each row's last one; return the slots they went to.

        c_kv is [b, s, c], k_pe [b, s, r] (already rotated), positions [b, s] int64. counts
        [b] gives the number of real tokens at the start of each row (right padding after
        them is not stored); None stores all s. Returns slots [b, s] int64: the slot of
        each new token in its row (padding tokens get the slots after the real ones).
        """
        batch_size, seq_len = c_kv.shape[:2]
        if batch_size != self.batch_size:
            raise ValueError(f"c_kv has batch size {batch_size} but the cache was built for {self.batch_size}")
        if c_kv.shape[2] != self.c_kv.shape[2] or k_pe.shape != (batch_size, seq_len, self.k_pe.shape[2]):
            raise ValueError(
                f"expected c_kv [{batch_size}, {seq_len}, {self.c_kv.shape[2]}] and k_pe "
                f"[{batch_size}, {seq_len}, {self.k_pe.shape[2]}], got {tuple(c_kv.shape)} and {tuple(k_pe.shape)}"
            )
        self.check_compatible(c_kv, "c_kv")
        self.check_compatible(k_pe, "k_pe")
        if counts is None:
            counts = torch.full((batch_size,), seq_len, dtype=torch.int64, device=self.device)
        self.check_positions(positions, counts)

        needed = int((self.lengths + counts).max())
        if needed > self.max_len:
            self._grow_to(needed)

        slots = self.lengths.unsqueeze(1) + torch.arange(seq_len, device=self.device)  # [b, s]
        real = torch.arange(seq_len, device=self.device) < counts.unsqueeze(1)  # [b, s]
        rows = torch.arange(batch_size, device=self.device).unsqueeze(1).expand(-1, seq_len)
        self.c_kv[rows[real], slots[real]] = c_kv[real]
        self.k_pe[rows[real], slots[real]] = k_pe[real]

        last_index = (counts - 1).clamp(min=0).unsqueeze(1)  # [b, 1]
        last_positions = positions.gather(1, last_index).squeeze(1)
        self.next_positions = torch.where(counts > 0, last_positions + 1, self.next_positions)
        self.lengths = self.lengths + counts
        return slots

    def stored(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return views c_kv [b, t, c] and k_pe [b, t, r] of the first t = max(lengths) slots."""
        length = int(self.lengths.max())
        return self.c_kv[:, :length], self.k_pe[:, :length]

    def _grow_to(self, needed: int) -> None:
        if not self.grow:
            raise ValueError(
                f"the cache would overflow: a row needs {needed} slots but max_len is {self.max_len}; "
                "build the cache with a larger max_len or with grow=True"
            )
        new_len = max(needed, 2 * self.max_len)
        logger.debug("growing latent KV cache from %d to %d slots per row", self.max_len, new_len)
        for name in ("c_kv", "k_pe"):
            old = getattr(self, name)
            new = old.new_zeros(old.shape[0], new_len, old.shape[2])
            new[:, : old.shape[1]] = old
            setattr(self, name, new)
