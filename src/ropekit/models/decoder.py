"""A Llama-family decoder built from ropekit's positional encodings and attention.

Notation for shapes: b batch, s new positions, e hidden size, v vocabulary size.

Parameter names follow the Llama layout of Hugging Face transformers without the leading
"model." (embed_tokens, layers.N.self_attn.q_proj, layers.N.mlp.gate_proj, norm, lm_head),
so checkpoints in that layout load with a plain prefix strip.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ropekit.attention.mha import KVCache, MultiHeadAttention
from ropekit.attention.mla import mask_to_bool
from ropekit.models.config import DecoderConfig
from ropekit.rope import RotaryEmbedding

logger = logging.getLogger("ropekit.models.decoder")

# Standard deviation of the initial weights, as in GPT-2 and LLaMA's reference code.
INIT_STD = 0.02


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (Zhang and Sennrich 2019): x / sqrt(mean(x^2) + eps) * weight.

    The statistic is computed in float32 whatever the input dtype, and the result is cast
    back before the weight multiplies it, as transformers' LlamaRMSNorm does.
    """

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.to(torch.float32)
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


class SwiGLU(nn.Module):
    """The gated MLP down(silu(gate(x)) * up(x)) (Shazeer 2020, "GLU Variants Improve Transformer")."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderBlock(nn.Module):
    """RMSNorm -> attention -> residual add -> RMSNorm -> SwiGLU -> residual add."""

    def __init__(self, config: DecoderConfig, index: int, alibi_slopes: torch.Tensor | None) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = _build_attention(config, index, alibi_slopes)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size, config.mlp_bias)
        self.is_latent = config.attention == "mla"

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        cache: Any,
        key_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        normed = self.input_layernorm(x)
        if self.is_latent:
            attended = self.self_attn(normed, positions, cache=cache, attention_mask=key_mask)
        else:
            attended = self.self_attn(normed, positions, cache=cache, key_mask=key_mask)
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x))


def _build_attention(config: DecoderConfig, index: int, alibi_slopes: torch.Tensor | None) -> nn.Module:
    if config.attention == "mla":
        from ropekit.attention import MultiHeadLatentAttention

        return MultiHeadLatentAttention(config.mla)
    return MultiHeadAttention(
        config.hidden_size,
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
        qkv_bias=config.qkv_bias,
        output_bias=config.output_bias,
        rope=config.rope if config.position_encoding == "rope" else None,
        alibi_slopes=alibi_slopes,
        sliding_window=config.window_of_layer(index),
    )


def _build_additive_encoding(config: DecoderConfig) -> nn.Module | None:
    """Return the encoding added to the token embeddings, or None for rope, alibi and none."""
    kind = config.position_encoding
    if kind in ("rope", "alibi", "none"):
        return None
    from ropekit import encodings

    if kind == "sinusoidal":
        return encodings.SinusoidalPositionalEncoding(config.hidden_size)
    if kind == "learned":
        return encodings.LearnedPositionalEmbedding(config.hidden_size, config.max_position_embeddings)
    if kind == "integer":
        # Raw indices would drown the token embeddings; divide by the trained length.
        return encodings.IntegerPositionalEncoding(
            config.hidden_size, max_len=config.max_position_embeddings, normalize=True
        )
    return encodings.BinaryPositionalEncoding(config.hidden_size, signed=True)


class DecoderCache:
    """Per-layer caches of a Decoder plus what the decoder itself must remember.

    Attributes:
        layers: one cache per block (KVCache for MHA, LatentKVCache for MLA).
        seen: [batch] tokens that were real (not padding) per row; the next token of row r
            gets position seen[r] when positions are not given.
        key_mask: [batch, length] bool, True for real tokens, for every slot filled so far.
    """

    def __init__(self, layers: list[Any], batch_size: int, device: torch.device | str) -> None:
        self.layers = layers
        self.seen = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.key_mask = torch.zeros((batch_size, 0), dtype=torch.bool, device=device)

    @property
    def length(self) -> int:
        """Slots filled so far (equal for every row of the batch)."""
        return self.key_mask.shape[1]

    def nbytes(self) -> int:
        """Return the bytes allocated by every layer's cache."""
        return sum(_cache_nbytes(layer) for layer in self.layers)

    def bytes_per_token(self) -> int:
        """Return the cache bytes one token occupies across all layers."""
        return sum(layer.bytes_per_token() for layer in self.layers)

    def check_room(self, new_tokens: int) -> None:
        """Raise ValueError before any layer is touched when ``new_tokens`` would not fit."""
        needed = self.length + new_tokens
        for layer in self.layers:
            if not layer.grow and needed > layer.max_len:
                raise ValueError(
                    f"the cache has room for {layer.max_len} tokens per row but {needed} are needed; "
                    "build it with make_cache(..., max_len=larger) or grow=True"
                )


def _cache_nbytes(layer_cache: Any) -> int:
    if hasattr(layer_cache, "nbytes"):
        return int(layer_cache.nbytes())
    return layer_cache.bytes_per_token() * layer_cache.max_len * getattr(layer_cache, "batch_size", 1)


class Decoder(nn.Module):
    """Embedding -> DecoderBlock x num_layers -> RMSNorm -> head; returns logits.

    Build it from a DecoderConfig. Weights start from N(0, 0.02), with the output
    projections of attention and MLP scaled by 1 / sqrt(2 * num_layers) (GPT-2, Radford et
    al. 2019) so the residual stream does not grow with depth.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_encoding = _build_additive_encoding(config)
        alibi_slopes = self._alibi_slopes() if config.position_encoding == "alibi" else None
        self.layers = nn.ModuleList(DecoderBlock(config, index, alibi_slopes) for index in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.reset_parameters()

    def _alibi_slopes(self) -> torch.Tensor:
        from ropekit.encodings import ALiBi

        slopes = ALiBi(self.config.num_heads).slopes()
        return torch.as_tensor(slopes, dtype=torch.float32)

    def reset_parameters(self) -> None:
        """Draw fresh initial weights (see the class docstring)."""
        residual_std = INIT_STD / math.sqrt(2 * self.config.num_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith(("o_proj", "down_proj")) else INIT_STD
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def num_parameters(self) -> int:
        """Return the number of distinct parameters (a tied head counts once)."""
        return sum(parameter.numel() for parameter in self.parameters())

    def set_rope_scaling(self, scaling: Mapping[str, Any] | None) -> None:
        """Switch every layer's RoPE to ``scaling`` (e.g. {"rope_type": "yarn", "factor": 4.0}).

        Weights stay as they are; this is how a trained RoPE model is evaluated with a
        training-free context extension. None restores unscaled RoPE.
        """
        config = self.config.with_rope_scaling(scaling)
        for layer in self.layers:
            if config.attention == "mla":
                # MultiHeadLatentAttention reads its RoPE from config.rope through its
                # RotaryEmbedding; both are replaced together.
                layer.self_attn.config = config.mla
                layer.self_attn.rotary = RotaryEmbedding(config.mla.rope)
            else:
                layer.self_attn.set_rope(config.rope)
        self.config = config
        logger.info("RoPE scaling set to %s", scaling)

    def make_cache(
        self,
        batch_size: int,
        max_len: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        grow: bool = False,
    ) -> DecoderCache:
        """Allocate a cache for ``batch_size`` rows of up to ``max_len`` tokens.

        dtype and device default to those of the model's weights. MHA layers get a per-head
        KVCache; MLA layers get a LatentKVCache that stores only the latent and rope key.
        """
        weight = self.embed_tokens.weight
        dtype = weight.dtype if dtype is None else dtype
        device = weight.device if device is None else torch.device(device)
        config = self.config
        if config.attention == "mla":
            from ropekit.attention import LatentKVCache

            layers = [
                LatentKVCache(batch_size, max_len, config.mla, dtype, device, grow=grow) for _ in range(config.num_layers)
            ]
        else:
            layers = [
                KVCache(batch_size, max_len, config.num_kv_heads, config.head_dim, dtype=dtype, device=device, grow=grow)
                for _ in range(config.num_layers)
            ]
        return DecoderCache(layers, batch_size, device)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        *,
        cache: DecoderCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return logits [b, s, v] for ``input_ids`` [b, s].

        Args:
            input_ids: [b, s] token ids.
            positions: [s] or [b, s] integer positions of these tokens. By default each row
                counts its real tokens from 0, continuing after those already in ``cache``.
            cache: a DecoderCache from ``make_cache``; the new tokens are appended to it.
            attention_mask: 1 (or True) for real tokens, 0 (or False) for left padding, as a
                bool or integer tensor (float masks raise TypeError). Shape [b, s],
                or [b, cache.length + s] as in transformers, whose earlier columns must equal
                the masks passed before.
        """
        key_mask = self._new_token_mask(input_ids, cache, attention_mask)
        positions = self._resolve_positions(input_ids, positions, cache, key_mask)
        if cache is not None:
            cache.check_room(input_ids.shape[1])
            if key_mask is None:
                key_mask = torch.ones(input_ids.shape, dtype=torch.bool, device=input_ids.device)
            cache.seen = cache.seen + key_mask.sum(dim=1)
            cache.key_mask = torch.cat((cache.key_mask, key_mask), dim=1)

        hidden = self.embed_tokens(input_ids)  # [b, s, e]
        if self.position_encoding is not None:
            hidden = hidden + self.position_encoding.encode(positions).to(hidden.dtype)
        for index, layer in enumerate(self.layers):
            layer_cache = cache.layers[index] if cache is not None else None
            hidden = layer(hidden, positions, layer_cache, key_mask)
        return self.lm_head(self.norm(hidden))  # [b, s, v]

    def _new_token_mask(
        self, input_ids: torch.Tensor, cache: DecoderCache | None, attention_mask: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Validate input_ids and attention_mask; return the [b, s] bool mask of the new tokens."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape [batch, seq], got {tuple(input_ids.shape)}")
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
            raise TypeError(f"input_ids must be an integer tensor, got dtype {input_ids.dtype}")
        if attention_mask is None:
            return None

        batch_size, query_len = input_ids.shape
        past = cache.length if cache is not None else 0
        if attention_mask.dim() != 2 or attention_mask.shape[0] != batch_size or attention_mask.shape[1] not in (
            query_len,
            past + query_len,
        ):
            raise ValueError(
                f"attention_mask must have shape [{batch_size}, {query_len}] or [{batch_size}, {past + query_len}] "
                f"(cached plus new tokens), got {tuple(attention_mask.shape)}"
            )
        mask = mask_to_bool(attention_mask).to(input_ids.device)
        if mask.shape[1] != query_len:
            if not torch.equal(mask[:, :past], cache.key_mask):
                raise ValueError(
                    "the first columns of attention_mask differ from the masks already stored in the cache; "
                    "pass the same mask history, or only the [batch, seq] mask of the new tokens"
                )
            mask = mask[:, past:]
        return mask

    def _resolve_positions(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None,
        cache: DecoderCache | None,
        key_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Return [b, s] integer positions, given or derived from the mask and the cache."""
        batch_size, query_len = input_ids.shape
        if positions is not None:
            if positions.dtype.is_floating_point or positions.dtype == torch.bool:
                raise TypeError(f"positions must be an integer tensor, got dtype {positions.dtype}")
            if positions.shape not in ((query_len,), (batch_size, query_len)):
                raise ValueError(
                    f"positions must have shape [{query_len}] or [{batch_size}, {query_len}], got {tuple(positions.shape)}"
                )
            return positions.to(input_ids.device).expand(batch_size, query_len)

        start = cache.seen if cache is not None else torch.zeros(batch_size, dtype=torch.long, device=input_ids.device)
        if key_mask is None:
            steps = torch.arange(query_len, device=input_ids.device)
            return start[:, None] + steps[None, :]
        # Row r's real tokens get start[r], start[r] + 1, ...; padding slots reuse the
        # neighbouring position, which no real query attends to.
        counted = key_mask.to(torch.long).cumsum(dim=1) - 1
        return start[:, None] + counted.clamp(min=0)
