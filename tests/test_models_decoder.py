"""The decoder: cache, padding, positions, encodings, RoPE scaling swap and config checks."""

from __future__ import annotations

import pytest
import torch

from ropekit.models import Decoder, DecoderConfig
from ropekit.rope import RopeConfig

VOCAB = 61


def make_decoder(**overrides) -> Decoder:
    torch.manual_seed(7)
    fields = dict(vocab_size=VOCAB, hidden_size=24, num_layers=2, num_heads=4, num_kv_heads=2)
    fields.update(overrides)
    return Decoder(DecoderConfig(**fields)).eval()


def decode_in_pieces(model: Decoder, input_ids: torch.Tensor, prefill: int) -> torch.Tensor:
    """Run a prefill of `prefill` tokens then one token at a time through a cache."""
    cache = model.make_cache(input_ids.shape[0], input_ids.shape[1])
    pieces = [model(input_ids[:, :prefill], cache=cache)]
    for step in range(prefill, input_ids.shape[1]):
        pieces.append(model(input_ids[:, step : step + 1], cache=cache))
    return torch.cat(pieces, dim=1)


ROPE_LAYOUTS = [RopeConfig(head_dim=6), RopeConfig(head_dim=6, interleaved=True), RopeConfig(head_dim=6, rotary_dim=4)]


@pytest.mark.parametrize("rope", ROPE_LAYOUTS, ids=["half", "interleaved", "partial"])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_cached_decoding_equals_full_forward(rope: RopeConfig, kv_heads: int) -> None:
    model = make_decoder(num_kv_heads=kv_heads, rope=rope)
    input_ids = torch.randint(0, VOCAB, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(decode_in_pieces(model, input_ids, 5), model(input_ids), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("encoding", ["alibi", "none"])
def test_cached_decoding_without_rope(encoding: str) -> None:
    model = make_decoder(position_encoding=encoding)
    input_ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(decode_in_pieces(model, input_ids, 3), model(input_ids), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("encoding", ["sinusoidal", "learned", "integer", "binary"])
def test_cached_decoding_with_additive_encoding(encoding: str) -> None:
    model = make_decoder(position_encoding=encoding, max_position_embeddings=32)
    input_ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(decode_in_pieces(model, input_ids, 3), model(input_ids), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("encoding", ["rope", "alibi", "sinusoidal", "learned"])
def test_left_padded_rows_equal_rows_alone(encoding: str) -> None:
    model = make_decoder(position_encoding=encoding, max_position_embeddings=32)
    prompts = [torch.randint(0, VOCAB, (length,)) for length in (9, 4, 6)]
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.zeros(len(prompts), width, dtype=torch.long)
    attention_mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = prompt
        attention_mask[row, width - len(prompt) :] = 1

    with torch.no_grad():
        batched = model(input_ids, attention_mask=attention_mask)
        for row, prompt in enumerate(prompts):
            alone = model(prompt[None])
            torch.testing.assert_close(batched[row, width - len(prompt) :], alone[0], atol=2e-6, rtol=1e-5)


def test_left_padded_decoding_with_cache_equals_rows_alone() -> None:
    model = make_decoder()
    prompts = [torch.randint(0, VOCAB, (length,)) for length in (7, 3)]
    continuation = torch.randint(0, VOCAB, (2, 4))
    input_ids = torch.zeros(2, 7, dtype=torch.long)
    attention_mask = torch.zeros(2, 7, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, 7 - len(prompt) :] = prompt
        attention_mask[row, 7 - len(prompt) :] = 1

    with torch.no_grad():
        cache = model.make_cache(2, 11)
        model(input_ids, cache=cache, attention_mask=attention_mask)
        steps = []
        for step in range(4):
            # The transformers convention: the mask covers cached and new tokens.
            attention_mask = torch.cat((attention_mask, torch.ones(2, 1, dtype=torch.long)), dim=1)
            steps.append(model(continuation[:, step : step + 1], cache=cache, attention_mask=attention_mask))
        batched = torch.cat(steps, dim=1)
        for row, prompt in enumerate(prompts):
            alone = model(torch.cat((prompt, continuation[row]))[None])
            torch.testing.assert_close(batched[row], alone[0, len(prompt) :], atol=2e-6, rtol=1e-5)


def test_explicit_positions_equal_default() -> None:
    model = make_decoder()
    input_ids = torch.randint(0, VOCAB, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids, torch.arange(6)), model(input_ids))


def test_rope_logits_depend_only_on_relative_positions() -> None:
    # RoPE scores depend on m - n only, so shifting every position by the same amount
    # leaves the logits of a model without other positional input unchanged.
    model = make_decoder()
    input_ids = torch.randint(0, VOCAB, (1, 8))
    with torch.no_grad():
        shifted = model(input_ids, torch.arange(8) + 1000)
        torch.testing.assert_close(shifted, model(input_ids), atol=2e-5, rtol=1e-4)


def test_set_rope_scaling_linear_halves_positions() -> None:
    # Linear scaling by 2 divides every position by 2 (Chen et al. 2023), so logits at
    # positions 2p equal unscaled logits at positions p.
    model = make_decoder(max_position_embeddings=16)
    input_ids = torch.randint(0, VOCAB, (1, 7))
    with torch.no_grad():
        unscaled = model(input_ids, torch.arange(7))
        model.set_rope_scaling({"rope_type": "linear", "factor": 2.0})
        scaled = model(input_ids, 2 * torch.arange(7))
    torch.testing.assert_close(scaled, unscaled, atol=2e-5, rtol=1e-4)
    assert model.config.rope.scaling["factor"] == 2.0


def test_set_rope_scaling_none_restores_logits() -> None:
    model = make_decoder(max_position_embeddings=16)
    input_ids = torch.randint(0, VOCAB, (1, 7))
    with torch.no_grad():
        before = model(input_ids)
        model.set_rope_scaling({"rope_type": "linear", "factor": 4.0})
        changed = model(input_ids)
        model.set_rope_scaling(None)
        after = model(input_ids)
    assert not torch.allclose(changed, before)
    assert torch.equal(after, before)


def test_set_rope_scaling_rejects_non_rope_model() -> None:
    model = make_decoder(position_encoding="alibi")
    with pytest.raises(ValueError, match="alibi"):
        model.set_rope_scaling({"rope_type": "linear", "factor": 2.0})


def test_tied_embeddings_share_one_matrix() -> None:
    tied = make_decoder(tie_embeddings=True)
    untied = make_decoder(tie_embeddings=False)
    assert tied.lm_head.weight is tied.embed_tokens.weight
    assert untied.num_parameters() - tied.num_parameters() == VOCAB * 24


def test_training_step_lowers_loss() -> None:
    model = make_decoder().train()
    input_ids = torch.randint(0, VOCAB, (4, 12))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        logits = model(input_ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), input_ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_config_round_trips_through_dict() -> None:
    config = DecoderConfig(
        vocab_size=10, hidden_size=16, num_layers=1, num_heads=2,
        rope=RopeConfig(head_dim=8, interleaved=True, theta=500000.0),
    )
    assert DecoderConfig.from_dict(config.to_dict()) == config


def test_config_rejects_unknown_encoding() -> None:
    with pytest.raises(ValueError, match="position_encoding"):
        DecoderConfig(vocab_size=10, hidden_size=16, num_layers=1, num_heads=2, position_encoding="xpos")


def test_config_rejects_rope_with_alibi() -> None:
    with pytest.raises(ValueError, match="rope is set"):
        DecoderConfig(vocab_size=10, hidden_size=16, num_layers=1, num_heads=2, position_encoding="alibi",
                      rope=RopeConfig(head_dim=8))


def test_config_rejects_indivisible_heads() -> None:
    with pytest.raises(ValueError, match="num_kv_heads"):
        DecoderConfig(vocab_size=10, hidden_size=24, num_layers=1, num_heads=6, num_kv_heads=4)


def test_config_default_intermediate_size() -> None:
    # 2/3 of 4 * 100 is 266.7, rounded up to a multiple of 8.
    config = DecoderConfig(vocab_size=10, hidden_size=100, num_layers=1, num_heads=5)
    assert config.intermediate_size == 272


def test_forward_rejects_float_ids() -> None:
    model = make_decoder()
    with pytest.raises(TypeError, match="input_ids"):
        model(torch.zeros(1, 3))


def test_forward_rejects_mask_of_wrong_shape() -> None:
    model = make_decoder()
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 5))


def test_forward_rejects_float_mask() -> None:
    model = make_decoder()
    with pytest.raises(TypeError, match="attention_mask must be a bool tensor"):
        model(torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 3))


def test_forward_rejects_mask_values_besides_zero_and_one() -> None:
    model = make_decoder()
    with pytest.raises(ValueError, match="attention_mask must contain only 0 and 1"):
        model(torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.tensor([[0, 1, 2]]))


def make_mla_decoder(**overrides) -> Decoder:
    from ropekit.attention import MLAConfig

    torch.manual_seed(5)
    mla = MLAConfig(hidden_size=24, num_heads=4, q_lora_rank=None, kv_lora_rank=12, qk_nope_head_dim=6,
                    qk_rope_head_dim=4, v_head_dim=6, rope=overrides.pop("mla_rope", None))
    return Decoder(DecoderConfig(vocab_size=VOCAB, hidden_size=24, num_layers=2, num_heads=4, attention="mla", mla=mla,
                                 **overrides)).eval()


def test_mla_cached_decoding_equals_full_forward() -> None:
    model = make_mla_decoder()
    input_ids = torch.randint(0, VOCAB, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(decode_in_pieces(model, input_ids, 4), model(input_ids), atol=2e-6, rtol=1e-5)


def test_mla_cache_stores_only_latent() -> None:
    model = make_mla_decoder()
    cache = model.make_cache(1, 8)
    # kv_lora_rank 12 plus the shared rope key of 4, float32, in each of 2 layers.
    assert cache.bytes_per_token() == 2 * (12 + 4) * 4


def test_mla_set_rope_scaling_linear_halves_positions() -> None:
    model = make_mla_decoder(max_position_embeddings=16, mla_rope=RopeConfig(head_dim=4, interleaved=True,
                                                                               max_position_embeddings=16))
    input_ids = torch.randint(0, VOCAB, (1, 7))
    with torch.no_grad():
        unscaled = model(input_ids, torch.arange(7))
        model.set_rope_scaling({"rope_type": "linear", "factor": 2.0})
        scaled = model(input_ids, 2 * torch.arange(7))
    torch.testing.assert_close(scaled, unscaled, atol=2e-5, rtol=1e-4)


def test_yarn_scaling_uses_decoder_length() -> None:
    model = make_decoder(max_position_embeddings=32)
    model.set_rope_scaling({"rope_type": "yarn", "factor": 4.0})
    assert model.config.rope.scaling["original_max_position_embeddings"] == 32


def test_mla_yarn_scaling_uses_decoder_length() -> None:
    model = make_mla_decoder(max_position_embeddings=32)
    model.set_rope_scaling({"rope_type": "yarn", "factor": 4.0})
    assert model.config.mla.rope.scaling["original_max_position_embeddings"] == 32


def test_mla_config_must_match_decoder_width() -> None:
    from ropekit.attention import MLAConfig

    mla = MLAConfig.simple(d_model=32, d_latent=8, n_heads=4, rope_dim=4)
    with pytest.raises(ValueError, match="mla.hidden_size"):
        DecoderConfig(vocab_size=10, hidden_size=24, num_layers=1, num_heads=4, attention="mla", mla=mla)


def test_sliding_window_layers_select_layers() -> None:
    config = DecoderConfig(vocab_size=10, hidden_size=16, num_layers=3, num_heads=2, sliding_window=4,
                           sliding_window_layers=(1,))
    assert [config.window_of_layer(index) for index in range(3)] == [None, 4, None]


def test_full_cache_raises_before_changing_state() -> None:
    model = make_decoder()
    cache = model.make_cache(1, 4)
    model(torch.randint(0, VOCAB, (1, 3)), cache=cache)
    with pytest.raises(ValueError, match="room for 4 tokens"):
        model(torch.randint(0, VOCAB, (1, 2)), cache=cache)
    assert cache.length == 3
    assert all(layer.length == 3 for layer in cache.layers)
