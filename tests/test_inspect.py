"""`ropekit inspect`: presets, sources, the report against transformers, and the command."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from ropekit.cli import main
from ropekit.inspect import (
    format_report,
    inspect_source,
    load_preset,
    load_source,
    original_and_context,
    preset_names,
)

REQUIRED_PRESETS = ("llama-3.1-8b", "qwen2-7b", "phi-3-mini-128k", "deepseek-v2-lite", "deepseek-v3")

# The --json schema that outside tools rely on.
ROPE_KEYS = {
    "rope_type", "theta", "head_dim", "rotary_dim", "interleaved", "attention_factor",
    "inv_freq", "wavelengths", "original_context", "context",
}
ATTENTION_KEYS = {
    "type", "num_layers", "softmax_scale", "kv_elements_per_token_per_layer",
    "kv_bytes_per_token", "kv_bytes_per_token_all_layers",
}
DTYPE_KEYS = {"bfloat16", "float8"}

# A small Llama-style config.json for file and directory sources.
TINY_CONFIG = {
    "model_type": "llama",
    "hidden_size": 96,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "num_hidden_layers": 3,
    "max_position_embeddings": 512,
    "rope_theta": 5000.0,
}


def transformers_frequencies(config: dict, seq_len: int) -> tuple[torch.Tensor, float]:
    """Return transformers' (inv_freq, attention_factor) for a config.json dict."""
    pytest.importorskip("transformers")
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf_config = AutoConfig.for_model(config["model_type"], **{k: v for k, v in config.items() if k != "model_type"})
    rope_type = hf_config.rope_parameters["rope_type"]
    if rope_type == "default":
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        return LlamaRotaryEmbedding.compute_default_rope_parameters(config=hf_config)
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[rope_type](hf_config, None, seq_len=seq_len)
    return inv_freq, attention_factor


# Presets


def test_presets_include_required_models():
    assert set(REQUIRED_PRESETS) <= set(preset_names())


@pytest.mark.parametrize("name", REQUIRED_PRESETS)
def test_preset_names_its_source(name):
    preset = load_preset(name)
    assert preset["source"] == f"https://huggingface.co/{preset['model']}/blob/main/config.json"
    assert preset["name"] == name


def test_preset_lookup_ignores_case():
    assert load_preset("DeepSeek-V3")["name"] == "deepseek-v3"


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match="llama-3.1-8b"):
        load_preset("llama-9")


# The report against transformers and hand-derived sizes


@pytest.mark.parametrize("name", REQUIRED_PRESETS)
def test_inv_freq_matches_transformers(name):
    report = inspect_source(name)["rope"]
    reference, _factor = transformers_frequencies(load_preset(name)["config"], seq_len=report["context"])
    ours = torch.tensor(report["inv_freq"], dtype=torch.float64)
    reference = reference.to(torch.float64)
    assert ours.shape == reference.shape
    # transformers forms inv_freq in float32, hence 1e-6 relative.
    assert torch.allclose(ours, reference, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("name", REQUIRED_PRESETS)
def test_attention_factor_matches_transformers(name):
    report = inspect_source(name)["rope"]
    _inv_freq, reference = transformers_frequencies(load_preset(name)["config"], seq_len=report["context"])
    assert report["attention_factor"] == pytest.approx(reference, rel=1e-9)


@pytest.mark.parametrize("name", REQUIRED_PRESETS)
def test_wavelength_summary(name):
    rope = inspect_source(name)["rope"]
    wavelengths = [2 * math.pi / value for value in rope["inv_freq"]]
    assert rope["wavelengths"] == pytest.approx(wavelengths, rel=1e-12)
    assert rope["shortest_wavelength"] == pytest.approx(min(wavelengths), rel=1e-12)
    assert rope["longest_wavelength"] == pytest.approx(max(wavelengths), rel=1e-12)
    assert rope["pairs_within_original_context"] == sum(w <= rope["original_context"] for w in wavelengths)


@pytest.mark.parametrize(
    ("name", "rope_type", "original", "context", "rotary_dim", "interleaved"),
    [
        ("llama-3.1-8b", "llama3", 8192, 131072, 128, False),
        ("qwen2-7b", "default", 131072, 131072, 128, False),
        ("phi-3-mini-128k", "longrope", 4096, 131072, 96, False),
        ("deepseek-v2-lite", "yarn", 4096, 163840, 64, True),
        ("deepseek-v3", "yarn", 4096, 163840, 64, True),
    ],
)
def test_rope_parameters_of_presets(name, rope_type, original, context, rotary_dim, interleaved):
    rope = inspect_source(name)["rope"]
    assert rope["rope_type"] == rope_type
    assert rope["original_context"] == original
    assert rope["context"] == context
    assert rope["rotary_dim"] == rotary_dim
    assert rope["interleaved"] is interleaved


@pytest.mark.parametrize(
    ("config", "scaling", "expected"),
    [
        ({"max_position_embeddings": 4096}, None, (4096, 4096)),
        ({"max_position_embeddings": 4096}, {"rope_type": "linear", "factor": 4.0}, (4096, 16384)),
        # Qwen2.5 with YaRN keeps max_position_embeddings at the pretrained length.
        ({"max_position_embeddings": 32768}, {"factor": 4.0, "original_max_position_embeddings": 32768}, (32768, 131072)),
        ({"max_position_embeddings": 131072}, {"factor": 8.0, "original_max_position_embeddings": 8192}, (8192, 131072)),
        # Phi-3 keeps the original length at the top level.
        ({"max_position_embeddings": 131072, "original_max_position_embeddings": 4096}, None, (4096, 131072)),
    ],
)
def test_original_and_context_rules(config, scaling, expected):
    assert original_and_context(config, scaling) == expected


@pytest.mark.parametrize(
    ("name", "kind", "elements", "mha_elements", "num_layers"),
    [
        # 2 (key and value) x key/value heads x head_dim for per-head caches.
        ("llama-3.1-8b", "gqa", 2 * 8 * 128, 2 * 32 * 128, 32),
        ("qwen2-7b", "gqa", 2 * 4 * 128, 2 * 28 * 128, 28),
        ("phi-3-mini-128k", "mha", 2 * 32 * 96, 2 * 32 * 96, 32),
        # kv_lora_rank + qk_rope_head_dim for MLA; MHA keeps 128 heads x (128 + 64 + 128).
        ("deepseek-v2-lite", "mla", 512 + 64, 16 * (128 + 64 + 128), 27),
        ("deepseek-v3", "mla", 576, 40960, 61),
    ],
)
def test_kv_cache_sizes(name, kind, elements, mha_elements, num_layers):
    attention = inspect_source(name)["attention"]
    assert attention["type"] == kind
    assert attention["num_layers"] == num_layers
    assert attention["kv_elements_per_token_per_layer"] == elements
    assert attention["kv_bytes_per_token"] == {"bfloat16": 2 * elements, "float8": elements}
    assert attention["kv_bytes_per_token_all_layers"] == {
        "bfloat16": 2 * elements * num_layers,
        "float8": elements * num_layers,
    }
    assert attention["comparison"]["mha"]["kv_elements_per_token_per_layer"] == mha_elements


def test_comparison_rows_of_per_head_model():
    comparison = inspect_source("llama-3.1-8b")["attention"]["comparison"]
    assert set(comparison) == {"mha", "gqa", "mqa"}
    assert comparison["mqa"]["kv_elements_per_token_per_layer"] == 2 * 128
    assert comparison["gqa"]["kv_heads"] == 8


def test_softmax_scale_of_deepseek_v3():
    # (qk_nope_head_dim + qk_rope_head_dim)^-0.5 x mscale(40, 1.0)^2, mscale(s, m) = 0.1 m ln s + 1.
    expected = (128 + 64) ** -0.5 * (0.1 * 1.0 * math.log(40) + 1) ** 2
    assert inspect_source("deepseek-v3")["attention"]["softmax_scale"] == pytest.approx(expected, rel=1e-12)


def test_softmax_scale_of_per_head_model():
    assert inspect_source("phi-3-mini-128k")["attention"]["softmax_scale"] == pytest.approx(96**-0.5, rel=1e-12)


@pytest.mark.parametrize(("kv_heads", "kind"), [(6, "mha"), (3, "gqa"), (1, "mqa")])
def test_attention_type_follows_kv_heads(tmp_path, kv_heads, kind):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY_CONFIG, "num_key_value_heads": kv_heads}))
    attention = inspect_source(path)["attention"]
    assert attention["type"] == kind
    assert attention["kv_elements_per_token_per_layer"] == 2 * kv_heads * 16


def test_report_is_json_serialisable():
    report = inspect_source("phi-3-mini-128k")
    assert json.loads(json.dumps(report)) == report


# Sources: files, directories, GGUF


def test_config_file_source(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY_CONFIG))
    source = load_source(path)
    assert source.kind == "config"
    rope = inspect_source(path)["rope"]
    assert rope["head_dim"] == 16
    assert rope["theta"] == 5000.0
    assert rope["inv_freq"] == pytest.approx([5000.0 ** (-2 * i / 16) for i in range(8)], rel=1e-12)


def test_transformers_v5_rope_parameters(tmp_path):
    config = {key: value for key, value in TINY_CONFIG.items() if key != "rope_theta"}
    config["rope_parameters"] = {
        "rope_type": "yarn",
        "rope_theta": 1000000.0,
        "factor": 4.0,
        "original_max_position_embeddings": 512,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    rope = inspect_source(path)["rope"]
    reference, attention_factor = transformers_frequencies(config, seq_len=rope["context"])
    assert rope["theta"] == 1000000.0
    assert rope["context"] == 2048
    assert torch.allclose(torch.tensor(rope["inv_freq"], dtype=torch.float64), reference.double(), rtol=1e-6, atol=0)
    assert rope["attention_factor"] == pytest.approx(attention_factor, rel=1e-9)


def test_gpt_neox_field_names(tmp_path):
    config = {key: value for key, value in TINY_CONFIG.items() if key != "rope_theta"}
    config.update(model_type="gpt_neox", rotary_pct=0.25, rotary_emb_base=20000)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    rope = inspect_source(path)["rope"]
    assert rope["rotary_dim"] == 4  # a quarter of head_dim 16
    assert rope["theta"] == 20000.0


def test_directory_source_reads_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY_CONFIG))
    source = load_source(tmp_path)
    assert source.kind == "directory"
    assert source.config["num_hidden_layers"] == 3


def test_multimodal_config_uses_text_config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llava", "text_config": TINY_CONFIG, "vision_config": {}}))
    assert inspect_source(path)["attention"]["num_layers"] == 3


def test_gguf_file_source(stories260k):
    import gguf

    metadata = {name: field.contents() for name, field in gguf.GGUFReader(stories260k).fields.items()}
    report = inspect_source(stories260k)
    heads = metadata["llama.attention.head_count"]
    assert report["source"]["kind"] == "gguf"
    assert report["rope"]["head_dim"] == metadata["llama.embedding_length"] // heads
    assert report["rope"]["rotary_dim"] == metadata["llama.rope.dimension_count"]
    assert report["rope"]["interleaved"] is True  # llama GGUF weights expect adjacent pairs
    assert report["rope"]["context"] == metadata["llama.context_length"]
    assert report["attention"]["num_layers"] == metadata["llama.block_count"]
    assert report["attention"]["num_kv_heads"] == metadata["llama.attention.head_count_kv"]


def test_directory_with_one_gguf_file(tmp_path, stories260k):
    shutil.copy(stories260k, tmp_path / "model.gguf")
    assert load_source(tmp_path).kind == "gguf"


def write_gguf(path, *, head_count=True, freq_factors=None, scaling=None, freq_factors_bf16=False):
    """Write a metadata-only llama GGUF file with gguf.GGUFWriter."""
    import gguf
    import numpy

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(4096)
    writer.add_embedding_length(256)
    writer.add_block_count(2)
    if head_count:
        writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_rope_dimension_count(64)
    writer.add_rope_freq_base(500000.0)
    if scaling is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(scaling)
        writer.add_rope_scaling_orig_ctx_len(1024)
    if freq_factors is not None and freq_factors_bf16:
        kind = gguf.GGMLQuantizationType.BF16
        stored = gguf.quants.quantize(numpy.asarray(freq_factors, dtype=numpy.float32), kind)
        writer.add_tensor("rope_freqs.weight", stored, raw_dtype=kind)
    elif freq_factors is not None:
        writer.add_tensor("rope_freqs.weight", numpy.asarray(freq_factors, dtype=numpy.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_freq_factors_divide_frequencies(tmp_path):
    factors = [1.0 + i for i in range(32)]
    path = tmp_path / "factors.gguf"
    write_gguf(path, freq_factors=factors)
    rope = inspect_source(path)["rope"]
    expected = [500000.0 ** (-2 * i / 64) / factors[i] for i in range(32)]
    assert rope["inv_freq"] == pytest.approx(expected, rel=1e-6)
    assert rope["freq_factors"] == factors


def test_gguf_bf16_freq_factors(tmp_path):
    factors = [1.0 + i for i in range(32)]  # whole numbers up to 32 are exact in bfloat16
    path = tmp_path / "factors.gguf"
    write_gguf(path, freq_factors=factors, freq_factors_bf16=True)

    rope = inspect_source(path)["rope"]

    assert rope["freq_factors"] == factors


def test_gguf_freq_factor_count_is_checked(tmp_path):
    path = tmp_path / "factors.gguf"
    write_gguf(path, freq_factors=[1.0] * 31)
    with pytest.raises(ValueError, match="31 factors but RoPE has 32 pairs"):
        inspect_source(path)


def test_gguf_yarn_scaling(tmp_path):
    path = tmp_path / "yarn.gguf"
    write_gguf(path, scaling=4.0)
    rope = inspect_source(path)["rope"]
    assert rope["rope_type"] == "yarn"
    assert rope["original_context"] == 1024
    assert rope["context"] == 4096


def test_gguf_latent_attention(tmp_path):
    import gguf

    # DeepSeek-V2-Lite sizes in the layout llama.cpp writes for the absorbed form.
    path = tmp_path / "mla.gguf"
    writer = gguf.GGUFWriter(str(path), "deepseek2")
    writer.add_context_length(163840)
    writer.add_embedding_length(2048)
    writer.add_block_count(27)
    writer.add_head_count(16)
    writer.add_head_count_kv(1)
    writer.add_kv_lora_rank(512)
    writer.add_key_length(512 + 64)
    writer.add_value_length(512)
    writer.add_key_length_mla(128 + 64)
    writer.add_value_length_mla(128)
    writer.add_rope_dimension_count(64)
    writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    writer.add_rope_scaling_factor(40.0)
    writer.add_rope_scaling_orig_ctx_len(4096)
    writer.add_rope_scaling_yarn_log_mul(0.1 * 0.707)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    report = inspect_source(path)
    expected_scale = (128 + 64) ** -0.5 * (0.1 * 0.707 * math.log(40) + 1) ** 2
    assert report["attention"]["type"] == "mla"
    assert report["attention"]["kv_elements_per_token_per_layer"] == 512 + 64
    assert report["attention"]["comparison"]["mha"]["kv_elements_per_token_per_layer"] == 16 * (128 + 64 + 128)
    assert report["attention"]["softmax_scale"] == pytest.approx(expected_scale, rel=1e-6)
    assert report["rope"]["interleaved"] is True
    assert report["rope"]["inv_freq"] == pytest.approx(inspect_source("deepseek-v2-lite")["rope"]["inv_freq"], rel=1e-12)


def test_gguf_missing_key_is_named(tmp_path):
    path = tmp_path / "broken.gguf"
    write_gguf(path, head_count=False)
    with pytest.raises(ValueError, match=r"llama\.attention\.head_count"):
        load_source(path)


def test_truncated_gguf_is_an_error_not_a_crash(tmp_path, stories260k, capsys):
    path = tmp_path / "truncated.gguf"
    path.write_bytes(stories260k.read_bytes()[:1000])

    code = main(["inspect", str(path)])

    assert code == 2
    assert "the file may be truncated or corrupt" in capsys.readouterr().err


# Bad sources


def test_missing_source_is_rejected():
    with pytest.raises(ValueError, match="neither an existing file"):
        load_source("no/such/config.json")


def test_non_json_file_is_rejected(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a model")
    with pytest.raises(ValueError, match="neither a GGUF file nor a JSON model config"):
        load_source(path)


def test_json_list_is_rejected(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not the object of a model config"):
        load_source(path)


@pytest.mark.parametrize("field", ["num_hidden_layers", "num_attention_heads"])
def test_missing_required_field_is_named(tmp_path, field):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({key: value for key, value in TINY_CONFIG.items() if key != field}))
    with pytest.raises(ValueError, match=field):
        load_source(path)


def test_absolute_position_model_is_rejected(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY_CONFIG, "model_type": "bert", "position_embedding_type": "absolute"}))
    with pytest.raises(ValueError, match="position_embedding_type 'absolute'"):
        load_source(path)


def test_missing_mla_field_is_named(tmp_path):
    config = dict(load_preset("deepseek-v3")["config"])
    del config["v_head_dim"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="v_head_dim"):
        inspect_source(path)


def test_missing_context_is_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({key: value for key, value in TINY_CONFIG.items() if key != "max_position_embeddings"}))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        inspect_source(path)


def test_directory_without_model_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="neither a config.json nor a .gguf file"):
        load_source(tmp_path)


# ropekit's own checkpoints


def save_tiny_decoder(directory, **overrides):
    """Save a small ropekit Decoder with ``ropekit.save_model``; return the directory."""
    from ropekit.models import Decoder, DecoderConfig, save_model

    fields = dict(vocab_size=64, hidden_size=48, num_layers=2, num_heads=6, num_kv_heads=2,
                  max_position_embeddings=128)
    fields.update(overrides)
    return save_model(Decoder(DecoderConfig(**fields)), directory)


YARN_ROPE = {"head_dim": 8, "theta": 5000.0, "interleaved": True, "max_position_embeddings": 128,
             "scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}}


def test_ropekit_checkpoint_attention(tmp_path):
    attention = inspect_source(save_tiny_decoder(tmp_path / "model"))["attention"]
    assert attention["type"] == "gqa"
    assert attention["num_kv_heads"] == 2
    assert attention["num_layers"] == 2
    assert attention["kv_elements_per_token_per_layer"] == 2 * 2 * 8


def test_ropekit_checkpoint_rope_matches_transformers(tmp_path):
    rope = inspect_source(save_tiny_decoder(tmp_path / "model", rope=YARN_ROPE))["rope"]
    hf_config = {"model_type": "llama", "hidden_size": 48, "num_attention_heads": 6, "head_dim": 8,
                 "max_position_embeddings": 128,
                 "rope_parameters": {"rope_type": "yarn", "rope_theta": 5000.0, "factor": 4.0,
                                     "original_max_position_embeddings": 128}}
    reference, attention_factor = transformers_frequencies(hf_config, seq_len=rope["context"])
    assert rope["context"] == 512
    assert rope["interleaved"] is True
    assert torch.allclose(torch.tensor(rope["inv_freq"], dtype=torch.float64), reference.double(), rtol=1e-6, atol=0)
    assert rope["attention_factor"] == pytest.approx(attention_factor, rel=1e-9)


def test_ropekit_checkpoint_source_kind(tmp_path):
    source = load_source(save_tiny_decoder(tmp_path / "model"))
    assert source.kind == "directory"
    assert source.config["model_type"] == "ropekit"


def test_ropekit_mla_checkpoint(tmp_path):
    from ropekit.attention import MLAConfig

    mla = MLAConfig(hidden_size=48, num_heads=6, q_lora_rank=None, kv_lora_rank=16, qk_nope_head_dim=8,
                    qk_rope_head_dim=4, v_head_dim=8)
    attention = inspect_source(save_tiny_decoder(tmp_path / "mla", attention="mla", mla=mla, num_kv_heads=None))[
        "attention"
    ]
    assert attention["type"] == "mla"
    assert attention["kv_lora_rank"] == 16
    assert attention["kv_elements_per_token_per_layer"] == 16 + 4


def test_ropekit_checkpoint_without_rope_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="position_encoding 'alibi', not RoPE"):
        load_source(save_tiny_decoder(tmp_path / "alibi", position_encoding="alibi"))


def test_command_reads_ropekit_checkpoint(tmp_path, capsys):
    directory = save_tiny_decoder(tmp_path / "model")
    assert main(["inspect", str(directory)]) == 0
    assert "gqa (2 KV heads, this model)" in capsys.readouterr().out


# Invalid sizes


@pytest.mark.parametrize("layers", [0, -2])
def test_layer_count_must_be_positive(tmp_path, layers):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY_CONFIG, "num_hidden_layers": layers}))
    with pytest.raises(ValueError, match=f"num_hidden_layers = {layers}; expected a positive whole number"):
        load_source(path)


def test_fractional_size_is_rejected(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY_CONFIG, "hidden_size": 64.5}))
    with pytest.raises(ValueError, match="hidden_size = 64.5"):
        load_source(path)


def test_boolean_size_is_rejected(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY_CONFIG, "num_key_value_heads": True}))
    with pytest.raises(ValueError, match="num_key_value_heads = True"):
        load_source(path)


def test_whole_float_size_becomes_int(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY_CONFIG, "hidden_size": 96.0}))
    assert load_source(path).config["hidden_size"] == 96


def test_command_rejects_negative_layers(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY_CONFIG, "num_hidden_layers": -1}))
    assert main(["inspect", str(path)]) == 2
    assert "num_hidden_layers = -1" in capsys.readouterr().err


# The command


def test_command_json_schema(capsys):
    assert main(["inspect", "deepseek-v3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert ROPE_KEYS <= set(report["rope"])
    assert ATTENTION_KEYS <= set(report["attention"])
    assert set(report["attention"]["kv_bytes_per_token"]) == DTYPE_KEYS
    assert set(report["attention"]["kv_bytes_per_token_all_layers"]) == DTYPE_KEYS
    assert report["attention"]["type"] == "mla"
    assert len(report["rope"]["inv_freq"]) == 32


def test_command_text_matches_format_report(capsys):
    assert main(["inspect", "llama-3.1-8b"]) == 0
    assert capsys.readouterr().out == format_report(inspect_source("llama-3.1-8b"))


def test_text_report_sections():
    text = format_report(inspect_source("deepseek-v3"))
    assert "RoPE" in text
    assert "softmax scale" in text
    assert "40,960" in text  # the MHA row of the cache comparison
    assert "mla (this model)" in text


def test_text_report_names_hypothetical_gqa_heads():
    text = format_report(inspect_source("deepseek-v3"))
    assert "gqa (8 KV heads)" in text


def test_command_error_goes_to_stderr(capsys, tmp_path):
    assert main(["inspect", str(tmp_path / "missing.json")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "missing.json" in captured.err


def test_command_plot_writes_png(tmp_path, capsys):
    path = tmp_path / "wavelengths.png"
    assert main(["inspect", "phi-3-mini-128k", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(path) in capsys.readouterr().err


def test_command_plot_rejects_freq_factors(tmp_path, capsys):
    model = tmp_path / "factors.gguf"
    write_gguf(model, freq_factors=[2.0] * 32)
    assert main(["inspect", str(model), "--plot", str(tmp_path / "figure.png")]) == 2
    assert "rope_freqs" in capsys.readouterr().err
    assert not (tmp_path / "figure.png").exists()


def test_command_plot_rejects_unknown_suffix(tmp_path, capsys):
    assert main(["inspect", "qwen2-7b", "--plot", str(tmp_path / "figure.txt")]) == 2
    assert ".png" in capsys.readouterr().err
