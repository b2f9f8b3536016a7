"""``ropekit generate MODEL``: continue a prompt with a local checkpoint, streaming to stdout.

Stdout carries only the decoded text (prompt plus continuation, special tokens omitted),
followed by one newline when the text does not already end with one.
Timing, cache size and warnings go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a local checkpoint: a Hugging Face or ropekit directory, or a .gguf file")
    parser.add_argument("--prompt", default="", help="text to continue (default: empty, start from the BOS token)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate at most (default 128)")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 is greedy (default 0)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1]; 1 disables it (default 1)")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the K most likely tokens; 0 disables it (default 0)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the sampler, for repeatable sampled runs")
    parser.add_argument(
        "--rope-scaling",
        type=_parse_scaling,
        default=None,
        metavar="JSON",
        help='replace the checkpoint\'s RoPE scaling, e.g. \'{"rope_type": "yarn", "factor": 4}\'',
    )
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N or auto (CUDA when available); default cpu")


def _parse_scaling(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--rope-scaling is not valid JSON ({error}): {text!r}") from None
    if not isinstance(value, dict) or "rope_type" not in value:
        raise argparse.ArgumentTypeError(f'--rope-scaling must be a JSON object with a "rope_type" key, got {text!r}')
    return value


def run(args: argparse.Namespace) -> int:
    from ropekit._device import resolve_device
    from ropekit.models import ByteTokenizer, load_model, load_tokenizer
    from ropekit.models.generation import check_sampling, generate

    # Invalid values raise ValueError and a missing file OSError; ropekit.cli prints either as
    # "ropekit generate: error: ..." and exits 2, like every other command.
    if args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    check_sampling(args.temperature, args.top_k, args.top_p)
    device = resolve_device(args.device)
    model = load_model(args.model, rope_scaling=args.rope_scaling, device=device)
    try:
        tokenizer = load_tokenizer(args.model)
    except FileNotFoundError:
        if model.config.vocab_size != 256:
            raise
        print("warning: no tokenizer file; the vocabulary has 256 tokens, so bytes are assumed", file=sys.stderr)
        tokenizer = ByteTokenizer()

    prompt_ids = tokenizer.encode(args.prompt)  # BOS first where the tokenizer's own setting adds it
    if not prompt_ids and tokenizer.bos_id is not None:
        prompt_ids = [tokenizer.bos_id]  # an empty prompt starts from BOS even where encode omits it
    if not prompt_ids:
        raise ValueError("the prompt is empty and the tokenizer has no BOS token to start from; pass --prompt")
    _warn_about_context(model, len(prompt_ids), args.max_new_tokens, args.rope_scaling is not None)

    cache = model.make_cache(1, len(prompt_ids) + max(args.max_new_tokens, 1))
    tokens = generate(
        model,
        prompt_ids,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k or None,
        top_p=args.top_p,
        seed=args.seed,
        eos_id=tokenizer.eos_id,
        cache=cache,
    )
    start = time.perf_counter()
    generated, first_token_at = _stream(tokenizer, prompt_ids, tokens)
    end = time.perf_counter()

    # The first token costs the prefill; the rate counts only the tokens after it.
    prefill_seconds = (first_token_at or end) - start
    decode_seconds = end - (first_token_at or end)
    rate = f"{(len(generated) - 1) / decode_seconds:.1f}" if len(generated) > 1 and decode_seconds > 0 else "n/a"
    used = cache.length * cache.bytes_per_token()
    print(
        f"{len(prompt_ids)} prompt tokens, {len(generated)} new tokens; prefill and first token {prefill_seconds:.2f} s, "
        f"then {rate} tokens/s; KV cache: {used:,} bytes used for {cache.length} tokens "
        f"({cache.bytes_per_token():,} bytes per token), {cache.nbytes():,} bytes allocated",
        file=sys.stderr,
    )
    return 0


def _stream(tokenizer: Any, prompt_ids: list[int], tokens: Any) -> tuple[list[int], float | None]:
    """Write the decoded text to stdout as it grows; return the generated ids and the
    time.perf_counter() reading when the first one arrived (None when there was none).

    The whole sequence is decoded after every token and only the new suffix is written, so
    multi-byte characters split across byte tokens come out whole: text ending in U+FFFD
    (an incomplete UTF-8 sequence so far) is held back until the next token completes it.
    """
    written = tokenizer.decode(prompt_ids)
    sys.stdout.write(written)
    sys.stdout.flush()
    generated: list[int] = []
    first_token_at = None
    for token in tokens:
        if first_token_at is None:
            first_token_at = time.perf_counter()
        generated.append(token)
        text = tokenizer.decode(prompt_ids + generated)
        if text.endswith("\ufffd") or not text.startswith(written):
            continue
        sys.stdout.write(text[len(written) :])
        sys.stdout.flush()
        written = text

    final = tokenizer.decode(prompt_ids + generated)
    if final.startswith(written):
        sys.stdout.write(final[len(written) :])
        written = final
    sys.stdout.flush()
    if not written.endswith("\n"):
        # One closing line break puts the shell prompt and the stderr summary on lines of their own.
        # Text that already ends with a newline gets none.
        sys.stdout.write("\n")
        sys.stdout.flush()
    return generated, first_token_at


def _warn_about_context(model: Any, prompt_len: int, max_new_tokens: int, scaled: bool) -> None:
    context = model.config.max_position_embeddings
    if scaled or (model.config.rope is not None and model.config.rope.scaling is not None):
        return
    if prompt_len > context:
        print(
            f"warning: the prompt has {prompt_len} tokens but the model's context is {context}; quality will drop "
            "past it. Pass --rope-scaling (e.g. '{\"rope_type\": \"yarn\", \"factor\": 4}') to extend it.",
            file=sys.stderr,
        )
    elif prompt_len + max_new_tokens > context:
        print(
            f"warning: prompt ({prompt_len}) plus --max-new-tokens ({max_new_tokens}) exceeds the model's context of "
            f"{context} tokens",
            file=sys.stderr,
        )
