"""ALiBi slopes and causal attention biases."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ropekit import ALiBi


def test_slopes_eight_heads_hand_values():
    expected = torch.tensor([2.0**-k for k in range(1, 9)], dtype=torch.float64)
    assert torch.equal(ALiBi(8).slopes(dtype=torch.float64), expected)


def test_slopes_six_heads_hand_values():
    # Four heads give 2**-2, 2**-4, 2**-6, 2**-8; the two extra heads take the odd terms
    # 2**-1 and 2**-3 of the eight-head sequence.
    expected = torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3], dtype=torch.float64)
    assert torch.equal(ALiBi(6).slopes(dtype=torch.float64), expected)


@pytest.mark.parametrize("num_heads", [1, 2, 3, 5, 6, 7, 8, 12, 16, 20, 24, 32, 40, 71, 128])
def test_slopes_match_transformers_bloom(num_heads):
    bloom = pytest.importorskip("transformers.models.bloom.modeling_bloom")
    alibi = bloom.build_alibi_tensor(torch.ones(1, 2), num_heads, torch.float32)  # [heads, 1, 2]
    reference = alibi[:, 0, 1]  # slope * key position 1
    torch.testing.assert_close(ALiBi(num_heads).slopes(), reference, rtol=1e-6, atol=0)


@settings(max_examples=20, deadline=None)
@given(exponent=st.integers(0, 9))
def test_slopes_geometric_for_powers_of_two(exponent):
    num_heads = 2**exponent
    slopes = ALiBi(num_heads).slopes(dtype=torch.float64)
    first = 2.0 ** (-8.0 / num_heads)
    ratios = slopes[1:] / slopes[:-1]
    assert slopes[0].item() == pytest.approx(first, rel=1e-15)
    assert torch.allclose(ratios, torch.full_like(ratios, first), rtol=1e-12, atol=0)


@settings(max_examples=40, deadline=None)
@given(num_heads=st.integers(1, 300))
def test_slopes_distinct_and_in_unit_interval(num_heads):
    slopes = ALiBi(num_heads).slopes(dtype=torch.float64)
    assert slopes.shape == (num_heads,)
    assert torch.unique(slopes).numel() == num_heads
    assert ((slopes > 0) & (slopes < 1)).all()


@settings(max_examples=40, deadline=None)
@given(num_heads=st.integers(3, 300).filter(lambda n: n & (n - 1) != 0))
def test_slopes_non_power_extends_lower_power(num_heads):
    lower = 1 << (num_heads.bit_length() - 1)
    slopes = ALiBi(num_heads).slopes(dtype=torch.float64)
    doubled = ALiBi(2 * lower).slopes(dtype=torch.float64)
    assert torch.equal(slopes[:lower], ALiBi(lower).slopes(dtype=torch.float64))
    assert torch.equal(slopes[lower:], doubled[0::2][: num_heads - lower])


def test_bias_hand_values_with_offset():
    # Slopes of two heads: 2**-4 and 2**-8. Queries at positions 2 and 3, keys at 0..3.
    bias = ALiBi(2).bias(2, 4, offset=2, dtype=torch.float64)
    inf = math.inf
    expected = torch.tensor(
        [
            [[-2 / 16, -1 / 16, 0.0, -inf], [-3 / 16, -2 / 16, -1 / 16, 0.0]],
            [[-2 / 256, -1 / 256, 0.0, -inf], [-3 / 256, -2 / 256, -1 / 256, 0.0]],
        ],
        dtype=torch.float64,
    )
    assert torch.equal(bias, expected)


@pytest.mark.parametrize(("num_heads", "q_len", "k_len", "offset"), [(1, 1, 1, 0), (5, 3, 11, 8), (12, 7, 7, 0)])
def test_bias_shape(num_heads, q_len, k_len, offset):
    assert ALiBi(num_heads).bias(q_len, k_len, offset).shape == (num_heads, q_len, k_len)


@pytest.mark.parametrize("offset", [1, 6, 13])
def test_bias_with_offset_equals_rows_of_full_bias(offset):
    alibi = ALiBi(5)
    q_len = 4
    full = alibi.bias(offset + q_len, offset + q_len)
    assert torch.equal(alibi.bias(q_len, offset + q_len, offset), full[:, offset:, :])


def test_bias_masks_exactly_future_keys():
    bias = ALiBi(3).bias(6, 9, offset=3)
    future = torch.arange(9)[None, :] > (3 + torch.arange(6))[:, None]
    assert torch.isneginf(bias[:, future]).all()
    assert torch.isfinite(bias[:, ~future]).all()


def test_bias_diagonal_is_positive_zero():
    bias = ALiBi(2).bias(3, 3)
    diagonal = bias[:, torch.arange(3), torch.arange(3)]
    assert torch.equal(torch.signbit(diagonal), torch.zeros_like(diagonal, dtype=torch.bool))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_bias_dtype_matches_float64_cast(dtype):
    alibi = ALiBi(7)
    reference = alibi.bias(5, 300, offset=295, dtype=torch.float64).to(dtype)
    assert torch.equal(alibi.bias(5, 300, offset=295, dtype=dtype), reference)


def test_bias_in_sdpa_matches_explicit_softmax():
    torch.manual_seed(0)
    heads, q_len, k_len, head_dim = 3, 4, 9, 8
    q = torch.randn(1, heads, q_len, head_dim, dtype=torch.float64)
    k = torch.randn(1, heads, k_len, head_dim, dtype=torch.float64)
    v = torch.randn(1, heads, k_len, head_dim, dtype=torch.float64)
    alibi = ALiBi(heads)
    output = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=alibi.bias(q_len, k_len, offset=5, dtype=torch.float64)
    )

    slopes = alibi.slopes(dtype=torch.float64)
    reference = torch.empty_like(output)
    for h in range(heads):
        for i in range(q_len):
            visible = 5 + i + 1
            scores = q[0, h, i] @ k[0, h, :visible].T / math.sqrt(head_dim)
            scores = scores - slopes[h] * (5 + i - torch.arange(visible, dtype=torch.float64))
            reference[0, h, i] = torch.softmax(scores, dim=-1) @ v[0, h, :visible]
    torch.testing.assert_close(output, reference, rtol=1e-12, atol=1e-12)


def test_forward_equals_bias():
    alibi = ALiBi(4)
    assert torch.equal(alibi(3, 5, 2), alibi.bias(3, 5, 2))


@pytest.mark.parametrize(("num_heads", "error"), [(0, ValueError), (-2, ValueError), (2.0, TypeError), (True, TypeError)])
def test_rejects_bad_num_heads(num_heads, error):
    with pytest.raises(error, match="num_heads"):
        ALiBi(num_heads)


@pytest.mark.parametrize(
    ("arguments", "error", "name"),
    [
        ((0, 4, 0), ValueError, "q_len"),
        ((2, 0, 0), ValueError, "k_len"),
        ((2, 4, -1), ValueError, "offset"),
        ((2.0, 4, 0), TypeError, "q_len"),
        ((2, 4, 1.5), TypeError, "offset"),
    ],
)
def test_bias_rejects_bad_arguments(arguments, error, name):
    with pytest.raises(error, match=name):
        ALiBi(2).bias(*arguments)


@pytest.mark.parametrize(("q_len", "k_len", "offset"), [(3, 2, 0), (2, 4, 3), (1, 5, 5)])
def test_bias_rejects_query_past_last_key(q_len, k_len, offset):
    message = rf"offset \({offset}\) \+ q_len \({q_len}\) = {offset + q_len} exceeds k_len \({k_len}\)"
    with pytest.raises(ValueError, match=message):
        ALiBi(2).bias(q_len, k_len, offset)


def test_bias_accepts_last_query_on_last_key():
    assert ALiBi(2).bias(2, 5, 3).shape == (2, 2, 5)


def test_bias_rejects_integer_dtype():
    with pytest.raises(TypeError, match="dtype"):
        ALiBi(2).bias(2, 2, dtype=torch.int64)
