"""``ropekit bench mla``: Multi-Head Latent Attention, ropekit against transformers.

For each context length T the benchmark times, in one process and with the same weights:
- prefill: one forward over T tokens into an empty cache;
- decode step: one new token attending to a cache that already contains T tokens;
and reports the cache bytes for T tokens. Implementations:
- ropekit-absorbed and ropekit-naive: ``MultiHeadLatentAttention`` with a ``LatentKVCache``
  and mode="absorbed" or "naive" for both phases;
- transformers: ``DeepseekV3Attention`` with its own ``DynamicCache`` and SDPA attention.
  It caches the latent too, but rebuilds every head's keys and values from it each step.

Before each timed decode step the caches are cut back to T tokens outside the timed region,
so every step sees the same context. Every decode output is compared with transformers'
(max_abs_error). The absorbed prefill materialises [batch, heads, T, T] float32 scores, so
rows whose scores would exceed --max-score-gib are skipped with the reason.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ropekit._io import write_json_atomic
from ropekit.bench import add_timing_arguments, format_table, parse_list, positive_float, positive_int

logger = logging.getLogger("ropekit.bench.mla")

IMPLEMENTATIONS = ("ropekit-absorbed", "ropekit-naive", "transformers")
CONTEXTS = (512, 1024, 2048, 4096, 8192, 16384)

# "tiny" keeps smoke tests fast; "deepseek-v2-lite" is the benchmark's subject (hidden 2048,
# 16 heads, kv_lora_rank 512, rope 64, nope 128, v 128).
PRESETS = ("deepseek-v2-lite", "tiny")

COLUMNS = (
    ("implementation", "implementation", "s"),
    ("context", "context", "d"),
    ("dtype", "dtype", "s"),
    ("prefill_ms", "prefill ms", ".3f"),
    ("decode_ms", "decode step ms", ".4f"),
    ("decode_speedup", "decode x transformers", ".2f"),
    ("prefill_ratio", "prefill time / transformers", ".2f"),
    ("cache_bytes", "cache bytes", ",d"),
    ("cache_values_per_token", "values/token/layer", "d"),
    ("max_abs_error", "decode max abs error", ".2e"),
    ("status", "status", "s"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--contexts",
        type=parse_contexts,
        default=list(CONTEXTS),
        help="comma-separated context lengths in tokens (default 512,1024,2048,4096,8192,16384)",
    )
    parser.add_argument("--batch", type=positive_int, default=1, help="sequences per batch (default %(default)s)")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16", "float64"),
        default=None,
        help="element type (default: bfloat16 on a GPU, float32 on the CPU)",
    )
    parser.add_argument(
        "--preset", choices=PRESETS, default="deepseek-v2-lite", help="layer dimensions (default %(default)s)"
    )
    parser.add_argument(
        "--implementations",
        type=parse_implementations,
        default=list(IMPLEMENTATIONS),
        help=f"comma-separated implementations (default {','.join(IMPLEMENTATIONS)})",
    )
    parser.add_argument(
        "--max-score-gib",
        type=positive_float,
        default=4.0,
        help="skip an absorbed prefill whose float32 score matrix exceeds this many GiB (default %(default)s)",
    )
    parser.add_argument(
        "--no-prefill", action="store_true", help="time only the decode step (prefill at long contexts is slow on a CPU)"
    )
    add_timing_arguments(parser, repeats=5, warmup=2)


def parse_contexts(text: str) -> list[int]:
    try:
        contexts = [int(item) for item in parse_list(text)]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"contexts must be comma-separated integers, got {text!r}") from error
    if not contexts or any(context <= 0 for context in contexts):
        raise argparse.ArgumentTypeError(f"contexts must be positive integers, got {text!r}")
    return contexts


def parse_implementations(text: str) -> list[str]:
    names = parse_list(text)
    for name in names:
        if name not in IMPLEMENTATIONS:
            raise argparse.ArgumentTypeError(f"unknown implementation {name!r}; expected one of {', '.join(IMPLEMENTATIONS)}")
    return names


def run(args: argparse.Namespace) -> int:
    import torch

    from ropekit._device import resolve_device
    from ropekit.bench.timing import DTYPES, configure_threads, describe_machine

    configure_threads(args.threads)
    device = resolve_device(args.device)
    dtype_name = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    dtype = DTYPES[dtype_name]

    layers = build_layers(args.preset, device, dtype, with_transformers="transformers" in args.implementations)
    rows = []
    for context in args.contexts:
        print(f"timing context {context} ({dtype_name}, {device})", file=sys.stderr, flush=True)
        rows.extend(bench_context(layers, context, dtype_name, args, device))
    add_ratios(rows)

    print(format_table(rows, COLUMNS))
    for row in rows:
        if row["reason"]:
            print(f"{row['status']}: {row['implementation']} at context {row['context']}: {row['reason']}")
    if args.json is not None:
        write_json_atomic(
            args.json,
            {"benchmark": "mla", "preset": args.preset, "batch": args.batch, "machine": describe_machine(device),
             "rows": rows},
        )
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def build_layers(preset: str, device: Any, dtype: Any, *, with_transformers: bool) -> dict[str, Any]:
    """Build ropekit's layer and, when requested, transformers' with the same random weights."""
    import torch

    from ropekit.attention import MLAConfig, MultiHeadLatentAttention

    config = MLAConfig.deepseek_v2_lite() if preset == "deepseek-v2-lite" else _tiny_config()
    torch.manual_seed(0)
    module = MultiHeadLatentAttention(config)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, parameter.shape[1] ** -0.5)
    module = module.to(device=device, dtype=dtype).eval()
    layers: dict[str, Any] = {"config": config, "ropekit": module}

    if with_transformers:
        try:
            layers.update(_build_transformers(config, module, device, dtype))
        except ImportError as error:
            logger.warning("transformers is not installed, so its rows are skipped: %s", error)
    return layers


def _tiny_config() -> Any:
    from ropekit.attention import MLAConfig

    return MLAConfig.simple(64, 32, 4)


def _build_transformers(config: Any, module: Any, device: Any, dtype: Any) -> dict[str, Any]:
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
        DeepseekV3Attention,
        DeepseekV3Config,
        DeepseekV3RotaryEmbedding,
    )

    scaling = dict(config.rope.scaling) if config.rope.scaling is not None else {"rope_type": "default"}
    hf_config = DeepseekV3Config(
        hidden_size=config.hidden_size,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        q_lora_rank=config.q_lora_rank,
        kv_lora_rank=config.kv_lora_rank,
        qk_nope_head_dim=config.qk_nope_head_dim,
        qk_rope_head_dim=config.qk_rope_head_dim,
        v_head_dim=config.v_head_dim,
        rope_interleave=config.rope.interleaved,
        rope_parameters={**scaling, "rope_theta": config.rope.theta},
        max_position_embeddings=config.rope.max_position_embeddings or 4096,
        rms_norm_eps=config.rms_norm_eps,
        # The MoE and vocabulary fields do not affect the attention layer; keep them small.
        vocab_size=8,
        num_hidden_layers=1,
        intermediate_size=8,
        moe_intermediate_size=8,
        n_routed_experts=2,
        n_group=1,
        topk_group=1,
        num_experts_per_tok=1,
    )
    hf_config._attn_implementation = "sdpa"
    attention = DeepseekV3Attention(hf_config, layer_idx=0)
    attention.load_state_dict(module.state_dict())
    attention = attention.to(device=device, dtype=dtype).eval()
    rotary = DeepseekV3RotaryEmbedding(hf_config).to(device)
    return {"hf_config": hf_config, "transformers": attention, "hf_rotary": rotary}


def bench_context(layers: dict[str, Any], context: int, dtype_name: str, args: argparse.Namespace, device: Any):
    """Time every requested implementation at one context length; return one row each."""
    import torch

    config = layers["config"]
    dtype = layers["ropekit"].kv_b_proj.weight.dtype
    generator = torch.Generator().manual_seed(context)
    prompt = torch.randn(args.batch, context, config.hidden_size, generator=generator).to(device=device, dtype=dtype)
    step = torch.randn(args.batch, 1, config.hidden_size, generator=generator).to(device=device, dtype=dtype)
    # The decode cache content, the same in every implementation's cache: random latents and rope keys.
    latent = torch.randn(args.batch, context, config.kv_lora_rank, generator=generator).to(device=device, dtype=dtype)
    rope_key = torch.randn(args.batch, context, config.qk_rope_head_dim, generator=generator).to(
        device=device, dtype=dtype
    )

    reference_output = None
    if "transformers" in layers:
        reference_output = _decode_transformers(layers, latent, rope_key, step, context)

    rows = []
    for name in args.implementations:
        row = {"implementation": name, "context": context, "dtype": dtype_name, "status": "ok", "reason": None}
        if name == "transformers" and "transformers" not in layers:
            row.update(status="skipped", reason="transformers is not installed")
            rows.append(row)
            continue
        try:
            with torch.no_grad():
                row.update(_bench_one(name, layers, prompt, step, latent, rope_key, context, args, device))
                if reference_output is not None and name != "transformers":
                    output = _decode_one(name, layers, latent, rope_key, step, context)
                    row["max_abs_error"] = float((output.float() - reference_output.float()).abs().max())
        except (RuntimeError, ValueError, MemoryError) as error:
            logger.warning("%s failed at context %d: %s", name, context, error)
            row.update(status="failed", reason=str(error))
        rows.append(row)
    return rows


def _bench_one(name, layers, prompt, step, latent, rope_key, context, args, device) -> dict[str, Any]:
    from ropekit.bench.timing import median_ms

    result: dict[str, Any] = {}
    config = layers["config"]
    batch = prompt.shape[0]
    score_gib = 4 * batch * config.num_heads * context * context / 2**30

    if args.no_prefill:
        result["prefill_ms"] = None
    elif name == "ropekit-absorbed" and score_gib > args.max_score_gib:
        result["prefill_ms"] = None
        result["reason"] = f"prefill skipped: its float32 scores need {score_gib:.1f} GiB > --max-score-gib"
    else:
        prefill = _prefill_callable(name, layers, prompt)
        result["prefill_ms"] = median_ms(_time(prefill, None, device, args.warmup, args.repeats))

    setup, decode, cache_bytes = _decode_callables(name, layers, latent, rope_key, step, context)
    result["decode_ms"] = median_ms(_time(decode, setup, device, args.warmup, args.repeats))
    result["cache_bytes"] = cache_bytes
    result["cache_values_per_token"] = cache_bytes // (batch * context * prompt.element_size())
    return result


def _time(fn, setup, device, warmup: int, repeats: int) -> list[float]:
    """Time ``fn`` like ``ropekit.bench.timing.time_call``, running ``setup`` untimed before each call."""
    import time

    from ropekit.bench.timing import synchronize

    seconds = []
    for index in range(warmup + repeats):
        if setup is not None:
            setup()
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        if index >= warmup:
            seconds.append(time.perf_counter() - start)
    return seconds


def _prefill_callable(name, layers, prompt):
    from ropekit.attention import LatentKVCache

    if name == "transformers":
        from transformers import DynamicCache

        attention, rotary, hf_config = layers["transformers"], layers["hf_rotary"], layers["hf_config"]
        positions = _positions(prompt.shape[0], 0, prompt.shape[1], prompt.device)

        def prefill_transformers():
            cos_sin = rotary(prompt, positions)
            attention(prompt, cos_sin, attention_mask=None, cache=DynamicCache(config=hf_config))

        return prefill_transformers

    module, mode = layers["ropekit"], name.removeprefix("ropekit-")

    def prefill_ropekit():
        cache = LatentKVCache(prompt.shape[0], prompt.shape[1], module.config, dtype=prompt.dtype, device=prompt.device)
        module(prompt, cache=cache, mode=mode)

    return prefill_ropekit


def _decode_callables(name, layers, latent, rope_key, step, context):
    """Return (setup, decode step, cache bytes) with a cache that contains ``context`` tokens."""
    if name == "transformers":
        cache = _filled_transformers_cache(layers, latent, rope_key)
        attention, rotary = layers["transformers"], layers["hf_rotary"]
        positions = _positions(step.shape[0], context, 1, step.device)
        layer = cache.layers[0]
        cache_bytes = layer.keys.nbytes + layer.values.nbytes

        def decode_transformers():
            attention(step, rotary(step, positions), attention_mask=None, cache=cache)

        def rewind_transformers():
            # crop takes minus the number of tokens to drop (transformers 5.25).
            cache.crop(context - cache.get_seq_length())

        return rewind_transformers, decode_transformers, cache_bytes

    cache = _filled_ropekit_cache(layers, latent, rope_key, context)
    module, mode = layers["ropekit"], name.removeprefix("ropekit-")
    cache_bytes = cache.bytes_per_token() * context * step.shape[0]

    def rewind():
        cache.lengths.fill_(context)
        cache.next_positions.fill_(context)

    def decode_ropekit():
        module(step, cache=cache, mode=mode)

    return rewind, decode_ropekit, cache_bytes


def _decode_one(name, layers, latent, rope_key, step, context):
    """Return one decode step's output, for the comparison with transformers."""
    if name == "transformers":
        return _decode_transformers(layers, latent, rope_key, step, context)
    cache = _filled_ropekit_cache(layers, latent, rope_key, context)
    return layers["ropekit"](step, cache=cache, mode=name.removeprefix("ropekit-"))


def _decode_transformers(layers, latent, rope_key, step, context):
    import torch

    cache = _filled_transformers_cache(layers, latent, rope_key)
    positions = _positions(step.shape[0], context, 1, step.device)
    with torch.no_grad():
        output, _ = layers["transformers"](step, layers["hf_rotary"](step, positions), attention_mask=None, cache=cache)
    return output


def _filled_ropekit_cache(layers, latent, rope_key, context):
    from ropekit.attention import LatentKVCache

    module = layers["ropekit"]
    batch = latent.shape[0]
    cache = LatentKVCache(batch, context + 1, module.config, dtype=latent.dtype, device=latent.device)
    cache.c_kv[:, :context] = latent
    cache.k_pe[:, :context] = rope_key
    cache.valid[:, :context] = True
    cache.lengths.fill_(context)
    cache.next_positions.fill_(context)
    return cache


def _filled_transformers_cache(layers, latent, rope_key):
    from transformers import DynamicCache

    import torch

    cache = DynamicCache(config=layers["hf_config"])
    if layers["config"].rope.interleaved:
        # transformers 5.25 returns interleaved-layout rotations de-interleaved (even channels,
        # then odd ones), so its cache contains ropekit's rope key in that order.
        rope_key = torch.cat((rope_key[..., 0::2], rope_key[..., 1::2]), dim=-1)
    # DeepseekV3Attention stores the latent as a one-head key and the rope key as a one-head value.
    cache.update(latent.unsqueeze(1), rope_key.unsqueeze(1), 0)
    return cache


def _positions(batch: int, start: int, length: int, device: Any):
    import torch

    return torch.arange(start, start + length, device=device).expand(batch, -1)


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Add each row's decode speedup and prefill time relative to transformers at the same context."""
    reference = {row["context"]: row for row in rows if row["implementation"] == "transformers" and row["status"] == "ok"}
    for row in rows:
        base = reference.get(row["context"])
        if base is None or row["status"] != "ok":
            continue
        if row.get("decode_ms") and base.get("decode_ms"):
            row["decode_speedup"] = base["decode_ms"] / row["decode_ms"]
        if row.get("prefill_ms") and base.get("prefill_ms"):
            row["prefill_ratio"] = row["prefill_ms"] / base["prefill_ms"]
