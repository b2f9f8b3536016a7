"""The bits of the position as an encoding."""

from __future__ import annotations

import torch

from ropekit.encodings._checks import PositionsLike, as_positions, check_dtype, check_positive_int
from ropekit.encodings.base import AdditivePositionalEncoding

_BIT_ORDERS = ("lsb_first", "msb_first")


class BinaryPositionalEncoding(AdditivePositionalEncoding):
    """Encode position p as its ``dim`` binary digits.

    With ``bit_order="lsb_first"`` channel j contains bit j of p, least significant bit
    first. With ``"msb_first"`` channel j contains bit dim - 1 - j. Values are 0 and 1, or
    -1 and +1 when ``signed`` (2 * bit - 1). Bit j flips every 2**j positions: low bits
    flip fastest, high bits slowest, which is the pattern the sinusoidal encoding makes
    continuous.

    A position of 2**dim or more would need more bits than there are channels; ``encode``
    raises ValueError naming that position and the smallest ``dim`` that can encode it, and
    never truncates.
    """

    def __init__(self, dim: int, bit_order: str = "lsb_first", signed: bool = False) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        if bit_order not in _BIT_ORDERS:
            raise ValueError(f"bit_order must be one of {_BIT_ORDERS}, got {bit_order!r}")
        if not isinstance(signed, bool):
            raise TypeError(f"signed must be a bool, got {signed!r}")
        self.bit_order = bit_order
        self.signed = signed

    def encode(self, positions: PositionsLike, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Return the bits of each position, shape positions.shape + (dim,).

        ``dtype`` defaults to torch's default dtype.
        """
        dtype = torch.get_default_dtype() if dtype is None else check_dtype(dtype)
        positions = as_positions(positions)
        self._check_fits(positions)

        # Shifting an int64 by 63 already leaves only the sign bit, which is 0 for the
        # non-negative positions accepted here, so channels past 63 are all zero bits.
        shifts = torch.arange(self.dim, device=positions.device).clamp(max=63)
        if self.bit_order == "msb_first":
            shifts = shifts.flip(0)
        bits = (positions.unsqueeze(-1) >> shifts) & 1
        if self.signed:
            bits = 2 * bits - 1
        return bits.to(dtype)

    def _check_fits(self, positions: torch.Tensor) -> None:
        if self.dim >= 63 or positions.numel() == 0 or positions.device.type == "meta":
            return
        largest = int(positions.max())
        if largest >= 1 << self.dim:
            raise ValueError(
                f"position {largest} needs {largest.bit_length()} bits but the encoding has dim={self.dim}; "
                f"use dim >= {largest.bit_length()}"
            )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, bit_order={self.bit_order!r}, signed={self.signed}"
