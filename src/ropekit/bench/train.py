"""``ropekit bench train``: training tokens per second of ropekit's decoder and transformers' Llama.

Both models get the same shape (the study's model sizes: byte vocabulary, RoPE, SwiGLU,
RMSNorm, tied embeddings), the same batch of random bytes, the same loss and the same
AdamW, in one process. A timed step is forward, cross-entropy, backward and optimizer
step. The peers alternate step by step, so a change in machine load affects both alike.
The table reports the median step time, tokens per second and their ratio.

``--compile`` (``torch.compile`` of each model's forward) and ``--autocast bfloat16``
(``torch.autocast`` mixed precision) apply to both peers alike, so the ratio always compares
the two models under the same treatment.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ropekit._io import write_json_atomic
from ropekit.bench import add_timing_arguments, format_table, positive_int

PEERS = ("ropekit", "transformers")

COLUMNS = (
    ("peer", "peer", ""),
    ("parameters", "parameters", ","),
    ("ms", "ms/step", ".2f"),
    ("tokens_per_second", "tokens/s", ",.0f"),
    ("speedup", "vs transformers", ".2f"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-size",
        default="small",
        choices=("tiny", "mini", "small", "medium", "large"),
        help="decoder width and depth, as in ropekit study (default %(default)s)",
    )
    parser.add_argument("--train-length", type=positive_int, default=64, help="context length in tokens (default %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="sequences per step (default %(default)s)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="time both models with torch.compile of their forward (the warm-up steps include compiling)",
    )
    parser.add_argument(
        "--autocast",
        choices=("none", "bfloat16"),
        default="none",
        help="run both forwards under torch.autocast in this dtype; weights and optimizer stay float32 (default %(default)s)",
    )
    add_timing_arguments(parser, repeats=20, warmup=3)


def run(args: argparse.Namespace) -> int:
    from ropekit._device import resolve_device
    from ropekit.bench.timing import configure_threads, describe_machine

    configure_threads(args.threads)
    device = resolve_device(args.device)
    print(
        f"timing training steps: model {args.model_size}, batch {args.batch_size} x {args.train_length} tokens on {device}",
        file=sys.stderr,
        flush=True,
    )
    rows = bench_training(
        args.model_size,
        args.train_length,
        args.batch_size,
        device,
        args.warmup,
        args.repeats,
        compile_forward=args.compile,
        autocast=args.autocast,
    )
    print(format_table(rows, COLUMNS))
    if args.json is not None:
        settings = {
            "model_size": args.model_size,
            "train_length": args.train_length,
            "batch_size": args.batch_size,
            "compile": args.compile,
            "autocast": args.autocast,
        }
        report = {"benchmark": "train", "machine": describe_machine(device), "settings": settings, "rows": rows}
        write_json_atomic(args.json, report)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def bench_training(
    model_size: str,
    train_length: int,
    batch_size: int,
    device: Any,
    warmup: int,
    repeats: int,
    *,
    compile_forward: bool = False,
    autocast: str = "none",
) -> list[dict[str, Any]]:
    """Time training steps of both peers, alternating; return one row per peer."""
    import time

    from ropekit.bench.timing import median_ms, synchronize

    steps = {
        peer: make_training_step(
            peer, model_size, train_length, batch_size, device, compile_forward=compile_forward, autocast=autocast
        )
        for peer in PEERS
    }
    for _ in range(warmup):
        for step, _parameters in steps.values():
            step()
    seconds: dict[str, list[float]] = {peer: [] for peer in PEERS}
    for _ in range(repeats):
        for peer, (step, _parameters) in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            seconds[peer].append(time.perf_counter() - start)

    rows = []
    for peer in PEERS:
        ms = median_ms(seconds[peer])
        rows.append(
            {
                "peer": peer,
                "parameters": steps[peer][1],
                "ms": ms,
                "tokens_per_second": batch_size * train_length / (ms * 1e-3),
            }
        )
    reference = rows[PEERS.index("transformers")]["tokens_per_second"]
    for row in rows:
        row["speedup"] = row["tokens_per_second"] / reference
    return rows


def make_training_step(
    peer: str,
    model_size: str,
    train_length: int,
    batch_size: int,
    device: Any,
    *,
    compile_forward: bool = False,
    autocast: str = "none",
) -> tuple[Any, int]:
    """Build one peer's model, optimizer and batch; return (step function, parameter count)."""
    import torch
    import torch.nn.functional as F

    from ropekit.study.runs import MODEL_SIZES, RunSpec, build_model

    size = MODEL_SIZES[model_size]
    ropekit_model = build_model(RunSpec("rope", "rope", "mha"), size, train_length, seed=0)
    if peer == "ropekit":
        model = ropekit_model.to(device)

        def logits_of(inputs: torch.Tensor) -> torch.Tensor:
            return model(inputs)

    else:
        model = build_llama(ropekit_model.config).to(device)

        def logits_of(inputs: torch.Tensor) -> torch.Tensor:
            return model(input_ids=inputs).logits

    if compile_forward:
        logits_of = torch.compile(logits_of)
    autocast_dtype = {"none": None, "bfloat16": torch.bfloat16}[autocast]

    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 256, (batch_size, train_length + 1), generator=generator).to(device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type in ("cpu", "cuda"))

    def step() -> None:
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = logits_of(inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    parameters = sum(parameter.numel() for parameter in model.parameters())
    return step, parameters


def build_llama(config: Any) -> Any:
    """Return a transformers LlamaForCausalLM of the same shape as a ropekit DecoderConfig."""
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as error:
        raise RuntimeError(
            "ropekit bench train compares against transformers, which is not installed; "
            "install it with pip install 'ropekit[test]'"
        ) from error

    llama_config = LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps,
        rope_theta=config.rope.theta,
        tie_word_embeddings=config.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(llama_config)
