"""A Llama-family decoder built from ropekit's parts, checkpoint loading and generation."""

from ropekit.models.config import DecoderConfig
from ropekit.models.decoder import Decoder, DecoderCache

__all__ = ["Decoder", "DecoderCache", "DecoderConfig"]
