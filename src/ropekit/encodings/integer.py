"""The raw position index as an encoding: the teaching baseline."""

from __future__ import annotations

import torch

from ropekit.encodings._checks import PositionsLike, as_positions, check_dtype, check_positive_int
from ropekit.encodings.base import AdditivePositionalEncoding


class IntegerPositionalEncoding(AdditivePositionalEncoding):
    """Encode position p as the vector (p, p, ..., p), or (p / max_len, ...) when normalized.

    This is the simplest absolute encoding and a poor one. Token embeddings are usually
    initialised with entries of order 1 or smaller (for example N(0, 1) or N(0, 0.02)), but
    the raw index adds p to every channel. At position 1000 the sum is the all-ones direction
    scaled by 1000, and the token vector is a small perturbation of it. Every token then
    looks alike to the first layer, and the norm grows without bound with the position.
    ``normalize=True`` divides by ``max_len`` (the usual fix), which keeps the positions
    seen in training inside [0, 1). Positions past ``max_len`` are still accepted and give
    values above 1, which is how the encoding behaves when a model is run past the length
    it was trained on.

    Args:
        dim: width of the encoding (the model width).
        max_len: the length that ``normalize`` divides by. Required when ``normalize``
            is True and rejected otherwise, because it would have no effect.
        normalize: divide positions by ``max_len``.
    """

    def __init__(self, dim: int, max_len: int | None = None, normalize: bool = False) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be a bool, got {normalize!r}")
        if normalize and max_len is None:
            raise ValueError("normalize=True divides positions by max_len, so max_len must be given; got max_len=None")
        if not normalize and max_len is not None:
            raise ValueError(
                f"max_len={max_len!r} has an effect only with normalize=True; pass normalize=True or drop max_len"
            )
        self.max_len = None if max_len is None else check_positive_int(max_len, "max_len")
        self.normalize = normalize

    def encode(self, positions: PositionsLike, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Return the positions (divided by max_len when normalized) repeated in every channel.

        ``dtype`` defaults to torch's default dtype. The division happens in float64 and the
        result is cast to ``dtype`` once.
        """
        dtype = torch.get_default_dtype() if dtype is None else check_dtype(dtype)
        values = as_positions(positions).to(torch.float64)
        if self.normalize:
            values = values / self.max_len
        return values.unsqueeze(-1).expand(*values.shape, self.dim).to(dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_len={self.max_len}, normalize={self.normalize}"
