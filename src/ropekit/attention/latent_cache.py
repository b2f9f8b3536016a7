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

    Rows may contain different numbers of tokens. Each row fills its own slots from 0 on:
    ``lengths`` counts the slots used and ``valid`` marks the ones that contain real tokens
    rather than padding. Padding after a row's last real token is not stored, so
    right-padded prompts leave rows of different lengths. Padding before it (left padding)
    takes slots that attention skips. Real positions in a row must increase from one
    append to the next, and ``next_positions`` contains one past the last of them.

    Attributes:
        c_kv: [b, max_len, c] buffer of normalised latents.
        k_pe: [b, max_len, r] buffer of rotated shared rope keys.
        valid: [b, max_len] bool, True where a slot contains a real token.
        lengths: [b] int64, slots used per row.
        next_positions: [b] int64, one past the last real position per row (0 when empty).
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
        self.valid = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)
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
        self.valid.zero_()
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

    def check_positions(self, positions: torch.Tensor, real: torch.Tensor) -> None:
        """Raise ValueError unless the real new positions continue every row in increasing order.

        positions is [b, s] int64 and real [b, s] bool marks the real tokens, the only ones
        checked. Each must exceed every earlier real position of its row, stored or new.
        """
        # The largest earlier real position of each token: the stored ones, then a running
        # maximum over the new ones, shifted by one token.
        earlier = torch.where(real, positions, -1).cummax(dim=1).values  # [b, s]
        stored_max = (self.next_positions - 1).unsqueeze(1)  # [b, 1]
        previous = torch.maximum(torch.cat((stored_max, earlier[:, :-1]), dim=1), stored_max)
        behind = real & (positions <= previous)
        if bool(behind.any()):
            row, index = (int(value) for value in behind.nonzero()[0])
            raise ValueError(
                f"positions go backwards in the cache: row {row} continues at position {int(positions[row, index])} "
                f"but already contains tokens up to position {int(previous[row, index])}; positions of a row "
                "must increase from token to token and from call to call"
            )

    def append(
        self,
        c_kv: torch.Tensor,
        k_pe: torch.Tensor,
        positions: torch.Tensor,
        token_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Store new tokens after each row's last slot; return the slots they went to.

        c_kv is [b, s, c], k_pe [b, s, r] (already rotated) and positions [b, s] int64.
        token_mask [b, s] bool marks real tokens; None means all are real. Padding after a
        row's last real token is not stored. Returns slots [b, s] int64: the slot of each
        new token in its row (unstored padding gets the slots it would have had).
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
        steps = torch.arange(seq_len, device=self.device)
        real = torch.ones(batch_size, seq_len, dtype=torch.bool, device=self.device) if token_mask is None else token_mask
        self.check_positions(positions, real)

        # Each row stores its tokens up to and including its last real one.
        counts = torch.where(real, steps, -1).max(dim=1).values + 1  # [b]
        needed = int((self.lengths + counts).max())
        if needed > self.max_len:
            self._grow_to(needed)

        slots = self.lengths.unsqueeze(1) + steps  # [b, s]
        stored = steps < counts.unsqueeze(1)  # [b, s]
        rows = torch.arange(batch_size, device=self.device).unsqueeze(1).expand(-1, seq_len)
        self.c_kv[rows[stored], slots[stored]] = c_kv[stored]
        self.k_pe[rows[stored], slots[stored]] = k_pe[stored]
        self.valid[rows[stored], slots[stored]] = real[stored]

        last_positions = torch.where(real, positions, -1).max(dim=1).values
        self.next_positions = torch.where(counts > 0, last_positions + 1, self.next_positions)
        self.lengths = self.lengths + counts
        return slots

    def stored(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return views c_kv [b, t, c], k_pe [b, t, r] and valid [b, t] of the first t = max(lengths) slots."""
        length = int(self.lengths.max())
        return self.c_kv[:, :length], self.k_pe[:, :length], self.valid[:, :length]

    def _grow_to(self, needed: int) -> None:
        if not self.grow:
            raise ValueError(
                f"the cache would overflow: a row needs {needed} slots but max_len is {self.max_len}; "
                "build the cache with a larger max_len or with grow=True"
            )
        new_len = max(needed, 2 * self.max_len)
        logger.debug("growing latent KV cache from %d to %d slots per row", self.max_len, new_len)
        for name in ("c_kv", "k_pe", "valid"):
            old = getattr(self, name)
            new = old.new_zeros(old.shape[0], new_len, *old.shape[2:])
            new[:, : old.shape[1]] = old
            setattr(self, name, new)
