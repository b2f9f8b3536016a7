"""Plain-text rendering of an inspection report."""

from __future__ import annotations

from typing import Any

# Scaling parameters that are lists (longrope's per-pair factors), printed as a range.
LIST_PARAMETERS = ("short_factor", "long_factor")


def format_report(report: dict[str, Any]) -> str:
    """Render ``report`` (from ``build_report``) as the text ``ropekit inspect`` prints."""
    lines = [_title(report["source"]), ""]
    lines += _rope_lines(report["rope"])
    lines.append("")
    lines += _attention_lines(report["attention"])
    return "\n".join(lines) + "\n"


def _title(source: dict[str, Any]) -> str:
    title = f"{source['location']} ({source['kind']}"
    if source.get("model_type"):
        title += f", model_type {source['model_type']}"
    title += ")"
    if source.get("reference"):
        title += f"\nvalues from {source['reference']}"
    return title


def _rope_lines(rope: dict[str, Any]) -> list[str]:
    layout = "interleaved pairs" if rope["interleaved"] else "half layout (rotate_half)"
    pairs = len(rope["wavelengths"])
    original = rope["original_context"]
    context = rope["context"]
    lines = [
        "RoPE",
        f"  type               {rope['rope_type']}{_scaling_parameters(rope['scaling'])}",
        f"  theta              {rope['theta']:g}",
        f"  dimensions         head_dim {rope['head_dim']}, rotary_dim {rope['rotary_dim']} ({pairs} pairs), {layout}",
        f"  attention factor   {rope['attention_factor']:.6g} (multiplies cos and sin)",
        f"  wavelengths        shortest {rope['shortest_wavelength']:,.2f}, longest {rope['longest_wavelength']:,.0f} positions",
        f"  full turns         {rope['pairs_within_original_context']} of {pairs} pairs turn a full circle "
        f"within the original context",
        f"  effective context  {context:,} tokens (original {original:,}, {context / original:g}x)",
    ]
    if rope.get("freq_factors") is not None:
        factors = rope["freq_factors"]
        lines.append(f"  freq factors       {min(factors):g} to {max(factors):g} (GGUF rope_freqs tensor)")
    return lines


def _scaling_parameters(scaling: dict[str, Any] | None) -> str:
    if not scaling:
        return ""
    parts = []
    for name, value in scaling.items():
        if name in ("rope_type", "type"):
            continue
        if name in LIST_PARAMETERS and isinstance(value, list) and value:
            parts.append(f"{name} {min(value):g}..{max(value):g} ({len(value)} values)")
        else:
            parts.append(f"{name} {value}")
    return f" ({', '.join(parts)})" if parts else ""


def _attention_lines(attention: dict[str, Any]) -> list[str]:
    kind = attention["type"]
    if kind == "mla":
        heads = f"{attention['num_heads']} heads, latent rank {attention['kv_lora_rank']}"
    else:
        heads = f"{attention['num_heads']} query heads, {attention['num_kv_heads']} key/value heads"
    lines = [
        f"Attention: {kind.upper()}, {heads}, {attention['num_layers']} layers",
        f"  softmax scale      {attention['softmax_scale']:.6g}",
        "  KV cache per token (bytes; 8-bit is float8):",
    ]

    header = ("layout", "elements/layer", "bf16/layer", "8-bit/layer", "bf16 all layers", "8-bit all layers")
    rows = [header]
    for name, sizes in attention["comparison"].items():
        label = _layout_label(name, sizes.get("kv_heads"), this_model=name == kind)
        rows.append(
            (
                label,
                f"{sizes['kv_elements_per_token_per_layer']:,}",
                f"{sizes['kv_bytes_per_token']['bfloat16']:,}",
                f"{sizes['kv_bytes_per_token']['float8']:,}",
                f"{sizes['kv_bytes_per_token_all_layers']['bfloat16']:,}",
                f"{sizes['kv_bytes_per_token_all_layers']['float8']:,}",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("    " + "  ".join(cells))
    return lines


def _layout_label(name: str, kv_heads: Any, this_model: bool) -> str:
    """Return a row label such as "gqa, 8 KV heads" that names the key/value heads the row assumes."""
    notes = []
    if isinstance(kv_heads, int) and name != "mla":
        notes.append(f"{kv_heads} KV head{'s' if kv_heads != 1 else ''}")
    if this_model:
        notes.append("this model")
    return f"{name} ({', '.join(notes)})" if notes else name
