"""Multi-Head Latent Attention: the two paths, the latent cache, gradients and bad input.

The reference here is an explicit per-head loop in float64 built from the module's own
weights, written independently of ropekit's einsum and SDPA code.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ropekit import LatentKVCache, MLAConfig, MultiHeadLatentAttention, RopeConfig
from ropekit.attention.mla import absorbed_is_cheaper, latent_attention_absorbed, latent_attention_naive
from ropekit.rope import apply_rotary


def small_config(*, q_lora_rank=None, interleaved=True, heads=4, rope_dim=6, scaling=None) -> MLAConfig:
    """An odd-sized configuration: 4 heads, nope 10, rope 6, v 7, latent 12."""
    return MLAConfig(
        hidden_size=24,
        num_heads=heads,
        q_lora_rank=q_lora_rank,
        kv_lora_rank=12,
        qk_nope_head_dim=10,
        qk_rope_head_dim=rope_dim,
        v_head_dim=7,
        rope=RopeConfig(head_dim=rope_dim, interleaved=interleaved, scaling=scaling, max_position_embeddings=256),
    )


def build(config: MLAConfig, dtype=torch.float32, seed: int = 0) -> MultiHeadLatentAttention:
    torch.manual_seed(seed)
    module = MultiHeadLatentAttention(config).to(dtype)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("layernorm.weight"):
                parameter.uniform_(0.5, 1.5)  # not all ones, so a skipped norm weight shows
    return module


def rope_tables(config: MLAConfig, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin in float64 from inv_freq, in the config's layout."""
    from ropekit import rope_frequencies

    inv_freq, attention_scale = rope_frequencies(config.rope)
    angles = positions.to(torch.float64).unsqueeze(-1) * inv_freq.to(torch.float64)
    angles = angles.repeat_interleave(2, dim=-1) if config.rope.interleaved else torch.cat((angles, angles), dim=-1)
    return angles.cos() * attention_scale, angles.sin() * attention_scale


def reference_mla(module: MultiHeadLatentAttention, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Causal MLA in float64 with a Python loop over heads; positions is [b, s]."""
    config = module.config
    weights = {name: p.detach().to(torch.float64) for name, p in module.named_parameters()}
    x = x.to(torch.float64)
    b, s, _ = x.shape
    h, d, r, v, c = (config.num_heads, config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim,
                     config.kv_lora_rank)

    def rms(t, weight):
        return weight * t / torch.sqrt(t.pow(2).mean(-1, keepdim=True) + config.rms_norm_eps)

    if config.q_lora_rank is None:
        q = x @ weights["q_proj.weight"].T
    else:
        q = rms(x @ weights["q_a_proj.weight"].T, weights["q_a_layernorm.weight"]) @ weights["q_b_proj.weight"].T
    q = q.view(b, s, h, d + r)
    latent = x @ weights["kv_a_proj_with_mqa.weight"].T
    c_kv = rms(latent[..., :c], weights["kv_a_layernorm.weight"])
    cos, sin = rope_tables(config, positions)  # [b, s, r]
    k_pe = apply_rotary(latent[..., c:], cos, sin, interleaved=config.rope.interleaved)
    w_kv_b = weights["kv_b_proj.weight"].view(h, d + v, c)

    outputs = []
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    for head in range(h):
        q_pe = apply_rotary(q[:, :, head, d:], cos, sin, interleaved=config.rope.interleaved)
        query = torch.cat((q[:, :, head, :d], q_pe), dim=-1)
        key = torch.cat((c_kv @ w_kv_b[head, :d].T, k_pe), dim=-1)
        value = c_kv @ w_kv_b[head, d:].T
        scores = query @ key.transpose(1, 2) * config.softmax_scale
        scores = scores.masked_fill(~causal, float("-inf"))
        outputs.append(scores.softmax(-1) @ value)
    return torch.cat(outputs, dim=-1) @ weights["o_proj.weight"].T


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().to(torch.float64), expected.detach().to(torch.float64)
    return float((actual - expected).norm() / expected.norm())


# Forward: both paths against the float64 reference and each other ---------------------------


@pytest.mark.parametrize("q_lora_rank", [None, 8])
@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("mode", ["naive", "absorbed", "auto"])
def test_forward_matches_reference(q_lora_rank, interleaved, mode):
    config = small_config(q_lora_rank=q_lora_rank, interleaved=interleaved)
    module = build(config, torch.float64)
    x = torch.randn(3, 37, config.hidden_size, dtype=torch.float64)
    positions = torch.arange(37).expand(3, -1)

    actual = module(x, mode=mode)

    assert relative_error(actual, reference_mla(module, x, positions)) < 1e-12


@pytest.mark.parametrize("interleaved", [True, False])
def test_paths_agree_float32_many_keys(interleaved):
    # 193 queries over 193 keys at positions up to 1,200: a wrong softmax scale or rotation
    # in one path cannot hide behind a single key.
    config = small_config(q_lora_rank=8, interleaved=interleaved)
    module = build(config)
    x = torch.randn(2, 193, config.hidden_size) * 3
    positions = torch.arange(193) * 6 + 5

    naive = module(x, positions, mode="naive")
    absorbed = module(x, positions, mode="absorbed")

    assert relative_error(absorbed, naive) < 1e-5


@pytest.mark.parametrize("mode", ["naive", "absorbed"])
def test_bfloat16_close_to_reference(mode):
    # bfloat16 keeps about 3 significant digits; the float32 softmax keeps the error at that level.
    config = small_config(q_lora_rank=8)
    module = build(config, torch.bfloat16)
    x = torch.randn(2, 64, config.hidden_size).to(torch.bfloat16)

    actual = module(x, mode=mode)

    assert actual.dtype == torch.bfloat16
    assert relative_error(actual, reference_mla(module, x, torch.arange(64).expand(2, -1))) < 2e-2


def test_uniform_shift_keeps_output():
    # RoPE scores depend only on position differences, so shifting every position by 100
    # keeps the output, while stretching the gaps changes it.
    config = small_config()
    module = build(config, torch.float64)
    x = torch.randn(1, 11, config.hidden_size, dtype=torch.float64)

    shifted = module(x, torch.arange(11) + 100)
    stretched = module(x, torch.arange(11) * 3)

    assert relative_error(shifted, module(x)) < 1e-12
    assert relative_error(stretched, reference_mla(module, x, torch.arange(11)[None] * 3)) < 1e-12
    assert relative_error(stretched, module(x)) > 1e-6


def test_yarn_scale_enters_softmax():
    scaling = {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 32, "mscale": 0.9,
               "mscale_all_dim": 0.7}
    config = small_config(scaling=scaling)
    module = build(config, torch.float64)
    x = torch.randn(2, 19, config.hidden_size, dtype=torch.float64)

    for mode in ("naive", "absorbed"):
        actual = module(x, mode=mode)
        assert relative_error(actual, reference_mla(module, x, torch.arange(19).expand(2, -1))) < 1e-12


def test_softmax_scale_formula():
    scaling = {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096, "mscale": 0.707,
               "mscale_all_dim": 0.707}
    config = small_config(scaling=scaling)
    mscale = 0.1 * 0.707 * math.log(40.0) + 1.0

    assert config.softmax_scale == pytest.approx((10 + 6) ** -0.5 * mscale**2, rel=1e-12)
    assert small_config().softmax_scale == pytest.approx(16**-0.5, rel=1e-12)


# The latent cache -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["naive", "absorbed", "auto"])
@pytest.mark.parametrize("interleaved", [True, False])
def test_decoding_equals_full_forward(mode, interleaved):
    config = small_config(q_lora_rank=8, interleaved=interleaved)
    module = build(config)
    x = torch.randn(2, 21, config.hidden_size)
    full = module(x, mode="naive")

    cache = LatentKVCache(2, 21, config, dtype=torch.float32)
    outputs = [module(x[:, :9], cache=cache, mode=mode)]
    for index in range(9, 21):
        outputs.append(module(x[:, index : index + 1], cache=cache, mode=mode))
    decoded = torch.cat(outputs, dim=1)

    assert relative_error(decoded, full) < 1e-5


def test_rows_of_different_lengths():
    # Row 0 has 7 real prompt tokens, row 1 has 4 (right padding); each then decodes 5 tokens.
    config = small_config()
    module = build(config, torch.float64)
    prompts = torch.randn(2, 7, config.hidden_size, dtype=torch.float64)
    steps = torch.randn(2, 5, config.hidden_size, dtype=torch.float64)
    lengths = [7, 4]
    token_mask = torch.arange(7)[None] < torch.tensor(lengths)[:, None]

    cache = LatentKVCache(2, 8, config, dtype=torch.float64, grow=True)
    prefill = module(prompts, cache=cache, attention_mask=token_mask)
    decoded = [module(steps[:, i : i + 1], cache=cache, mode="absorbed") for i in range(5)]

    for row, length in enumerate(lengths):
        sequence = torch.cat((prompts[row : row + 1, :length], steps[row : row + 1]), dim=1)
        expected = module(sequence, mode="naive")
        actual = torch.cat([prefill[row : row + 1, :length]] + [out[row : row + 1] for out in decoded], dim=1)
        assert relative_error(actual, expected) < 1e-12, f"row {row}"
    assert cache.lengths.tolist() == [12, 9]
    assert torch.count_nonzero(prefill[1, 4:]) == 0


def test_cache_stores_only_latent_and_rope_key():
    config = MLAConfig.deepseek_v3()
    cache = LatentKVCache(1, 4, config, dtype=torch.bfloat16)

    assert cache.bytes_per_token() == 576 * 2
    assert cache.c_kv.shape == (1, 4, 512)
    assert cache.k_pe.shape == (1, 4, 64)


def test_cache_holds_rotated_key():
    config = small_config()
    module = build(config, torch.float64)
    x = torch.randn(1, 5, config.hidden_size, dtype=torch.float64)
    cache = LatentKVCache(1, 5, config, dtype=torch.float64)
    module(x, torch.arange(5) + 3, cache=cache)

    raw = (x @ module.kv_a_proj_with_mqa.weight.detach().T)[..., config.kv_lora_rank :]
    cos, sin = rope_tables(config, torch.arange(5)[None] + 3)
    expected = apply_rotary(raw, cos, sin, interleaved=True)

    assert torch.allclose(cache.k_pe[:, :5], expected, rtol=0, atol=1e-12)


def test_cache_grows_when_allowed():
    config = small_config()
    module = build(config)
    cache = LatentKVCache(1, 2, config, grow=True)
    module(torch.randn(1, 5, config.hidden_size), cache=cache)

    assert cache.max_len >= 5
    assert int(cache.lengths[0]) == 5


def test_cache_overflow_raises():
    config = small_config()
    module = build(config)
    cache = LatentKVCache(1, 4, config)

    with pytest.raises(ValueError, match="overflow.*max_len is 4"):
        module(torch.randn(1, 5, config.hidden_size), cache=cache)


def test_cache_dtype_mismatch_raises():
    config = small_config()
    module = build(config)
    cache = LatentKVCache(1, 4, config, dtype=torch.float64)

    with pytest.raises(ValueError, match="dtype torch.float32 but the cache stores torch.float64"):
        module(torch.randn(1, 2, config.hidden_size), cache=cache)


def test_cache_device_mismatch_raises():
    config = small_config()
    module = build(config).to("meta")
    cache = LatentKVCache(1, 4, config)

    with pytest.raises(ValueError, match="device meta but the cache is on cpu"):
        module(torch.randn(1, 2, config.hidden_size, device="meta"), cache=cache)


def test_positions_backwards_raise():
    config = small_config()
    module = build(config)
    cache = LatentKVCache(1, 8, config)
    module(torch.randn(1, 3, config.hidden_size), torch.tensor([4, 5, 6]), cache=cache)

    with pytest.raises(ValueError, match="backwards.*position 2.*up to position 6"):
        module(torch.randn(1, 1, config.hidden_size), torch.tensor([2]), cache=cache)


def test_positions_not_increasing_raise():
    config = small_config()
    module = build(config)
    cache = LatentKVCache(1, 8, config)

    with pytest.raises(ValueError, match="increase"):
        module(torch.randn(1, 3, config.hidden_size), torch.tensor([0, 2, 2]), cache=cache)


@pytest.mark.parametrize("mode", ["naive", "absorbed"])
def test_left_padding_with_cache(mode):
    # Row 0 is left-padded by 3; default positions count only real tokens, so each row
    # equals its unpadded run, through the prefill and 4 decode steps.
    config = small_config()
    module = build(config, torch.float64)
    prompts = torch.randn(2, 8, config.hidden_size, dtype=torch.float64)
    steps = torch.randn(2, 4, config.hidden_size, dtype=torch.float64)
    token_mask = torch.ones(2, 8, dtype=torch.bool)
    token_mask[0, :3] = False

    cache = LatentKVCache(2, 12, config, dtype=torch.float64)
    prefill = module(prompts, cache=cache, attention_mask=token_mask, mode=mode)
    decoded = [module(steps[:, i : i + 1], cache=cache, mode=mode) for i in range(4)]

    for row, start in enumerate((3, 0)):
        expected = module(torch.cat((prompts[row : row + 1, start:], steps[row : row + 1]), dim=1), mode="naive")
        actual = torch.cat([prefill[row : row + 1, start:]] + [out[row : row + 1] for out in decoded], dim=1)
        assert relative_error(actual, expected) < 1e-12, f"row {row}"
    assert torch.count_nonzero(prefill[0, :3]) == 0
    assert cache.next_positions.tolist() == [9, 12]


# Masks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["naive", "absorbed"])
def test_left_padding_mask_matches_unpadded(mode):
    config = small_config()
    module = build(config, torch.float64)
    x = torch.randn(1, 9, config.hidden_size, dtype=torch.float64)
    padded = torch.cat((torch.randn(1, 3, config.hidden_size, dtype=torch.float64), x), dim=1)
    mask = torch.arange(12)[None] >= 3
    positions = (torch.arange(12) - 3).clamp(min=0)[None]

    actual = module(padded, positions, attention_mask=mask, mode=mode)

    assert relative_error(actual[:, 3:], module(x)) < 1e-12
    assert torch.count_nonzero(actual[:, :3]) == 0


@pytest.mark.parametrize("mode", ["naive", "absorbed"])
def test_pair_mask_combines_with_causal(mode):
    # A block-diagonal mask over two packed sequences equals running them separately.
    config = small_config()
    module = build(config, torch.float64)
    first = torch.randn(1, 5, config.hidden_size, dtype=torch.float64)
    second = torch.randn(1, 6, config.hidden_size, dtype=torch.float64)
    packed = torch.cat((first, second), dim=1)
    document = torch.tensor([0] * 5 + [1] * 6)
    mask = (document[:, None] == document[None, :])[None, None]
    positions = torch.cat((torch.arange(5), torch.arange(6)))

    actual = module(packed, positions, attention_mask=mask, mode=mode)

    assert relative_error(actual[:, :5], module(first)) < 1e-12
    assert relative_error(actual[:, 5:], module(second)) < 1e-12


@pytest.mark.parametrize("mode", ["naive", "absorbed"])
def test_integer_token_mask_equals_bool(mode):
    config = small_config()
    module = build(config, torch.float64)
    x = torch.randn(2, 7, config.hidden_size, dtype=torch.float64)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :3] = 0

    actual = module(x, attention_mask=mask, mode=mode)

    assert torch.equal(actual, module(x, attention_mask=mask.bool(), mode=mode))


def test_integer_pair_mask_equals_bool():
    config = small_config()
    module = build(config, torch.float64)
    x = torch.randn(1, 6, config.hidden_size, dtype=torch.float64)
    document = torch.tensor([0] * 2 + [1] * 4)
    mask = (document[:, None] == document[None, :])[None, None]

    actual = module(x, attention_mask=mask.to(torch.int32))

    assert torch.equal(actual, module(x, attention_mask=mask))


def test_integer_mask_rejects_values_besides_zero_and_one():
    module = build(small_config())
    with pytest.raises(ValueError, match=r"attention_mask must contain only 0 and 1, found \[2\]"):
        module(torch.randn(1, 3, 24), attention_mask=torch.tensor([[1, 2, 0]]))


# Gradients --------------------------------------------------------------------------------


def test_naive_gradients_match_reference():
    config = small_config(q_lora_rank=8)
    module = build(config, torch.float64)
    x = torch.randn(2, 13, config.hidden_size, dtype=torch.float64, requires_grad=True)
    x_reference = x.detach().clone().requires_grad_(True)
    target = torch.randn(2, 13, config.hidden_size, dtype=torch.float64)

    (module(x, mode="naive") * target).sum().backward()
    reference = build(config, torch.float64)
    reference.load_state_dict(module.state_dict())
    params = dict(reference.named_parameters())
    # Run the reference with its parameters tracked by autograd.
    output = _reference_with_grad(reference, x_reference, torch.arange(13).expand(2, -1))
    (output * target).sum().backward()

    assert relative_error(x.grad, x_reference.grad) < 1e-10
    for name, parameter in module.named_parameters():
        assert relative_error(parameter.grad, params[name].grad) < 1e-10, name


def _reference_with_grad(module, x, positions):
    """reference_mla, but with the module's parameters kept in the autograd graph."""
    config = module.config
    b, s, _ = x.shape
    h, d, r, v, c = (config.num_heads, config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim,
                     config.kv_lora_rank)

    def rms(t, weight):
        return weight * t / torch.sqrt(t.pow(2).mean(-1, keepdim=True) + config.rms_norm_eps)

    q = rms(x @ module.q_a_proj.weight.T, module.q_a_layernorm.weight) @ module.q_b_proj.weight.T
    q = q.view(b, s, h, d + r)
    latent = x @ module.kv_a_proj_with_mqa.weight.T
    c_kv = rms(latent[..., :c], module.kv_a_layernorm.weight)
    cos, sin = rope_tables(config, positions)
    k_pe = apply_rotary(latent[..., c:], cos, sin, interleaved=config.rope.interleaved)
    w_kv_b = module.kv_b_proj.weight.view(h, d + v, c)
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    outputs = []
    for head in range(h):
        q_pe = apply_rotary(q[:, :, head, d:], cos, sin, interleaved=config.rope.interleaved)
        query = torch.cat((q[:, :, head, :d], q_pe), dim=-1)
        key = torch.cat((c_kv @ w_kv_b[head, :d].T, k_pe), dim=-1)
        scores = (query @ key.transpose(1, 2) * config.softmax_scale).masked_fill(~causal, float("-inf"))
        outputs.append(scores.softmax(-1) @ (c_kv @ w_kv_b[head, d:].T))
    return torch.cat(outputs, dim=-1) @ module.o_proj.weight.T


@pytest.mark.parametrize("attend", [latent_attention_naive, latent_attention_absorbed])
def test_shared_rope_key_gets_sum_of_head_gradients(attend):
    # Reference: every head gets its own leaf copy of k_pe; the shared k_pe's gradient must
    # be the sum of the copies' gradients.
    torch.manual_seed(1)
    b, s, h, d, r, c, v = 2, 7, 5, 4, 6, 9, 3
    q_nope = torch.randn(b, s, h, d, dtype=torch.float64)
    q_pe = torch.randn(b, s, h, r, dtype=torch.float64)
    c_kv = torch.randn(b, s, c, dtype=torch.float64)
    k_pe = torch.randn(b, s, r, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(h * (d + v), c, dtype=torch.float64)
    target = torch.randn(b, s, h, v, dtype=torch.float64)

    (attend(q_nope, q_pe, c_kv, k_pe, weight, scale=0.3, causal=True) * target).sum().backward()

    copies = [k_pe.detach().clone().requires_grad_(True) for _ in range(h)]
    w = weight.view(h, d + v, c)
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    total = 0.0
    for head in range(h):
        query = torch.cat((q_nope[:, :, head], q_pe[:, :, head]), dim=-1)
        key = torch.cat((c_kv @ w[head, :d].T, copies[head]), dim=-1)
        scores = (query @ key.transpose(1, 2) * 0.3).masked_fill(~causal, float("-inf"))
        total = total + ((scores.softmax(-1) @ (c_kv @ w[head, d:].T)) * target[:, :, head]).sum()
    total.backward()
    summed = sum(copy.grad for copy in copies)

    assert relative_error(k_pe.grad, summed) < 1e-12
    assert relative_error(k_pe.grad, copies[0].grad) > 1e-3  # the heads really differ


def test_absorbed_path_is_differentiable():
    config = small_config(q_lora_rank=8)
    module = build(config, torch.float64)
    x = torch.randn(2, 9, config.hidden_size, dtype=torch.float64)
    target = torch.randn(2, 9, config.hidden_size, dtype=torch.float64)

    (module(x, mode="absorbed") * target).sum().backward()
    absorbed = {name: p.grad.clone() for name, p in module.named_parameters()}
    module.zero_grad()
    (module(x, mode="naive") * target).sum().backward()

    for name, parameter in module.named_parameters():
        assert relative_error(absorbed[name], parameter.grad) < 1e-10, name


def test_naive_path_trains():
    config = small_config()
    module = build(config)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    x = torch.randn(4, 16, config.hidden_size)
    target = torch.randn(4, 16, config.hidden_size)

    losses = []
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(module(x, mode="naive"), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    assert losses[-1] < 0.8 * losses[0]


# Choosing a path --------------------------------------------------------------------------


def test_cost_rule_prefill_and_decode():
    config = MLAConfig.deepseek_v2_lite()

    assert not absorbed_is_cheaper(config, 512, 512)
    assert absorbed_is_cheaper(config, 1, 512)


def test_auto_runs_absorbed_for_decode_step(monkeypatch):
    import ropekit.attention.mla as mla

    calls = []

    def recording(name):
        original = getattr(mla, name)

        def wrapper(*args, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)

        return wrapper

    for name in ("latent_attention_naive", "latent_attention_absorbed"):
        monkeypatch.setattr(mla, name, recording(name))
    config = MLAConfig.simple(64, 48, 2, rope_dim=8)
    module = build(config)
    cache = LatentKVCache(1, 40, config)

    module(torch.randn(1, 39, 64), cache=cache)
    module(torch.randn(1, 1, 64), cache=cache)

    assert calls == ["latent_attention_naive", "latent_attention_absorbed"]


# Configuration ----------------------------------------------------------------------------


def test_presets_match_published_values():
    v3 = MLAConfig.deepseek_v3()
    lite = MLAConfig.deepseek_v2_lite()
    v2 = MLAConfig.deepseek_v2()

    assert (v3.hidden_size, v3.num_heads, v3.q_lora_rank, v3.kv_lora_rank) == (7168, 128, 1536, 512)
    assert (lite.hidden_size, lite.num_heads, lite.q_lora_rank) == (2048, 16, None)
    assert (v2.hidden_size, v2.num_heads, v2.num_hidden_layers) == (5120, 128, 60)
    assert v3.rope.interleaved
    assert v3.cache_elements_per_token == 576


def test_simple_derivation_rule():
    config = MLAConfig.simple(512, 128, 8)

    assert (config.qk_nope_head_dim, config.v_head_dim, config.qk_rope_head_dim) == (64, 64, 32)
    assert config.kv_lora_rank == 128
    assert config.q_lora_rank is None
    assert MLAConfig.simple(48, 16, 4, rope_dim=4).qk_rope_head_dim == 4
    assert MLAConfig.simple(20, 8, 2).qk_rope_head_dim == 4  # half of 10, rounded down to even


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"qk_rope_head_dim": 5}, "qk_rope_head_dim must be even"),
        ({"kv_lora_rank": 0}, "kv_lora_rank must be a positive int, got 0"),
        ({"q_lora_rank": -3}, "q_lora_rank must be a positive int, got -3"),
        ({"num_heads": 2.0}, "num_heads must be a positive int"),
        ({"rope": RopeConfig(head_dim=8)}, "rope must rotate all qk_rope_head_dim=6"),
        ({"rms_norm_eps": 0.0}, "rms_norm_eps"),
        ({"rope": RopeConfig(head_dim=6, xpos_scale_base=512.0)}, "rope.xpos_scale_base must be None"),
    ],
)
def test_config_rejects_bad_values(changes, message):
    values = dict(hidden_size=24, num_heads=4, q_lora_rank=None, kv_lora_rank=12, qk_nope_head_dim=10,
                  qk_rope_head_dim=6, v_head_dim=7)
    values.update(changes)

    with pytest.raises(ValueError, match=message):
        MLAConfig(**values)


def test_simple_rejects_odd_rope_dim():
    with pytest.raises(ValueError, match="rope_dim must be even"):
        MLAConfig.simple(64, 16, 4, rope_dim=3)


def test_forward_rejects_bad_input():
    module = build(small_config())

    with pytest.raises(ValueError, match="hidden_size=24"):
        module(torch.randn(1, 3, 25))
    with pytest.raises(ValueError, match="mode must be one of"):
        module(torch.randn(1, 3, 24), mode="fast")
    with pytest.raises(TypeError, match="positions must be an integer tensor"):
        module(torch.randn(1, 3, 24), torch.arange(3.0))
    with pytest.raises(ValueError, match=r"positions must have shape \[3\] or \[1, 3\]"):
        module(torch.randn(1, 3, 24), torch.arange(4))
    with pytest.raises(TypeError, match="attention_mask must be a bool tensor"):
        module(torch.randn(1, 3, 24), attention_mask=torch.ones(1, 3))


def test_forward_rejects_other_dtype_than_weights():
    module = build(small_config())
    with pytest.raises(ValueError, match=r"x has dtype torch.float64 but the module's weights are torch.float32"):
        module(torch.randn(1, 3, 24, dtype=torch.float64))


@pytest.mark.parametrize("attend", [latent_attention_naive, latent_attention_absorbed])
def test_causal_aligns_bottom_right(attend):
    # With 3 queries after 5 earlier keys, query i attends to keys 0..5 + i in both paths.
    torch.manual_seed(2)
    q_nope, q_pe = torch.randn(1, 3, 2, 4, dtype=torch.float64), torch.randn(1, 3, 2, 2, dtype=torch.float64)
    c_kv, k_pe = torch.randn(1, 8, 6, dtype=torch.float64), torch.randn(1, 8, 2, dtype=torch.float64)
    weight = torch.randn(2 * (4 + 5), 6, dtype=torch.float64)
    explicit = (torch.arange(8)[None, :] <= torch.arange(3)[:, None] + 5)[None, None]

    actual = attend(q_nope, q_pe, c_kv, k_pe, weight, scale=0.5, causal=True)
    expected = latent_attention_naive(q_nope, q_pe, c_kv, k_pe, weight, scale=0.5, mask=explicit)

    assert relative_error(actual, expected) < 1e-12


# Property ---------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    seq=st.integers(1, 12),
    heads=st.integers(1, 5),
    nope=st.integers(1, 9),
    rope=st.sampled_from([2, 4, 6]),
    value=st.integers(1, 9),
    latent=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_absorbed_equals_naive_for_any_sizes(batch, seq, heads, nope, rope, value, latent, seed):
    # Folding W_UK into the query and W_UV into the output is exact algebra, so in float64
    # the two paths agree to rounding for every size.
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    inputs = (draw(batch, seq, heads, nope), draw(batch, seq, heads, rope), draw(batch, seq, latent),
              draw(batch, seq, rope), draw(heads * (nope + value), latent))

    naive = latent_attention_naive(*inputs, scale=0.7, causal=True)
    absorbed = latent_attention_absorbed(*inputs, scale=0.7, causal=True)

    assert relative_error(absorbed, naive) < 1e-12
