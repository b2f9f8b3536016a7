"""Attention with positional encodings: Multi-Head Latent Attention and its caches."""

from ropekit.attention.latent_cache import LatentKVCache
from ropekit.attention.mha import KVCache, MultiHeadAttention
from ropekit.attention.mla import MLAConfig, MultiHeadLatentAttention
from ropekit.attention.report import CacheLayout, KVCacheReport, kv_cache_report

__all__ = [
    "CacheLayout",
    "KVCache",
    "KVCacheReport",
    "LatentKVCache",
    "MLAConfig",
    "MultiHeadAttention",
    "MultiHeadLatentAttention",
    "kv_cache_report",
]
