"""Laws of RoPE (hypothesis), float64 gradcheck, and torch.compile without graph breaks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ropekit.rope import RopeConfig, RotaryEmbedding, interleaved_to_half_order, rerotate, rope_frequencies

PROPERTY_SETTINGS = settings(max_examples=30, deadline=None)


@st.composite
def configs(draw) -> RopeConfig:
    pairs = draw(st.integers(1, 12))
    extra = draw(st.integers(0, 5))
    scaling = draw(
        st.sampled_from(
            [
                None,
                {"rope_type": "linear", "factor": 3.0},
                {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64},
                {"rope_type": "longrope", "short_factor": [1.5] * pairs, "long_factor": [4.0] * pairs,
                 "original_max_position_embeddings": 64, "factor": 16.0},
            ]
        )
    )
    return RopeConfig(
        head_dim=2 * pairs + extra,
        rotary_dim=2 * pairs,
        theta=draw(st.sampled_from([100.0, 10000.0, 1e6])),
        interleaved=draw(st.booleans()),
        scaling=scaling,
    )


positions_strategy = st.integers(-5000, 1_000_000)


def _rotate(config: RopeConfig, x: torch.Tensor, position: int) -> torch.Tensor:
    """Rotate x [1, 1, h, d] (float64) at one position."""
    out, _ = RotaryEmbedding(config)(x, x, torch.tensor([position]))
    return out


@PROPERTY_SETTINGS
@given(config=configs(), position=positions_strategy, seed=st.integers(0, 2**16))
def test_rotation_scales_pair_norms_by_attention_factor(config: RopeConfig, position: int, seed: int) -> None:
    x = torch.randn(1, 1, 2, config.head_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    out = _rotate(config, x, position)
    _, scale = rope_frequencies(config)
    rotary_dim = config.rotary_dim
    order = interleaved_to_half_order(config.head_dim, rotary_dim) if config.interleaved else torch.arange(config.head_dim)
    x_half, out_half = x[..., order], out[..., order]
    pair_in = x_half[..., : rotary_dim // 2] ** 2 + x_half[..., rotary_dim // 2 : rotary_dim] ** 2
    pair_out = out_half[..., : rotary_dim // 2] ** 2 + out_half[..., rotary_dim // 2 : rotary_dim] ** 2
    assert torch.allclose(pair_out, pair_in * scale**2, rtol=1e-10, atol=1e-12)
    assert torch.equal(out[..., rotary_dim:], x[..., rotary_dim:])


@PROPERTY_SETTINGS
@given(
    config=configs(),
    m=st.integers(0, 100_000),
    n=st.integers(0, 100_000),
    shift=st.integers(-50_000, 50_000),
    seed=st.integers(0, 2**16),
)
def test_score_depends_only_on_relative_position(config: RopeConfig, m: int, n: int, shift: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 1, 1, config.head_dim, dtype=torch.float64, generator=generator)
    k = torch.randn(1, 1, 1, config.head_dim, dtype=torch.float64, generator=generator)
    # Positions stay within the short-factor regime of longrope so one frequency set applies.
    if config.rope_type == "longrope":
        m, n, shift = m % 60, n % 60, 0
    score = (_rotate(config, q, m) * _rotate(config, k, n)).sum()
    shifted = (_rotate(config, q, m + shift) * _rotate(config, k, n + shift)).sum()
    assert torch.allclose(shifted, score, rtol=1e-8, atol=1e-8)


@PROPERTY_SETTINGS
@given(config=configs(), delta=positions_strategy, seed=st.integers(0, 2**16))
def test_rotation_by_minus_theta_inverts(config: RopeConfig, delta: int, seed: int) -> None:
    x = torch.randn(3, config.head_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    assert torch.allclose(rerotate(rerotate(x, delta, config), -delta, config), x, rtol=0, atol=1e-10)


@PROPERTY_SETTINGS
@given(config=configs(), position=positions_strategy, seed=st.integers(0, 2**16))
def test_layouts_agree_up_to_permutation(config: RopeConfig, position: int, seed: int) -> None:
    x = torch.randn(1, 1, 2, config.head_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    interleaved = RopeConfig(**{**_fields(config), "interleaved": True})
    half = RopeConfig(**{**_fields(config), "interleaved": False})
    order = interleaved_to_half_order(config.head_dim, config.rotary_dim)
    out_interleaved = _rotate(interleaved, x, position)
    out_half = _rotate(half, x[..., order], position)
    assert torch.allclose(out_half, out_interleaved[..., order], rtol=0, atol=1e-12)


def _fields(config: RopeConfig) -> dict:
    return {
        "head_dim": config.head_dim,
        "rotary_dim": config.rotary_dim,
        "theta": config.theta,
        "scaling": None if config.scaling is None else dict(config.scaling),
        "max_position_embeddings": config.max_position_embeddings,
    }


# gradcheck ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("interleaved", [False, True], ids=["half", "interleaved"])
@pytest.mark.parametrize("case", ["full", "partial-offsets", "packed"])
def test_gradcheck_float64(backend: str, interleaved: bool, case: str) -> None:
    generator = torch.Generator().manual_seed(7)
    if case == "full":
        config = RopeConfig(head_dim=6, interleaved=interleaved)
        shape_q, shape_k, kwargs = (2, 3, 2, 6), (2, 3, 1, 6), {}
    elif case == "partial-offsets":
        config = RopeConfig(head_dim=8, rotary_dim=4, interleaved=interleaved)
        shape_q, shape_k, kwargs = (2, 3, 2, 8), (2, 3, 1, 8), {"offset": torch.tensor([5, 1000])}
    else:
        config = RopeConfig(head_dim=6, interleaved=interleaved)
        shape_q, shape_k, kwargs = (5, 2, 6), (5, 1, 6), {"cu_seqlens": torch.tensor([0, 2, 5])}
    embedding = RotaryEmbedding(config, backend=backend)
    q = torch.randn(*shape_q, dtype=torch.float64, generator=generator, requires_grad=True)
    k = torch.randn(*shape_k, dtype=torch.float64, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k: embedding(q, k, **kwargs), (q, k))


# torch.compile ---------------------------------------------------------------------------

COMPILE_SCALINGS = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 2.0},
    "ntk": {"rope_type": "ntk", "factor": 2.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    "deepseek_yarn": {"rope_type": "deepseek_yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    "llama3": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    },
    "longrope": {
        "rope_type": "longrope", "short_factor": [1.0, 1.2, 1.5, 2.0], "long_factor": [1.0, 3.0, 6.0, 9.0],
        "original_max_position_embeddings": 16,
    },
    "frequency_factors": {"rope_type": "frequency_factors", "factors": [1.0, 1.5, 4.0, 8.0]},
}


@pytest.mark.parametrize("name", list(COMPILE_SCALINGS))
def test_compile_fullgraph_equals_eager(name: str) -> None:
    # aot_eager traces with Dynamo and AOTAutograd (fullgraph=True fails on any graph
    # break) but skips code generation, which keeps this test fast on a small CPU.
    torch._dynamo.reset()
    config = RopeConfig(head_dim=10, rotary_dim=8, max_position_embeddings=64, scaling=COMPILE_SCALINGS[name])
    embedding = RotaryEmbedding(config)
    compiled = torch.compile(embedding, fullgraph=True, backend="aot_eager")
    q, k = torch.randn(2, 8, 3, 10), torch.randn(2, 8, 1, 10)
    # Offsets 0 and 100 fall on both sides of the trained length for dynamic and longrope.
    for offset in (0, 100):
        offsets = torch.tensor([offset, offset + 1])
        expected_q, expected_k = embedding(q, k, offset=offsets)
        actual_q, actual_k = compiled(q, k, offset=offsets)
        assert torch.allclose(actual_q, expected_q, rtol=0, atol=1e-6), f"offset {offset}"
        assert torch.allclose(actual_k, expected_k, rtol=0, atol=1e-6), f"offset {offset}"


def test_compile_packed_fullgraph() -> None:
    torch._dynamo.reset()
    embedding = RotaryEmbedding(RopeConfig(head_dim=8, interleaved=True))
    compiled = torch.compile(embedding, fullgraph=True, backend="aot_eager")
    q = torch.randn(9, 2, 8)
    cu_seqlens = torch.tensor([0, 4, 9])
    expected, _ = embedding(q, q, cu_seqlens=cu_seqlens)
    actual, _ = compiled(q, q, cu_seqlens=cu_seqlens)
    assert torch.allclose(actual, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("interleaved_sections", [False, True], ids=["contiguous", "interleaved"])
def test_compile_mrope_fullgraph(interleaved_sections: bool) -> None:
    torch._dynamo.reset()
    config = RopeConfig(head_dim=12, mrope_section=(2, 2, 2), mrope_interleaved=interleaved_sections)
    embedding = RotaryEmbedding(config)
    compiled = torch.compile(embedding, fullgraph=True, backend="aot_eager")
    q = torch.randn(1, 5, 2, 12)
    positions = torch.tensor([[0, 1, 2, 2, 2], [0, 1, 2, 3, 3], [0, 1, 2, 2, 3]])
    expected, _ = embedding(q, q, positions)
    actual, _ = compiled(q, q, positions)
    assert torch.allclose(actual, expected, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dynamic", "longrope"])
def test_compile_inductor_equals_eager(name: str) -> None:
    torch._dynamo.reset()
    config = RopeConfig(head_dim=10, rotary_dim=8, max_position_embeddings=64, scaling=COMPILE_SCALINGS[name])
    embedding = RotaryEmbedding(config)
    compiled = torch.compile(embedding, fullgraph=True)
    q, k = torch.randn(1, 8, 2, 10), torch.randn(1, 8, 1, 10)
    for offset in (0, 100):
        expected_q, _ = embedding(q, k, offset=offset)
        actual_q, _ = compiled(q, k, offset=offset)
        assert torch.allclose(actual_q, expected_q, rtol=0, atol=1e-6), f"offset {offset}"
