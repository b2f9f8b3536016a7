"""MultiHeadLatentAttention against transformers' DeepseekV3Attention, and weight loading."""

from __future__ import annotations

import json

import pytest
import torch

from ropekit import LatentKVCache, MLAConfig, MultiHeadLatentAttention

transformers = pytest.importorskip("transformers")
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (  # noqa: E402
    DeepseekV3Attention,
    DeepseekV3Config,
    DeepseekV3RotaryEmbedding,
)

YARN = {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 32, "mscale": 0.9,
        "mscale_all_dim": 0.7, "beta_fast": 32.0, "beta_slow": 1.0}


def hf_config(*, q_lora_rank, interleaved, scaling=None, heads=4) -> DeepseekV3Config:
    rope_parameters = {"rope_type": "default", "rope_theta": 10000.0} if scaling is None else {**scaling,
                                                                                               "rope_theta": 10000.0}
    config = DeepseekV3Config(
        hidden_size=40,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        q_lora_rank=q_lora_rank,
        kv_lora_rank=12,
        qk_nope_head_dim=10,
        qk_rope_head_dim=6,
        v_head_dim=7,
        rope_interleave=interleaved,
        rope_parameters=rope_parameters,
        max_position_embeddings=256,
        vocab_size=16,
        num_hidden_layers=1,
        intermediate_size=8,
        moe_intermediate_size=8,
        n_routed_experts=2,
        n_group=1,
        topk_group=1,
        num_experts_per_tok=1,
    )
    config._attn_implementation = "eager"
    return config


def random_hf_attention(config: DeepseekV3Config, seed: int = 0) -> DeepseekV3Attention:
    torch.manual_seed(seed)
    attention = DeepseekV3Attention(config, layer_idx=0)
    with torch.no_grad():
        for name, parameter in attention.named_parameters():
            if "layernorm" in name:
                parameter.uniform_(0.5, 1.5)
            else:
                parameter.normal_(0.0, 0.2)
    return attention.eval()


def run_hf(attention: DeepseekV3Attention, config: DeepseekV3Config, x: torch.Tensor, positions: torch.Tensor):
    """DeepseekV3Attention with its own rotary embedding and an explicit causal mask."""
    cos, sin = DeepseekV3RotaryEmbedding(config)(x, positions)
    seq_len = x.shape[1]
    mask = torch.full((seq_len, seq_len), float("-inf")).triu(1)[None, None]
    output, _ = attention(x, (cos, sin), attention_mask=mask)
    return output


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().to(torch.float64), expected.detach().to(torch.float64)
    return float((actual - expected).norm() / expected.norm())


@pytest.mark.parametrize("q_lora_rank", [None, 8])
@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("scaling", [None, YARN], ids=["plain", "yarn"])
@pytest.mark.parametrize("mode", ["naive", "absorbed"])
def test_matches_transformers(q_lora_rank, interleaved, scaling, mode):
    config = hf_config(q_lora_rank=q_lora_rank, interleaved=interleaved, scaling=scaling)
    reference = random_hf_attention(config)
    module = MultiHeadLatentAttention(MLAConfig.from_hf(config.to_dict()))
    module.load_state_dict(reference.state_dict())
    x = torch.randn(2, 45, config.hidden_size)
    positions = torch.arange(45).expand(2, -1) + 7  # past original_max_position_embeddings

    with torch.no_grad():
        expected = run_hf(reference, config, x, positions)
        actual = module(x, positions, mode=mode)

    assert relative_error(actual, expected) < 1e-5


def test_decoding_matches_transformers_full_forward():
    config = hf_config(q_lora_rank=8, interleaved=True, scaling=YARN)
    reference = random_hf_attention(config)
    module = MultiHeadLatentAttention(MLAConfig.from_hf(config.to_dict()))
    module.load_state_dict(reference.state_dict())
    x = torch.randn(1, 17, config.hidden_size)
    cache = LatentKVCache(1, 17, module.config)

    with torch.no_grad():
        expected = run_hf(reference, config, x, torch.arange(17)[None])
        outputs = [module(x[:, :6], cache=cache)] + [module(x[:, i : i + 1], cache=cache) for i in range(6, 17)]

    assert relative_error(torch.cat(outputs, dim=1), expected) < 1e-5


def test_from_hf_reads_file_and_folder(tmp_path):
    config = hf_config(q_lora_rank=8, interleaved=True, scaling=YARN)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))

    from_folder = MLAConfig.from_hf(tmp_path)
    from_file = MLAConfig.from_hf(tmp_path / "config.json")

    assert from_folder == from_file
    assert (from_folder.q_lora_rank, from_folder.kv_lora_rank, from_folder.v_head_dim) == (8, 12, 7)
    assert from_folder.rope.interleaved


def test_from_hf_rejects_non_mla_config():
    with pytest.raises(ValueError, match="missing the MLA keys"):
        MLAConfig.from_hf({"hidden_size": 64, "num_attention_heads": 4})


# Weight names -----------------------------------------------------------------------------

REFERENCE_NAMES = {
    "q_a_proj": "wq_a",
    "q_a_layernorm": "q_norm",
    "q_b_proj": "wq_b",
    "q_proj": "wq",
    "kv_a_proj_with_mqa": "wkv_a",
    "kv_a_layernorm": "kv_norm",
    "kv_b_proj": "wkv_b",
    "o_proj": "wo",
}


@pytest.mark.parametrize("q_lora_rank", [None, 8])
def test_loads_reference_names(q_lora_rank):
    config = hf_config(q_lora_rank=q_lora_rank, interleaved=True)
    reference = random_hf_attention(config)
    renamed = {}
    for key, value in reference.state_dict().items():
        module_name, leaf = key.split(".")
        renamed[f"{REFERENCE_NAMES[module_name]}.{leaf}"] = value
    module = MultiHeadLatentAttention(MLAConfig.from_hf(config.to_dict()))

    module.load_state_dict(renamed)

    for key, value in reference.state_dict().items():
        assert torch.equal(module.state_dict()[key], value), key


def test_reference_names_load_inside_a_parent_module():
    config = MLAConfig.simple(32, 16, 4)
    parent = torch.nn.ModuleDict({"attn": MultiHeadLatentAttention(config)})
    source = MultiHeadLatentAttention(config)
    state = {f"attn.{key.replace('kv_b_proj', 'wkv_b').replace('o_proj', 'wo')}": value
             for key, value in source.state_dict().items()}

    parent.load_state_dict(state)

    assert torch.equal(parent["attn"].kv_b_proj.weight, source.kv_b_proj.weight)
    assert torch.equal(parent["attn"].o_proj.weight, source.o_proj.weight)


def test_bad_state_dict_lists_every_problem():
    config = MLAConfig.simple(32, 16, 4)
    module = MultiHeadLatentAttention(config)
    state = dict(module.state_dict())
    del state["o_proj.weight"]
    state["kv_b_proj.weight"] = torch.zeros(3, 16)
    state["rotary.inv_freq"] = torch.zeros(4)

    with pytest.raises(ValueError) as error:
        module.load_state_dict(state)

    message = str(error.value)
    assert "missing keys: o_proj.weight (32, 32)" in message
    assert "unexpected keys: rotary.inv_freq (4,)" in message
    assert "kv_b_proj.weight: expected (64, 16), got (3, 16)" in message


def test_mis_shaped_key_raises_without_strict():
    config = MLAConfig.simple(32, 16, 4)
    module = MultiHeadLatentAttention(config)

    with pytest.raises(ValueError, match=r"o_proj.weight: expected \(32, 32\), got \(32, 31\)"):
        module.load_state_dict({"wo.weight": torch.zeros(32, 31)}, strict=False)


def test_preset_equals_published_config():
    # The attention keys of config.json in the Hugging Face repo deepseek-ai/DeepSeek-V3.
    published = {
        "hidden_size": 7168, "num_attention_heads": 128, "num_key_value_heads": 128, "num_hidden_layers": 61,
        "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
        "v_head_dim": 128, "rms_norm_eps": 1e-06, "rope_theta": 10000, "max_position_embeddings": 163840,
        "attention_bias": False,
        "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                         "original_max_position_embeddings": 4096, "type": "yarn"},
    }

    assert MLAConfig.from_hf(published) == MLAConfig.deepseek_v3()
