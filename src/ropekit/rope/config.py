"""Configuration of Rotary Positional Encoding: the RopeConfig dataclass."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

logger = logging.getLogger("ropekit.rope.config")


def _freeze(value: Any) -> Any:
    """Return an immutable copy of a scaling parameter (lists, numpy arrays and tensors become tuples)."""
    if hasattr(value, "tolist"):
        value = value.tolist()  # numpy arrays and scalars, torch tensors: plain Python values
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    return value


class FrozenScaling(dict):
    """A read-only dict of scaling parameters that can be hashed, pickled and deep-copied.

    It subclasses dict so that ``json.dumps`` and ``dataclasses.asdict`` handle it like the
    mapping it was built from. Every mutating method raises TypeError.
    """

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("RopeConfig.scaling is read-only; build a new RopeConfig with another scaling")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def __reduce__(self) -> tuple:
        return (FrozenScaling, (dict(self),))


@dataclass(frozen=True)
class RopeConfig:
    """Rotary Positional Encoding of one attention head.

    Attributes:
        head_dim: channels per head of q and k.
        rotary_dim: leading channels that are rotated (partial rotary when smaller than
            head_dim); the rest pass through. Defaults to head_dim. Must be even.
        theta: the base of the frequencies, inv_freq[i] = theta ** (-2i / rotary_dim).
        interleaved: False for the half ("NeoX", rotate_half) layout of Llama in Hugging
            Face transformers; True for adjacent pairs as in GPT-J, RoFormer, llama2.c,
            GGUF llama and DeepSeek checkpoints.
        scaling: None, or a mapping with a "rope_type" key and that type's parameters
            (see ``ropekit.rope.scaling`` for the registered types and their keys). It is
            validated here and stored read-only, with lists turned into tuples.
        max_position_embeddings: the context length the model is configured for, in
            tokens. Required by "dynamic"; the fallback for an absent
            "original_max_position_embeddings" of the scaling types that need one (yarn,
            deepseek_yarn, longrope, llama3) and for an absent "factor" of "yarn" and
            "longrope" (factor = max_position_embeddings / original length).
        mrope_section: the frequency pairs taken from each position axis (temporal, height,
            width) in order, for multimodal RoPE as in Qwen2-VL. The sections sum to
            rotary_dim // 2, and positions then have shape [n_axes, ...].
        mrope_interleaved: False for contiguous sections (Qwen2-VL, Qwen2.5-VL); True for
            Qwen3-VL's assignment, where pair i belongs to axis a = i mod n_axes while
            i < mrope_section[a] * n_axes, and to axis 0 otherwise.
        axial_dims: axial RoPE for images and video: the rotary channels given to each
            position axis, each axis with its own frequencies
            theta ** (-2i / axial_dims[a]); sums to rotary_dim. Positions then have shape
            [n_axes, ...].
        xpos_scale_base: None, or the scale base of xPos (Sun et al. 2022, "A
            Length-Extrapolatable Transformer", 512 in the paper): queries at position n
            are multiplied by zeta_i ** (n / xpos_scale_base) and keys by its inverse.
    """

    head_dim: int
    rotary_dim: int | None = None
    theta: float = 10000.0
    interleaved: bool = False
    scaling: Mapping[str, Any] | None = None
    max_position_embeddings: int | None = None
    mrope_section: tuple[int, ...] | None = None
    mrope_interleaved: bool = False
    axial_dims: tuple[int, ...] | None = None
    xpos_scale_base: float | None = None

    def __post_init__(self) -> None:
        _validate_dims(self)
        if (
            not isinstance(self.theta, (int, float))
            or isinstance(self.theta, bool)
            or not _is_finite(self.theta)
            or not self.theta > 1.0
        ):
            raise ValueError(f"theta must be a finite number greater than 1, got {self.theta!r}")
        if not isinstance(self.interleaved, bool):
            raise TypeError(f"interleaved must be a bool, got {self.interleaved!r}")
        if self.max_position_embeddings is not None and (
            not isinstance(self.max_position_embeddings, int) or self.max_position_embeddings <= 0
        ):
            raise ValueError(
                f"max_position_embeddings must be a positive int or None, got {self.max_position_embeddings!r}"
            )
        _validate_axes(self)
        if self.xpos_scale_base is not None and not (
            isinstance(self.xpos_scale_base, (int, float)) and self.xpos_scale_base > 0
        ):
            raise ValueError(f"xpos_scale_base must be a positive number or None, got {self.xpos_scale_base!r}")
        if self.xpos_scale_base is not None and self.n_axes > 1:
            raise ValueError("xpos_scale_base supports one position axis; unset mrope_section and axial_dims")
        _normalize_scaling(self)

    @property
    def rope_type(self) -> str:
        """The scaling type name, "default" when scaling is None."""
        return "default" if self.scaling is None else self.scaling["rope_type"]

    @property
    def n_axes(self) -> int:
        """Number of position axes: 1, or the length of mrope_section or axial_dims."""
        sections = self.mrope_section or self.axial_dims
        return 1 if sections is None else len(sections)

    def pair_axes(self) -> tuple[int, ...]:
        """Return the position axis that drives each of the rotary_dim // 2 frequency pairs."""
        pairs = self.rotary_dim // 2
        if self.mrope_section is None and self.axial_dims is None:
            return (0,) * pairs
        sizes = self.mrope_section if self.mrope_section is not None else tuple(d // 2 for d in self.axial_dims)
        if not self.mrope_interleaved:
            return tuple(axis for axis, size in enumerate(sizes) for _ in range(size))

        axes = [0] * pairs
        for axis in range(1, len(sizes)):
            for pair in range(axis, min(sizes[axis] * len(sizes), pairs), len(sizes)):
                axes[pair] = axis
        return tuple(axes)

    @classmethod
    def from_hf(cls, config: Mapping[str, Any] | str | Any) -> RopeConfig:
        """Build a RopeConfig from a Hugging Face config (a dict or a path to config.json).

        See ``ropekit.rope.hf.rope_config_from_hf`` for the keys that are read.
        """
        from ropekit.rope.hf import rope_config_from_hf

        return rope_config_from_hf(config)


def _is_finite(value: float) -> bool:
    """Return whether ``value`` is a finite float; an int too large for a float is not."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _validate_dims(config: RopeConfig) -> None:
    if not isinstance(config.head_dim, int) or isinstance(config.head_dim, bool) or config.head_dim <= 0:
        raise ValueError(f"head_dim must be a positive int, got {config.head_dim!r}")
    if config.rotary_dim is None:
        object.__setattr__(config, "rotary_dim", config.head_dim)
    rotary_dim = config.rotary_dim
    if not isinstance(rotary_dim, int) or isinstance(rotary_dim, bool) or rotary_dim <= 0 or rotary_dim % 2:
        raise ValueError(f"rotary_dim must be a positive even int, got {rotary_dim!r}")
    if rotary_dim > config.head_dim:
        raise ValueError(
            f"rotary_dim ({rotary_dim}) must not exceed head_dim ({config.head_dim}); "
            "set rotary_dim <= head_dim for partial rotary"
        )


def _validate_axes(config: RopeConfig) -> None:
    if config.mrope_section is not None and config.axial_dims is not None:
        raise ValueError("mrope_section and axial_dims are exclusive; set at most one of them")
    if config.mrope_section is not None:
        sections = tuple(config.mrope_section)
        if not sections or any(not isinstance(s, int) or s <= 0 for s in sections):
            raise ValueError(f"mrope_section must be a sequence of positive ints, got {config.mrope_section!r}")
        if sum(sections) != config.rotary_dim // 2:
            raise ValueError(
                f"mrope_section {sections} sums to {sum(sections)}, expected rotary_dim // 2 = "
                f"{config.rotary_dim // 2} frequency pairs"
            )
        object.__setattr__(config, "mrope_section", sections)
    if not isinstance(config.mrope_interleaved, bool):
        raise TypeError(f"mrope_interleaved must be a bool, got {config.mrope_interleaved!r}")
    if config.mrope_interleaved:
        if config.mrope_section is None:
            raise ValueError("mrope_interleaved needs mrope_section; set both or neither")
        axes = config.pair_axes()
        counts = tuple(axes.count(axis) for axis in range(len(config.mrope_section)))
        if counts != config.mrope_section:
            raise ValueError(
                f"mrope_section {config.mrope_section} does not fit the interleaved assignment over "
                f"{config.rotary_dim // 2} pairs (it gives {counts}); each section a needs "
                "section[a] * n_axes <= rotary_dim // 2"
            )
    if config.axial_dims is not None:
        dims = tuple(config.axial_dims)
        if not dims or any(not isinstance(d, int) or d <= 0 or d % 2 for d in dims):
            raise ValueError(f"axial_dims must be a sequence of positive even ints, got {config.axial_dims!r}")
        if sum(dims) != config.rotary_dim:
            raise ValueError(f"axial_dims {dims} sums to {sum(dims)}, expected rotary_dim = {config.rotary_dim}")
        if config.scaling is not None:
            raise ValueError("axial_dims supports no scaling; set scaling=None for axial RoPE")
        object.__setattr__(config, "axial_dims", dims)


def _normalize_scaling(config: RopeConfig) -> None:
    """Check the scaling spec against its registered type and store a read-only copy."""
    from ropekit.rope.scaling import get_scaling_type

    if config.scaling is None:
        return
    if not isinstance(config.scaling, Mapping):
        raise TypeError(f"scaling must be None or a mapping with a 'rope_type' key, got {config.scaling!r}")
    spec = dict(config.scaling)
    if "rope_type" not in spec and "type" in spec:
        spec["rope_type"] = spec.pop("type")
    spec.pop("type", None)
    rope_type = spec.get("rope_type")
    if rope_type is None:
        raise ValueError(f"scaling needs a 'rope_type' key naming the scaling type, got keys {sorted(spec)}")
    if rope_type == "default" and len(spec) == 1:
        object.__setattr__(config, "scaling", None)
        return

    scaling_type = get_scaling_type(rope_type)
    # transformers fills an absent original length from max_position_embeddings
    # (modeling_rope_utils, standardize_rope_params), and so does RopeConfig.from_hf.
    if (
        "original_max_position_embeddings" in scaling_type.required
        and spec.get("original_max_position_embeddings") is None
        and config.max_position_embeddings is not None
    ):
        spec["original_max_position_embeddings"] = config.max_position_embeddings
    missing = [key for key in scaling_type.required if spec.get(key) is None]
    if missing:
        hint = ""
        if "original_max_position_embeddings" in missing:
            hint = "; set original_max_position_embeddings in scaling or max_position_embeddings in the RopeConfig"
        raise ValueError(f"scaling of rope_type {rope_type!r} is missing the required key(s) {missing}{hint}")
    unknown = sorted(set(spec) - {"rope_type"} - set(scaling_type.required) - set(scaling_type.optional))
    if unknown:
        raise ValueError(
            f"scaling of rope_type {rope_type!r} has unknown key(s) {unknown}; expected "
            f"{sorted(scaling_type.required)} and optionally {sorted(scaling_type.optional)}"
        )
    factor = spec.get("factor")
    if factor is not None and (not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 0):
        raise ValueError(f"scaling factor must be a positive number, got {factor!r}")
    frozen = FrozenScaling({key: _freeze(value) for key, value in spec.items()})
    object.__setattr__(config, "scaling", frozen)
    if scaling_type.validate is not None:
        scaling_type.validate(config)
