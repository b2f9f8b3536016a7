"""RoPE scaling types: how each one turns a RopeConfig into (inv_freq, attention_scale).

Every function here works in float64 and returns inv_freq as a float64 tensor of
rotary_dim // 2 angular frequencies (radians per position) and the attention scale, the
float that multiplies cos and sin.

Extension point: describe a new type with ``ScalingType`` and pass it to
``register_scaling``. ``RopeConfig`` then accepts ``scaling={"rope_type": name, ...}``,
checks the keys against ``required`` and ``optional``, and ``rope_frequencies`` calls
``compute(config, seq_len)``. ``seq_len`` is None (the frequencies at the trained length)
or a 0-d int64 tensor holding the current length, the largest position + 1. ``compute``
returns inv_freq on seq_len's device. It reads the value of seq_len only when
``depends_on_length`` is True. Write a length-dependent ``compute`` with tensor operations
only (``torch.where`` rather than ``if``) so that ``torch.compile(fullgraph=True)`` can
trace it.

Example::

    def half_speed(config, seq_len):
        return default_inv_freq(config.rotary_dim, config.theta) / 2, 1.0

    register_scaling(ScalingType("half_speed", half_speed))
    RopeConfig(head_dim=64, scaling={"rope_type": "half_speed"})
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ropekit.rope.config import RopeConfig

ComputeFunction = Callable[["RopeConfig", "torch.Tensor | None"], "tuple[torch.Tensor, float]"]


@dataclass(frozen=True)
class ScalingType:
    """A registered RoPE scaling type.

    Attributes:
        name: the value of the "rope_type" key that selects this type.
        compute: (config, seq_len) -> (inv_freq float64 [rotary_dim // 2], attention_scale).
        required: keys the scaling mapping must contain (besides "rope_type").
        optional: keys it may contain; any other key raises ValueError.
        depends_on_length: True when inv_freq changes with the current sequence length.
        validate: an optional cross-field check of the whole config; raises ValueError.
        source: where the formula comes from.
    """

    name: str
    compute: ComputeFunction
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    depends_on_length: bool = False
    validate: Callable[[RopeConfig], None] | None = field(default=None, compare=False)
    source: str = ""


_SCALING_TYPES: dict[str, ScalingType] = {}


def register_scaling(scaling_type: ScalingType, *, replace: bool = False) -> None:
    """Register a scaling type under ``scaling_type.name``.

    Raises ValueError when the name is taken, unless ``replace`` is True.
    """
    if not isinstance(scaling_type, ScalingType):
        raise TypeError(f"scaling_type must be a ScalingType, got {type(scaling_type).__name__}")
    if scaling_type.name in _SCALING_TYPES and not replace:
        raise ValueError(
            f"RoPE scaling type {scaling_type.name!r} is already registered; pass replace=True to override it"
        )
    _SCALING_TYPES[scaling_type.name] = scaling_type


def get_scaling_type(name: str) -> ScalingType:
    """Return the registered scaling type called ``name``; raise ValueError if unknown."""
    scaling_type = _SCALING_TYPES.get(name)
    if scaling_type is None:
        raise ValueError(f"unknown RoPE scaling type (rope_type) {name!r}; registered types: {scaling_types()}")
    return scaling_type


def scaling_types() -> tuple[str, ...]:
    """Return the names of the registered scaling types, sorted."""
    return tuple(sorted(_SCALING_TYPES))


# Shared helpers -----------------------------------------------------------------------


def default_inv_freq(rotary_dim: int, theta: float, device: torch.device | None = None) -> torch.Tensor:
    """Return theta ** (-2i / rotary_dim) for i in [0, rotary_dim / 2), in float64."""
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.float64, device=device) / rotary_dim
    return 1.0 / (theta**exponents)


def _factor(config: RopeConfig) -> float:
    return float(config.scaling["factor"])


def _original_length(config: RopeConfig) -> int:
    return int(config.scaling["original_max_position_embeddings"])


def _factor_or_length_ratio(config: RopeConfig) -> float:
    """Return "factor", or max_position_embeddings / original length when it is absent."""
    factor = config.scaling.get("factor")
    if factor is not None:
        return float(factor)
    if config.max_position_embeddings is None:
        raise ValueError(
            f"scaling of rope_type {config.rope_type!r} has no 'factor' and the config has no "
            "max_position_embeddings to derive it from; set one of them"
        )
    return config.max_position_embeddings / _original_length(config)


def _device_of(seq_len: torch.Tensor | None) -> torch.device | None:
    return None if seq_len is None else seq_len.device


def _require_rotary_dim_above_two(config: RopeConfig) -> None:
    # NTK-aware scaling raises the base to rotary_dim / (rotary_dim - 2).
    if config.rotary_dim <= 2:
        raise ValueError(
            f"rope_type {config.rope_type!r} needs rotary_dim > 2 (base ** (d / (d - 2))), got {config.rotary_dim}"
        )


# default, linear, static NTK ------------------------------------------------------------


def _compute_default(config: RopeConfig, seq_len: torch.Tensor | None) -> tuple[torch.Tensor, float]:
    return default_inv_freq(config.rotary_dim, config.theta, _device_of(seq_len)), 1.0


def _compute_linear(config: RopeConfig, seq_len: torch.Tensor | None) -> tuple[torch.Tensor, float]:
    # Position interpolation (Chen et al. 2023): position m becomes m / factor, which is the
    # same as dividing every frequency by factor.
    return default_inv_freq(config.rotary_dim, config.theta, _device_of(seq_len)) / _factor(config), 1.0


def _compute_ntk(config: RopeConfig, seq_len: torch.Tensor | None) -> tuple[torch.Tensor, float]:
    # Static NTK-aware scaling (bloc97, 2023): base' = base * factor ** (d / (d - 2)) keeps the
    # highest frequency and divides the lowest one by exactly factor.
    dim = config.rotary_dim
    base = config.theta * _factor(config) ** (dim / (dim - 2))
    return default_inv_freq(dim, base, _device_of(seq_len)), 1.0


# dynamic NTK ---------------------------------------------------------------------------


def _compute_dynamic(config: RopeConfig, seq_len: torch.Tensor | None) -> tuple[torch.Tensor, float]:
    # Dynamic NTK (emozilla, 2023; transformers' _compute_dynamic_ntk_parameters):
    #   base' = base * (factor * L / L_max - (factor - 1)) ** (d / (d - 2)),  L = current length.
    # At or below L_max the original frequencies are returned unchanged (torch.where picks
    # them bit for bit), and L is clamped to L_max so the inner term never drops below 1.
    dim = config.rotary_dim
    trained_length = config.max_position_embeddings
    original = default_inv_freq(dim, config.theta, _device_of(seq_len))
    if seq_len is None:
        return original, 1.0

    factor = _factor(config)
    length = seq_len.to(torch.float64).clamp(min=trained_length)
    ratio = (factor * length / trained_length - (factor - 1)).clamp(min=1.0)
    base = config.theta * ratio ** (dim / (dim - 2))
    exponents = torch.arange(0, dim, 2, dtype=torch.float64, device=seq_len.device) / dim
    scaled = 1.0 / base**exponents
    return torch.where(seq_len > trained_length, scaled, original), 1.0


def _validate_dynamic(config: RopeConfig) -> None:
    _require_rotary_dim_above_two(config)
    if config.max_position_embeddings is None:
        raise ValueError(
            "rope_type 'dynamic' needs max_position_embeddings (the trained length) in the RopeConfig"
        )


# YaRN ----------------------------------------------------------------------------------


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """Return YaRN's attention temperature 0.1 * mscale * ln(factor) + 1 (1 when factor <= 1).

    Source: Peng et al. 2023, "YaRN" (sqrt(1/t) = 0.1 ln(s) + 1), as transformers 5.25
    computes it in yarn_get_mscale.
    """
    if factor <= 1.0:
        return 1.0
    return 0.1 * mscale * math.log(factor) + 1.0


def _yarn_correction_dim(rotations: float, dim: int, base: float, original_length: int) -> float:
    """Return the (fractional) pair index whose wavelength fits ``rotations`` turns in the original length."""
    return dim * math.log(original_length / (rotations * 2 * math.pi)) / (2 * math.log(base))


def yarn_ramp(
    dim: int,
    base: float,
    original_length: int,
    beta_fast: float,
    beta_slow: float,
    truncate: bool = True,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Return YaRN's ramp over the rotary_dim // 2 pairs: 0 keeps a frequency, 1 interpolates it.

    Pairs that turn more than beta_fast times within the original length keep their
    frequency, pairs that turn fewer than beta_slow times are divided by the factor, and a
    linear ramp joins the two (Peng et al. 2023, "YaRN"). With ``truncate``
    the bounds are rounded outward to whole pairs, as transformers and DeepSeek-V3 do.
    """
    low = _yarn_correction_dim(beta_fast, dim, base, original_length)
    high = _yarn_correction_dim(beta_slow, dim, base, original_length)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid dividing by zero when the ramp collapses to a step
    index = torch.arange(dim // 2, dtype=torch.float64, device=device)
    return ((index - low) / (high - low)).clamp(0.0, 1.0)


def _compute_yarn(config: RopeConfig, seq_len: torch.Tensor | None) -> tuple[torch.Tensor, float]:
    spec = config.scaling
    dim = config.rotary_dim
    factor = _factor(config)
    original_length = _original_length(config)

    # The attention factor: an explicit value wins; else mscale / mscale_all_dim when both
    # are set and non-zero (DeepSeek); else 0.1 ln(factor) + 1. This is the precedence of
    # transformers' _compute_yarn_parameters (transformers 5.25).
    attention_factor = spec.get("attention_factor")
    mscale, mscale_all_dim = spec.get("mscale"), spec.get("mscale_all_dim")
    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = yarn_mscale(factor)

    # A zero or absent beta falls back to the paper's values, as in transformers.
    beta_fast = spec.get("beta_fast") or 32
    beta_slow = spec.get("beta_slow") or 1
    truncate = spec.get("truncate", True)
    extrapolated = default_inv_freq(dim, config.theta, _device_of(seq_len))
    ramp = yarn_ramp(dim, config.theta, original_length, beta_fast, beta_slow, truncate, _device_of(seq_len))
    inv_freq = (extrapolated / factor) * ramp + extrapolated * (1 - ramp)
    return inv_freq, float(attention_factor)


def _compute_deepseek_yarn(config: RopeConfig, seq_len: torch.Tensor | None) -> tuple[torch.Tensor, float]:
    # deepseek-ai/DeepSeek-V3, inference/model.py, precompute_freqs_cis: the YaRN ramp is
    # applied only when the model's max_seq_len exceeds original_seq_len, with the bounds
    # rounded outward. cos and sin are not scaled; the temperature goes into the softmax
    # scale instead (see softmax_scale_factor).
    spec = config.scaling
    dim = config.rotary_dim
    original_length = _original_length(config)
    extrapolated = default_inv_freq(dim, config.theta, _device_of(seq_len))
    if not _deepseek_yarn_active(config):
        return extrapolated, 1.0

    factor = _factor(config)
    beta_fast = spec.get("beta_fast", 32)
    beta_slow = spec.get("beta_slow", 1)
    ramp = yarn_ramp(dim, config.theta, original_length, beta_fast, beta_slow, True, _device_of(seq_len))
    return (extrapolated / factor) * ramp + extrapolated * (1 - ramp), 1.0


def _deepseek_yarn_active(config: RopeConfig) -> bool:
    max_length = config.max_position_embeddings
    return max_length is None or max_length > _original_length(config)


# LongRoPE ------------------------------------------------------------------------------


def _compute_longrope(config: RopeConfig, seq_len: torch.Tensor | None) -> tuple[torch.Tensor, float]:
    # LongRoPE (Ding et al. 2024) as Phi-3 uses it: inv_freq[i] = theta ** (-2i/d) / f[i], with
    # the long factors only when the current length exceeds the original length L0, and the
    # attention factor sqrt(1 + ln(s) / ln(L0)), s = factor (transformers 5.25).
    spec = config.scaling
    dim = config.rotary_dim
    original_length = _original_length(config)
    factor = _factor_or_length_ratio(config)
    attention_factor = spec.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original_length))

    device = _device_of(seq_len)
    base_freq = default_inv_freq(dim, config.theta, device)
    short = base_freq / torch.tensor(spec["short_factor"], dtype=torch.float64, device=device)
    if seq_len is None:
        return short, float(attention_factor)
    long = base_freq / torch.tensor(spec["long_factor"], dtype=torch.float64, device=device)
    return torch.where(seq_len > original_length, long, short), float(attention_factor)


def _validate_longrope(config: RopeConfig) -> None:
    for key in ("short_factor", "long_factor"):
        _check_pair_factors(config, key)


def _check_pair_factors(config: RopeConfig, key: str) -> None:
    """Raise ValueError unless scaling[key] contains one positive, finite number per rotary pair."""
    pairs = config.rotary_dim // 2
    values = config.scaling[key]
    if not isinstance(values, tuple):
        raise ValueError(f"{config.rope_type} {key} must be a list of rotary_dim // 2 = {pairs} numbers, got {values!r}")
    if len(values) != pairs:
        raise ValueError(
            f"{config.rope_type} {key} must contain rotary_dim // 2 = {pairs} numbers, got {len(values)}: {_preview(values)}"
        )
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
            raise ValueError(
                f"{config.rope_type} {key} must contain positive, finite numbers, got {value!r} at index {index}"
            )


def _preview(values: tuple) -> str:
    """Return the first few values of a long list, for error messages."""
    first_values = ", ".join(repr(value) for value in values[:6])
    return f"[{first_values}, ...]" if len(values) > 6 else f"[{first_values}]"


# Per-pair frequency factors ---------------------------------------------------------------


def _compute_frequency_factors(config: RopeConfig, seq_len: torch.Tensor | None) -> tuple[torch.Tensor, float]:
    # inv_freq[i] = theta ** (-2i/d) / factors[i], with no attention scale. GGUF files store these
    # divisors as the tensor rope_freqs.weight, and ggml divides each pair's angle by its factor
    # (llama.cpp, ggml-cpu ops.cpp, ggml_rope_cache_init). llama.cpp's converter writes Llama 3.1's
    # scaling this way.
    device = _device_of(seq_len)
    factors = torch.tensor(config.scaling["factors"], dtype=torch.float64, device=device)
    return default_inv_freq(config.rotary_dim, config.theta, device) / factors, 1.0


def _validate_frequency_factors(config: RopeConfig) -> None:
    _check_pair_factors(config, "factors")


# Llama 3 -------------------------------------------------------------------------------


def _compute_llama3(config: RopeConfig, seq_len: torch.Tensor | None) -> tuple[torch.Tensor, float]:
    # Llama 3.1 (transformers 5.25, _compute_llama3_parameters). Frequencies with wavelengths
    # above L0 / low_freq_factor are divided by factor and those below L0 / high_freq_factor
    # are kept. The band between blends the two, linearly in L0 / wavelength.
    spec = config.scaling
    factor = _factor(config)
    low_freq_factor = float(spec["low_freq_factor"])
    high_freq_factor = float(spec["high_freq_factor"])
    original_length = _original_length(config)

    inv_freq = default_inv_freq(config.rotary_dim, config.theta, _device_of(seq_len))
    wavelength = 2 * math.pi / inv_freq
    low_freq_wavelength = original_length / low_freq_factor
    high_freq_wavelength = original_length / high_freq_factor

    smooth = (original_length / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelength > low_freq_wavelength, inv_freq / factor, inv_freq)
    is_medium = (wavelength >= high_freq_wavelength) & (wavelength <= low_freq_wavelength)
    return torch.where(is_medium, blended, scaled), 1.0


def _validate_llama3(config: RopeConfig) -> None:
    low, high = config.scaling["low_freq_factor"], config.scaling["high_freq_factor"]
    if not high > low:
        raise ValueError(f"llama3 high_freq_factor ({high}) must be greater than low_freq_factor ({low})")


# Softmax temperature outside cos/sin ----------------------------------------------------


def softmax_scale_factor(config: RopeConfig) -> float:
    """Return the factor that multiplies the attention softmax scale 1 / sqrt(d_qk).

    The factor is 1.0 except for MLA models with YaRN, whose temperature also covers the
    channels without RoPE. For yarn with mscale_all_dim it is
    yarn_mscale(factor, mscale_all_dim) ** 2 (transformers' yarn_apply_mscale). For
    deepseek_yarn it is (0.1 * mscale * ln(factor) + 1) ** 2 while its ramp is active
    (DeepSeek-V3 inference/model.py, MLA.__init__).
    """
    if config.rope_type == "yarn":
        mscale_all_dim = config.scaling.get("mscale_all_dim")
        if mscale_all_dim:
            return yarn_mscale(_factor(config), mscale_all_dim) ** 2
        return 1.0
    if config.rope_type == "deepseek_yarn" and _deepseek_yarn_active(config):
        mscale = 0.1 * config.scaling.get("mscale", 1.0) * math.log(_factor(config)) + 1.0
        return mscale**2
    return 1.0


# Registry of the built-in types ---------------------------------------------------------

_ORIGINAL = "original_max_position_embeddings"

for _scaling_type in (
    ScalingType("default", _compute_default, source="Su et al. 2021, RoFormer"),
    ScalingType("linear", _compute_linear, ("factor",), source="Chen et al. 2023, position interpolation"),
    ScalingType(
        "ntk",
        _compute_ntk,
        ("factor",),
        validate=_require_rotary_dim_above_two,
        source="bloc97 2023, NTK-aware scaled RoPE",
    ),
    ScalingType(
        "dynamic",
        _compute_dynamic,
        ("factor",),
        depends_on_length=True,
        validate=_validate_dynamic,
        source="emozilla 2023, dynamically scaled RoPE; transformers modeling_rope_utils",
    ),
    ScalingType(
        "yarn",
        _compute_yarn,
        ("factor", _ORIGINAL),
        ("attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate"),
        source="Peng et al. 2023, YaRN; transformers modeling_rope_utils",
    ),
    ScalingType(
        "deepseek_yarn",
        _compute_deepseek_yarn,
        ("factor", _ORIGINAL),
        ("beta_fast", "beta_slow", "mscale"),
        source="deepseek-ai/DeepSeek-V3 inference/model.py, precompute_freqs_cis",
    ),
    ScalingType(
        "longrope",
        _compute_longrope,
        ("short_factor", "long_factor", _ORIGINAL),
        ("factor", "attention_factor"),
        depends_on_length=True,
        validate=_validate_longrope,
        source="Ding et al. 2024, LongRoPE; Phi-3 in transformers",
    ),
    ScalingType(
        "frequency_factors",
        _compute_frequency_factors,
        ("factors",),
        validate=_validate_frequency_factors,
        source="llama.cpp rope_freqs (ggml_rope_ext freq_factors)",
    ),
    ScalingType(
        "llama3",
        _compute_llama3,
        ("factor", "low_freq_factor", "high_freq_factor", _ORIGINAL),
        validate=_validate_llama3,
        source="Meta Llama 3.1; transformers modeling_rope_utils",
    ),
):
    register_scaling(_scaling_type)
