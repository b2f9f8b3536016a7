"""KV-cache sizes of MLA against MHA, GQA and MQA with the same head dimensions.

Per token and layer, MLA caches the latent c_kv and the shared rope key k_pe:
kv_lora_rank + qk_rope_head_dim values. A per-head cache with g key/value heads stores
g keys of qk_nope_head_dim + qk_rope_head_dim values and g values of v_head_dim values:
g * (qk_nope_head_dim + qk_rope_head_dim + v_head_dim). MHA has g = num_heads, MQA g = 1.
For DeepSeek-V3 that is 512 + 64 = 576 against 128 * (128 + 64 + 128) = 40,960.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ropekit.attention.mla import MLAConfig


@dataclass(frozen=True)
class CacheLayout:
    """Cache size of one attention layout.

    Attributes:
        name: "MLA", "MHA", "GQA" or "MQA".
        kv_heads: key/value heads of a per-head cache; None for MLA, which has none.
        elements_per_token_per_layer: values cached per token in one layer.
        bytes_per_token_per_layer: the same in bytes at the report's dtype.
        bytes_per_token: bytes per token for all layers; None when the layer count is unknown.
        ratio_to_mla: this layout's size divided by MLA's.
    """

    name: str
    kv_heads: int | None
    elements_per_token_per_layer: int
    bytes_per_token_per_layer: int
    bytes_per_token: int | None
    ratio_to_mla: float


@dataclass(frozen=True)
class KVCacheReport:
    """KV-cache sizes per token of MLA and of per-head caches with the same head dimensions.

    Attributes:
        dtype: element type the byte counts assume, as a string such as "bfloat16".
        bytes_per_element: size of one cached value.
        num_layers: layers counted in the whole-model figures; None when unknown.
        layouts: MLA first, then MHA, GQA and MQA.
    """

    dtype: str
    bytes_per_element: int
    num_layers: int | None
    layouts: tuple[CacheLayout, ...]

    def layout(self, name: str) -> CacheLayout:
        """Return the layout called ``name`` ("MLA", "MHA", "GQA" or "MQA")."""
        for layout in self.layouts:
            if layout.name == name:
                return layout
        raise KeyError(f"no layout {name!r} in this report; it has {[layout.name for layout in self.layouts]}")

    def bytes_for_tokens(self, num_tokens: int, name: str = "MLA") -> int | None:
        """Return the whole-model cache bytes of ``num_tokens`` tokens, or None without a layer count."""
        per_token = self.layout(name).bytes_per_token
        return None if per_token is None else per_token * num_tokens

    def to_dict(self) -> dict:
        """Return the report as plain JSON-serialisable data."""
        return {
            "dtype": self.dtype,
            "bytes_per_element": self.bytes_per_element,
            "num_layers": self.num_layers,
            "layouts": [vars(layout).copy() for layout in self.layouts],
        }

    def format_table(self) -> str:
        """Return the report as a Markdown table."""
        lines = [
            f"KV cache per token ({self.dtype}, {self.num_layers or 'unknown'} layers)",
            "",
            "| layout | KV heads | values/token/layer | bytes/token/layer | bytes/token (model) | x MLA |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for layout in self.layouts:
            heads = "-" if layout.kv_heads is None else str(layout.kv_heads)
            whole = "-" if layout.bytes_per_token is None else f"{layout.bytes_per_token:,}"
            lines.append(
                f"| {layout.name} | {heads} | {layout.elements_per_token_per_layer:,} | "
                f"{layout.bytes_per_token_per_layer:,} | {whole} | {layout.ratio_to_mla:.2f} |"
            )
        return "\n".join(lines)


def kv_cache_report(
    config: MLAConfig,
    num_layers: int | None = None,
    dtype: torch.dtype = torch.bfloat16,
    *,
    gqa_kv_heads: int | None = None,
) -> KVCacheReport:
    """Compare the KV cache of ``config`` with MHA, GQA and MQA caches of the same head sizes.

    num_layers defaults to ``config.num_hidden_layers``; when both are None the whole-model
    figures are None. gqa_kv_heads is the key/value head count of the GQA row; it must
    divide ``config.num_heads``. By default it is the largest divisor of num_heads that is at
    most 8 (Llama 3 70B uses 8) and below num_heads, or 1 for a single head.
    """
    if not isinstance(config, MLAConfig):
        raise TypeError(f"config must be a ropekit.MLAConfig, got {type(config).__name__}")
    if num_layers is None:
        num_layers = config.num_hidden_layers
    if num_layers is not None and (not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers <= 0):
        raise ValueError(f"num_layers must be a positive int or None, got {num_layers!r}")
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.bfloat16, got {dtype!r}")
    if gqa_kv_heads is None:
        gqa_kv_heads = _default_gqa_kv_heads(config.num_heads)
    if not isinstance(gqa_kv_heads, int) or gqa_kv_heads <= 0 or config.num_heads % gqa_kv_heads != 0:
        raise ValueError(f"gqa_kv_heads must be a positive divisor of num_heads={config.num_heads}, got {gqa_kv_heads!r}")

    bytes_per_element = torch.empty((), dtype=dtype).element_size()
    mla_elements = config.cache_elements_per_token
    per_head_elements = config.qk_nope_head_dim + config.qk_rope_head_dim + config.v_head_dim

    def build(name: str, kv_heads: int | None, elements: int) -> CacheLayout:
        per_layer = elements * bytes_per_element
        return CacheLayout(
            name=name,
            kv_heads=kv_heads,
            elements_per_token_per_layer=elements,
            bytes_per_token_per_layer=per_layer,
            bytes_per_token=None if num_layers is None else per_layer * num_layers,
            ratio_to_mla=elements / mla_elements,
        )

    layouts = (
        build("MLA", None, mla_elements),
        build("MHA", config.num_heads, config.num_heads * per_head_elements),
        build("GQA", gqa_kv_heads, gqa_kv_heads * per_head_elements),
        build("MQA", 1, per_head_elements),
    )
    return KVCacheReport(
        dtype=str(dtype).removeprefix("torch."),
        bytes_per_element=bytes_per_element,
        num_layers=num_layers,
        layouts=layouts,
    )


def _default_gqa_kv_heads(num_heads: int) -> int:
    candidates = [heads for heads in range(1, min(8, num_heads - 1) + 1) if num_heads % heads == 0]
    return max(candidates, default=1)
