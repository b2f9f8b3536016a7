"""kv_cache_report: MLA cache sizes against MHA, GQA and MQA of the same head dimensions."""

from __future__ import annotations

import json

import pytest
import torch

from ropekit import LatentKVCache, MLAConfig, kv_cache_report


def test_deepseek_v3_per_layer_elements():
    # DeepSeek-V3: 512 latent + 64 rope values against 128 heads x (128 + 64 + 128).
    report = kv_cache_report(MLAConfig.deepseek_v3())

    assert report.layout("MLA").elements_per_token_per_layer == 576
    assert report.layout("MHA").elements_per_token_per_layer == 40_960
    assert report.layout("MQA").elements_per_token_per_layer == 320
    assert report.layout("GQA").elements_per_token_per_layer == 8 * 320


def test_bytes_follow_dtype_and_layers():
    report = kv_cache_report(MLAConfig.deepseek_v3(), dtype=torch.float32)
    mla = report.layout("MLA")

    assert report.num_layers == 61
    assert mla.bytes_per_token_per_layer == 576 * 4
    assert mla.bytes_per_token == 576 * 4 * 61
    assert report.bytes_for_tokens(1000) == 576 * 4 * 61 * 1000


def test_explicit_layer_count_overrides_config():
    report = kv_cache_report(MLAConfig.deepseek_v2_lite(), num_layers=2)

    assert report.layout("MHA").bytes_per_token == 16 * 320 * 2 * 2


def test_unknown_layer_count_gives_no_model_total():
    report = kv_cache_report(MLAConfig.simple(64, 32, 4))

    assert report.num_layers is None
    assert report.layout("MLA").bytes_per_token is None
    assert report.bytes_for_tokens(10) is None


def test_ratio_to_mla():
    report = kv_cache_report(MLAConfig.deepseek_v3())

    assert report.layout("MHA").ratio_to_mla == pytest.approx(40_960 / 576)
    assert report.layout("MLA").ratio_to_mla == 1.0


def test_matches_latent_cache_bytes():
    config = MLAConfig.deepseek_v2_lite()
    cache = LatentKVCache(1, 1, config, dtype=torch.bfloat16)

    assert kv_cache_report(config).layout("MLA").bytes_per_token_per_layer == cache.bytes_per_token()


def test_matches_transformers_cache_size():
    # transformers' DeepseekV3Attention caches the normalised latent and the rotated rope key
    # per token, one "head" each; the report's MLA row must count the same values.
    transformers = pytest.importorskip("transformers")
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Attention, DeepseekV3RotaryEmbedding

    hf = transformers.DeepseekV3Config(
        hidden_size=32, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=None, kv_lora_rank=12,
        qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, vocab_size=8, num_hidden_layers=1,
        intermediate_size=8, moe_intermediate_size=8, n_routed_experts=2, n_group=1, topk_group=1,
        num_experts_per_tok=1,
    )
    hf._attn_implementation = "eager"
    attention = DeepseekV3Attention(hf, layer_idx=0)
    cache = transformers.DynamicCache(config=hf)
    x = torch.randn(1, 5, 32)
    positions = torch.arange(5)[None]
    attention(x, DeepseekV3RotaryEmbedding(hf)(x, positions), attention_mask=None, cache=cache)
    stored = sum(tensor.numel() for tensor in (cache.layers[0].keys, cache.layers[0].values))

    report = kv_cache_report(MLAConfig.from_hf(hf.to_dict()), dtype=torch.float32)

    assert report.layout("MLA").elements_per_token_per_layer == stored // 5


def test_dict_is_json_and_table_lists_layouts():
    report = kv_cache_report(MLAConfig.deepseek_v3())

    data = json.loads(json.dumps(report.to_dict()))
    table = report.format_table()

    assert [layout["name"] for layout in data["layouts"]] == ["MLA", "MHA", "GQA", "MQA"]
    assert data["dtype"] == "bfloat16"
    assert "| MHA | 128 | 40,960 |" in table


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_layers": 0}, ValueError, "num_layers must be a positive int"),
        ({"dtype": "bf16"}, TypeError, "dtype must be a torch.dtype"),
        ({"gqa_kv_heads": 3}, ValueError, "gqa_kv_heads must be a positive divisor of num_heads=128"),
    ],
)
def test_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        kv_cache_report(MLAConfig.deepseek_v3(), **kwargs)


def test_rejects_non_mla_config():
    with pytest.raises(TypeError, match="ropekit.MLAConfig"):
        kv_cache_report({"kv_lora_rank": 512})
