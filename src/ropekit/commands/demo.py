"""``ropekit demo``: a short tour from additive encodings to RoPE and latent attention.

Six sections go to stdout as plain text, and the tutorial figures are written into --out
(PNG and SVG) and listed at the end. Every number is computed when the command runs,
with fixed seeds, in well under a minute on a CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SENTENCE = "The dog chased another dog"
SEED = 0

# Width of the toy token embeddings and of the additive encodings in sections 1 and 2.
DEMO_DIM = 64

# Positions of the relative-position check in section 5: (m, n) shifted by 0, 10 and 100000.
RELATIVE_PAIRS = ((7, 3), (17, 13), (100007, 100003))

# MLA sizes of the tour, in the terms of MLAConfig.simple (model width, latent width, heads).
TOUR_MLA = {"d_model": 512, "d_latent": 128, "n_heads": 8}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="ropekit-demo",
        help="folder for the figures, created when missing (default: ./ropekit-demo)",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    sections = [
        ("1. Why position matters", why_position_matters),
        ("2. Range and magnitude against token embeddings", range_and_magnitude),
        ("3. Binary encoding: low bits flip fastest", binary_bits),
        ("4. RoPE rotates instead of adding", rope_preserves_norms),
        ("5. The relative-position property of RoPE", relative_position_property),
        ("6. Multi-Head Latent Attention: the latent KV cache", latent_attention),
    ]
    for title, section in sections:
        torch.manual_seed(SEED)
        print(title)
        for line in section():
            print(f"   {line}")
        print()

    from ropekit.viz import write_tutorial_figures

    out_dir = Path(args.out)
    print(f"writing figures into {out_dir} ...", file=sys.stderr)
    paths = write_tutorial_figures(out_dir)
    print(f"Figures written to {out_dir}:")
    for path in paths:
        print(f"   {path}")
    return 0


def _additive_encodings(max_position: int) -> dict:
    """Return the additive encodings of width DEMO_DIM by display name."""
    from ropekit.encodings import (
        BinaryPositionalEncoding,
        IntegerPositionalEncoding,
        LearnedPositionalEmbedding,
        SinusoidalPositionalEncoding,
    )

    return {
        "integer (raw)": IntegerPositionalEncoding(DEMO_DIM),
        f"integer / {max_position}": IntegerPositionalEncoding(DEMO_DIM, max_len=max_position, normalize=True),
        "binary": BinaryPositionalEncoding(DEMO_DIM),
        "sinusoidal": SinusoidalPositionalEncoding(DEMO_DIM),
        "learned (at init)": LearnedPositionalEmbedding(DEMO_DIM, max_len=max_position + 1),
    }


def why_position_matters() -> list[str]:
    """Show that the two "dog" tokens differ only once a positional encoding is added."""
    import torch

    words = SENTENCE.split()
    vocabulary = {word: index for index, word in enumerate(dict.fromkeys(word.lower() for word in words))}
    token_ids = torch.tensor([vocabulary[word.lower()] for word in words])
    embeddings = torch.randn(len(vocabulary), DEMO_DIM)[token_ids]  # [seq, dim]
    first, second = [index for index, word in enumerate(words) if word == "dog"]

    lines = [
        f'"{SENTENCE}": "dog" is token {first} and token {second}.',
        f"Distance between the two dog vectors (embedding width {DEMO_DIM}, N(0, 1) token embeddings):",
        f"   {'no positional encoding':<24} {(embeddings[first] - embeddings[second]).norm():10.4f}",
    ]
    for name, encoding in _additive_encodings(len(words)).items():
        with torch.no_grad():
            encoded = encoding(embeddings.unsqueeze(0))[0]
        lines.append(f"   {name:<24} {(encoded[first] - encoded[second]).norm():10.4f}")
    lines.append("Without positions the model cannot tell the chaser from the chased.")
    return lines


def range_and_magnitude() -> list[str]:
    """Compare the range and norm of every encoding at positions 0..1000 with token embeddings."""
    import torch

    max_position = 1000
    positions = torch.arange(max_position + 1)
    tokens = torch.randn(max_position + 1, DEMO_DIM)
    token_norm = tokens.norm(dim=-1).mean().item()

    lines = [
        f"Positions 0..{max_position}, width {DEMO_DIM}. Token embeddings from N(0, 1): "
        f"values in [{tokens.min():.2f}, {tokens.max():.2f}], mean norm {token_norm:.2f}.",
        f"   {'encoding':<20} {'min':>8} {'max':>8} {'mean norm':>10} {'norm / token norm':>18}",
    ]
    ratios = {}
    for name, encoding in _additive_encodings(max_position).items():
        with torch.no_grad():
            values = encoding.encode(positions)
        mean_norm = values.norm(dim=-1).mean().item()
        ratios[name] = mean_norm / token_norm
        lines.append(
            f"   {name:<20} {values.min():8.2f} {values.max():8.2f} {mean_norm:10.2f} {ratios[name]:18.2f}"
        )
    raw = ratios["integer (raw)"]
    bounded = max(ratio for name, ratio in ratios.items() if name != "integer (raw)")
    lines.append(f"Raw integers drown the token embeddings: {raw:.0f} times their norm on average.")
    lines.append(f"The other encodings stay at or below the token scale (at most {bounded:.2f} times).")
    return lines


def binary_bits() -> list[str]:
    """Print the bits of positions 0..15 and how often each bit flips."""
    import torch

    from ropekit.encodings import BinaryPositionalEncoding

    num_bits, num_positions = 4, 16
    bits = BinaryPositionalEncoding(num_bits).encode(torch.arange(num_positions)).long()  # [position, bit]
    lines = [f"Positions 0..{num_positions - 1} (left to right), one row per bit:"]
    for bit in range(num_bits):
        row = bits[:, bit]
        flips = int((row[1:] != row[:-1]).sum())
        lines.append(f"   bit {bit}: {''.join(str(int(v)) for v in row)}   flips: {flips:2d}")
    lines.append("Bit j flips every 2**j positions. Sinusoids do the same with smooth waves,")
    lines.append("so nearby positions get nearby vectors and any position has a code.")
    return lines


def rope_preserves_norms() -> list[str]:
    """Show that RoPE changes directions but not the norms of query vectors."""
    import torch

    from ropekit.rope import RopeConfig, RotaryEmbedding

    head_dim = 64
    positions = torch.tensor([0, 1, 10, 100, 1000, 100000])
    rotary = RotaryEmbedding(RopeConfig(head_dim=head_dim))
    q = torch.randn(1, len(positions), 1, head_dim)  # [batch, seq, heads, head_dim]
    q_rotated, _ = rotary(q, q.clone(), positions)

    before = q.norm(dim=-1).flatten()
    after = q_rotated.norm(dim=-1).flatten()
    lines = [f"{'position':>10} {'|q| before':>12} {'|q| after':>12} {'cos(q, R q)':>12}"]
    for index, position in enumerate(positions.tolist()):
        cosine = torch.nn.functional.cosine_similarity(q[0, index, 0], q_rotated[0, index, 0], dim=0)
        lines.append(f"{position:>10} {before[index]:12.6f} {after[index]:12.6f} {cosine:12.4f}")
    largest = ((after - before).abs() / before).max().item()
    lines.append(f"Largest relative change of a norm: {largest:.2e} (float32).")
    lines.append("Position moves the vector around circles, one per channel pair; its length stays.")
    return lines


def relative_position_property() -> list[str]:
    """Show that the RoPE score of q at m and k at n depends only on m - n (float32)."""
    import torch

    from ropekit.rope import RopeConfig, RotaryEmbedding

    head_dim = 64
    rotary = RotaryEmbedding(RopeConfig(head_dim=head_dim))
    q = torch.randn(1, 1, 1, head_dim, dtype=torch.float32)
    # k leans towards q so the score is far from 0 and a relative difference is meaningful.
    k = q + 0.5 * torch.randn(1, 1, 1, head_dim, dtype=torch.float32)

    scores = []
    for m, n in RELATIVE_PAIRS:
        q_at_m, _ = rotary(q, k, torch.tensor([m]))
        _, k_at_n = rotary(q, k, torch.tensor([n]))
        scores.append((q_at_m * k_at_n).sum().item())

    lines = ["Same q and k (float32, head_dim 64), placed at positions (m, n):"]
    for (m, n), score in zip(RELATIVE_PAIRS, scores):
        lines.append(f"   m={m:<7} n={n:<7} m-n={m - n}   score {score:.6f}")
    largest = max(abs(score - scores[0]) / abs(scores[0]) for score in scores)
    lines.append(f"max relative score difference: {largest:.2e}")
    lines.append("The score depends only on m - n: RoPE turns absolute positions into relative ones.")
    return lines


def latent_attention() -> list[str]:
    """Compare MLA's cache with MHA's and check that the absorbed and naive paths agree."""
    import torch

    from ropekit.attention import MLAConfig, MultiHeadLatentAttention, kv_cache_report

    tour = MLAConfig.simple(**TOUR_MLA)
    lines = [
        f"Cache per token per layer (values), tour sizes d_model={TOUR_MLA['d_model']}, "
        f"d_latent={TOUR_MLA['d_latent']}, {TOUR_MLA['n_heads']} heads:"
    ]
    lines += _cache_lines(kv_cache_report(tour))
    deepseek = MLAConfig.deepseek_v3()
    lines.append(f"DeepSeek-V3 ({deepseek.num_heads} heads, kv_lora_rank {deepseek.kv_lora_rank}, "
                 f"rope dim {deepseek.qk_rope_head_dim}):")
    lines += _cache_lines(kv_cache_report(deepseek))

    attention = MultiHeadLatentAttention(tour).eval()
    x = torch.randn(2, 24, TOUR_MLA["d_model"])
    with torch.no_grad():
        naive = attention(x, mode="naive")
        absorbed = attention(x, mode="absorbed")
    difference = ((naive - absorbed).abs().max() / naive.abs().max()).item()
    lines.append(f"Absorbed against naive path (float32, 2 x 24 tokens): max relative difference {difference:.2e}")
    lines.append("The absorbed path attends over the cached latent directly, without rebuilding per-head keys.")
    return lines


def _cache_lines(report) -> list[str]:
    mla = report.layout("MLA")
    mha = report.layout("MHA")
    lines = [
        f"   MLA {mla.elements_per_token_per_layer:>7,}   MHA {mha.elements_per_token_per_layer:>7,}"
        f"   MHA / MLA = {mha.ratio_to_mla:.1f}"
    ]
    if mla.bytes_per_token is not None:
        lines.append(
            f"   whole model, {report.dtype}, {report.num_layers} layers: MLA {mla.bytes_per_token / 1024:,.1f} KiB"
            f" per token, MHA {mha.bytes_per_token / 1024:,.1f} KiB"
        )
    return lines
