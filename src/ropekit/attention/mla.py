"""Multi-Head Latent Attention (MLA) with decoupled RoPE, as in DeepSeek-V2 and V3.

DeepSeek-V2 (arXiv:2405.04434, section 2.1) compresses keys and values of every token into
one low-rank latent c_kv and carries position in a separate key k_pe that all heads share:

    c_kv = RMSNorm(W_DKV x)                      [c]       the cached latent
    k_pe = RoPE(W_KR x)                          [r]       the cached shared rope key
    k_h  = [W_UK_h c_kv ; k_pe]                  [d + r]   key of head h
    v_h  = W_UV_h c_kv                           [v]       value of head h
    q_h  = [q_nope_h ; RoPE(q_pe_h)]             [d + r]   query of head h

Rotating the keys rebuilt from the latent would put a position-dependent rotation between
W_UK and c_kv, so W_UK could no longer be folded into the query. With the decoupled key,
q_nope_h . (W_UK_h c_kv) = (W_UK_h^T q_nope_h) . c_kv, so decoding attends over the small
cache directly (the "absorbed" path) and never rebuilds per-head keys.

Notation for shapes: b batch, s query positions, t key positions (cached plus new),
h heads, d qk_nope_head_dim, r qk_rope_head_dim, v v_head_dim, c kv_lora_rank,
e hidden size.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ropekit.rope import RopeConfig, RotaryEmbedding, apply_rotary
from ropekit.rope.scaling import softmax_scale_factor

if TYPE_CHECKING:
    from ropekit.attention.latent_cache import LatentKVCache

def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class MLAConfig:
    """Dimensions of one Multi-Head Latent Attention layer.

    Attributes:
        hidden_size: width e of the layer's input and output.
        num_heads: attention heads h.
        q_lora_rank: rank of the query compression (W_DQ, RMSNorm, W_UQ); None for one plain
            query projection, as in DeepSeek-V2-Lite.
        kv_lora_rank: width c of the latent c_kv, the per-token cache of keys and values.
        qk_nope_head_dim: per-head query and key channels d without position.
        qk_rope_head_dim: channels r of the rotated query part and the shared key k_pe; even.
        v_head_dim: per-head value channels v.
        rope: RoPE of the r rotated channels; None builds RopeConfig(head_dim=r,
            interleaved=True), the pair layout of DeepSeek's checkpoints.
        rms_norm_eps: epsilon of the RMSNorms on the query and key/value latents.
        num_hidden_layers: layers of the model this layer belongs to, when known; the KV-cache
            report uses it for whole-model sizes.
    """

    hidden_size: int
    num_heads: int
    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    rope: RopeConfig | None = field(default=None)
    rms_norm_eps: float = 1e-6
    num_hidden_layers: int | None = None

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
                     "v_head_dim"):
            _check_positive_int(name, getattr(self, name))
        if self.q_lora_rank is not None:
            _check_positive_int("q_lora_rank", self.q_lora_rank)
        if self.num_hidden_layers is not None:
            _check_positive_int("num_hidden_layers", self.num_hidden_layers)
        if self.qk_rope_head_dim % 2 != 0:
            raise ValueError(
                f"qk_rope_head_dim must be even because RoPE rotates channel pairs, got {self.qk_rope_head_dim}"
            )
        if not (isinstance(self.rms_norm_eps, (int, float)) and self.rms_norm_eps > 0):
            raise ValueError(f"rms_norm_eps must be a positive float, got {self.rms_norm_eps!r}")

        if self.rope is None:
            object.__setattr__(self, "rope", RopeConfig(head_dim=self.qk_rope_head_dim, interleaved=True))
        if not isinstance(self.rope, RopeConfig):
            raise TypeError(f"rope must be a ropekit.RopeConfig or None, got {type(self.rope).__name__}")
        if self.rope.head_dim != self.qk_rope_head_dim or self.rope.rotary_dim != self.qk_rope_head_dim:
            raise ValueError(
                f"rope must rotate all qk_rope_head_dim={self.qk_rope_head_dim} channels, got "
                f"head_dim={self.rope.head_dim} and rotary_dim={self.rope.rotary_dim}; "
                f"build it with RopeConfig(head_dim={self.qk_rope_head_dim}, ...)"
            )
        for name in ("mrope_section", "axial_dims", "xpos_scale_base"):
            if getattr(self.rope, name, None) is not None:
                raise ValueError(f"MLA supports one position axis without xPos, so rope.{name} must be None")

    # Derived sizes, computed here once.

    @property
    def qk_head_dim(self) -> int:
        """Per-head query and key width d + r."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def softmax_scale(self) -> float:
        """The factor on q . k before the softmax.

        (d + r) ** -0.5, times the YaRN temperature when the RoPE scaling sets one for all
        channels: yarn_mscale(factor, mscale_all_dim) ** 2 for "yarn", with
        yarn_mscale(s, m) = 0.1 m ln(s) + 1 for s > 1 (DeepSeek-V3 inference/model.py,
        MLA.__init__; transformers 5.25 yarn_apply_mscale). ``softmax_scale_factor`` in
        ropekit.rope.scaling computes that temperature.
        """
        return self.qk_head_dim**-0.5 * softmax_scale_factor(self.rope)

    @property
    def cache_elements_per_token(self) -> int:
        """Values cached per token and layer: the latent c_kv plus the shared rope key k_pe."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    # Presets and constructors.

    @classmethod
    def deepseek_v2(cls) -> MLAConfig:
        """DeepSeek-V2 (236B), from config.json of the Hugging Face repo deepseek-ai/DeepSeek-V2."""
        return cls(
            hidden_size=5120,
            num_heads=128,
            q_lora_rank=1536,
            kv_lora_rank=512,
            qk_nope_head_dim=128,
            qk_rope_head_dim=64,
            v_head_dim=128,
            rope=_deepseek_rope(mscale=0.707, mscale_all_dim=0.707),
            rms_norm_eps=1e-6,
            num_hidden_layers=60,
        )

    @classmethod
    def deepseek_v2_lite(cls) -> MLAConfig:
        """DeepSeek-V2-Lite (16B), from config.json of the Hugging Face repo deepseek-ai/DeepSeek-V2-Lite."""
        return cls(
            hidden_size=2048,
            num_heads=16,
            q_lora_rank=None,
            kv_lora_rank=512,
            qk_nope_head_dim=128,
            qk_rope_head_dim=64,
            v_head_dim=128,
            rope=_deepseek_rope(mscale=0.707, mscale_all_dim=0.707),
            rms_norm_eps=1e-6,
            num_hidden_layers=27,
        )

    @classmethod
    def deepseek_v3(cls) -> MLAConfig:
        """DeepSeek-V3 (671B), from config.json of the Hugging Face repo deepseek-ai/DeepSeek-V3."""
        return cls(
            hidden_size=7168,
            num_heads=128,
            q_lora_rank=1536,
            kv_lora_rank=512,
            qk_nope_head_dim=128,
            qk_rope_head_dim=64,
            v_head_dim=128,
            rope=_deepseek_rope(mscale=1.0, mscale_all_dim=1.0),
            rms_norm_eps=1e-6,
            num_hidden_layers=61,
        )

    @classmethod
    def simple(cls, d_model: int, d_latent: int, n_heads: int, rope_dim: int | None = None) -> MLAConfig:
        """Build a decoupled-RoPE configuration from the tutorial's three numbers.

        Rule: the head width d_model / n_heads is both the unrotated query/key part
        (qk_nope_head_dim) and the value width (v_head_dim), and kv_lora_rank is d_latent.
        The rope part is rope_dim, by default half the head width rounded down to an even
        number, because DeepSeek-V2 uses 64 rope channels next to 128 unrotated ones. The
        query uses one plain projection (q_lora_rank=None), and RoPE uses interleaved pairs
        with theta 10000.
        """
        for name, value in (("d_model", d_model), ("d_latent", d_latent), ("n_heads", n_heads)):
            _check_positive_int(name, value)
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        head_dim = d_model // n_heads
        if rope_dim is None:
            rope_dim = max(2, (head_dim // 2) // 2 * 2)
        _check_positive_int("rope_dim", rope_dim)
        if rope_dim % 2 != 0:
            raise ValueError(f"rope_dim must be even because RoPE rotates channel pairs, got {rope_dim}")
        return cls(
            hidden_size=d_model,
            num_heads=n_heads,
            q_lora_rank=None,
            kv_lora_rank=d_latent,
            qk_nope_head_dim=head_dim,
            qk_rope_head_dim=rope_dim,
            v_head_dim=head_dim,
        )

    @classmethod
    def from_hf(cls, config: Mapping[str, Any] | str | Path) -> MLAConfig:
        """Build the configuration from a DeepSeek-V2/V3 config.json dict, file or model folder.

        A transformers config object (anything with ``to_dict``) works too.

        The RoPE part (theta, scaling, interleaving) comes from ``RopeConfig.from_hf``.
        """
        config = _read_hf_config(config)
        missing = [key for key in _HF_REQUIRED_KEYS if key not in config]
        if missing:
            raise ValueError(
                f"config is missing the MLA keys {missing}; expected a DeepSeek-V2/V3 config.json "
                "with kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim and v_head_dim"
            )
        if config.get("attention_bias"):
            raise ValueError("attention_bias=True is not supported: ropekit's MLA projections have no bias")
        num_kv_heads = config.get("num_key_value_heads")
        if num_kv_heads not in (None, config["num_attention_heads"]):
            raise ValueError(
                f"num_key_value_heads ({num_kv_heads}) must equal num_attention_heads "
                f"({config['num_attention_heads']}) in MLA, where every head reads the same latent"
            )
        return cls(
            hidden_size=config["hidden_size"],
            num_heads=config["num_attention_heads"],
            q_lora_rank=config.get("q_lora_rank") or None,
            kv_lora_rank=config["kv_lora_rank"],
            qk_nope_head_dim=config["qk_nope_head_dim"],
            qk_rope_head_dim=config["qk_rope_head_dim"],
            v_head_dim=config["v_head_dim"],
            rope=RopeConfig.from_hf(dict(config)),
            rms_norm_eps=config.get("rms_norm_eps", 1e-6),
            num_hidden_layers=config.get("num_hidden_layers"),
        )


_HF_REQUIRED_KEYS = (
    "hidden_size",
    "num_attention_heads",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
)


def _deepseek_rope(*, mscale: float, mscale_all_dim: float) -> RopeConfig:
    """RoPE shared by the DeepSeek-V2/V3 presets: YaRN from 4k to 160k, interleaved pairs."""
    return RopeConfig(
        head_dim=64,
        theta=10000.0,
        interleaved=True,
        scaling={
            "rope_type": "yarn",
            "factor": 40.0,
            "original_max_position_embeddings": 4096,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "mscale": mscale,
            "mscale_all_dim": mscale_all_dim,
        },
        max_position_embeddings=163840,
    )


def _read_hf_config(config: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):  # a transformers PretrainedConfig
        return dict(config.to_dict())
    if not isinstance(config, (str, Path)):
        raise TypeError(f"config must be a dict, a config.json path or a model folder, got {type(config).__name__}")
    path = Path(config)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ValueError(f"config file {path} not found; pass a config.json path, its folder or a dict")
    with path.open(encoding="utf-8") as file:
        return json.load(file)


# ---------------------------------------------------------------------------------------
# The attention math, as pure functions of the projected tensors.
# ---------------------------------------------------------------------------------------


def _split_kv_b_weight(kv_b_weight: torch.Tensor, num_heads: int, nope_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split W_UKV [h * (d + v), c] into W_UK [h, d, c] and W_UV [h, v, c]."""
    per_head = kv_b_weight.view(num_heads, -1, kv_b_weight.shape[-1])  # [h, d + v, c]
    return per_head[:, :nope_dim], per_head[:, nope_dim:]


def latent_attention_naive(
    q_nope: torch.Tensor,
    q_pe: torch.Tensor,
    c_kv: torch.Tensor,
    k_pe: torch.Tensor,
    kv_b_weight: torch.Tensor,
    *,
    scale: float,
    mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """Attend by rebuilding every head's key and value from the latent.

    q_nope [b, s, h, d], q_pe [b, s, h, r] (rotated), c_kv [b, t, c], k_pe [b, t, r]
    (rotated), kv_b_weight [h * (d + v), c]. mask is None or bool, broadcastable to
    [b, h, s, t], True where a query may attend; causal=True (only without mask) lets query
    i see keys 0..i + t - s. Every query must see at least one key. Returns [b, s, h, v].

    The keys of all heads share k_pe, so autograd sums the per-head gradients into it.
    """
    batch_size, seq_len, num_heads, nope_dim = q_nope.shape
    key_len = c_kv.shape[1]

    kv = torch.nn.functional.linear(c_kv, kv_b_weight).view(batch_size, key_len, num_heads, -1)  # [b, t, h, d + v]
    k_nope, value = kv.split([nope_dim, kv.shape[-1] - nope_dim], dim=-1)
    k_pe_heads = k_pe.unsqueeze(2).expand(-1, -1, num_heads, -1)  # [b, t, h, r], a view

    query = torch.cat((q_nope, q_pe), dim=-1).transpose(1, 2)  # [b, h, s, d + r]
    key = torch.cat((k_nope, k_pe_heads), dim=-1).transpose(1, 2)  # [b, h, t, d + r]
    value = value.transpose(1, 2)  # [b, h, t, v]

    # SDPA's is_causal aligns the mask top-left, which is right only when s = t.
    if causal and mask is None and seq_len != key_len:
        mask = torch.ones(seq_len, key_len, dtype=torch.bool, device=query.device).tril(key_len - seq_len)
    # The fused kernels of scaled_dot_product_attention accumulate the softmax in float32.
    output = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, is_causal=causal and mask is None, scale=scale
    )  # [b, h, s, v]
    return output.transpose(1, 2)


def latent_attention_absorbed(
    q_nope: torch.Tensor,
    q_pe: torch.Tensor,
    c_kv: torch.Tensor,
    k_pe: torch.Tensor,
    kv_b_weight: torch.Tensor,
    *,
    scale: float,
    mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """Attend over the latent directly, with W_UK folded into the query and W_UV into the output.

    Same arguments, result and preconditions as ``latent_attention_naive``. The scores are
    q_nope_h . (W_UK_h c_kv) + q_pe_h . k_pe = (W_UK_h^T q_nope_h) . c_kv + q_pe_h . k_pe,
    and the output W_UV_h (sum_t p_t c_kv_t), so no per-head key or value is built.
    """
    num_heads, nope_dim = q_nope.shape[2], q_nope.shape[3]
    w_uk, w_uv = _split_kv_b_weight(kv_b_weight, num_heads, nope_dim)  # [h, d, c], [h, v, c]

    q_latent = torch.einsum("bshd,hdc->bshc", q_nope, w_uk)
    scores = torch.einsum("bshc,btc->bhst", q_latent, c_kv) + torch.einsum("bshr,btr->bhst", q_pe, k_pe)

    # Softmax in float32 for half-precision inputs, as DeepSeek's reference does (float64 stays).
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32)) * scale
    if causal and mask is None:
        seq_len, key_len = scores.shape[-2:]
        mask = torch.ones(seq_len, key_len, dtype=torch.bool, device=scores.device).tril(key_len - seq_len)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(dim=-1).to(c_kv.dtype)

    o_latent = torch.einsum("bhst,btc->bshc", probs, c_kv)
    return torch.einsum("bshc,hvc->bshv", o_latent, w_uv)


def absorbed_is_cheaper(config: MLAConfig, query_len: int, key_len: int) -> bool:
    """Return True when the absorbed path needs fewer multiply-adds for these lengths.

    Per head, naive costs t c (d + v) to rebuild keys and values plus s t (d + r + v) to
    attend. Absorbed costs s c (d + v) to fold the query and the output plus s t (2c + r).
    So absorbed wins when s is much smaller than t (decoding), and naive wins when s = t
    (training and prefill).
    """
    c, d, r, v = config.kv_lora_rank, config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim
    naive = key_len * c * (d + v) + query_len * key_len * (d + r + v)
    absorbed = query_len * c * (d + v) + query_len * key_len * (2 * c + r)
    return absorbed < naive


# ---------------------------------------------------------------------------------------
# The module.
# ---------------------------------------------------------------------------------------

# DeepSeek's reference implementation (DeepSeek-V3 inference/model.py) -> Hugging Face names,
# which the module uses for its own parameters.
REFERENCE_TO_HF_NAMES = {
    "wq_a": "q_a_proj",
    "q_norm": "q_a_layernorm",
    "wq_b": "q_b_proj",
    "wq": "q_proj",
    "wkv_a": "kv_a_proj_with_mqa",
    "kv_norm": "kv_a_layernorm",
    "wkv_b": "kv_b_proj",
    "wo": "o_proj",
}

_MODES = ("auto", "naive", "absorbed")


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang and Sennrich 2019), computed in float32 or wider.

    y = weight * (x / sqrt(mean(x^2) + eps)); the normalised value is cast back to x's
    dtype before the weight multiplies it, as in DeepSeek-V2/V3's Hugging Face code.
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = x.to(torch.promote_types(x.dtype, torch.float32))
        normalised = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normalised.to(x.dtype)


class MultiHeadLatentAttention(nn.Module):
    """DeepSeek-V2/V3 Multi-Head Latent Attention with decoupled RoPE.

    Parameters carry the Hugging Face names: q_a_proj, q_a_layernorm, q_b_proj or q_proj,
    kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj and o_proj. ``load_state_dict`` also
    takes DeepSeek's reference names: wq_a, q_norm, wq_b or wq, wkv_a, kv_norm, wkv_b and
    wo. Attention is always causal.
    """

    def __init__(self, config: MLAConfig) -> None:
        super().__init__()
        if not isinstance(config, MLAConfig):
            raise TypeError(f"config must be a ropekit.MLAConfig, got {type(config).__name__}")
        self.config = config
        h, e = config.num_heads, config.hidden_size

        if config.q_lora_rank is None:
            self.q_proj = nn.Linear(e, h * config.qk_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(e, config.q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(config.q_lora_rank, config.rms_norm_eps)
            self.q_b_proj = nn.Linear(config.q_lora_rank, h * config.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(e, config.kv_lora_rank + config.qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = RMSNorm(config.kv_lora_rank, config.rms_norm_eps)
        self.kv_b_proj = nn.Linear(config.kv_lora_rank, h * (config.qk_nope_head_dim + config.v_head_dim), bias=False)
        self.o_proj = nn.Linear(h * config.v_head_dim, e, bias=False)
        self.rotary = RotaryEmbedding(config.rope)

        self._register_load_state_dict_pre_hook(_rename_reference_keys, with_module=True)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor | None = None,
        *,
        cache: LatentKVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        mode: str = "auto",
    ) -> torch.Tensor:
        """Attend causally over ``x`` [b, s, e] (and the cache); return [b, s, e].

        positions: integer [s] or [b, s]. By default the real tokens of a row count on from
            0, or from the row's next cache position. With a cache, the real positions of
            a row must increase from token to token and from call to call.
        cache: a LatentKVCache; the new tokens' c_kv and rotated k_pe are stored, then all
            stored tokens of the row are attended to.
        attention_mask: bool, or integer 1 (attend) and 0 (masked). Either [b, s], true for
            real tokens, or broadcastable to [b, 1, s, t], true where query i may attend to
            key j. t is the key count: s, or the stored length with a cache. Padding is never
            attended to and its outputs are zero, and either mask is combined with the causal mask.
        mode: "naive" rebuilds per-head keys and values, for training and prefill.
            "absorbed" folds W_UK and W_UV into the query and the output, for decoding.
            "auto" runs the one with fewer multiply-adds for this call's s and t, as
            ``absorbed_is_cheaper`` counts them.
        """
        batch_size, seq_len = self._check_input(x)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        token_mask, pair_mask = _split_attention_mask(attention_mask, batch_size, seq_len, x.device)
        if cache is not None:
            cache.check_compatible(x, "x")
            if cache.batch_size != batch_size:
                raise ValueError(f"x has batch size {batch_size} but the cache has {cache.batch_size} rows")
        positions = self._resolve_positions(positions, batch_size, seq_len, x.device, cache, token_mask)

        q_nope, q_pe = self._project_query(x)  # [b, s, h, d], [b, s, h, r]
        c_kv, k_pe = self._project_latent(x)  # [b, s, c], [b, s, r]
        q_pe, k_pe = self._rotate(q_pe, k_pe, positions)

        if cache is None:
            mask, causal = self._mask_without_cache(token_mask, pair_mask, seq_len)
        else:
            # A prefill into an empty cache with no masks is plainly causal, which lets SDPA
            # skip the dense [b, 1, s, t] mask.
            plain_prefill = token_mask is None and pair_mask is None and not bool(cache.lengths.any())
            slots = cache.append(c_kv, k_pe, positions.expand(batch_size, -1), token_mask)
            c_kv, k_pe, valid = cache.stored()
            if plain_prefill:
                mask, causal = None, True
            else:
                mask, causal = self._mask_with_cache(valid, slots, pair_mask), False

        mask, blind = _open_blind_queries(mask)
        if mode == "auto":
            mode = "absorbed" if absorbed_is_cheaper(self.config, seq_len, c_kv.shape[1]) else "naive"
        attend = latent_attention_absorbed if mode == "absorbed" else latent_attention_naive
        output = attend(
            q_nope, q_pe, c_kv, k_pe, self.kv_b_proj.weight, scale=self.config.softmax_scale, mask=mask, causal=causal
        )  # [b, s, h, v]

        if blind is not None:
            output = output.masked_fill(blind.squeeze(-1).transpose(1, 2).unsqueeze(-1), 0.0)
        if token_mask is not None:
            output = output * token_mask[:, :, None, None].to(output.dtype)
        return self.o_proj(output.reshape(batch_size, seq_len, -1))

    # Steps of forward.

    def _check_input(self, x: torch.Tensor) -> tuple[int, int]:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3 or x.shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"x must have shape [batch, seq, hidden_size={self.config.hidden_size}], got {tuple(x.shape)}"
            )
        if not x.dtype.is_floating_point:
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        weight_dtype = self.o_proj.weight.dtype
        if x.dtype != weight_dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(
                f"x has dtype {x.dtype} but the module's weights are {weight_dtype}; "
                f"pass x.to({weight_dtype}) or convert the module with .to({x.dtype})"
            )
        if x.shape[1] == 0:
            raise ValueError("x has no tokens (seq = 0)")
        return x.shape[0], x.shape[1]

    def _resolve_positions(
        self,
        positions: torch.Tensor | None,
        batch_size: int,
        seq_len: int,
        device: torch.device,
        cache: LatentKVCache | None,
        token_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Return positions as int64 [s] or [b, s].

        By default real tokens count on from 0, or from each row's next cache position,
        and padding repeats the position of the real token before it (or the first one).
        """
        if positions is None:
            if token_mask is None:
                steps = torch.arange(seq_len, device=device)
            else:
                steps = (token_mask.to(torch.int64).cumsum(dim=1) - 1).clamp(min=0)  # [b, s]
            return steps if cache is None else cache.next_positions.unsqueeze(1) + steps
        if not isinstance(positions, torch.Tensor) or positions.dtype.is_floating_point or positions.dtype == torch.bool:
            raise TypeError(f"positions must be an integer tensor, got {positions!r:.80}")
        if positions.shape not in ((seq_len,), (batch_size, seq_len)):
            raise ValueError(
                f"positions must have shape [{seq_len}] or [{batch_size}, {seq_len}] to match x, "
                f"got {tuple(positions.shape)}"
            )
        if bool((positions < 0).any()):
            raise ValueError(f"positions must be non-negative, got minimum {int(positions.min())}")
        return positions.to(device=device, dtype=torch.int64)

    def _project_query(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.config
        if config.q_lora_rank is None:
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(*x.shape[:2], config.num_heads, config.qk_head_dim)  # [b, s, h, d + r]
        return q.split([config.qk_nope_head_dim, config.qk_rope_head_dim], dim=-1)

    def _project_latent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c_kv, k_pe = self.kv_a_proj_with_mqa(x).split([self.config.kv_lora_rank, self.config.qk_rope_head_dim], dim=-1)
        return self.kv_a_layernorm(c_kv), k_pe

    def _rotate(self, q_pe: torch.Tensor, k_pe: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate q_pe [b, s, h, r] and the shared k_pe [b, s, r] by their positions."""
        # Tables in float32, or float64 for float64 input, so that they are never the
        # coarsest step (angles themselves are formed in float64).
        table_dtype = torch.promote_types(q_pe.dtype, torch.float32)
        cos, sin = self.rotary.cos_sin(positions, dtype=table_dtype)  # [s, r] or [b, s, r]
        interleaved = self.config.rope.interleaved
        q_pe = apply_rotary(q_pe, cos.unsqueeze(-2), sin.unsqueeze(-2), interleaved=interleaved)
        k_pe = apply_rotary(k_pe, cos, sin, interleaved=interleaved)
        return q_pe, k_pe

    @staticmethod
    def _mask_without_cache(
        token_mask: torch.Tensor | None, pair_mask: torch.Tensor | None, seq_len: int
    ) -> tuple[torch.Tensor | None, bool]:
        if token_mask is None and pair_mask is None:
            return None, True
        device = (token_mask if token_mask is not None else pair_mask).device
        mask = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()[None, None]  # [1, 1, s, t]
        if token_mask is not None:
            mask = mask & token_mask[:, None, None, :]
        if pair_mask is not None:
            if pair_mask.shape[-1] != seq_len:
                raise ValueError(f"attention_mask covers {pair_mask.shape[-1]} keys but this call has {seq_len}")
            mask = mask & pair_mask
        return mask, False

    @staticmethod
    def _mask_with_cache(valid: torch.Tensor, slots: torch.Tensor, pair_mask: torch.Tensor | None) -> torch.Tensor:
        key_len = valid.shape[1]
        key_slots = torch.arange(key_len, device=slots.device)
        mask = (key_slots[None, None, :] <= slots[:, :, None]) & valid[:, None, :]  # [b, s, t]
        mask = mask.unsqueeze(1)  # [b, 1, s, t]
        if pair_mask is not None:
            if pair_mask.shape[-1] != key_len:
                raise ValueError(
                    f"attention_mask covers {pair_mask.shape[-1]} keys but the cache contains {key_len} after this call"
                )
            mask = mask & pair_mask
        return mask

    # Weight loading.

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load Hugging Face or DeepSeek reference weights; see the class docstring for names.

        Raises ValueError listing every missing, unexpected (strict only) and mis-shaped key
        with the expected and actual shapes.
        """
        renamed = {_reference_to_hf(key): value for key, value in state_dict.items()}
        own = self.state_dict()
        missing = [key for key in own if key not in renamed]
        unexpected = [key for key in renamed if key not in own]
        mis_shaped = [
            f"{key}: expected {tuple(own[key].shape)}, got {tuple(value.shape)}"
            for key, value in renamed.items()
            if key in own and tuple(value.shape) != tuple(own[key].shape)
        ]
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(f"{key} {tuple(own[key].shape)}" for key in missing))
        if strict and unexpected:
            problems.append(
                "unexpected keys: " + ", ".join(f"{key} {tuple(renamed[key].shape)}" for key in unexpected)
            )
        if mis_shaped:
            problems.append("mis-shaped keys: " + "; ".join(mis_shaped))
        if problems:
            raise ValueError("cannot load the MLA state dict: " + " | ".join(problems))
        return super().load_state_dict(renamed, strict=strict, assign=assign)


def _reference_to_hf(key: str) -> str:
    """Rename a reference key such as 'wkv_b.weight' (with any prefix) to its Hugging Face name."""
    head, _, leaf = key.rpartition(".")
    module_path = head.split(".") if head else []
    if module_path and module_path[-1] in REFERENCE_TO_HF_NAMES:
        module_path[-1] = REFERENCE_TO_HF_NAMES[module_path[-1]]
    return ".".join([*module_path, leaf])


def _rename_reference_keys(module, state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook: rename DeepSeek reference keys under ``prefix`` in place.

    It lets a model that contains this module load reference checkpoints too.
    """
    for key in [key for key in state_dict if key.startswith(prefix)]:
        local = key[len(prefix):]
        renamed = _reference_to_hf(local)
        if renamed != local:
            state_dict[prefix + renamed] = state_dict.pop(key)


def _open_blind_queries(mask: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Let queries that may attend to no key (left padding) attend to every key.

    Their softmax then stays finite, and the caller zeroes their outputs. Returns the new
    mask and the blind queries [b, 1, s, 1], or None when there are none.
    """
    if mask is None:
        return None, None
    blind = ~mask.any(dim=-1, keepdim=True)  # [b, 1, s, 1]
    if not bool(blind.any()):
        return mask, None
    return mask | blind, blind


def mask_to_bool(attention_mask: torch.Tensor, name: str = "attention_mask") -> torch.Tensor:
    """Return ``attention_mask`` as a bool tensor: bool as given, integers 1 (attend) and 0 (masked).

    Float masks raise TypeError, because an additive float mask (0 to attend, -inf to mask)
    would read the other way round. Integers other than 0 and 1 raise ValueError.
    """
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(attention_mask).__name__}")
    if attention_mask.dtype == torch.bool:
        return attention_mask
    if attention_mask.dtype.is_floating_point or attention_mask.dtype.is_complex:
        raise TypeError(
            f"{name} must be a bool tensor (True = attend) or an integer tensor of 1 (attend) and 0 (masked), "
            f"got dtype {attention_mask.dtype}; convert an additive float mask with (mask == 0)"
        )
    if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        found = sorted({int(value) for value in attention_mask.unique().tolist()} - {0, 1})[:5]
        raise ValueError(f"{name} must contain only 0 and 1, found {found}")
    return attention_mask.to(torch.bool)


def _split_attention_mask(
    attention_mask: torch.Tensor | None, batch_size: int, seq_len: int, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Return (token_mask [b, s] or None, pair_mask [b|1, 1, s, t] or None) from attention_mask."""
    if attention_mask is None:
        return None, None
    attention_mask = mask_to_bool(attention_mask).to(device)
    if attention_mask.dim() == 2:
        if attention_mask.shape != (batch_size, seq_len):
            raise ValueError(
                f"a 2-D attention_mask must have shape [batch={batch_size}, seq={seq_len}], "
                f"got {tuple(attention_mask.shape)}"
            )
        return attention_mask, None
    if attention_mask.dim() == 4:
        mask_batch, mask_heads, mask_queries = attention_mask.shape[:3]
        if mask_batch not in (1, batch_size) or mask_heads != 1 or mask_queries != seq_len:
            raise ValueError(
                f"a 4-D attention_mask must have shape [1 or {batch_size}, 1, {seq_len}, keys], "
                f"got {tuple(attention_mask.shape)}"
            )
        return None, attention_mask
    raise ValueError(f"attention_mask must be 2-D [batch, seq] or 4-D [batch, 1, seq, keys], got {attention_mask.dim()}-D")
