"""Token-by-token generation with a KV cache: greedy, temperature, top-k and top-p sampling."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import torch

from ropekit.models.decoder import Decoder, DecoderCache

logger = logging.getLogger("ropekit.models.generation")


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise ValueError for sampling settings outside their ranges."""
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 0):
        raise ValueError(f"top_k must be a non-negative int (0 or None disables it), got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1] (1 or None disables it), got {top_p!r}")


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token of every row from logits [b, v]; return [b] ids.

    temperature 0 takes the argmax. Otherwise the logits are divided by temperature, only
    the top_k most likely tokens are kept, then only the smallest set of most likely tokens
    whose probabilities sum to at least top_p (nucleus sampling, Holtzman et al. 2019), and
    one token is drawn from what remains.
    """
    check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)

    scores = logits.to(torch.float32) / temperature
    if top_k:
        kth_best = torch.topk(scores, min(top_k, scores.shape[-1]), dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth_best, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_scores, order = scores.sort(dim=-1, descending=True)
        probabilities = sorted_scores.softmax(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p; the best stays.
        mass_before = probabilities.cumsum(dim=-1) - probabilities
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    probabilities = scores.softmax(dim=-1)
    return torch.multinomial(probabilities, num_samples=1, generator=generator).squeeze(-1)


def generate(
    model: Decoder,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    eos_id: int | None = None,
    cache: DecoderCache | None = None,
) -> Iterator[int]:
    """Yield new token ids one at a time, continuing ``prompt_ids``.

    The prompt is run once (prefill), then each new token is fed back through the KV cache.
    Generation stops after ``max_new_tokens`` tokens or after yielding ``eos_id``.

    Args:
        cache: a cache from ``model.make_cache`` with room for the prompt plus
            max_new_tokens; by default one of exactly that size is built.
        seed: seeds the sampling generator, so a sampled run can be repeated.
    """
    if not prompt_ids:
        raise ValueError("prompt_ids is empty; give at least one token (for example the BOS id)")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
    check_sampling(temperature, top_k, top_p)
    device = model.embed_tokens.weight.device
    if cache is None:
        cache = model.make_cache(1, len(prompt_ids) + max(max_new_tokens, 1))
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)

    input_ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    for _ in range(max_new_tokens):
        # Inference mode only around the step: a context left open across `yield` would
        # leak into the caller's code.
        with torch.inference_mode():
            logits = model(input_ids, cache=cache)[:, -1]  # [1, v]
            token = int(sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator))
        yield token
        if eos_id is not None and token == eos_id:
            return
        input_ids = torch.tensor([[token]], dtype=torch.long, device=device)
