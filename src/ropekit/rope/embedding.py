"""The RotaryEmbedding module: positions -> cos/sin tables -> rotated q and k.

Shapes: b batch, s positions per sequence, t packed tokens, h heads, d head_dim,
r rotary_dim, a position axes (1 unless mrope_section or axial_dims is set).

Precision: angles position * inv_freq are formed in float64 and cast once, to float32
tables (float64 for float64 q and k), so that positions past 2**24 keep their exact value
and bfloat16 inputs still rotate by float32 angles.

Cache: cos and sin per (device, dtype, frequency set) are kept in a plain dict, not in
registered buffers, so ``module.to(torch.bfloat16)``, ``half()``, autocast, device moves
and meta construction followed by ``to_empty()`` cannot change or invalidate them. The
tables grow to the next power of two above the largest position seen, up to
``max_cached_positions``. Beyond that, cos and sin are computed directly. Lookups index
the tables by position, so a call with an offset reads the rows of its own positions.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ropekit.kernels import BACKENDS, rotate_qk
from ropekit.rope.apply import expand_to_layout
from ropekit.rope.config import RopeConfig
from ropekit.rope.frequencies import rope_frequencies
from ropekit.rope.positions import (
    check_integer,
    check_qk,
    check_shifted_positions,
    packed_positions,
    padded_positions,
)
from ropekit.rope.scaling import get_scaling_type

logger = logging.getLogger("ropekit.rope.embedding")

# xPos (Sun et al. 2022): zeta_i = (2i / r + gamma) / (1 + gamma) with gamma = 0.4.
XPOS_GAMMA = 0.4

_MIN_CACHED_POSITIONS = 256


class RotaryEmbedding(nn.Module):
    """Rotate queries and keys by their positions.

    Args:
        config: the RoPE of one attention head.
        backend: the kernel that rotates q and k, passed to ``ropekit.kernels.rotate_qk``;
            "auto" picks the fastest for the device and dtype, "reference" forces the
            pure-PyTorch ``apply_rotary``.

    Tensors are [batch, seq, heads, head_dim] by default, [batch, heads, seq, head_dim]
    with ``seq_dim=2`` and packed [total_tokens, heads, head_dim] with ``cu_seqlens``.
    q and k may have different head counts (GQA, MQA).
    """

    # Largest table kept per (device, dtype, frequency set); positions beyond it are
    # computed directly. 2**17 rows of r = 128 float32 cos and sin take 64 MiB.
    max_cached_positions: int = 1 << 17

    def __init__(self, config: RopeConfig, *, backend: str = "auto") -> None:
        super().__init__()
        if not isinstance(config, RopeConfig):
            raise TypeError(f"config must be a RopeConfig, got {type(config).__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.config = config
        self.backend = backend
        self._length_dependent = config.axial_dims is None and get_scaling_type(config.rope_type).depends_on_length
        # (device, dtype, frequency set) -> (cos, sin) pair tables [n, r/2]; not buffers.
        self._tables: dict[tuple[torch.device, torch.dtype, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def extra_repr(self) -> str:
        return f"config={self.config}, backend={self.backend!r}"

    # Tables -----------------------------------------------------------------------------

    def cos_sin(
        self, positions: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return cos and sin of shape positions.shape + (rotary_dim,) in the config's layout.

        With mrope_section or axial_dims, positions are [n_axes, ...] and the tables
        positions.shape[1:] + (rotary_dim,). The attention scale is applied; xPos is not.
        Angles (position x inv_freq) are formed in float64 and cast to ``dtype`` at the end.
        """
        check_integer("positions", positions)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        if self.config.n_axes > 1 and (positions.dim() < 1 or positions.shape[0] != self.config.n_axes):
            raise ValueError(
                f"positions must have shape [n_axes={self.config.n_axes}, ...] for this multi-axis config, "
                f"got {tuple(positions.shape)}"
            )
        return self._cos_sin(positions, dtype)

    def _cos_sin(
        self, positions: torch.Tensor, dtype: torch.dtype, bounds: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cos_pairs, sin_pairs = self._pair_tables(positions, dtype, bounds)
        return (
            expand_to_layout(cos_pairs, self.config.interleaved),
            expand_to_layout(sin_pairs, self.config.interleaved),
        )

    def _pair_tables(
        self, positions: torch.Tensor, dtype: torch.dtype, bounds: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return cos and sin per channel pair, [..., r/2], for positions [(a,) ...].

        ``bounds`` is (smallest, largest) position when the caller knows them on the host;
        otherwise they are read from the tensor, which waits for the device.
        """
        if torch.compiler.is_compiling():
            # Traced graphs compute from float64 angles directly; mutating the cache here
            # would be a Python side effect that torch.compile cannot capture.
            if self._length_dependent:
                seq_len = (positions.max() + 1).clamp(min=1)
            else:
                seq_len = positions.new_ones((), dtype=torch.int64)  # only its device is read
            return self._direct_pairs(positions, dtype, seq_len)

        if bounds is None:
            bounds = tuple(torch.stack(torch.aminmax(positions)).tolist()) if positions.numel() else (0, 0)
        smallest, largest = bounds
        seq_len = max(largest + 1, 1)
        frequency_set = self._frequency_set(seq_len)
        needed = max(abs(smallest), abs(largest)) + 1
        if frequency_set is None or needed > self.max_cached_positions:
            return self._direct_pairs(positions, dtype, torch.tensor(seq_len, device=positions.device))

        table = self._table(positions.device, dtype, frequency_set, needed)
        if self.config.n_axes == 1:
            return _lookup(table, positions, smallest < 0)
        per_axis = [_lookup(table, positions[axis], smallest < 0) for axis in range(self.config.n_axes)]
        cos = self._select_axes(torch.stack([cos for cos, _ in per_axis]))
        sin = self._select_axes(torch.stack([sin for _, sin in per_axis]))
        return cos, sin

    def _frequency_set(self, seq_len: int) -> str | None:
        """Name the cached frequency set for the current length, or None to compute directly."""
        if not self._length_dependent:
            return "base"
        if self.config.rope_type == "longrope":
            return "long" if seq_len > self.config.scaling["original_max_position_embeddings"] else "short"
        if self.config.rope_type == "dynamic":
            return "base" if seq_len <= self.config.max_position_embeddings else None
        return None  # a registered length-dependent type: no cache

    def _representative_length(self, frequency_set: str) -> int:
        """Return a current length that selects ``frequency_set``."""
        if frequency_set == "long":
            return self.config.scaling["original_max_position_embeddings"] + 1
        return 1

    def _table(
        self, device: torch.device, dtype: torch.dtype, frequency_set: str, needed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        key = (device, dtype, frequency_set)
        cached = self._tables.get(key)
        if cached is not None and cached[0].shape[0] >= needed:
            return cached

        size = max(_MIN_CACHED_POSITIONS, 1 << (needed - 1).bit_length())
        size = min(size, self.max_cached_positions)
        length = torch.tensor(self._representative_length(frequency_set), device=device)
        positions = torch.arange(size, device=device)
        table = self._direct_pairs(positions, dtype, length, axes=False)
        # Keep tables of one device only: after a move the old ones are dead weight.
        for stale in [k for k in self._tables if k[0] != device]:
            del self._tables[stale]
        self._tables[key] = table
        logger.debug("built RoPE cos/sin tables of %d positions for %s, %s, set %r", size, device, dtype, frequency_set)
        return table

    def _direct_pairs(
        self, positions: torch.Tensor, dtype: torch.dtype, seq_len: torch.Tensor, axes: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute cos and sin per pair from float64 angles; no cache.

        With ``axes`` and a multi-axis config, positions are [a, ...] and pair i takes its
        angle from axis ``config.pair_axes()[i]``.
        """
        inv_freq, attention_scale = rope_frequencies(self.config, seq_len.reshape(()).to(positions.device))
        angles = positions.to(torch.float64).unsqueeze(-1) * inv_freq  # [(a,) ..., r/2]
        if axes and self.config.n_axes > 1:
            angles = self._select_axes(angles)
        cos = (angles.cos() * attention_scale).to(dtype)
        sin = (angles.sin() * attention_scale).to(dtype)
        return cos, sin

    def _select_axes(self, per_axis: torch.Tensor) -> torch.Tensor:
        """Return [..., r/2] from [a, ..., r/2], taking pair i from axis pair_axes[i]."""
        index = torch.tensor(self.config.pair_axes(), device=per_axis.device)  # [r/2]
        index = index.view((1,) * (per_axis.dim() - 1) + (-1,)).expand(1, *per_axis.shape[1:])
        return per_axis.gather(0, index).squeeze(0)

    # Forward ----------------------------------------------------------------------------

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        positions: torch.Tensor | None = None,
        *,
        offset: int | torch.Tensor = 0,
        cu_seqlens: torch.Tensor | None = None,
        seq_dim: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (q, k) rotated by their positions; the inputs are not modified.

        Args:
            q, k: [b, s, h, d] (``seq_dim=1``), [b, h, s, d] (``seq_dim=2``) or, with
                cu_seqlens, packed [t, h, d]. Head counts may differ.
            positions: integer [s] or [b, s] (per-row positions for left-padded batches),
                with a leading axis [a, ...] for multi-axis configs. Defaults to
                0 .. s - 1. Not allowed with cu_seqlens.
            offset: an int, or an integer [b] tensor (one offset per row), added to the
                positions. With cu_seqlens it shifts each packed sequence: the tokens of
                sequence j get positions offset[j], offset[j] + 1, ... (an int shifts every
                sequence alike), as when each sequence continues a cached prefix of that
                length. Raises ValueError when the offset makes any position negative.
            cu_seqlens: [n + 1] cumulative sequence lengths of n packed sequences,
                starting at 0 and ending at t; positions restart at 0 in each sequence,
                then the offset is added.
            seq_dim: 1 or 2 for padded tensors; with cu_seqlens the tokens are on
                dimension 0 and seq_dim must be 0 or left at its default.
        """
        check_qk(q, k, self.config.head_dim, cu_seqlens is not None, seq_dim)
        bounds = None
        if cu_seqlens is not None:
            if positions is not None:
                raise ValueError("pass either positions or cu_seqlens, not both; cu_seqlens restarts positions at 0")
            if self.config.n_axes > 1:
                raise ValueError("cu_seqlens packing supports one position axis; pass positions [n_axes, ...] instead")
            positions = packed_positions(cu_seqlens, q.shape[0], offset)
            kernel_seq_dim = 0
        else:
            # Default positions with an int offset have bounds known on the host, so the
            # table lookup reads no position back from the device.
            if positions is None and isinstance(offset, int) and q.shape[seq_dim] > 0:
                bounds = (offset, offset + q.shape[seq_dim] - 1)
            positions = padded_positions(q, positions, offset, seq_dim, self.config.n_axes)
            kernel_seq_dim = seq_dim

        check_shifted_positions(positions, offset)
        table_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        cos, sin = self._cos_sin(positions, table_dtype, bounds)  # [s, r], [b, s, r] or [t, r]
        backend = self.backend
        if backend == "auto" and torch.compiler.is_compiling():
            # NOTE: the fused CPU kernel is called through ctypes, which torch.compile
            # cannot trace; inside a compiled graph "auto" uses the traceable reference.
            backend = "reference"
        q_out, k_out = rotate_qk(
            q, k, cos, sin, interleaved=self.config.interleaved, seq_dim=kernel_seq_dim, backend=backend
        )
        if self.config.xpos_scale_base is not None:
            q_out, k_out = self._apply_xpos(q_out, k_out, positions, kernel_seq_dim)
        return q_out, k_out

    def _apply_xpos(
        self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, seq_dim: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # xPos scales pair i of a query at position n by zeta_i ** (n / scale_base) and of a
        # key by zeta_i ** (-n / scale_base), so the score decays as zeta ** ((m - n) / scale_base).
        # Scaling a pair commutes with rotating it, so it is applied after the rotation.
        # NOTE: bfloat16 and float16 q and k are rounded a second time here. zeta ** n also
        # underflows float32 once |n| / scale_base exceeds about 70 (36k positions at 512).
        rotary_dim = self.config.rotary_dim
        pairs = torch.arange(0, rotary_dim, 2, dtype=torch.float64, device=positions.device) / rotary_dim
        zeta = (pairs + XPOS_GAMMA) / (1 + XPOS_GAMMA)
        power = positions.to(torch.float64).unsqueeze(-1) / self.config.xpos_scale_base
        compute_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        q_scale = expand_to_layout(zeta**power, self.config.interleaved).to(compute_dtype)
        k_scale = expand_to_layout(zeta ** (-power), self.config.interleaved).to(compute_dtype)
        q_scale, k_scale = _heads_axis(q_scale, seq_dim), _heads_axis(k_scale, seq_dim)
        return _scale_rotary(q, q_scale, rotary_dim), _scale_rotary(k, k_scale, rotary_dim)


def _lookup(
    table: tuple[torch.Tensor, torch.Tensor], positions: torch.Tensor, has_negative: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather the rows of ``positions`` from pair tables [n, r/2]."""
    cos_table, sin_table = table
    index = positions.abs() if has_negative else positions
    cos = cos_table[index]
    sin = sin_table[index]
    if has_negative:
        # cos(-a) = cos(a) and sin(-a) = -sin(a) hold exactly in floating point.
        sin = torch.where((positions < 0).unsqueeze(-1), -sin, sin)
    return cos, sin


def _heads_axis(table: torch.Tensor, seq_dim: int) -> torch.Tensor:
    """Insert the heads axis so a [.., s, r] table broadcasts over heads."""
    return table.unsqueeze(-3) if seq_dim == 2 else table.unsqueeze(-2)


def _scale_rotary(x: torch.Tensor, scale: torch.Tensor, rotary_dim: int) -> torch.Tensor:
    scaled = (x[..., :rotary_dim].to(scale.dtype) * scale).to(x.dtype)
    return torch.cat((scaled, x[..., rotary_dim:]), dim=-1)
