"""Attention with positional encodings: Multi-Head Latent Attention and its caches."""

from ropekit.attention.latent_cache import LatentKVCache
from ropekit.attention.mla import MLAConfig, MultiHeadLatentAttention
from ropekit.attention.report import CacheLayout, KVCacheReport, kv_cache_report

__all__ = [
    "CacheLayout",
    "KVCacheReport",
    "LatentKVCache",
    "MLAConfig",
    "MultiHeadLatentAttention",
    "kv_cache_report",
]
