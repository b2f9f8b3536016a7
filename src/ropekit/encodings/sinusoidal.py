"""The sinusoidal encoding of "Attention Is All You Need" (Vaswani et al. 2017, section 3.5)."""

from __future__ import annotations

import logging
import math

import torch

from ropekit.encodings._checks import PositionsLike, as_positions, check_dtype, check_positive_int
from ropekit.encodings.base import AdditivePositionalEncoding

logger = logging.getLogger("ropekit.encodings.sinusoidal")

_LAYOUTS = ("interleaved", "concatenated")

# The cached table stops growing at this many elements (64 MiB in float32). Rows for
# larger positions are computed on each call instead of being cached.
_MAX_TABLE_ELEMENTS = 1 << 24

# Smallest number of rows the table grows to, so short calls do not rebuild it repeatedly.
_MIN_TABLE_ROWS = 64


class SinusoidalPositionalEncoding(AdditivePositionalEncoding):
    """PE[p, 2i] = sin(p * base**(-2i / dim)) and PE[p, 2i + 1] = cos(p * base**(-2i / dim)).

    Layouts:
        interleaved: sine and cosine alternate as above (Vaswani et al. 2017, section 3.5).
        concatenated: all ceil(dim / 2) sines first, then the floor(dim / 2) cosines of the
            same angles, the order some libraries use.
    An odd ``dim`` has one more sine than cosines, so with the interleaved layout the last
    channel is a sine.

    Precision: angles p * base**(-2i / dim) are formed in float64 and the result is cast
    to the output dtype once. Float32 values are therefore within 1e-6 of a float64
    reference even at position 1,000,000, because only the final cast rounds (by 6e-8 at most).

    Cache: ``table`` is a non-persistent buffer (absent from the state dict) with the rows
    for positions 0..len(table)-1 in the module's dtype. It grows on demand and is rebuilt
    from float64 angles whenever its dtype or device no longer matches the one it was built
    with. After ``.to(torch.float64)`` the values are therefore float64-accurate rather than
    widened float32 values, after ``.to(torch.bfloat16)`` they are the float64 values cast
    once, and ``to_empty()`` after construction on the meta device is followed by a
    rebuild on first use.
    ``reset_table()`` forces that rebuild. The table stops growing at 2**24 elements;
    positions beyond it are computed per call.

    Args:
        dim: width of the encoding (the model width).
        base: the base of the geometric sequence of wavelengths, 10000 in the original.
        layout: "interleaved" or "concatenated".
    """

    table: torch.Tensor

    def __init__(self, dim: int, base: float = 10000.0, layout: str = "interleaved") -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        if isinstance(base, bool) or not isinstance(base, (int, float)) or not math.isfinite(base) or base <= 1:
            raise ValueError(f"base must be a finite number > 1, got {base!r}")
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
        self.base = float(base)
        self.layout = layout
        self.register_buffer("table", torch.empty(0, dim), persistent=False)
        # (dtype, device) the table's values were computed for; a mismatch means a cast,
        # a device move or to_empty() happened since, and the table is rebuilt.
        self._table_built_for: tuple[torch.dtype, torch.device] = (self.table.dtype, self.table.device)

    def inv_freq(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Return the float64 angular frequencies base**(-2i / dim), i = 0..ceil(dim / 2) - 1."""
        exponents = torch.arange(0, self.dim, 2, dtype=torch.float64, device=device) / self.dim
        return self.base**-exponents

    def compute(self, positions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Return the encoding of int64 ``positions`` from float64 angles, uncached."""
        angles = positions.to(torch.float64).unsqueeze(-1) * self.inv_freq(positions.device)
        sines = angles.sin()
        cosines = angles[..., : self.dim // 2].cos()
        if self.layout == "concatenated":
            return torch.cat((sines, cosines), dim=-1).to(dtype)
        values = torch.empty(*angles.shape[:-1], self.dim, dtype=torch.float64, device=positions.device)
        values[..., 0::2] = sines
        values[..., 1::2] = cosines
        return values.to(dtype)

    def encode(self, positions: PositionsLike, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Return the encoding of ``positions``, shape positions.shape + (dim,).

        ``dtype`` defaults to the module's dtype (that of ``table``). A list is placed on
        the module's device; a tensor must already be there.
        """
        device = self.table.device
        positions = as_positions(positions, device=device)
        if positions.device != device:
            raise ValueError(f"positions are on {positions.device} but the encoding is on {device}; move one of them")
        dtype = self.table.dtype if dtype is None else check_dtype(dtype)
        if dtype != self.table.dtype or device.type == "meta" or positions.numel() == 0:
            return self.compute(positions, dtype)

        rows_needed = int(positions.max()) + 1
        if not self._ensure_table(rows_needed):
            return self.compute(positions, dtype)
        return self.table[positions]

    def reset_table(self) -> None:
        """Recompute every row of ``table`` from float64 angles in its current dtype and device."""
        self._build_table(self.table.shape[0])

    def _ensure_table(self, rows_needed: int) -> bool:
        """Make ``table`` valid and cover ``rows_needed`` rows; return False past the size cap."""
        if rows_needed * self.dim > _MAX_TABLE_ELEMENTS:
            return False
        rows = self.table.shape[0]
        if rows_needed > rows:
            rows = max(rows_needed, min(2 * rows, _MAX_TABLE_ELEMENTS // self.dim), _MIN_TABLE_ROWS)
            logger.debug("growing the sinusoidal table to %d positions", rows)
            self._build_table(rows)
        elif self._table_built_for != (self.table.dtype, self.table.device):
            self._build_table(rows)
        return True

    def _build_table(self, rows: int) -> None:
        dtype, device = self.table.dtype, self.table.device
        self.table = self.compute(torch.arange(rows, device=device), dtype)
        self._table_built_for = (dtype, device)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.base}, layout={self.layout!r}"
