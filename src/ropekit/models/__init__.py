"""A Llama-family decoder built from ropekit's parts, checkpoint loading and generation."""

from ropekit.models.checkpoint import load_model, load_tokenizer, save_model
from ropekit.models.config import DecoderConfig
from ropekit.models.decoder import Decoder, DecoderCache
from ropekit.models.tokenizers import ByteTokenizer, HFTokenizer, SentencePieceTokenizer

__all__ = [
    "ByteTokenizer",
    "Decoder",
    "DecoderCache",
    "DecoderConfig",
    "HFTokenizer",
    "SentencePieceTokenizer",
    "load_model",
    "load_tokenizer",
    "save_model",
]
