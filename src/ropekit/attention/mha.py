"""Multi-head attention with RoPE or an ALiBi bias, and its per-head KV cache.

One module covers multi-head (MHA), grouped-query (GQA) and multi-query (MQA) attention:
``num_kv_heads`` key/value heads are shared by groups of ``num_heads // num_kv_heads``
query heads (Ainslie et al. 2023, "GQA"). Scores go through
``torch.nn.functional.scaled_dot_product_attention`` with the scale 1 / sqrt(head_dim).

Notation for shapes: b batch, s query positions, t key positions (cached plus new),
h query heads, g key/value heads, d head_dim, e hidden size.

Padding and positions: a batch of prompts of different lengths is left-padded. The caller
passes ``key_mask`` (True for real tokens) so that no query attends to padding, and
per-row ``positions`` so that every row's first real token sits at position 0. A padded
query still attends to itself, which keeps its softmax finite; its output is never used.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ropekit.rope import RopeConfig, RotaryEmbedding


class KVCache:
    """Keys and values of one attention layer for every head, preallocated.

    Keys are stored after RoPE, so a decoding step rotates only its new key. All rows of
    a batch share one length (left padding keeps them aligned); ``key_mask`` marks the
    slots that contain padding.

    Attributes:
        keys, values: [batch_size, max_len, num_kv_heads, head_dim] buffers.
        key_mask: [batch_size, max_len] bool, True where a slot contains a real token.
        length: slots filled so far.
        grow: when True, a write past ``max_len`` doubles the buffers instead of raising.
    """

    def __init__(
        self,
        batch_size: int,
        max_len: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        grow: bool = False,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("max_len", max_len), ("num_kv_heads", num_kv_heads),
                            ("head_dim", head_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        shape = (batch_size, max_len, num_kv_heads, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.key_mask = torch.zeros((batch_size, max_len), dtype=torch.bool, device=device)
        self.length = 0
        self.grow = grow

    @property
    def max_len(self) -> int:
        return self.keys.shape[1]

    def nbytes(self) -> int:
        """Return the bytes of the key and value buffers (allocated, not only filled)."""
        return 2 * self.keys.numel() * self.keys.element_size()

    def bytes_per_token(self) -> int:
        """Return the bytes one token occupies in this layer: keys plus values of every head."""
        batch_size, _, num_kv_heads, head_dim = self.keys.shape
        return 2 * num_kv_heads * head_dim * self.keys.element_size()

    def append(
        self, keys: torch.Tensor, values: torch.Tensor, key_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Store new keys, values and their mask; return all filled keys, values and mask.

        keys, values: [b, s, g, d]; key_mask: [b, s] bool.
        """
        if keys.shape[0] != self.keys.shape[0] or keys.shape[2:] != self.keys.shape[2:]:
            raise ValueError(
                f"keys of shape {tuple(keys.shape)} do not fit a cache of shape {tuple(self.keys.shape)} "
                "(batch, max_len, num_kv_heads, head_dim)"
            )
        if keys.dtype != self.keys.dtype or keys.device != self.keys.device:
            raise ValueError(
                f"keys are {keys.dtype} on {keys.device} but the cache stores {self.keys.dtype} on "
                f"{self.keys.device}; build the cache with the model's dtype and device"
            )
        new_length = self.length + keys.shape[1]
        if new_length > self.max_len:
            if not self.grow:
                raise ValueError(
                    f"the KV cache has room for at most {self.max_len} tokens but {new_length} were requested; "
                    "build it with a larger max_len or grow=True"
                )
            self._resize(max(new_length, 2 * self.max_len))

        self.keys[:, self.length : new_length] = keys
        self.values[:, self.length : new_length] = values
        self.key_mask[:, self.length : new_length] = key_mask
        self.length = new_length
        return self.keys[:, :new_length], self.values[:, :new_length], self.key_mask[:, :new_length]

    def _resize(self, max_len: int) -> None:
        def extend(buffer: torch.Tensor) -> torch.Tensor:
            larger = buffer.new_zeros((buffer.shape[0], max_len, *buffer.shape[2:]))
            larger[:, : self.length] = buffer[:, : self.length]
            return larger

        self.keys, self.values, self.key_mask = extend(self.keys), extend(self.values), extend(self.key_mask)


def causal_mask(key_mask: torch.Tensor, query_len: int, sliding_window: int | None = None) -> torch.Tensor:
    """Return the boolean attention mask [b, 1, s, t]: True where a query may attend.

    The s queries are the last s of the t key slots. A query attends to earlier and equal
    slots that contain real tokens, and always to its own slot (see the module docstring).
    With a sliding window w it attends only to keys less than w slots back (Mistral's rule,
    query - key < w).
    """
    key_len = key_mask.shape[1]
    query_slots = torch.arange(key_len - query_len, key_len, device=key_mask.device)
    key_slots = torch.arange(key_len, device=key_mask.device)
    causal = key_slots[None, :] <= query_slots[:, None]  # [s, t]
    if sliding_window is not None:
        causal = causal & (query_slots[:, None] - key_slots[None, :] < sliding_window)
    own_slot = key_slots[None, :] == query_slots[:, None]
    return ((causal & key_mask[:, None, :]) | own_slot)[:, None]


class MultiHeadAttention(nn.Module):
    """Causal self-attention (MHA, GQA or MQA) with RoPE, an ALiBi bias, or no position.

    Parameter names follow the Llama layout of Hugging Face transformers (q_proj, k_proj,
    v_proj, o_proj), so those checkpoints load without renaming.

    Args:
        hidden_size: width e of the input and output.
        num_heads: query heads h.
        num_kv_heads: key/value heads g; must divide num_heads (g = h is MHA, g = 1 is MQA).
        head_dim: channels d per head.
        qkv_bias: add biases to the q, k and v projections (Qwen2).
        output_bias: add a bias to the output projection.
        rope: rotate q and k with this RoPE configuration; its head_dim must equal head_dim.
        alibi_slopes: a [num_heads] tensor of ALiBi slopes (Press et al. 2021); adds
            -slope * (query position - key position) to the scores. Exclusive with rope.
        sliding_window: when set, each query attends only to the last sliding_window
            positions, itself included (Mistral, Qwen2 and Phi-3 checkpoints use this).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        qkv_bias: bool = False,
        output_bias: bool = False,
        rope: RopeConfig | None = None,
        alibi_slopes: torch.Tensor | None = None,
        sliding_window: int | None = None,
    ) -> None:
        super().__init__()
        if sliding_window is not None and (not isinstance(sliding_window, int) or sliding_window <= 0):
            raise ValueError(f"sliding_window must be a positive int or None, got {sliding_window!r}")
        if num_heads % num_kv_heads != 0:
            raise ValueError(
                f"num_kv_heads ({num_kv_heads}) must divide num_heads ({num_heads}) so that every "
                "key/value head serves the same number of query heads"
            )
        if rope is not None and alibi_slopes is not None:
            raise ValueError("rope and alibi_slopes are exclusive; pass one positional scheme")
        if rope is not None and rope.head_dim != head_dim:
            raise ValueError(f"rope.head_dim ({rope.head_dim}) must equal the attention head_dim ({head_dim})")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.sliding_window = sliding_window

        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=output_bias)

        self.rotary = RotaryEmbedding(rope) if rope is not None else None
        if alibi_slopes is not None:
            if alibi_slopes.shape != (num_heads,):
                raise ValueError(f"alibi_slopes must have shape ({num_heads},), got {tuple(alibi_slopes.shape)}")
            # Slopes are constants of the scheme, not weights: keep them out of state dicts.
            self.register_buffer("alibi_slopes", alibi_slopes.to(torch.float32), persistent=False)
        else:
            self.alibi_slopes = None

    def set_rope(self, rope: RopeConfig) -> None:
        """Replace the RoPE configuration (for example its scaling) without touching weights."""
        if self.rotary is None:
            raise ValueError("this attention layer does not use RoPE, so its RoPE cannot be replaced")
        if rope.head_dim != self.head_dim:
            raise ValueError(f"rope.head_dim ({rope.head_dim}) must equal the attention head_dim ({self.head_dim})")
        self.rotary = RotaryEmbedding(rope)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        *,
        cache: KVCache | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend causally; return [b, s, e].

        Args:
            x: [b, s, e] hidden states of the new tokens.
            positions: [b, s] integer positions of the new tokens.
            cache: keys and values of earlier tokens; the new ones are appended to it.
            key_mask: [b, s] bool, True for real tokens of x, False for padding. None means
                every new token is real.
        """
        batch_size, query_len, _ = x.shape
        q = self.q_proj(x).view(batch_size, query_len, self.num_heads, self.head_dim)  # [b, s, h, d]
        k = self.k_proj(x).view(batch_size, query_len, self.num_kv_heads, self.head_dim)  # [b, s, g, d]
        v = self.v_proj(x).view(batch_size, query_len, self.num_kv_heads, self.head_dim)  # [b, s, g, d]
        if self.rotary is not None:
            q, k = self.rotary(q, k, positions)

        window_applies = self.sliding_window is not None and query_len > self.sliding_window
        if key_mask is None and cache is None and self.alibi_slopes is None and not window_applies:
            # Common training case: no padding, no cache, so the fused causal kernel applies.
            attended = self._attend(q, k, v, mask=None)
        else:
            if key_mask is None:
                key_mask = torch.ones((batch_size, query_len), dtype=torch.bool, device=x.device)
            if cache is not None:
                k, v, key_mask = cache.append(k, v, key_mask)
            mask = causal_mask(key_mask, query_len, self.sliding_window)  # [b, 1, s, t]
            if self.alibi_slopes is not None:
                mask = self._alibi_bias(mask, query_len)
            attended = self._attend(q, k, v, mask=mask)

        return self.o_proj(attended.reshape(batch_size, query_len, self.num_heads * self.head_dim))

    def _alibi_bias(self, mask: torch.Tensor, query_len: int) -> torch.Tensor:
        """Turn a boolean mask [b, 1, s, t] into a float mask [b, h, s, t] with the ALiBi bias.

        Distances are taken between cache slots; left padding is contiguous, so the slot
        distance between two real tokens equals their position distance.
        """
        key_len = mask.shape[-1]
        query_slots = torch.arange(key_len - query_len, key_len, device=mask.device)
        key_slots = torch.arange(key_len, device=mask.device)
        distance = (query_slots[:, None] - key_slots[None, :]).to(torch.float32)  # [s, t]
        bias = -self.alibi_slopes[:, None, None] * distance  # [h, s, t]
        return bias.masked_fill(~mask, float("-inf"))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Return softmax(q k^T / sqrt(d) + mask) v as [b, s, h, d]."""
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            # Each key/value head serves `groups` consecutive query heads (the GQA layout of
            # transformers' repeat_kv).
            k = k.repeat_interleave(groups, dim=2)
            v = v.repeat_interleave(groups, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [b, h, s or t, d]
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None, scale=1.0 / math.sqrt(self.head_dim)
        )
        return attended.transpose(1, 2)  # [b, s, h, d]
