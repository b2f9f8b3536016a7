"""Additive (absolute) positional encodings and ALiBi attention biases.

Each additive encoding is an ``nn.Module`` with ``encode(positions)``, returning a tensor
of shape positions.shape + (dim,), and ``forward(x, positions=None, offset=0)``, which
adds that encoding to ``x`` of shape [batch, seq, dim].
"""

from ropekit.encodings.alibi import ALiBi, alibi_slopes
from ropekit.encodings.base import AdditivePositionalEncoding
from ropekit.encodings.binary import BinaryPositionalEncoding
from ropekit.encodings.integer import IntegerPositionalEncoding
from ropekit.encodings.learned import LearnedPositionalEmbedding
from ropekit.encodings.sinusoidal import SinusoidalPositionalEncoding

__all__ = [
    "ALiBi",
    "AdditivePositionalEncoding",
    "BinaryPositionalEncoding",
    "IntegerPositionalEncoding",
    "LearnedPositionalEmbedding",
    "SinusoidalPositionalEncoding",
    "alibi_slopes",
]
