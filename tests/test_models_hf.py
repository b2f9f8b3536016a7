"""Hugging Face checkpoints: ropekit's logits equal transformers' for tiny random models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ropekit

transformers = pytest.importorskip("transformers")

VOCAB = 97
SEQ_LEN = 19  # odd on purpose, and longer than the sliding windows below


def tiny_fields(**overrides) -> dict:
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
    )
    fields.update(overrides)
    return fields


CASES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", tiny_fields()),
    "llama_mha_biases_tied": (
        "LlamaConfig",
        "LlamaForCausalLM",
        tiny_fields(num_key_value_heads=6, attention_bias=True, mlp_bias=True, tie_word_embeddings=True),
    ),
    "llama_mqa_head_dim": ("LlamaConfig", "LlamaForCausalLM", tiny_fields(num_key_value_heads=1, head_dim=10)),
    "llama3_scaling": (
        "LlamaConfig",
        "LlamaForCausalLM",
        tiny_fields(
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            }
        ),
    ),
    "yarn_scaling": (
        "LlamaConfig",
        "LlamaForCausalLM",
        tiny_fields(
            rope_parameters={
                "rope_type": "yarn",
                "rope_theta": 10000.0,
                "factor": 4.0,
                "original_max_position_embeddings": 16,
            }
        ),
    ),
    "mistral_sliding_window": ("MistralConfig", "MistralForCausalLM", tiny_fields(sliding_window=5)),
    "qwen2_sliding_layer": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        tiny_fields(use_sliding_window=True, sliding_window=5, max_window_layers=1),
    ),
    "qwen2_biases": ("Qwen2Config", "Qwen2ForCausalLM", tiny_fields(rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    # Phi-3 is the dense RMSNorm + SwiGLU model of transformers 5.25 whose attention
    # supports partial_rotary_factor (Phi-4-mini uses 0.75); its fused qkv_proj and
    # gate_up_proj are split into the Llama names at load.
    "phi3_partial_rotary": (
        "Phi3Config",
        "Phi3ForCausalLM",
        tiny_fields(partial_rotary_factor=0.5, sliding_window=None, pad_token_id=0),
    ),
}


def save_tiny_model(name: str, directory: Path, **save_options) -> torch.nn.Module:
    config_class, model_class, fields = CASES[name]
    config = getattr(transformers, config_class)(**fields)
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(config).eval()
    with torch.no_grad():
        # Random non-trivial norms and biases, so that a skipped weight changes the logits.
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith("norm.weight"):
                parameter.uniform_(0.5, 1.5)
            elif parameter_name.endswith("bias"):
                parameter.normal_(0.0, 0.1)
    model.save_pretrained(directory, **save_options)
    return model


def reference_logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids).logits


@pytest.mark.parametrize("name", list(CASES))
def test_logits_equal_transformers(name: str, tmp_path: Path) -> None:
    reference = save_tiny_model(name, tmp_path)
    input_ids = torch.randint(0, VOCAB, (2, SEQ_LEN), generator=torch.Generator().manual_seed(1))
    model = ropekit.load_model(tmp_path)
    with torch.no_grad():
        logits = model(input_ids)
    assert (logits - reference_logits(reference, input_ids)).abs().max().item() <= 1e-4


def test_logits_equal_transformers_at_long_positions(tmp_path: Path) -> None:
    # Positions past the original context, where the yarn scaling changes the angles.
    reference = save_tiny_model("yarn_scaling", tmp_path)
    input_ids = torch.randint(0, VOCAB, (1, 7), generator=torch.Generator().manual_seed(2))
    position_ids = torch.arange(40, 47)[None]
    model = ropekit.load_model(tmp_path)
    with torch.no_grad():
        expected = reference(input_ids=input_ids, position_ids=position_ids).logits
        logits = model(input_ids, position_ids[0])
    assert (logits - expected).abs().max().item() <= 1e-4


def test_left_padded_batch_equals_transformers(tmp_path: Path) -> None:
    reference = save_tiny_model("llama", tmp_path)
    input_ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(6))
    attention_mask = torch.ones(2, 9, dtype=torch.long)
    attention_mask[1, :4] = 0
    # transformers numbers the real tokens of a left-padded row from 0 when given these ids.
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    model = ropekit.load_model(tmp_path)
    with torch.no_grad():
        expected = reference(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        logits = model(input_ids, attention_mask=attention_mask)
    real = attention_mask.bool()
    assert (logits[real] - expected[real]).abs().max().item() <= 1e-4


def test_sharded_checkpoint_loads(tmp_path: Path) -> None:
    reference = save_tiny_model("llama", tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    input_ids = torch.randint(0, VOCAB, (1, SEQ_LEN), generator=torch.Generator().manual_seed(3))
    model = ropekit.load_model(tmp_path)
    with torch.no_grad():
        assert (model(input_ids) - reference_logits(reference, input_ids)).abs().max().item() <= 1e-4


def test_cached_decoding_equals_transformers(tmp_path: Path) -> None:
    reference = save_tiny_model("qwen2_biases", tmp_path)
    input_ids = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(4))
    model = ropekit.load_model(tmp_path)
    cache = model.make_cache(1, 12)
    with torch.no_grad():
        pieces = [model(input_ids[:, :5], cache=cache)]
        pieces += [model(input_ids[:, step : step + 1], cache=cache) for step in range(5, 12)]
    expected = reference_logits(reference, input_ids)
    assert (torch.cat(pieces, dim=1) - expected).abs().max().item() <= 1e-4


def test_rope_scaling_override_equals_transformers(tmp_path: Path) -> None:
    save_tiny_model("llama", tmp_path)
    scaled_dir = tmp_path / "scaled"
    spec = {"rope_type": "linear", "factor": 4.0}
    scaled_reference = save_tiny_model_with(tmp_path / "llama", scaled_dir, rope_parameters={"rope_theta": 10000.0, **spec})
    input_ids = torch.randint(0, VOCAB, (1, SEQ_LEN), generator=torch.Generator().manual_seed(5))
    model = ropekit.load_model(tmp_path, rope_scaling=spec)
    with torch.no_grad():
        assert (model(input_ids) - reference_logits(scaled_reference, input_ids)).abs().max().item() <= 1e-4


def save_tiny_model_with(_unused: Path, directory: Path, **changes) -> torch.nn.Module:
    """Save the "llama" case with some config fields changed (same seed, so same weights)."""
    config_class, model_class, fields = CASES["llama"]
    config = getattr(transformers, config_class)(**{**fields, **changes})
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(config).eval()
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith("norm.weight"):
                parameter.uniform_(0.5, 1.5)
    model.save_pretrained(directory)
    return model


def test_dtype_option_casts_weights(tmp_path: Path) -> None:
    save_tiny_model("llama", tmp_path)
    model = ropekit.load_model(tmp_path, dtype="bfloat16")
    assert model.embed_tokens.weight.dtype == torch.bfloat16


def test_tokenizer_json_round_trip(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0, "<s>": 1, "hello": 2, "world": 3}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.decoder = tokenizers.decoders.WordPiece()
    tokenizer.add_special_tokens(["<s>"])
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "<s>"}))

    loaded = ropekit.load_tokenizer(tmp_path)
    assert loaded.encode("hello world") == [2, 3]
    assert loaded.decode([1, 2, 3]) == "hello world"
    assert loaded.bos_id == 1


def test_unsupported_architecture_raises(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 10}))
    with pytest.raises(ValueError, match="unsupported model_type 'gpt2'"):
        ropekit.load_model(tmp_path)


def test_pickle_only_checkpoint_raises(tmp_path: Path) -> None:
    save_tiny_model("llama", tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="pickle"):
        ropekit.load_model(tmp_path)


def test_truncated_safetensors_raises(tmp_path: Path) -> None:
    save_tiny_model("llama", tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        ropekit.load_model(tmp_path)


def test_corrupt_config_raises(tmp_path: Path) -> None:
    save_tiny_model("llama", tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama", ')
    with pytest.raises(ValueError, match="not valid JSON"):
        ropekit.load_model(tmp_path)


def test_missing_shard_raises(tmp_path: Path) -> None:
    save_tiny_model("llama", tmp_path, max_shard_size="40KB")
    shard = sorted(tmp_path.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=shard.name):
        ropekit.load_model(tmp_path)


def test_mismatched_shapes_listed(tmp_path: Path) -> None:
    save_tiny_model("llama", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 64
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"mlp.gate_proj.weight: expected \(64, 48\), found \(80, 48\)"):
        ropekit.load_model(tmp_path)


def test_quantised_dtype_raises(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_tiny_model("llama", tmp_path)
    save_file({"model.embed_tokens.weight": torch.zeros(VOCAB, 48, dtype=torch.int8)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="unsupported tensor dtypes"):
        ropekit.load_model(tmp_path)


def test_hub_id_is_not_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="looks like a Hugging Face Hub id"):
        ropekit.load_model("meta-llama/Llama-3.2-1B")
    assert list(tmp_path.iterdir()) == []


def test_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        ropekit.load_model(tmp_path / "absent")


def qwen2_values(**changes) -> dict:
    values = dict(model_type="qwen2", **tiny_fields(num_hidden_layers=4))
    values.update(changes)
    return values


def test_qwen2_window_needs_use_sliding_window() -> None:
    from ropekit.models.hf import decoder_config_from_hf

    values = qwen2_values(sliding_window=8, use_sliding_window=False, layer_types=["sliding_attention"] * 4)
    assert decoder_config_from_hf(values).sliding_window is None


def test_qwen2_window_from_max_window_layers() -> None:
    from ropekit.models.hf import decoder_config_from_hf

    config = decoder_config_from_hf(qwen2_values(sliding_window=8, use_sliding_window=True, max_window_layers=2))
    assert [config.window_of_layer(index) for index in range(4)] == [None, None, 8, 8]


def test_non_silu_activation_raises() -> None:
    from ropekit.models.hf import decoder_config_from_hf

    with pytest.raises(ValueError, match="gelu"):
        decoder_config_from_hf(dict(model_type="llama", hidden_act="gelu", **tiny_fields()))
