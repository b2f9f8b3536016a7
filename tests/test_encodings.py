"""Additive positional encodings: integer, binary, sinusoidal and learned."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ropekit import (
    BinaryPositionalEncoding,
    IntegerPositionalEncoding,
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
)

DTYPES = [torch.float32, torch.bfloat16, torch.float64]
LAYOUTS = ["interleaved", "concatenated"]


def sinusoidal_reference(positions: list[int], dim: int, base: float, layout: str) -> np.ndarray:
    """Vaswani et al. 2017, section 3.5, one channel at a time in float64 (numpy)."""
    table = np.zeros((len(positions), dim), dtype=np.float64)
    sines = (dim + 1) // 2
    for row, position in enumerate(positions):
        for channel in range(dim):
            if layout == "interleaved":
                pair, is_sine = channel // 2, channel % 2 == 0
            elif channel < sines:
                pair, is_sine = channel, True
            else:
                pair, is_sine = channel - sines, False
            angle = position * base ** (-2.0 * pair / dim)
            table[row, channel] = math.sin(angle) if is_sine else math.cos(angle)
    return table



ENCODING_FACTORIES = {
    "integer": lambda dim: IntegerPositionalEncoding(dim),
    "integer_normalized": lambda dim: IntegerPositionalEncoding(dim, max_len=16, normalize=True),
    "binary": lambda dim: BinaryPositionalEncoding(dim),
    "sinusoidal": lambda dim: SinusoidalPositionalEncoding(dim),
    "learned": lambda dim: LearnedPositionalEmbedding(dim, max_len=64),
}


# ---------------------------------------------------------------- integer


def test_integer_hand_values():
    encoding = IntegerPositionalEncoding(3)
    expected = torch.tensor([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0], [12.0, 12.0, 12.0]])
    assert torch.equal(encoding.encode([0, 5, 12]), expected)


def test_integer_normalized_hand_values():
    encoding = IntegerPositionalEncoding(2, max_len=4, normalize=True)
    expected = torch.tensor([[0.0, 0.0], [0.5, 0.5], [2.0, 2.0]])
    assert torch.equal(encoding.encode([0, 2, 8]), expected)


def test_integer_normalize_needs_max_len():
    with pytest.raises(ValueError, match="max_len"):
        IntegerPositionalEncoding(4, normalize=True)


def test_integer_max_len_without_normalize_rejected():
    with pytest.raises(ValueError, match="normalize=True"):
        IntegerPositionalEncoding(4, max_len=10)


def test_integer_normalized_divides_in_float64():
    encoding = IntegerPositionalEncoding(1, max_len=3, normalize=True)
    values = encoding.encode(list(range(10)), dtype=torch.float32)[:, 0]
    reference = (torch.arange(10, dtype=torch.float64) / 3).to(torch.float32)
    assert torch.equal(values, reference)


# ---------------------------------------------------------------- binary


@pytest.mark.parametrize(
    ("bit_order", "signed", "expected"),
    [
        ("lsb_first", False, [1.0, 1.0, 0.0, 1.0]),
        ("msb_first", False, [1.0, 0.0, 1.0, 1.0]),
        ("lsb_first", True, [1.0, 1.0, -1.0, 1.0]),
        ("msb_first", True, [1.0, -1.0, 1.0, 1.0]),
    ],
)
def test_binary_hand_values_of_eleven(bit_order, signed, expected):
    encoding = BinaryPositionalEncoding(4, bit_order=bit_order, signed=signed)
    assert torch.equal(encoding.encode([11])[0], torch.tensor(expected))


def test_binary_position_too_large_names_dim():
    encoding = BinaryPositionalEncoding(4)
    with pytest.raises(ValueError, match=r"position 16 needs 5 bits.*dim >= 5"):
        encoding.encode([3, 16])


def test_binary_largest_position_that_fits():
    encoding = BinaryPositionalEncoding(4)
    assert torch.equal(encoding.encode(15), torch.ones(4))


def test_binary_wide_dim_high_bits_zero():
    encoding = BinaryPositionalEncoding(70)
    bits = encoding.encode([2**40 + 1])[0]
    expected = torch.zeros(70)
    expected[0] = 1.0
    expected[40] = 1.0
    assert torch.equal(bits, expected)


def test_binary_rejects_unknown_bit_order():
    with pytest.raises(ValueError, match="bit_order"):
        BinaryPositionalEncoding(4, bit_order="big")


@settings(max_examples=30, deadline=None)
@given(dim=st.integers(1, 11), signed=st.booleans(), msb_first=st.booleans())
def test_binary_codes_distinct_below_two_to_dim(dim, signed, msb_first):
    encoding = BinaryPositionalEncoding(dim, bit_order="msb_first" if msb_first else "lsb_first", signed=signed)
    codes = encoding.encode(torch.arange(2**dim))
    assert torch.unique(codes, dim=0).shape[0] == 2**dim


@settings(max_examples=50, deadline=None)
@given(position=st.integers(0, 2**20 - 1))
def test_binary_bits_sum_to_position(position):
    bits = BinaryPositionalEncoding(20).encode([position], dtype=torch.float64)[0]
    assert int((bits * 2.0 ** torch.arange(20, dtype=torch.float64)).sum()) == position


@settings(max_examples=30, deadline=None)
@given(position=st.integers(0, 2**12 - 1), signed=st.booleans())
def test_binary_values_in_allowed_set(position, signed):
    bits = BinaryPositionalEncoding(12, signed=signed).encode([position])
    allowed = torch.tensor([-1.0, 1.0] if signed else [0.0, 1.0])
    assert torch.isin(bits, allowed).all()


# ---------------------------------------------------------------- sinusoidal


def test_sinusoidal_hand_values():
    values = SinusoidalPositionalEncoding(4).encode([1], dtype=torch.float64)[0]
    expected = torch.tensor([math.sin(1.0), math.cos(1.0), math.sin(0.01), math.cos(0.01)], dtype=torch.float64)
    assert torch.equal(values, expected)


def test_sinusoidal_position_zero():
    values = SinusoidalPositionalEncoding(5).encode(0)
    assert torch.equal(values, torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0]))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dim", [1, 2, 7, 16, 33])
def test_sinusoidal_matches_float64_reference(layout, dim):
    positions = [0, 1, 2, 3, 17, 255, 4097]
    encoding = SinusoidalPositionalEncoding(dim, base=500.0, layout=layout)
    values = encoding.encode(positions, dtype=torch.float64).numpy()
    reference = sinusoidal_reference(positions, dim, 500.0, layout)
    np.testing.assert_allclose(values, reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dim", [6, 31, 128])
def test_sinusoidal_float32_at_one_million(layout, dim):
    positions = [999_999, 1_000_000, 1_234_567]
    values = SinusoidalPositionalEncoding(dim, layout=layout).encode(positions).double().numpy()
    reference = sinusoidal_reference(positions, dim, 10000.0, layout)
    assert np.abs(values - reference).max() <= 1e-6


def test_sinusoidal_odd_dim_last_channel_is_sine():
    dim = 9
    values = SinusoidalPositionalEncoding(dim).encode([3], dtype=torch.float64)[0]
    assert values[-1].item() == math.sin(3 * 10000.0 ** (-8 / 9))


def test_sinusoidal_concatenated_is_permutation():
    dim = 11
    positions = torch.arange(40)
    interleaved = SinusoidalPositionalEncoding(dim).encode(positions)
    concatenated = SinusoidalPositionalEncoding(dim, layout="concatenated").encode(positions)
    order = list(range(0, dim, 2)) + list(range(1, dim, 2))
    assert torch.equal(concatenated, interleaved[:, order])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sinusoidal_dtype_matches_float64_cast(dtype):
    positions = torch.arange(0, 3000, 7)
    values = SinusoidalPositionalEncoding(10).encode(positions, dtype=dtype)
    reference = SinusoidalPositionalEncoding(10).encode(positions, dtype=torch.float64).to(dtype)
    assert values.dtype == dtype
    assert torch.equal(values, reference)


def test_sinusoidal_module_cast_rebuilds_from_float64():
    encoding = SinusoidalPositionalEncoding(12)
    positions = torch.arange(300)
    encoding.encode(positions)  # builds the float32 table first
    encoding.to(torch.bfloat16)
    values = encoding.encode(positions)
    reference = torch.tensor(sinusoidal_reference(list(range(300)), 12, 10000.0, "interleaved")).to(torch.bfloat16)
    assert values.dtype == torch.bfloat16
    assert torch.equal(values, reference)


def test_sinusoidal_cast_to_float64_is_exact():
    encoding = SinusoidalPositionalEncoding(8).to(torch.float64)
    values = encoding.encode(list(range(50))).numpy()
    reference = sinusoidal_reference(list(range(50)), 8, 10000.0, "interleaved")
    np.testing.assert_allclose(values, reference, rtol=0, atol=1e-15)


def test_sinusoidal_table_not_in_state_dict():
    encoding = SinusoidalPositionalEncoding(8)
    encoding.encode([100])
    assert list(encoding.state_dict()) == []


def test_sinusoidal_table_grows_on_demand():
    encoding = SinusoidalPositionalEncoding(8)
    encoding.encode([3])
    rows_before = encoding.table.shape[0]
    encoding.encode([5000])
    assert rows_before < 5001 <= encoding.table.shape[0]


def test_sinusoidal_grown_table_equals_direct():
    encoding = SinusoidalPositionalEncoding(8)
    encoding.encode([3])
    encoding.encode([5000])
    direct = encoding.compute(torch.arange(encoding.table.shape[0]), torch.float32)
    assert torch.equal(encoding.table, direct)


def test_sinusoidal_huge_position_not_cached():
    encoding = SinusoidalPositionalEncoding(512)
    values = encoding.encode([10_000_000]).double().numpy()
    reference = sinusoidal_reference([10_000_000], 512, 10000.0, "interleaved")
    assert encoding.table.shape[0] == 0
    assert np.abs(values - reference).max() <= 1e-6


@settings(max_examples=40, deadline=None)
@given(
    positions=st.lists(st.integers(0, 10**9), min_size=1, max_size=8),
    dim=st.integers(1, 40),
    concatenated=st.booleans(),
)
def test_sinusoidal_values_bounded(positions, dim, concatenated):
    encoding = SinusoidalPositionalEncoding(dim, layout="concatenated" if concatenated else "interleaved")
    assert encoding.encode(positions, dtype=torch.float64).abs().max() <= 1.0


@settings(max_examples=40, deadline=None)
@given(positions=st.lists(st.integers(0, 10**9), min_size=1, max_size=8), half_dim=st.integers(1, 20))
def test_sinusoidal_pairs_on_unit_circle(positions, half_dim):
    values = SinusoidalPositionalEncoding(2 * half_dim).encode(positions, dtype=torch.float64)
    squared_norms = values[..., 0::2] ** 2 + values[..., 1::2] ** 2
    assert torch.allclose(squared_norms, torch.ones_like(squared_norms), rtol=0, atol=1e-15)


def test_sinusoidal_rejects_bad_layout():
    with pytest.raises(ValueError, match="layout"):
        SinusoidalPositionalEncoding(8, layout="stacked")


@pytest.mark.parametrize("base", [0.0, 1.0, -5.0, float("inf"), float("nan")])
def test_sinusoidal_rejects_bad_base(base):
    with pytest.raises(ValueError, match="base"):
        SinusoidalPositionalEncoding(8, base=base)


# ---------------------------------------------------------------- learned


def test_learned_returns_table_rows():
    encoding = LearnedPositionalEmbedding(6, max_len=10)
    assert torch.equal(encoding.encode([[4, 0], [9, 9]]), encoding.weight[torch.tensor([[4, 0], [9, 9]])])


def test_learned_position_past_table_raises():
    encoding = LearnedPositionalEmbedding(6, max_len=10)
    with pytest.raises(ValueError, match=r"position 10 .*max_len=10"):
        encoding.encode([2, 10])


def test_learned_forward_past_table_raises():
    encoding = LearnedPositionalEmbedding(4, max_len=8)
    with pytest.raises(ValueError, match=r"position 9 .*max_len=8"):
        encoding(torch.zeros(1, 4, 4), offset=6)


def test_learned_gradient_reaches_rows_used():
    encoding = LearnedPositionalEmbedding(3, max_len=5)
    encoding(torch.zeros(2, 2, 3), positions=torch.tensor([1, 3])).sum().backward()
    expected = torch.zeros(5, 3)
    expected[[1, 3]] = 2.0
    assert torch.equal(encoding.weight.grad, expected)


def test_learned_weight_in_state_dict():
    assert list(LearnedPositionalEmbedding(3, max_len=5).state_dict()) == ["weight"]


def test_learned_init_std():
    torch.manual_seed(0)
    weight = LearnedPositionalEmbedding(64, max_len=512, init_std=0.05).weight
    assert abs(weight.std().item() - 0.05) < 0.002


# ---------------------------------------------------------------- meta device


def _build(name: str, dim: int) -> torch.nn.Module:
    return ENCODING_FACTORIES[name](dim)


@pytest.mark.parametrize("name", list(ENCODING_FACTORIES))
def test_meta_then_to_empty_matches_normal(name):
    positions = torch.tensor([[0, 3, 15], [1, 2, 14]])
    torch.manual_seed(1)
    normal = _build(name, 6)
    expected = normal.encode(positions)

    with torch.device("meta"):
        torch.manual_seed(1)
        meta = _build(name, 6)
    meta.to_empty(device="cpu")
    torch.manual_seed(1)
    if isinstance(meta, LearnedPositionalEmbedding):
        meta.reset_parameters()
    if isinstance(meta, SinusoidalPositionalEncoding):
        meta.reset_table()
    assert torch.equal(meta.encode(positions), expected)


def test_sinusoidal_to_empty_rebuilds_without_reset():
    with torch.device("meta"):
        meta = SinusoidalPositionalEncoding(6)
    meta_values = meta.encode(torch.arange(20, device="meta"))
    meta.to_empty(device="cpu")
    assert meta_values.device.type == "meta"
    assert torch.equal(meta.encode(torch.arange(20)), SinusoidalPositionalEncoding(6).encode(torch.arange(20)))


def test_sinusoidal_reset_table_after_cpu_to_empty():
    encoding = SinusoidalPositionalEncoding(6)
    expected = encoding.encode(torch.arange(100))
    encoding.to_empty(device="cpu")
    encoding.reset_table()
    assert torch.equal(encoding.encode(torch.arange(100)), expected)


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize("name", list(ENCODING_FACTORIES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_adds_encoding(name, dtype):
    encoding = _build(name, 5)
    x = torch.randn(2, 7, 5, dtype=dtype)
    expected = x + encoding.encode(torch.arange(7), dtype=dtype)
    output = encoding(x)
    assert output.dtype == dtype
    assert torch.equal(output, expected)


@pytest.mark.parametrize("name", list(ENCODING_FACTORIES))
def test_forward_int_offset(name):
    encoding = _build(name, 4)
    x = torch.randn(3, 2, 4)
    assert torch.equal(encoding(x, offset=9), x + encoding.encode(torch.tensor([9, 10])))


@pytest.mark.parametrize("name", list(ENCODING_FACTORIES))
def test_forward_tensor_offset_per_row(name):
    encoding = _build(name, 4)
    x = torch.randn(2, 3, 4)
    output = encoding(x, offset=torch.tensor([0, 5]))
    assert torch.equal(output[1], x[1] + encoding.encode([5, 6, 7]))


@pytest.mark.parametrize("name", list(ENCODING_FACTORIES))
def test_forward_per_row_positions(name):
    encoding = _build(name, 4)
    x = torch.randn(2, 3, 4)
    positions = torch.tensor([[0, 0, 1], [4, 5, 6]])  # row 0 left-padded
    output = encoding(x, positions)
    assert torch.equal(output, x + encoding.encode(positions))


@pytest.mark.parametrize("name", list(ENCODING_FACTORIES))
def test_forward_positions_plus_offset(name):
    encoding = _build(name, 4)
    x = torch.randn(1, 3, 4)
    assert torch.equal(encoding(x, [0, 1, 2], offset=2), encoding(x, [2, 3, 4]))


@pytest.mark.parametrize("name", list(ENCODING_FACTORIES))
def test_encode_accepts_lists_ints_and_tensors(name):
    encoding = _build(name, 4)
    from_list = encoding.encode([[1, 2], [3, 4]])
    from_tensor = encoding.encode(torch.tensor([[1, 2], [3, 4]], dtype=torch.int32))
    assert torch.equal(from_list, from_tensor)
    assert torch.equal(encoding.encode(3), from_list[1, 0])


@pytest.mark.parametrize("name", list(ENCODING_FACTORIES))
def test_encode_empty_positions(name):
    assert _build(name, 4).encode(torch.zeros(0, dtype=torch.long)).shape == (0, 4)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", list(ENCODING_FACTORIES))
@pytest.mark.parametrize("dim", [0, -3])
def test_bad_dim_value(name, dim):
    with pytest.raises(ValueError, match=rf"dim must be a positive int, got {dim}"):
        _build(name, dim)


@pytest.mark.parametrize("name", list(ENCODING_FACTORIES))
@pytest.mark.parametrize("dim", [4.0, "4", True])
def test_bad_dim_type(name, dim):
    with pytest.raises(TypeError, match="dim"):
        _build(name, dim)


@pytest.mark.parametrize("name", list(ENCODING_FACTORIES))
@pytest.mark.parametrize(
    "positions",
    [torch.tensor([0.0, 1.0]), torch.tensor([True]), [0, 1.5], [[1], [2.0]], 2.0, "3", None],
)
def test_encode_rejects_non_integer_positions(name, positions):
    with pytest.raises(TypeError, match="positions"):
        _build(name, 4).encode(positions)


@pytest.mark.parametrize("name", list(ENCODING_FACTORIES))
@pytest.mark.parametrize("positions", [torch.tensor([0, -1]), [-4], -2])
def test_encode_rejects_negative_positions(name, positions):
    with pytest.raises(ValueError, match=r"positions must be >= 0, got the position -\d"):
        _build(name, 4).encode(positions)


@pytest.mark.parametrize("name", list(ENCODING_FACTORIES))
@pytest.mark.parametrize("shape", [(3, 4), (1, 2, 3, 4), (2, 3, 5)])
def test_forward_rejects_wrong_shape(name, shape):
    with pytest.raises(ValueError, match=r"x must have shape \[batch, seq, 4\]"):
        _build(name, 4)(torch.zeros(shape))


@pytest.mark.parametrize("name", list(ENCODING_FACTORIES))
def test_forward_rejects_integer_x(name):
    with pytest.raises(TypeError, match="floating-point"):
        _build(name, 4)(torch.zeros(1, 2, 4, dtype=torch.long))


@pytest.mark.parametrize("name", list(ENCODING_FACTORIES))
@pytest.mark.parametrize("positions", [torch.arange(3), torch.zeros(3, 2, dtype=torch.long), [[0, 1]]])
def test_forward_rejects_mismatched_positions(name, positions):
    with pytest.raises(ValueError, match=r"positions must have shape \[2\] or \[2, 2\]"):
        _build(name, 4)(torch.zeros(2, 2, 4), positions)


@pytest.mark.parametrize("name", list(ENCODING_FACTORIES))
def test_forward_rejects_negative_offset(name):
    with pytest.raises(ValueError, match="offset must be an int >= 0, got -1"):
        _build(name, 4)(torch.zeros(1, 2, 4), offset=-1)


@pytest.mark.parametrize("name", list(ENCODING_FACTORIES))
def test_forward_rejects_offset_of_wrong_length(name):
    with pytest.raises(ValueError, match=r"offset must be an int or a tensor of shape \[2\]"):
        _build(name, 4)(torch.zeros(2, 2, 4), offset=torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("name", list(ENCODING_FACTORIES))
def test_encode_rejects_integer_dtype(name):
    with pytest.raises(TypeError, match="dtype"):
        _build(name, 4).encode([1], dtype=torch.int32)
