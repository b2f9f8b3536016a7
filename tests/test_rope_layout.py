"""permute_qk_weights, rerotate, multi-axis positions (M-RoPE, axial) and xPos."""

from __future__ import annotations

import pytest
import torch

from rope_reference import rotate_by_angles, rotate_reference
from ropekit.rope import (
    RopeConfig,
    RotaryEmbedding,
    default_inv_freq,
    interleaved_to_half_order,
    permute_qk_weights,
    rerotate,
    rope_frequencies,
)

LAYOUTS = [False, True]
LAYOUT_IDS = ["half", "interleaved"]


# permute_qk_weights ----------------------------------------------------------------------


@pytest.mark.parametrize(("head_dim", "rotary_dim"), [(8, 8), (12, 6)], ids=["full", "partial"])
def test_half_rope_on_permuted_weights_equals_interleaved_rope(head_dim: int, rotary_dim: int) -> None:
    torch.manual_seed(0)
    heads, kv_heads, hidden, seq = 3, 1, 20, 9
    w_q = torch.randn(heads * head_dim, hidden, dtype=torch.float64)
    w_k = torch.randn(kv_heads * head_dim, hidden, dtype=torch.float64)
    x = torch.randn(1, seq, hidden, dtype=torch.float64)

    def scores(w_q, w_k, interleaved):
        config = RopeConfig(head_dim=head_dim, rotary_dim=rotary_dim, interleaved=interleaved)
        q = (x @ w_q.T).view(1, seq, heads, head_dim)
        k = (x @ w_k.T).view(1, seq, kv_heads, head_dim)
        q, k = RotaryEmbedding(config)(q, k)
        return torch.einsum("bshd,btd->bhst", q, k[:, :, 0])

    interleaved_scores = scores(w_q, w_k, True)
    half_w_q = permute_qk_weights(w_q, heads, head_dim, "half", rotary_dim=rotary_dim)
    half_w_k = permute_qk_weights(w_k, kv_heads, head_dim, "half", rotary_dim=rotary_dim)
    half_scores = scores(half_w_q, half_w_k, False)
    assert torch.allclose(half_scores, interleaved_scores, rtol=0, atol=1e-12)


def test_permuted_rotated_vectors_are_reordered_copies() -> None:
    torch.manual_seed(1)
    head_dim, heads = 8, 2
    weight = torch.randn(heads * head_dim, 5, dtype=torch.float64)
    x = torch.randn(1, 4, 5, dtype=torch.float64)
    q_interleaved = (x @ weight.T).view(1, 4, heads, head_dim)
    q_half = (x @ permute_qk_weights(weight, heads, head_dim, "half").T).view(1, 4, heads, head_dim)
    out_interleaved, _ = RotaryEmbedding(RopeConfig(head_dim=head_dim, interleaved=True))(q_interleaved, q_interleaved)
    out_half, _ = RotaryEmbedding(RopeConfig(head_dim=head_dim))(q_half, q_half)
    order = interleaved_to_half_order(head_dim)
    assert torch.allclose(out_half, out_interleaved[..., order], rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(24, 7), (24,)], ids=["weight", "bias"])
def test_permute_round_trip(shape: tuple) -> None:
    weight = torch.randn(*shape)
    there = permute_qk_weights(weight, 2, 12, "half", rotary_dim=8)
    back = permute_qk_weights(there, 2, 12, "interleaved", rotary_dim=8)
    assert torch.equal(back, weight)
    assert not torch.equal(there, weight)


def test_permute_matches_known_order() -> None:
    # One head of 6 channels: interleaved pairs (0,1) (2,3) (4,5) -> half slots 0 1 2 | 3 4 5.
    weight = torch.arange(6.0)
    assert permute_qk_weights(weight, 1, 6, "half").tolist() == [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((torch.zeros(10, 3), 2, 4, "half"), r"\[8, \.\.\.\]"),
        ((torch.zeros(8, 3), 2, 4, "sideways"), "'half' or 'interleaved'"),
        ((torch.zeros(8, 3), 0, 4, "half"), "num_heads"),
    ],
    ids=["rows", "to", "heads"],
)
def test_permute_rejects_bad_input(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        permute_qk_weights(*args)


# rerotate -------------------------------------------------------------------------------


@pytest.mark.parametrize("interleaved", LAYOUTS, ids=LAYOUT_IDS)
def test_rerotate_moves_keys_by_delta(interleaved: bool) -> None:
    torch.manual_seed(2)
    config = RopeConfig(head_dim=12, rotary_dim=8, interleaved=interleaved)
    embedding = RotaryEmbedding(config)
    k = torch.randn(2, 5, 3, 12, dtype=torch.float64)
    _, rotated = embedding(k, k, offset=100)
    _, expected = embedding(k, k, offset=37)
    moved = rerotate(rotated, -63, config)
    assert torch.allclose(moved, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("interleaved", LAYOUTS, ids=LAYOUT_IDS)
def test_rerotate_inverse_restores_input(interleaved: bool) -> None:
    config = RopeConfig(head_dim=10, interleaved=interleaved)
    x = torch.randn(3, 4, 2, 10, dtype=torch.float64)
    delta = torch.tensor([5, -9, 1000, 0]).view(1, 4, 1)
    restored = rerotate(rerotate(x, delta, config), -delta, config)
    assert torch.allclose(restored, x, rtol=0, atol=1e-12)


def test_rerotate_per_token_delta_matches_reference() -> None:
    config = RopeConfig(head_dim=8, interleaved=True)
    x = torch.randn(1, 3, 2, 8, dtype=torch.float64)
    delta = torch.tensor([1, 20, -7]).view(1, 3, 1)
    expected = rotate_reference(x, delta, rope_frequencies(config)[0], interleaved=True)
    assert torch.allclose(rerotate(x, delta, config), expected, rtol=0, atol=1e-12)


def test_rerotate_changes_scaling_without_prefill() -> None:
    torch.manual_seed(3)
    old = RopeConfig(head_dim=16, max_position_embeddings=64)
    new = RopeConfig(
        head_dim=16, max_position_embeddings=256,
        scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    )
    k = torch.randn(1, 10, 2, 16, dtype=torch.float64)
    _, old_keys = RotaryEmbedding(old)(k, k, offset=30)
    _, expected = RotaryEmbedding(new)(k, k, offset=30)
    positions = torch.arange(30, 40).view(1, 10, 1)
    converted = rerotate(old_keys, 0, old, positions=positions, to_config=new)
    assert torch.allclose(converted, expected, rtol=0, atol=1e-12)


def test_rerotate_uses_long_factors_past_original_length() -> None:
    config = RopeConfig(
        head_dim=8,
        scaling={
            "rope_type": "longrope", "short_factor": [1.0, 1.0, 2.0, 2.0], "long_factor": [1.0, 4.0, 16.0, 64.0],
            "original_max_position_embeddings": 16, "factor": 4.0,
        },
    )
    k = torch.randn(1, 40, 1, 8, dtype=torch.float64)
    _, rotated = RotaryEmbedding(config)(k, k)  # 40 > 16 positions: long factors
    _, expected = RotaryEmbedding(config)(k, k, offset=3)
    moved = rerotate(rotated, 3, config, seq_len=43)
    assert torch.allclose(moved, expected, rtol=0, atol=1e-12)


def test_rerotate_rejects_float_delta() -> None:
    with pytest.raises(TypeError, match="delta"):
        rerotate(torch.randn(2, 8), 1.5, RopeConfig(head_dim=8))  # type: ignore[arg-type]


def test_rerotate_rejects_wrong_head_dim() -> None:
    with pytest.raises(ValueError, match="head_dim = 8"):
        rerotate(torch.randn(2, 6), 1, RopeConfig(head_dim=8))


def test_rerotate_to_config_needs_positions() -> None:
    config = RopeConfig(head_dim=8)
    with pytest.raises(ValueError, match="positions"):
        rerotate(torch.randn(2, 8), 1, config, to_config=config)


def test_rerotate_rejects_other_layout() -> None:
    with pytest.raises(ValueError, match="interleaved"):
        rerotate(
            torch.randn(2, 8), 1, RopeConfig(head_dim=8), positions=torch.tensor(0),
            to_config=RopeConfig(head_dim=8, interleaved=True),
        )


# Multi-axis positions --------------------------------------------------------------------


def test_mrope_matches_transformers_qwen2_vl() -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding, apply_rotary_pos_emb

    text_config = transformers.Qwen2VLTextConfig(
        hidden_size=128 * 4, num_attention_heads=4, rope_theta=1000000.0,
        rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0},
    )
    hf_rotary = Qwen2VLRotaryEmbedding(text_config)
    torch.manual_seed(4)
    seq = 12
    # Temporal, height and width positions of a 2x3 image grid after 6 text tokens.
    temporal = torch.tensor([0, 1, 2, 3, 4, 5, 6, 6, 6, 6, 6, 6])
    height = torch.tensor([0, 1, 2, 3, 4, 5, 6, 6, 6, 7, 7, 7])
    width = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 6, 7, 8])
    positions = torch.stack((temporal, height, width)).unsqueeze(1)  # [3, b=1, s]
    q, k = torch.randn(1, 4, seq, 128), torch.randn(1, 2, seq, 128)
    cos, sin = hf_rotary(q, positions)
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos, sin)

    config = RopeConfig.from_hf(text_config.to_dict())
    assert config.mrope_section == (16, 24, 24)
    q_out, k_out = RotaryEmbedding(config)(q, k, positions, seq_dim=2)
    assert torch.allclose(q_out, q_hf, rtol=0, atol=1e-5)
    assert torch.allclose(k_out, k_hf, rtol=0, atol=1e-5)


def test_interleaved_mrope_matches_transformers_qwen3_vl() -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding, apply_rotary_pos_emb

    parameters = {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True, "rope_theta": 5e6}
    text_config = transformers.Qwen3VLTextConfig(
        hidden_size=128 * 4, num_attention_heads=4, head_dim=128, rope_parameters=parameters
    )
    hf_rotary = Qwen3VLTextRotaryEmbedding(text_config)
    torch.manual_seed(7)
    temporal = torch.tensor([0, 1, 2, 3, 3, 3, 3, 3, 3, 9])
    height = torch.tensor([0, 1, 2, 3, 3, 3, 4, 4, 4, 9])
    width = torch.tensor([0, 1, 2, 3, 4, 5, 3, 4, 5, 9])
    positions = torch.stack((temporal, height, width)).unsqueeze(1)  # [3, b=1, s]
    q, k = torch.randn(1, 4, 10, 128), torch.randn(1, 2, 10, 128)
    cos, sin = hf_rotary(q, positions)
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos, sin)

    config = RopeConfig.from_hf(text_config.to_dict())
    assert config.mrope_interleaved is True
    q_out, k_out = RotaryEmbedding(config)(q, k, positions, seq_dim=2)
    assert torch.allclose(q_out, q_hf, rtol=0, atol=1e-5)
    assert torch.allclose(k_out, k_hf, rtol=0, atol=1e-5)


def test_interleaved_mrope_pair_axes() -> None:
    config = RopeConfig(head_dim=24, mrope_section=(4, 4, 4), mrope_interleaved=True)
    assert config.pair_axes() == (0, 1, 2) * 4


def test_interleaved_mrope_rejects_unfit_sections() -> None:
    with pytest.raises(ValueError, match="interleaved assignment"):
        RopeConfig(head_dim=24, mrope_section=(2, 6, 4), mrope_interleaved=True)


@pytest.mark.parametrize("interleaved", LAYOUTS, ids=LAYOUT_IDS)
def test_mrope_equal_axes_is_plain_rope(interleaved: bool) -> None:
    plain = RopeConfig(head_dim=16, interleaved=interleaved)
    sections = RopeConfig(head_dim=16, interleaved=interleaved, mrope_section=(2, 3, 3))
    positions = torch.arange(7)
    q = torch.randn(1, 7, 2, 16)
    expected, _ = RotaryEmbedding(plain)(q, q, positions)
    actual, _ = RotaryEmbedding(sections)(q, q, positions.expand(3, 7))
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("interleaved", LAYOUTS, ids=LAYOUT_IDS)
def test_axial_2d_matches_reference(interleaved: bool) -> None:
    torch.manual_seed(5)
    config = RopeConfig(head_dim=20, rotary_dim=16, theta=100.0, axial_dims=(8, 8), interleaved=interleaved)
    rows, cols = torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij")
    positions = torch.stack((rows.flatten(), cols.flatten()))  # [2, 12]
    x = torch.randn(1, 12, 2, 20, dtype=torch.float64)
    out, _ = RotaryEmbedding(config)(x, x, positions)
    inv_freq = default_inv_freq(8, 100.0)
    angles = torch.cat((rows.flatten()[:, None] * inv_freq, cols.flatten()[:, None] * inv_freq), dim=-1)
    expected = rotate_by_angles(x, angles.view(1, 12, 1, 8), interleaved=interleaved)
    assert torch.allclose(out, expected, rtol=0, atol=1e-12)


def test_axial_3d_video_shapes() -> None:
    config = RopeConfig(head_dim=24, axial_dims=(8, 8, 8))
    positions = torch.zeros(3, 2, 5, dtype=torch.long)  # [axes, batch, seq]
    cos, sin = RotaryEmbedding(config).cos_sin(positions)
    assert cos.shape == (2, 5, 24)
    assert sin.shape == (2, 5, 24)


def test_multi_axis_rejects_one_axis_positions() -> None:
    embedding = RotaryEmbedding(RopeConfig(head_dim=16, mrope_section=(2, 3, 3)))
    q = torch.randn(1, 7, 2, 16)
    with pytest.raises(ValueError, match=r"\[3, 7\]"):
        embedding(q, q, torch.arange(7))


# xPos ----------------------------------------------------------------------------------


@pytest.mark.parametrize("interleaved", LAYOUTS, ids=LAYOUT_IDS)
def test_xpos_matches_reference(interleaved: bool) -> None:
    torch.manual_seed(6)
    config = RopeConfig(head_dim=10, rotary_dim=8, interleaved=interleaved, xpos_scale_base=64.0)
    q = torch.randn(1, 6, 2, 10, dtype=torch.float64)
    k = torch.randn(1, 6, 1, 10, dtype=torch.float64)
    q_out, k_out = RotaryEmbedding(config)(q, k, offset=3)
    positions = torch.arange(3, 9, dtype=torch.float64).view(1, 6, 1, 1)
    zeta = (torch.arange(0, 8, 2, dtype=torch.float64) / 8 + 0.4) / 1.4
    angles = positions * default_inv_freq(8, 10000.0)
    expected_q = rotate_by_angles(q, angles, interleaved=interleaved, scale=zeta ** (positions / 64.0))
    expected_k = rotate_by_angles(k, angles, interleaved=interleaved, scale=zeta ** (-positions / 64.0))
    assert torch.allclose(q_out, expected_q, rtol=0, atol=1e-12)
    assert torch.allclose(k_out, expected_k, rtol=0, atol=1e-12)


def test_xpos_score_depends_on_distance_only() -> None:
    config = RopeConfig(head_dim=8, xpos_scale_base=32.0)
    embedding = RotaryEmbedding(config)
    q = torch.randn(1, 1, 1, 8, dtype=torch.float64)
    k = torch.randn(1, 1, 1, 8, dtype=torch.float64)
    scores = []
    for shift in (0, 17, 90):
        q_out, _ = embedding(q, q, torch.tensor([shift + 5]))
        _, k_out = embedding(k, k, torch.tensor([shift + 2]))
        scores.append((q_out * k_out).sum().item())
    assert scores[0] == pytest.approx(scores[1], rel=1e-12)
    assert scores[0] == pytest.approx(scores[2], rel=1e-12)
