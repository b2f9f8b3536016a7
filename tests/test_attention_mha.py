"""MultiHeadAttention and KVCache against an explicit float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

from ropekit.attention.mha import KVCache, MultiHeadAttention
from ropekit.rope import RopeConfig


def reference_rotate(x: torch.Tensor, positions: torch.Tensor, theta: float, interleaved: bool) -> torch.Tensor:
    """Rotate x [b, s, h, d] in float64 pair by pair, written out with complex numbers."""
    head_dim = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq  # [b, s, d/2]
    rotation = torch.polar(torch.ones_like(angles), angles)[:, :, None, :]  # [b, s, 1, d/2]
    x = x.to(torch.float64)
    if interleaved:
        pairs = torch.complex(x[..., 0::2], x[..., 1::2]) * rotation
        return torch.stack((pairs.real, pairs.imag), dim=-1).flatten(-2)
    half = head_dim // 2
    pairs = torch.complex(x[..., :half], x[..., half:]) * rotation
    return torch.cat((pairs.real, pairs.imag), dim=-1)


def reference_attention(
    module: MultiHeadAttention,
    x: torch.Tensor,
    positions: torch.Tensor,
    *,
    theta: float | None,
    interleaved: bool = False,
    key_mask: torch.Tensor | None = None,
    alibi_slopes: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Compute causal attention head by head in float64 with an explicit softmax."""
    batch_size, seq_len, _ = x.shape
    heads, kv_heads, head_dim = module.num_heads, module.num_kv_heads, module.head_dim
    weights = {name: getattr(module, name).weight.detach().to(torch.float64) for name in ("q_proj", "k_proj", "v_proj", "o_proj")}
    biases = {name: getattr(module, name).bias for name in ("q_proj", "k_proj", "v_proj", "o_proj")}

    def project(name: str, inputs: torch.Tensor) -> torch.Tensor:
        out = inputs @ weights[name].T
        if biases[name] is not None:
            out = out + biases[name].detach().to(torch.float64)
        return out

    x64 = x.to(torch.float64)
    q = project("q_proj", x64).view(batch_size, seq_len, heads, head_dim)
    k = project("k_proj", x64).view(batch_size, seq_len, kv_heads, head_dim)
    v = project("v_proj", x64).view(batch_size, seq_len, kv_heads, head_dim)
    if theta is not None:
        q = reference_rotate(q, positions, theta, interleaved)
        k = reference_rotate(k, positions, theta, interleaved)

    out = torch.zeros(batch_size, seq_len, heads, head_dim, dtype=torch.float64)
    group = heads // kv_heads
    for b in range(batch_size):
        for h in range(heads):
            scores = q[b, :, h] @ k[b, :, h // group].T / math.sqrt(head_dim)  # [s, t]
            if alibi_slopes is not None:
                distance = torch.arange(seq_len)[:, None] - torch.arange(seq_len)[None, :]
                scores = scores - alibi_slopes[h].item() * distance
            allowed = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
            if window is not None:
                allowed = allowed & ~torch.ones(seq_len, seq_len, dtype=torch.bool).tril(-window)
            if key_mask is not None:
                allowed = (allowed & key_mask[b][None, :]) | torch.eye(seq_len, dtype=torch.bool)
            scores = scores.masked_fill(~allowed, float("-inf"))
            out[b, :, h] = scores.softmax(dim=-1) @ v[b, :, h // group]
    return project("o_proj", out.reshape(batch_size, seq_len, heads * head_dim))


def make_attention(heads: int, kv_heads: int, head_dim: int, *, interleaved: bool = False, bias: bool = False,
                   rope: bool = True, alibi_slopes: torch.Tensor | None = None) -> MultiHeadAttention:
    torch.manual_seed(heads * 100 + kv_heads)
    config = RopeConfig(head_dim=head_dim, interleaved=interleaved) if rope else None
    module = MultiHeadAttention(
        24, heads, kv_heads, head_dim, qkv_bias=bias, output_bias=bias, rope=config, alibi_slopes=alibi_slopes
    )
    if bias:
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            torch.nn.init.normal_(getattr(module, name).bias)
    return module


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (6, 2), (3, 1), (5, 5)])
def test_attention_matches_reference(heads: int, kv_heads: int, interleaved: bool) -> None:
    module = make_attention(heads, kv_heads, 6, interleaved=interleaved, bias=True)
    x = torch.randn(2, 13, 24)
    positions = torch.arange(13).expand(2, 13)
    expected = reference_attention(module, x, positions, theta=10000.0, interleaved=interleaved)
    actual = module(x, positions)
    torch.testing.assert_close(actual.to(torch.float64), expected, atol=2e-6, rtol=1e-5)


def test_attention_offset_positions_match_reference() -> None:
    module = make_attention(4, 2, 8)
    x = torch.randn(2, 9, 24)
    positions = torch.stack((torch.arange(9) + 100, torch.arange(9) + 5000))
    expected = reference_attention(module, x, positions, theta=10000.0)
    torch.testing.assert_close(module(x, positions).to(torch.float64), expected, atol=5e-6, rtol=1e-5)


def test_attention_key_mask_matches_reference() -> None:
    module = make_attention(4, 2, 8)
    x = torch.randn(2, 7, 24)
    key_mask = torch.tensor([[True] * 7, [False, False, False, True, True, True, True]])
    positions = torch.tensor([list(range(7)), [0, 0, 0, 0, 1, 2, 3]])
    expected = reference_attention(module, x, positions, theta=10000.0, key_mask=key_mask)
    actual = module(x, positions, key_mask=key_mask)
    torch.testing.assert_close(actual.to(torch.float64), expected, atol=2e-6, rtol=1e-5)


def test_alibi_bias_matches_reference() -> None:
    slopes = torch.tensor([0.5, 0.25, 0.125, 0.0625])
    module = make_attention(4, 2, 8, rope=False, alibi_slopes=slopes)
    x = torch.randn(2, 11, 24)
    positions = torch.arange(11).expand(2, 11)
    expected = reference_attention(module, x, positions, theta=None, alibi_slopes=slopes)
    torch.testing.assert_close(module(x, positions).to(torch.float64), expected, atol=2e-6, rtol=1e-5)


def test_attention_without_position_is_permutation_blind() -> None:
    # With no positional scheme the last query attends to an unordered set of keys, so swapping two earlier
    # tokens leaves its output unchanged.
    module = make_attention(4, 4, 6, rope=False)
    x = torch.randn(1, 5, 24)
    swapped = x[:, [1, 0, 2, 3, 4]]
    positions = torch.arange(5).expand(1, 5)
    torch.testing.assert_close(module(x, positions)[:, -1], module(swapped, positions)[:, -1])


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (6, 3), (4, 1)])
def test_cached_decoding_equals_full_forward(heads: int, kv_heads: int, interleaved: bool) -> None:
    module = make_attention(heads, kv_heads, 8, interleaved=interleaved)
    x = torch.randn(3, 11, 24)
    positions = torch.arange(11).expand(3, 11)
    full = module(x, positions)

    cache = KVCache(3, 16, kv_heads, 8)
    pieces = [module(x[:, :4], positions[:, :4], cache=cache)]
    for step in range(4, 11):
        pieces.append(module(x[:, step : step + 1], positions[:, step : step + 1], cache=cache))
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-6, rtol=1e-5)
    assert cache.length == 11


def test_alibi_cached_decoding_equals_full_forward() -> None:
    slopes = torch.tensor([0.5, 0.25, 0.125, 0.0625])
    module = make_attention(4, 2, 8, rope=False, alibi_slopes=slopes)
    x = torch.randn(2, 9, 24)
    positions = torch.arange(9).expand(2, 9)
    full = module(x, positions)
    cache = KVCache(2, 9, 2, 8)
    pieces = [module(x[:, :5], positions[:, :5], cache=cache)]
    pieces += [module(x[:, i : i + 1], positions[:, i : i + 1], cache=cache) for i in range(5, 9)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-6, rtol=1e-5)


def test_cache_overflow_raises() -> None:
    module = make_attention(4, 2, 8)
    cache = KVCache(1, 4, 2, 8)
    x = torch.randn(1, 5, 24)
    with pytest.raises(ValueError, match="at most 4 tokens"):
        module(x, torch.arange(5).expand(1, 5), cache=cache)


def test_cache_grows_when_allowed() -> None:
    module = make_attention(4, 2, 8)
    x = torch.randn(1, 9, 24)
    positions = torch.arange(9).expand(1, 9)
    cache = KVCache(1, 2, 2, 8, grow=True)
    pieces = [module(x[:, i : i + 1], positions[:, i : i + 1], cache=cache) for i in range(9)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), module(x, positions), atol=1e-6, rtol=1e-5)
    assert cache.max_len >= 9


def test_cache_rejects_other_dtype() -> None:
    module = make_attention(4, 2, 8)
    cache = KVCache(1, 8, 2, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="float64"):
        module(torch.randn(1, 3, 24), torch.arange(3).expand(1, 3), cache=cache)


def test_cache_bytes_per_token() -> None:
    cache = KVCache(2, 10, 3, 8, dtype=torch.bfloat16)
    assert cache.bytes_per_token() == 2 * 3 * 8 * 2
    assert cache.nbytes() == 2 * 10 * cache.bytes_per_token()


def test_kv_heads_must_divide_heads() -> None:
    with pytest.raises(ValueError, match="num_kv_heads"):
        MultiHeadAttention(24, 6, 4, 4)


def test_rope_and_alibi_are_exclusive() -> None:
    with pytest.raises(ValueError, match="exclusive"):
        MultiHeadAttention(24, 4, 4, 6, rope=RopeConfig(head_dim=6), alibi_slopes=torch.ones(4))


def test_rope_head_dim_must_match() -> None:
    with pytest.raises(ValueError, match="head_dim"):
        MultiHeadAttention(24, 4, 4, 6, rope=RopeConfig(head_dim=8))


def test_cache_rejects_non_positive_size() -> None:
    with pytest.raises(ValueError, match="max_len"):
        KVCache(1, 0, 2, 8)


def test_sliding_window_matches_reference() -> None:
    module = make_attention(4, 2, 8)
    module.sliding_window = 4
    x = torch.randn(2, 11, 24)
    positions = torch.arange(11).expand(2, 11)
    expected = reference_attention(module, x, positions, theta=10000.0, window=4)
    torch.testing.assert_close(module(x, positions).to(torch.float64), expected, atol=2e-6, rtol=1e-5)


def test_sliding_window_with_cache_equals_full_forward() -> None:
    module = make_attention(4, 2, 8)
    module.sliding_window = 3
    x = torch.randn(1, 10, 24)
    positions = torch.arange(10).expand(1, 10)
    cache = KVCache(1, 10, 2, 8)
    pieces = [module(x[:, :2], positions[:, :2], cache=cache)]
    pieces += [module(x[:, i : i + 1], positions[:, i : i + 1], cache=cache) for i in range(2, 10)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), module(x, positions), atol=1e-6, rtol=1e-5)
