"""RotaryEmbedding: exact rotation, positions, offsets, packing, cache immunity, bad input.

References: a float64 complex-number RoPE (tests/rope_reference.py) and transformers'
Llama rotary embedding for the half layout.
"""

from __future__ import annotations

import math

import pytest
import torch

from rope_reference import rotate_reference
from ropekit.rope import RopeConfig, RotaryEmbedding, apply_rotary, rope_frequencies

# float32 tables and float32 inputs: a few float32 ulps of |x| ~ 4 around the reference.
FLOAT32_TOLERANCE = 2e-6


def _config(interleaved: bool = False, head_dim: int = 10, rotary_dim: int | None = None, **kwargs) -> RopeConfig:
    return RopeConfig(head_dim=head_dim, rotary_dim=rotary_dim, interleaved=interleaved, **kwargs)


def _reference(x: torch.Tensor, positions: torch.Tensor, config: RopeConfig, seq_len: int | None = None) -> torch.Tensor:
    inv_freq, scale = rope_frequencies(config, seq_len)
    return rotate_reference(x, positions, inv_freq, interleaved=config.interleaved, scale=scale)


def _max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual.to(torch.float64) - expected).abs().max().item()


LAYOUTS = [False, True]
LAYOUT_IDS = ["half", "interleaved"]


# Rotation against the float64 reference ------------------------------------------------


@pytest.mark.parametrize("interleaved", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize(
    ("head_dim", "rotary_dim", "q_heads", "k_heads"),
    [(10, 10, 3, 3), (10, 6, 4, 2), (18, 8, 5, 1), (64, 64, 8, 2)],
    ids=["full-mha", "partial-gqa", "partial-mqa", "head64-gqa"],
)
def test_forward_matches_float64_reference(
    interleaved: bool, head_dim: int, rotary_dim: int, q_heads: int, k_heads: int
) -> None:
    torch.manual_seed(0)
    config = _config(interleaved, head_dim, rotary_dim, theta=500.0)
    q = torch.randn(2, 17, q_heads, head_dim)
    k = torch.randn(2, 17, k_heads, head_dim)
    q_out, k_out = RotaryEmbedding(config)(q, k)
    positions = torch.arange(17).view(1, 17, 1)
    assert _max_error(q_out, _reference(q, positions, config)) <= FLOAT32_TOLERANCE
    assert _max_error(k_out, _reference(k, positions, config)) <= FLOAT32_TOLERANCE


@pytest.mark.parametrize("interleaved", LAYOUTS, ids=LAYOUT_IDS)
def test_seq_dim_two_equals_seq_dim_one(interleaved: bool) -> None:
    torch.manual_seed(1)
    embedding = RotaryEmbedding(_config(interleaved))
    q, k = torch.randn(2, 13, 3, 10), torch.randn(2, 13, 1, 10)
    q_ref, k_ref = embedding(q, k, offset=7)
    q_out, k_out = embedding(q.transpose(1, 2), k.transpose(1, 2), offset=7, seq_dim=2)
    assert torch.equal(q_out.transpose(1, 2), q_ref)
    assert torch.equal(k_out.transpose(1, 2), k_ref)


@pytest.mark.parametrize("interleaved", LAYOUTS, ids=LAYOUT_IDS)
def test_partial_rotary_passes_channels_bit_for_bit(interleaved: bool) -> None:
    config = _config(interleaved, head_dim=18, rotary_dim=8)
    q, k = torch.randn(2, 9, 3, 18, dtype=torch.bfloat16), torch.randn(2, 9, 1, 18, dtype=torch.bfloat16)
    q_out, k_out = RotaryEmbedding(config)(q, k, offset=1000)
    assert torch.equal(q_out[..., 8:], q[..., 8:])
    assert torch.equal(k_out[..., 8:], k[..., 8:])


def test_inputs_are_unchanged() -> None:
    q, k = torch.randn(1, 5, 2, 10), torch.randn(1, 5, 2, 10)
    q_copy, k_copy = q.clone(), k.clone()
    RotaryEmbedding(_config())(q, k)
    assert torch.equal(q, q_copy)
    assert torch.equal(k, k_copy)


def test_bfloat16_rotates_with_float32_angles() -> None:
    torch.manual_seed(2)
    config = _config(head_dim=64)
    q = torch.randn(1, 5, 2, 64).to(torch.bfloat16)
    q_out, _ = RotaryEmbedding(config, backend="reference")(q, q, offset=40000)
    expected = _reference(q, torch.arange(40000, 40005).view(1, 5, 1), config)
    # One bfloat16 rounding of the float32 result: half an ulp of values below 8.
    assert q_out.dtype == torch.bfloat16
    assert _max_error(q_out, expected) <= 2**-8 * 8 / 2 + 1e-6


def test_matches_transformers_llama() -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    hf_config = transformers.LlamaConfig(
        hidden_size=256, num_attention_heads=4, num_key_value_heads=2, rope_theta=500000.0, max_position_embeddings=4096
    )
    torch.manual_seed(3)
    q, k = torch.randn(2, 4, 11, 64), torch.randn(2, 2, 11, 64)  # [b, h, s, d]
    position_ids = torch.tensor([list(range(3, 14)), list(range(100, 111))])
    cos, sin = LlamaRotaryEmbedding(hf_config)(q, position_ids)
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos, sin)

    config = RopeConfig.from_hf(hf_config.to_dict())
    q_out, k_out = RotaryEmbedding(config)(q, k, position_ids, seq_dim=2)
    # transformers forms angles in float32, about 2e-5 off at position 110 here; ropekit
    # is within FLOAT32_TOLERANCE of float64 (checked above), so 5e-5 bounds the sum.
    assert torch.allclose(q_out, q_hf, rtol=0, atol=5e-5)
    assert torch.allclose(k_out, k_hf, rtol=0, atol=5e-5)


# Positions, offsets, left padding, packing ----------------------------------------------


@pytest.mark.parametrize("interleaved", LAYOUTS, ids=LAYOUT_IDS)
def test_int_offset_equals_explicit_positions(interleaved: bool) -> None:
    embedding = RotaryEmbedding(_config(interleaved))
    q, k = torch.randn(2, 6, 3, 10), torch.randn(2, 6, 1, 10)
    q_offset, k_offset = embedding(q, k, offset=1234)
    q_positions, k_positions = embedding(q, k, torch.arange(1234, 1240))
    assert torch.equal(q_offset, q_positions)
    assert torch.equal(k_offset, k_positions)


def test_offset_call_does_not_reuse_another_slice() -> None:
    config = _config()
    embedding = RotaryEmbedding(config)
    q = torch.randn(1, 4, 1, 10)
    embedding(q, q)  # fills the cache for positions 0..3
    q_out, _ = embedding(q, q, offset=5)
    assert _max_error(q_out, _reference(q, torch.arange(5, 9).view(1, 4, 1), config)) <= FLOAT32_TOLERANCE


@pytest.mark.parametrize("interleaved", LAYOUTS, ids=LAYOUT_IDS)
def test_tensor_offset_equals_each_row_alone(interleaved: bool) -> None:
    embedding = RotaryEmbedding(_config(interleaved))
    q, k = torch.randn(3, 5, 2, 10), torch.randn(3, 5, 1, 10)
    offsets = [0, 17, 300]
    q_out, k_out = embedding(q, k, offset=torch.tensor(offsets))
    for row, offset in enumerate(offsets):
        q_alone, k_alone = embedding(q[row : row + 1], k[row : row + 1], offset=offset)
        assert torch.equal(q_out[row : row + 1], q_alone), f"row {row}"
        assert torch.equal(k_out[row : row + 1], k_alone), f"row {row}"


@pytest.mark.parametrize("interleaved", LAYOUTS, ids=LAYOUT_IDS)
def test_left_padded_rows_equal_each_row_alone(interleaved: bool) -> None:
    torch.manual_seed(4)
    embedding = RotaryEmbedding(_config(interleaved))
    lengths = [7, 4, 1]
    seq = max(lengths)
    q, k = torch.randn(3, seq, 2, 10), torch.randn(3, seq, 1, 10)
    # Left padding: row r has seq - length pads, then tokens at positions 0 .. length - 1.
    positions = torch.stack([torch.arange(seq) - (seq - length) for length in lengths]).clamp(min=0)
    q_out, k_out = embedding(q, k, positions)
    for row, length in enumerate(lengths):
        tokens = slice(seq - length, seq)
        q_alone, k_alone = embedding(q[row : row + 1, tokens], k[row : row + 1, tokens])
        assert torch.equal(q_out[row : row + 1, tokens], q_alone), f"row {row}"
        assert torch.equal(k_out[row : row + 1, tokens], k_alone), f"row {row}"


@pytest.mark.parametrize("interleaved", LAYOUTS, ids=LAYOUT_IDS)
def test_packed_sequences_equal_each_alone(interleaved: bool) -> None:
    torch.manual_seed(5)
    embedding = RotaryEmbedding(_config(interleaved, head_dim=12, rotary_dim=8))
    lengths = [5, 1, 9]
    q, k = torch.randn(sum(lengths), 3, 12), torch.randn(sum(lengths), 1, 12)
    cu_seqlens = torch.tensor([0, 5, 6, 15], dtype=torch.int32)
    q_out, k_out = embedding(q, k, cu_seqlens=cu_seqlens)
    for start, end in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist()):
        q_alone, k_alone = embedding(q[start:end].unsqueeze(0), k[start:end].unsqueeze(0))
        assert torch.equal(q_out[start:end], q_alone[0]), f"sequence {start}:{end}"
        assert torch.equal(k_out[start:end], k_alone[0]), f"sequence {start}:{end}"


def test_identical_packed_documents_are_bit_identical() -> None:
    embedding = RotaryEmbedding(_config(True))
    document = torch.randn(7, 2, 10)
    packed = torch.cat((document, document, document))
    q_out, k_out = embedding(packed, packed, cu_seqlens=torch.tensor([0, 7, 14, 21]))
    assert torch.equal(q_out[0:7], q_out[7:14])
    assert torch.equal(q_out[0:7], q_out[14:21])
    assert torch.equal(k_out[7:14], k_out[14:21])


def test_packed_offset_per_sequence() -> None:
    config = _config()
    embedding = RotaryEmbedding(config)
    q = torch.randn(6, 1, 10)
    q_out, _ = embedding(q, q, cu_seqlens=torch.tensor([0, 2, 6]), offset=torch.tensor([10, 100]))
    positions = torch.tensor([10, 11, 100, 101, 102, 103]).view(6, 1)
    assert _max_error(q_out, _reference(q, positions, config)) <= FLOAT32_TOLERANCE


@pytest.mark.parametrize("interleaved", LAYOUTS, ids=LAYOUT_IDS)
def test_packed_int_offset_shifts_every_sequence(interleaved: bool) -> None:
    config = _config(interleaved, head_dim=12, rotary_dim=8)
    embedding = RotaryEmbedding(config)
    q, k = torch.randn(7, 3, 12), torch.randn(7, 1, 12)
    q_out, k_out = embedding(q, k, cu_seqlens=torch.tensor([0, 3, 7]), offset=5)
    positions = torch.tensor([5, 6, 7, 5, 6, 7, 8]).view(7, 1)
    assert _max_error(q_out, _reference(q, positions, config)) <= FLOAT32_TOLERANCE
    assert _max_error(k_out, _reference(k, positions, config)) <= FLOAT32_TOLERANCE


def test_negative_offset_within_positions_is_allowed() -> None:
    config = _config()
    q = torch.randn(1, 3, 1, 10)
    q_out, _ = RotaryEmbedding(config)(q, q, torch.tensor([4, 5, 6]), offset=-4)
    positions = torch.tensor([0, 1, 2]).view(1, 3, 1)
    assert _max_error(q_out, _reference(q, positions, config)) <= FLOAT32_TOLERANCE


def test_negative_positions_rotate_backwards() -> None:
    config = _config()
    embedding = RotaryEmbedding(config)
    q = torch.randn(1, 4, 1, 10)
    q_out, _ = embedding(q, q, torch.tensor([-3, -1, 0, 2]))
    positions = torch.tensor([-3, -1, 0, 2]).view(1, 4, 1)
    assert _max_error(q_out, _reference(q, positions, config)) <= FLOAT32_TOLERANCE


# Cache exactness ---------------------------------------------------------------------


def _tables(embedding: RotaryEmbedding, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return embedding.cos_sin(positions)


POSITIONS = torch.tensor([0, 1, 2, 255, 256, 1000, 65535])


def test_cos_sin_shape_and_dtype() -> None:
    cos, sin = RotaryEmbedding(_config(head_dim=10, rotary_dim=6)).cos_sin(torch.zeros(2, 3, dtype=torch.long), torch.bfloat16)
    assert cos.shape == (2, 3, 6)
    assert sin.dtype == torch.bfloat16


def test_cache_immune_to_module_dtype_cast() -> None:
    embedding = RotaryEmbedding(_config(head_dim=64))
    before = _tables(embedding, POSITIONS)
    embedding.to(torch.bfloat16)
    after = _tables(embedding, POSITIONS)
    assert torch.equal(before[0], after[0])
    assert torch.equal(before[1], after[1])


def test_cache_immune_to_autocast() -> None:
    embedding = RotaryEmbedding(_config(head_dim=64))
    before = _tables(embedding, POSITIONS)
    fresh = RotaryEmbedding(_config(head_dim=64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = _tables(fresh, POSITIONS)
    assert inside[0].dtype == torch.float32
    assert torch.equal(before[0], inside[0])
    assert torch.equal(before[1], inside[1])


def test_forward_under_autocast_equals_plain() -> None:
    q, k = torch.randn(2, 7, 3, 64), torch.randn(2, 7, 1, 64)
    expected_q, expected_k = RotaryEmbedding(_config(head_dim=64))(q, k, offset=999)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual_q, actual_k = RotaryEmbedding(_config(head_dim=64))(q, k, offset=999)
    assert torch.equal(actual_q, expected_q)
    assert torch.equal(actual_k, expected_k)


def test_cache_rebuild_keeps_earlier_values() -> None:
    embedding = RotaryEmbedding(_config(head_dim=64))
    small = _tables(embedding, torch.arange(10))
    embedding.cos_sin(torch.tensor([100000]))  # grows the table
    again = _tables(embedding, torch.arange(10))
    assert torch.equal(small[0], again[0])
    assert torch.equal(small[1], again[1])


def test_cache_equals_fresh_module() -> None:
    grown = RotaryEmbedding(_config(head_dim=64))
    grown.cos_sin(torch.arange(5000))
    fresh = RotaryEmbedding(_config(head_dim=64))
    assert torch.equal(_tables(grown, POSITIONS)[0], _tables(fresh, POSITIONS)[0])
    assert torch.equal(_tables(grown, POSITIONS)[1], _tables(fresh, POSITIONS)[1])


def test_beyond_cache_limit_equals_cached_formula() -> None:
    embedding = RotaryEmbedding(_config(head_dim=64))
    embedding.max_cached_positions = 512
    positions = torch.tensor([3, 511, 512, 4000])
    cos, sin = embedding.cos_sin(positions)
    reference = RotaryEmbedding(_config(head_dim=64))
    expected_cos, expected_sin = reference.cos_sin(positions)
    assert torch.allclose(cos, expected_cos, rtol=0, atol=1e-7)
    assert torch.allclose(sin, expected_sin, rtol=0, atol=1e-7)


def test_meta_construction_then_to_empty() -> None:
    with torch.device("meta"):
        embedding = RotaryEmbedding(_config(head_dim=64))
    embedding.to_empty(device="cpu")
    expected = _tables(RotaryEmbedding(_config(head_dim=64)), POSITIONS)
    actual = _tables(embedding, POSITIONS)
    assert torch.equal(actual[0], expected[0])
    assert torch.equal(actual[1], expected[1])


def test_module_has_no_buffers_to_corrupt() -> None:
    embedding = RotaryEmbedding(_config(head_dim=64))
    embedding.cos_sin(POSITIONS)
    assert list(embedding.buffers()) == []
    assert embedding.state_dict() == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to test a device move")
def test_device_move_gives_same_tables() -> None:
    embedding = RotaryEmbedding(_config(head_dim=64))
    before = _tables(embedding, POSITIONS)
    embedding.to("cuda")
    after = _tables(embedding, POSITIONS.cuda())
    assert torch.allclose(after[0].cpu(), before[0], rtol=0, atol=1e-7)


def test_angle_error_at_one_million() -> None:
    # The tables carry float64 angles rounded once: the angle recovered from (cos, sin)
    # is within 1e-6 rad of position * inv_freq computed in float64 (mod 2 pi).
    config = _config(head_dim=128, theta=500000.0)
    position = 1_000_000
    cos, sin = RotaryEmbedding(config).cos_sin(torch.tensor([position]))
    inv_freq, _ = rope_frequencies(config)
    recovered = torch.atan2(sin[0, :64].double(), cos[0, :64].double())
    exact = (position * inv_freq).remainder(2 * math.pi)
    difference = (recovered - exact).remainder(2 * math.pi)
    error = torch.minimum(difference, 2 * math.pi - difference).max().item()
    assert error <= 1e-6


@pytest.mark.parametrize("interleaved", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("offset", [2**24 + 3, 10_000_000], ids=["2^24+3", "1e7"])
def test_extreme_positions_match_reference(interleaved: bool, offset: int) -> None:
    torch.manual_seed(8)
    config = _config(interleaved, head_dim=64, theta=500000.0)
    q = torch.randn(1, 3, 2, 64)
    q_out, _ = RotaryEmbedding(config)(q, q, offset=offset)
    expected = _reference(q, torch.arange(offset, offset + 3).view(1, 3, 1), config)
    assert _max_error(q_out, expected) <= FLOAT32_TOLERANCE


@pytest.mark.parametrize("interleaved", LAYOUTS, ids=LAYOUT_IDS)
def test_extreme_negative_positions_match_reference(interleaved: bool) -> None:
    # An offset may not push a position below 0, but explicit negative positions are valid.
    torch.manual_seed(8)
    config = _config(interleaved, head_dim=64, theta=500000.0)
    q = torch.randn(1, 3, 2, 64)
    positions = torch.arange(-(2**25), -(2**25) + 3)
    q_out, _ = RotaryEmbedding(config)(q, q, positions)
    expected = _reference(q, positions.view(1, 3, 1), config)
    assert _max_error(q_out, expected) <= FLOAT32_TOLERANCE


# Scaling types inside the module ------------------------------------------------------


def test_dynamic_returns_to_original_after_long_call() -> None:
    config = _config(head_dim=16, max_position_embeddings=64, scaling={"rope_type": "dynamic", "factor": 2.0})
    plain = RotaryEmbedding(_config(head_dim=16))
    embedding = RotaryEmbedding(config)
    before = embedding.cos_sin(torch.arange(64))
    long_cos, _ = embedding.cos_sin(torch.arange(200))
    after = embedding.cos_sin(torch.arange(64))
    assert torch.equal(before[0], after[0])
    assert torch.equal(after[0], plain.cos_sin(torch.arange(64))[0])
    assert not torch.equal(long_cos[:64], before[0])


def test_dynamic_long_call_matches_reference() -> None:
    config = _config(head_dim=16, max_position_embeddings=64, scaling={"rope_type": "dynamic", "factor": 2.0})
    q = torch.randn(1, 100, 1, 16)
    q_out, _ = RotaryEmbedding(config)(q, q)
    expected = _reference(q, torch.arange(100).view(1, 100, 1), config, seq_len=100)
    assert _max_error(q_out, expected) <= FLOAT32_TOLERANCE


@pytest.mark.parametrize("length", [16, 17, 40])
def test_longrope_picks_factors_by_length(length: int) -> None:
    config = _config(
        head_dim=8,
        scaling={
            "rope_type": "longrope",
            "short_factor": [1.0, 1.5, 2.0, 3.0],
            "long_factor": [1.0, 4.0, 8.0, 16.0],
            "original_max_position_embeddings": 16,
            "factor": 4.0,
        },
    )
    q = torch.randn(1, length, 1, 8)
    q_out, _ = RotaryEmbedding(config)(q, q)
    expected = _reference(q, torch.arange(length).view(1, length, 1), config, seq_len=length)
    assert _max_error(q_out, expected) <= FLOAT32_TOLERANCE * 2


def test_yarn_attention_scale_multiplies_tables() -> None:
    config = _config(head_dim=8, scaling={"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 32})
    cos, sin = RotaryEmbedding(config).cos_sin(torch.arange(50))
    _, scale = rope_frequencies(config)
    norms = (cos.double() ** 2 + sin.double() ** 2).sqrt()
    assert torch.allclose(norms, torch.full_like(norms, scale), rtol=1e-6, atol=0)


# Bad input -----------------------------------------------------------------------------


@pytest.fixture
def embedding() -> RotaryEmbedding:
    return RotaryEmbedding(_config())


def test_rejects_unknown_backend() -> None:
    with pytest.raises(ValueError, match="'fastest'"):
        RotaryEmbedding(_config(), backend="fastest")


def test_rejects_wrong_head_dim(embedding: RotaryEmbedding) -> None:
    q = torch.randn(1, 3, 2, 12)
    with pytest.raises(ValueError, match="head_dim = 10"):
        embedding(q, q)


def test_rejects_float_positions(embedding: RotaryEmbedding) -> None:
    q = torch.randn(1, 3, 2, 10)
    with pytest.raises(TypeError, match="positions must be an integer tensor"):
        embedding(q, q, torch.arange(3.0))


def test_rejects_positions_shape(embedding: RotaryEmbedding) -> None:
    q = torch.randn(2, 3, 2, 10)
    with pytest.raises(ValueError, match=r"positions must have shape \[3\] or \[2, 3\]"):
        embedding(q, q, torch.arange(4))


def test_rejects_offset_shape(embedding: RotaryEmbedding) -> None:
    q = torch.randn(2, 3, 2, 10)
    with pytest.raises(ValueError, match="offset"):
        embedding(q, q, offset=torch.tensor([1, 2, 3]))


def test_rejects_negative_int_offset(embedding: RotaryEmbedding) -> None:
    q = torch.randn(2, 3, 2, 10)
    with pytest.raises(ValueError, match=r"offset -1 .*below 0"):
        embedding(q, q, offset=-1)


def test_rejects_offset_below_explicit_positions(embedding: RotaryEmbedding) -> None:
    q = torch.randn(1, 3, 2, 10)
    with pytest.raises(ValueError, match=r"offset -3 .*lowest is -1"):
        embedding(q, q, torch.tensor([2, 3, 4]), offset=-3)


def test_rejects_negative_tensor_offset(embedding: RotaryEmbedding) -> None:
    q = torch.randn(2, 3, 2, 10)
    with pytest.raises(ValueError, match=r"offset \[0, -2\]"):
        embedding(q, q, offset=torch.tensor([0, -2]))


def test_rejects_negative_packed_offset(embedding: RotaryEmbedding) -> None:
    q = torch.randn(5, 2, 10)
    with pytest.raises(ValueError, match=r"offset \[3, -1\]"):
        embedding(q, q, cu_seqlens=torch.tensor([0, 2, 5]), offset=torch.tensor([3, -1]))


def test_rejects_float_offset(embedding: RotaryEmbedding) -> None:
    q = torch.randn(2, 3, 2, 10)
    with pytest.raises(TypeError, match="offset"):
        embedding(q, q, offset=1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cu_seqlens", "message"),
    [
        ([0, 4, 2, 6], "non-decreasing"),
        ([0, 2, 5], "end at the token count 6"),
        ([1, 2, 6], "start at 0"),
    ],
)
def test_rejects_bad_cu_seqlens(embedding: RotaryEmbedding, cu_seqlens: list, message: str) -> None:
    q = torch.randn(6, 2, 10)
    with pytest.raises(ValueError, match=message):
        embedding(q, q, cu_seqlens=torch.tensor(cu_seqlens))


def test_rejects_float_cu_seqlens(embedding: RotaryEmbedding) -> None:
    q = torch.randn(6, 2, 10)
    with pytest.raises(TypeError, match="cu_seqlens"):
        embedding(q, q, cu_seqlens=torch.tensor([0.0, 6.0]))


def test_rejects_positions_with_cu_seqlens(embedding: RotaryEmbedding) -> None:
    q = torch.randn(6, 2, 10)
    with pytest.raises(ValueError, match="either positions or cu_seqlens"):
        embedding(q, q, torch.arange(6), cu_seqlens=torch.tensor([0, 6]))


def test_rejects_bad_seq_dim(embedding: RotaryEmbedding) -> None:
    q = torch.randn(1, 3, 2, 10)
    with pytest.raises(ValueError, match="seq_dim"):
        embedding(q, q, seq_dim=3)


def test_rejects_mismatched_q_k(embedding: RotaryEmbedding) -> None:
    with pytest.raises(ValueError, match="share batch and sequence"):
        embedding(torch.randn(1, 3, 2, 10), torch.randn(1, 4, 2, 10))


def test_apply_rotary_rejects_tables_that_do_not_broadcast() -> None:
    x = torch.randn(2, 5, 3, 10)
    cos = torch.ones(4, 1, 10)
    with pytest.raises(ValueError, match="do not broadcast"):
        apply_rotary(x, cos, cos)


def test_apply_rotary_rejects_odd_table_width() -> None:
    x = torch.randn(2, 5, 3, 10)
    cos = torch.ones(5, 1, 7)
    with pytest.raises(ValueError, match="must be even"):
        apply_rotary(x, cos, cos)


def test_apply_rotary_rejects_tables_wider_than_x() -> None:
    x = torch.randn(2, 5, 3, 10)
    cos = torch.ones(5, 1, 12)
    with pytest.raises(ValueError, match="only 10"):
        apply_rotary(x, cos, cos)
