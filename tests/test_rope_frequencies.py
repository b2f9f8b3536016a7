"""RoPE frequencies and RopeConfig.from_hf against transformers' modeling_rope_utils.

The model configs are the RoPE-relevant keys of the public config.json files of each
model. The Phi-3 factor lists are synthetic (smooth, of the right length): the test
checks the formula, not Microsoft's fitted numbers.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import pickle

import pytest
import torch

from ropekit.rope import (
    RopeConfig,
    ScalingType,
    default_inv_freq,
    get_scaling_type,
    register_scaling,
    rope_frequencies,
    scaling_types,
    softmax_scale_factor,
)

transformers = pytest.importorskip("transformers")
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, yarn_apply_mscale  # noqa: E402

RELATIVE_TOLERANCE = 1e-6

PHI3_SHORT = [1.0 + 0.05 * i / 47 for i in range(48)]
PHI3_LONG = [1.0 + 49.0 * (i / 47) ** 2 for i in range(48)]

LLAMA_3_1_8B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "rope_theta": 500000.0,
    "max_position_embeddings": 131072,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
}
QWEN2_7B = {
    "model_type": "qwen2",
    "hidden_size": 3584,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 32768,
}
QWEN2_5_7B_YARN = {
    **QWEN2_7B,
    "rope_scaling": {"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"},
}
PHI3_MINI_128K = {
    "model_type": "phi3",
    "hidden_size": 3072,
    "num_attention_heads": 32,
    "rope_theta": 10000.0,
    "max_position_embeddings": 131072,
    "original_max_position_embeddings": 4096,
    "rope_scaling": {"type": "longrope", "short_factor": PHI3_SHORT, "long_factor": PHI3_LONG},
}
DEEPSEEK_V3 = {
    "model_type": "deepseek_v3",
    "hidden_size": 7168,
    "num_attention_heads": 128,
    "qk_rope_head_dim": 64,
    "qk_nope_head_dim": 128,
    "v_head_dim": 128,
    "rope_theta": 10000,
    "max_position_embeddings": 163840,
    "rope_scaling": {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 40,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
}
PHI_2 = {
    "model_type": "phi",
    "hidden_size": 2560,
    "num_attention_heads": 32,
    "partial_rotary_factor": 0.4,
    "rope_theta": 10000.0,
    "max_position_embeddings": 2048,
}


def _with_scaling(config: dict, **scaling) -> dict:
    return {**config, "rope_scaling": scaling}


# (case id, HF config, current lengths to check; None is the trained length)
CASES = [
    ("llama3.1-8b-llama3", LLAMA_3_1_8B, [None]),
    ("qwen2-7b-default", QWEN2_7B, [None]),
    ("qwen2.5-7b-yarn", QWEN2_5_7B_YARN, [None]),
    ("phi3-mini-128k-longrope", PHI3_MINI_128K, [None, 100, 4096, 4097, 131072]),
    ("deepseek-v3-yarn", DEEPSEEK_V3, [None]),
    ("phi2-partial-default", PHI_2, [None]),
    ("phi2-partial-linear", _with_scaling(PHI_2, type="linear", factor=4.0), [None]),
    ("phi2-partial-dynamic", _with_scaling(PHI_2, type="dynamic", factor=2.0), [None, 7, 2048, 2049, 10000]),
    ("llama3.1-dynamic", _with_scaling(LLAMA_3_1_8B, rope_type="dynamic", factor=3.0), [None, 131073, 500000]),
    (
        "phi2-partial-yarn",
        _with_scaling(PHI_2, type="yarn", factor=8.0, original_max_position_embeddings=2048),
        [None],
    ),
    (
        "yarn-explicit-attention-factor",
        _with_scaling(QWEN2_7B, type="yarn", factor=4.0, original_max_position_embeddings=8192, attention_factor=0.8),
        [None],
    ),
    (
        "yarn-mscale-only",
        _with_scaling(QWEN2_7B, type="yarn", factor=16.0, original_max_position_embeddings=2048, mscale=0.707),
        [None],
    ),
    (
        "yarn-no-truncate-betas",
        _with_scaling(
            QWEN2_7B,
            type="yarn",
            factor=4.0,
            original_max_position_embeddings=4096,
            truncate=False,
            beta_fast=16,
            beta_slow=2,
        ),
        [None],
    ),
    (
        "deepseek-v3-mscale-ratio",
        {**DEEPSEEK_V3, "rope_scaling": {**DEEPSEEK_V3["rope_scaling"], "mscale": 0.707, "mscale_all_dim": 1.0}},
        [None],
    ),
    (
        "longrope-explicit-factor",
        {**PHI3_MINI_128K, "rope_scaling": {**PHI3_MINI_128K["rope_scaling"], "factor": 8.0}},
        [None, 5000],
    ),
]


def _transformers_config(hf: dict):
    """Build the transformers config object for an HF config dict."""
    hf = json.loads(json.dumps(hf))  # transformers edits the nested dicts in place
    model_type = hf.pop("model_type")
    return transformers.AutoConfig.for_model(model_type, **hf)


def _transformers_frequencies(hf: dict, seq_len: int | None) -> tuple[torch.Tensor, float]:
    config = _transformers_config(hf)
    rope_type = config.rope_parameters["rope_type"]
    if rope_type == "default":
        # The default type lives on each model's rotary class; write its formula out.
        partial = config.rope_parameters.get("partial_rotary_factor", 1.0)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        dim = int(head_dim * partial)
        base = config.rope_parameters["rope_theta"]
        return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim)), 1.0
    return ROPE_INIT_FUNCTIONS[rope_type](config, None, seq_len=seq_len)


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.to(torch.float64)
    return ((actual - expected).abs() / expected.abs()).max().item()


@pytest.mark.parametrize(("hf", "seq_lens"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_inv_freq_matches_transformers(hf: dict, seq_lens: list) -> None:
    config = RopeConfig.from_hf(hf)
    for seq_len in seq_lens:
        expected, _ = _transformers_frequencies(hf, seq_len)
        actual, _ = rope_frequencies(config, seq_len)
        assert actual.dtype == torch.float64
        assert actual.shape == expected.shape, f"seq_len={seq_len}"
        assert _relative_error(actual, expected) <= RELATIVE_TOLERANCE, f"seq_len={seq_len}"


@pytest.mark.parametrize(("hf", "seq_lens"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_attention_scale_matches_transformers(hf: dict, seq_lens: list) -> None:
    config = RopeConfig.from_hf(hf)
    for seq_len in seq_lens:
        _, expected = _transformers_frequencies(hf, seq_len)
        _, actual = rope_frequencies(config, seq_len)
        assert isinstance(actual, float)
        assert math.isclose(actual, expected, rel_tol=RELATIVE_TOLERANCE), f"seq_len={seq_len}"


@pytest.mark.parametrize("hf", [DEEPSEEK_V3, QWEN2_5_7B_YARN], ids=["deepseek-v3", "qwen2.5-yarn"])
def test_softmax_scale_factor_matches_transformers(hf: dict) -> None:
    parameters = _transformers_config(hf).rope_parameters
    expected = yarn_apply_mscale(parameters, 1.0)
    assert math.isclose(softmax_scale_factor(RopeConfig.from_hf(hf)), expected, rel_tol=1e-12)


# from_hf field mapping -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("hf", "head_dim", "rotary_dim", "interleaved", "theta"),
    [
        (LLAMA_3_1_8B, 128, 128, False, 500000.0),
        (QWEN2_7B, 128, 128, False, 1000000.0),
        (PHI3_MINI_128K, 96, 96, False, 10000.0),
        (DEEPSEEK_V3, 64, 64, True, 10000.0),
        (PHI_2, 80, 32, False, 10000.0),
        ({**DEEPSEEK_V3, "rope_interleave": False}, 64, 64, False, 10000.0),
        ({**QWEN2_7B, "head_dim": 64}, 64, 64, False, 1000000.0),
    ],
    ids=["llama3.1", "qwen2", "phi3", "deepseek-v3", "phi2-partial", "deepseek-half", "explicit-head-dim"],
)
def test_from_hf_fields(hf: dict, head_dim: int, rotary_dim: int, interleaved: bool, theta: float) -> None:
    config = RopeConfig.from_hf(hf)
    assert config.head_dim == head_dim
    assert config.rotary_dim == rotary_dim
    assert config.interleaved is interleaved
    assert config.theta == theta
    assert config.max_position_embeddings == hf["max_position_embeddings"]


def test_from_hf_reads_v5_rope_parameters() -> None:
    hf = {key: value for key, value in LLAMA_3_1_8B.items() if key not in ("rope_scaling", "rope_theta")}
    hf["rope_parameters"] = {**LLAMA_3_1_8B["rope_scaling"], "rope_theta": 500000.0}
    config = RopeConfig.from_hf(hf)
    assert config.theta == 500000.0
    assert config.rope_type == "llama3"
    assert config.scaling["factor"] == 8.0


def test_from_hf_v5_default_means_no_scaling() -> None:
    hf = {"hidden_size": 64, "num_attention_heads": 4, "rope_parameters": {"rope_type": "default", "rope_theta": 5e5}}
    config = RopeConfig.from_hf(hf)
    assert config.scaling is None
    assert config.theta == 5e5


def test_from_hf_partial_factor_inside_rope_parameters() -> None:
    hf = {
        "hidden_size": 2560,
        "num_attention_heads": 32,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
    }
    assert RopeConfig.from_hf(hf).rotary_dim == 40


def test_from_hf_reads_gpt_neox_keys() -> None:
    # Pythia-160m's keys, with the base set to 20000 so that it differs from the default.
    hf = {"hidden_size": 768, "num_attention_heads": 12, "rotary_pct": 0.25, "rotary_emb_base": 20000}
    config = RopeConfig.from_hf(hf)
    assert config.rotary_dim == 16
    assert config.theta == 20000.0


def test_from_hf_top_level_original_length_wins() -> None:
    hf = {**PHI3_MINI_128K, "rope_scaling": {**PHI3_MINI_128K["rope_scaling"], "original_max_position_embeddings": 1}}
    assert RopeConfig.from_hf(hf).scaling["original_max_position_embeddings"] == 4096


def test_from_hf_original_length_defaults_to_max() -> None:
    hf = _with_scaling(QWEN2_7B, type="yarn", factor=2.0)
    assert RopeConfig.from_hf(hf).scaling["original_max_position_embeddings"] == 32768


@pytest.mark.parametrize(
    "scaling",
    [
        {"rope_type": "yarn", "factor": 4.0},
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0},
    ],
    ids=["yarn", "llama3"],
)
def test_original_length_fallback_matches_transformers(scaling: dict) -> None:
    # transformers fills the absent original length from max_position_embeddings too, so
    # its frequencies for the same HF config are the reference.
    hf = {**QWEN2_7B, "max_position_embeddings": 2048, "rope_scaling": dict(scaling)}
    config = RopeConfig(head_dim=128, theta=1000000.0, max_position_embeddings=2048, scaling=scaling)
    expected, _ = _transformers_frequencies(hf, None)
    actual, _ = rope_frequencies(config)
    assert _relative_error(actual, expected) <= RELATIVE_TOLERANCE


def test_original_length_defaults_to_max() -> None:
    config = RopeConfig(head_dim=8, max_position_embeddings=512, scaling={"rope_type": "yarn", "factor": 4})
    assert config.scaling["original_max_position_embeddings"] == 512


def test_explicit_original_length_wins() -> None:
    scaling = {"rope_type": "yarn", "factor": 4, "original_max_position_embeddings": 128}
    config = RopeConfig(head_dim=8, max_position_embeddings=512, scaling=scaling)
    assert config.scaling["original_max_position_embeddings"] == 128


def test_missing_lengths_name_both_keys() -> None:
    with pytest.raises(ValueError, match="original_max_position_embeddings.*max_position_embeddings in the RopeConfig"):
        RopeConfig(head_dim=8, scaling={"rope_type": "yarn", "factor": 4})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("num_attention_heads", 0),
        ("num_attention_heads", -4),
        ("hidden_size", 64.5),
        ("hidden_size", 0),
        ("head_dim", 16.5),
        ("max_position_embeddings", 2048.5),
        ("num_attention_heads", True),
    ],
)
def test_from_hf_rejects_bad_size(key: str, value) -> None:
    hf = {"hidden_size": 64, "num_attention_heads": 4, key: value}
    with pytest.raises(ValueError, match=f"{key}.*positive integer.*{value!r}"):
        RopeConfig.from_hf(hf)


def test_from_hf_accepts_whole_float_size() -> None:
    assert RopeConfig.from_hf({"hidden_size": 64.0, "num_attention_heads": 4}).head_dim == 16


def test_from_hf_fractional_head_dim_names_fields() -> None:
    with pytest.raises(ValueError, match=r"hidden_size \(64\) / num_attention_heads \(6\)"):
        RopeConfig.from_hf({"hidden_size": 64, "num_attention_heads": 6})


def test_from_hf_odd_head_dim_names_fields() -> None:
    with pytest.raises(ValueError, match=r"hidden_size \(36\) / num_attention_heads \(4\)"):
        RopeConfig.from_hf({"hidden_size": 36, "num_attention_heads": 4})


def test_from_hf_reads_qwen2_vl_mrope_section() -> None:
    hf = {**QWEN2_7B, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}
    config = RopeConfig.from_hf(hf)
    assert config.mrope_section == (16, 24, 24)
    assert config.scaling is None


def test_from_hf_reads_a_path(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_3_1_8B), encoding="utf-8")
    from_folder = RopeConfig.from_hf(tmp_path)
    from_file = RopeConfig.from_hf(str(tmp_path / "config.json"))
    assert from_folder == from_file
    assert from_file.rope_type == "llama3"


def test_from_hf_unknown_rope_type_names_it() -> None:
    with pytest.raises(ValueError, match="'warp'"):
        RopeConfig.from_hf(_with_scaling(QWEN2_7B, type="warp", factor=2.0))


def test_from_hf_missing_key_names_it() -> None:
    with pytest.raises(ValueError, match="low_freq_factor"):
        RopeConfig.from_hf(
            _with_scaling(
                LLAMA_3_1_8B, rope_type="llama3", factor=8.0, high_freq_factor=4.0, original_max_position_embeddings=8192
            )
        )


def test_from_hf_missing_head_dim_source_names_keys() -> None:
    with pytest.raises(ValueError, match="num_attention_heads"):
        RopeConfig.from_hf({"hidden_size": 64})


def test_from_hf_missing_file_raises(tmp_path) -> None:
    with pytest.raises(ValueError, match="config.json"):
        RopeConfig.from_hf(tmp_path)


# Types transformers does not have ---------------------------------------------------------


def _deepseek_inference_frequencies(dim: int, base: float, factor: float, original: int, max_seq_len: int):
    """DeepSeek-V3 inference/model.py precompute_freqs_cis, restated in float32 as it computes."""
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if max_seq_len <= original:
        return freqs
    low = math.floor(dim * math.log(original / (32 * 2 * math.pi)) / (2 * math.log(base)))
    high = math.ceil(dim * math.log(original / (1 * 2 * math.pi)) / (2 * math.log(base)))
    low, high = max(low, 0), min(high, dim - 1)
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp
    return freqs / factor * (1 - keep) + freqs * keep


@pytest.mark.parametrize("max_seq_len", [16384, 4096, 163840])
def test_deepseek_yarn_matches_inference_code(max_seq_len: int) -> None:
    config = RopeConfig(
        head_dim=64,
        theta=10000.0,
        interleaved=True,
        max_position_embeddings=max_seq_len,
        scaling={"rope_type": "deepseek_yarn", "factor": 40, "original_max_position_embeddings": 4096},
    )
    inv_freq, attention_scale = rope_frequencies(config)
    expected = _deepseek_inference_frequencies(64, 10000.0, 40, 4096, max_seq_len)
    assert _relative_error(inv_freq, expected) <= RELATIVE_TOLERANCE
    assert attention_scale == 1.0


@pytest.mark.parametrize(("max_seq_len", "expected"), [(16384, (0.1 * math.log(40) + 1) ** 2), (4096, 1.0)])
def test_deepseek_yarn_softmax_scale(max_seq_len: int, expected: float) -> None:
    config = RopeConfig(
        head_dim=64,
        max_position_embeddings=max_seq_len,
        scaling={"rope_type": "deepseek_yarn", "factor": 40, "original_max_position_embeddings": 4096},
    )
    assert math.isclose(softmax_scale_factor(config), expected, rel_tol=1e-12)


@pytest.mark.parametrize(("dim", "factor"), [(128, 4.0), (64, 8.0), (6, 2.0)])
def test_static_ntk_matches_formula(dim: int, factor: float) -> None:
    config = RopeConfig(head_dim=dim, theta=10000.0, scaling={"rope_type": "ntk", "factor": factor})
    base = 10000.0 * factor ** (dim / (dim - 2))
    expected = torch.tensor([base ** (-2 * i / dim) for i in range(dim // 2)], dtype=torch.float64)
    inv_freq, _ = rope_frequencies(config)
    assert torch.allclose(inv_freq, expected, rtol=1e-14, atol=0)


def test_static_ntk_keeps_highest_divides_lowest() -> None:
    config = RopeConfig(head_dim=64, scaling={"rope_type": "ntk", "factor": 4.0})
    scaled, _ = rope_frequencies(config)
    original = default_inv_freq(64, 10000.0)
    assert math.isclose(scaled[0].item(), original[0].item(), rel_tol=1e-15)
    assert math.isclose((original[-1] / scaled[-1]).item(), 4.0, rel_tol=1e-12)


# Dynamic NTK exactness ------------------------------------------------------------------


def test_dynamic_short_length_bit_exact() -> None:
    config = RopeConfig(head_dim=64, max_position_embeddings=2048, scaling={"rope_type": "dynamic", "factor": 1.7})
    original = default_inv_freq(64, 10000.0)
    rope_frequencies(config, 100000)  # a longer call first must leave no state behind
    for seq_len in (1, 2, 1000, 2048):
        inv_freq, _ = rope_frequencies(config, seq_len)
        assert torch.equal(inv_freq, original), f"seq_len={seq_len}"


def test_dynamic_short_length_gives_no_nan() -> None:
    config = RopeConfig(head_dim=64, max_position_embeddings=2048, scaling={"rope_type": "dynamic", "factor": 64.0})
    inv_freq, _ = rope_frequencies(config, 1)
    assert not torch.isnan(inv_freq).any()


def test_dynamic_longer_length_lowers_frequencies() -> None:
    config = RopeConfig(head_dim=64, max_position_embeddings=2048, scaling={"rope_type": "dynamic", "factor": 2.0})
    shorter, _ = rope_frequencies(config, 4096)
    longer, _ = rope_frequencies(config, 8192)
    assert (longer[1:] < shorter[1:]).all()


# Validation and the registry -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"head_dim": 64, "rotary_dim": 33}, "rotary_dim"),
        ({"head_dim": 64, "rotary_dim": 66}, "rotary_dim"),
        ({"head_dim": 0}, "head_dim"),
        ({"head_dim": 64, "theta": 0.5}, "theta"),
        ({"head_dim": 64, "theta": 0.0}, "theta"),
        ({"head_dim": 64, "theta": -10000.0}, "theta"),
        ({"head_dim": 64, "theta": math.inf}, "theta"),
        ({"head_dim": 64, "theta": math.nan}, "theta"),
        ({"head_dim": 64, "theta": 10**400}, "theta"),
        ({"head_dim": 64, "scaling": {"factor": 2.0}}, "rope_type"),
        ({"head_dim": 64, "scaling": {"rope_type": "linear"}}, "factor"),
        ({"head_dim": 64, "scaling": {"rope_type": "linear", "factor": 2.0, "beta": 1}}, "beta"),
        ({"head_dim": 64, "scaling": {"rope_type": "linear", "factor": -2.0}}, "factor"),
        ({"head_dim": 64, "scaling": {"rope_type": "dynamic", "factor": 2.0}}, "max_position_embeddings"),
        ({"head_dim": 64, "scaling": {"rope_type": "nope"}}, "'nope'"),
        (
            {
                "head_dim": 64,
                "scaling": {
                    "rope_type": "longrope",
                    "short_factor": [1.0] * 31,
                    "long_factor": [1.0] * 32,
                    "original_max_position_embeddings": 4096,
                },
            },
            "short_factor",
        ),
        (
            {
                "head_dim": 64,
                "scaling": {
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 4.0,
                    "high_freq_factor": 1.0,
                    "original_max_position_embeddings": 8192,
                },
            },
            "high_freq_factor",
        ),
        ({"head_dim": 64, "mrope_section": (16, 16, 8)}, "mrope_section"),
        ({"head_dim": 64, "axial_dims": (32, 30)}, "axial_dims"),
        ({"head_dim": 64, "axial_dims": (32, 32), "mrope_section": (16, 16)}, "exclusive"),
    ],
    ids=lambda value: str(value)[:40] if isinstance(value, str) else None,
)
def test_config_rejects_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RopeConfig(**kwargs)


def test_config_scaling_is_read_only() -> None:
    config = RopeConfig(head_dim=8, scaling={"rope_type": "linear", "factor": 2.0})
    with pytest.raises(TypeError):
        config.scaling["factor"] = 3.0  # type: ignore[index]


@pytest.mark.parametrize("hf", [PHI3_MINI_128K, DEEPSEEK_V3], ids=["phi3", "deepseek-v3"])
def test_config_pickles_copies_and_hashes(hf: dict) -> None:
    config = RopeConfig.from_hf(hf)
    assert pickle.loads(pickle.dumps(config)) == config
    assert copy.deepcopy(config) == config
    assert hash(copy.deepcopy(config)) == hash(config)
    assert RopeConfig(**dataclasses.asdict(config)) == config


def test_frequency_factors_reproduce_transformers_llama3() -> None:
    # llama.cpp stores Llama 3.1 scaling as the per-pair ratio default inv_freq / llama3 inv_freq.
    hf = {
        "model_type": "llama", "hidden_size": 2048, "num_attention_heads": 32, "max_position_embeddings": 131072,
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    }  # fmt: skip
    llama3, _ = _transformers_frequencies(hf, None)
    default = default_inv_freq(64, 500000.0)
    config = RopeConfig(
        head_dim=64, theta=500000.0, scaling={"rope_type": "frequency_factors", "factors": (default / llama3.double()).tolist()}
    )

    inv_freq, attention_scale = rope_frequencies(config)

    assert _relative_error(inv_freq, llama3) <= RELATIVE_TOLERANCE
    assert attention_scale == 1.0


@pytest.mark.parametrize(
    ("factors", "message"),
    [
        ([1.0, 2.0], "factors must contain rotary_dim // 2 = 4 numbers, got 2"),
        ([1.0, 2.0, 0.0, 4.0], "factors must contain positive, finite numbers, got 0.0 at index 2"),
        ([1.0, 2.0, -1.0, 4.0], "factors must contain positive, finite numbers, got -1.0 at index 2"),
        ([1.0, True, 2.0, 4.0], "factors must contain positive, finite numbers, got True at index 1"),
        ([1.0, 2.0, math.inf, 4.0], "factors must contain positive, finite numbers, got inf at index 2"),
        ("1234", "factors must be a list of rotary_dim // 2 = 4 numbers"),
    ],
)
def test_frequency_factors_rejects_bad_lists(factors: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RopeConfig(head_dim=8, scaling={"rope_type": "frequency_factors", "factors": factors})


def test_frequency_factors_take_arrays() -> None:
    numpy = pytest.importorskip("numpy")
    factors = numpy.array([1.0, 2.0, 4.0, 8.0], dtype=numpy.float32)

    config = RopeConfig(head_dim=8, scaling={"rope_type": "frequency_factors", "factors": factors})

    assert config.scaling["factors"] == (1.0, 2.0, 4.0, 8.0)


def test_builtin_scaling_types_registered() -> None:
    names = set(scaling_types())
    expected = {"default", "linear", "dynamic", "yarn", "llama3", "longrope", "deepseek_yarn", "ntk", "frequency_factors"}
    assert expected <= names


def test_register_scaling_extension_point() -> None:
    def quarter_speed(config, seq_len):
        device = None if seq_len is None else seq_len.device
        return default_inv_freq(config.rotary_dim, config.theta, device) / 4, 0.5

    register_scaling(ScalingType("test_quarter_speed", quarter_speed), replace=True)
    config = RopeConfig(head_dim=16, scaling={"rope_type": "test_quarter_speed"})
    inv_freq, scale = rope_frequencies(config)
    assert torch.equal(inv_freq, default_inv_freq(16, 10000.0) / 4)
    assert scale == 0.5
    assert get_scaling_type("test_quarter_speed").compute is quarter_speed


def test_register_scaling_rejects_duplicate_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_scaling(ScalingType("linear", lambda config, seq_len: (None, 1.0)))


def test_seq_len_rejects_float() -> None:
    with pytest.raises(TypeError, match="seq_len"):
        rope_frequencies(RopeConfig(head_dim=8), 3.5)  # type: ignore[arg-type]


def test_axial_frequencies_are_per_axis_blocks() -> None:
    config = RopeConfig(head_dim=48, axial_dims=(16, 32), theta=100.0)
    inv_freq, _ = rope_frequencies(config)
    expected = torch.cat((default_inv_freq(16, 100.0), default_inv_freq(32, 100.0)))
    assert torch.equal(inv_freq, expected)
