"""``ropekit bench rope``: the RoPE apply on q and k, ropekit against its peers.

Every implementation is timed in one process on the same random q and k, for each shape,
dtype and mode (forward, or forward+backward). A row reports the median milliseconds after
warm-up and the GB/s of q and k read and written. It also reports the speed relative to
copying q and k, the memory-bandwidth floor, so 1.0 means as fast as a copy. The last ratio
is the speedup over transformers' eager ``apply_rotary_pos_emb``. Each peer's output is also checked against a float64
reference, so a fast but wrong peer shows up in the max_abs_error column.

Each peer receives q and k in its own native layout and its own table format: transformers
and Liger take cos and sin of the full head_dim in the input dtype, flash-attn takes half
width tables, rotary-embedding-torch takes the angles.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ropekit._io import write_json_atomic
from ropekit.bench import add_timing_arguments, format_table, parse_dtypes, parse_list, positive_int

logger = logging.getLogger("ropekit.bench.rope")

# Named shapes (batch, seq, heads, head_dim): one decode step of 32 sequences, and a prefill
# of 4 sequences of 2048 tokens, both with 32 heads of 128 channels (Llama-2-7B's attention).
SHAPES: dict[str, tuple[int, int, int, int]] = {
    "decode": (32, 1, 32, 128),
    "prefill": (4, 2048, 32, 128),
}
MODES = ("forward", "forward+backward")
# Calls shorter than this are timed in back-to-back batches of about this length (decode-sized
# calls take microseconds, which a single timed call would mostly fill with synchronisation).
MIN_SAMPLE_SECONDS = 2e-3
PEERS = ("copy", "ropekit", "transformers", "transformers-compile", "rotary-embedding-torch", "flash-attn", "liger")

COLUMNS = (
    ("peer", "peer", "s"),
    ("shape", "shape", "s"),
    ("dtype", "dtype", "s"),
    ("mode", "mode", "s"),
    ("ms", "ms", ".4f"),
    ("gbps", "GB/s", ".2f"),
    ("copy_ratio", "x copy speed", ".3f"),
    ("eager_ratio", "x transformers eager", ".2f"),
    ("max_abs_error", "max abs error", ".2e"),
    ("status", "status", "s"),
)


class PeerSkipped(Exception):
    """Raised by a peer that cannot run here (not installed, or needs CUDA); the message gives the reason."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shapes",
        type=parse_shapes,
        default=parse_shapes("decode,prefill"),
        help="comma-separated shapes: decode, prefill or BATCHxSEQxHEADSxHEAD_DIM (default decode,prefill)",
    )
    parser.add_argument(
        "--kv-heads",
        type=positive_int,
        default=None,
        help="key heads, a divisor of every shape's query heads (GQA/MQA when fewer; default: the query heads)",
    )
    parser.add_argument(
        "--dtypes", type=parse_dtypes, default=["float32", "bfloat16"], help="comma-separated dtypes (default float32,bfloat16)"
    )
    parser.add_argument(
        "--modes", type=parse_modes, default=list(MODES), help="comma-separated: forward, forward+backward (default both)"
    )
    parser.add_argument(
        "--peers", type=parse_peers, default=list(PEERS), help=f"comma-separated subset of: {', '.join(PEERS)} (default all)"
    )
    parser.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "reference", "torch", "cpu", "triton"),
        help="ropekit backend to time (default auto: the fastest for the device and dtype)",
    )
    add_timing_arguments(parser)


def parse_shapes(text: str) -> list[tuple[str, tuple[int, int, int, int]]]:
    shapes = []
    for item in parse_list(text):
        if item in SHAPES:
            shapes.append((item, SHAPES[item]))
            continue
        match = re.fullmatch(r"(\d+)x(\d+)x(\d+)x(\d+)", item)
        if match is None:
            raise argparse.ArgumentTypeError(
                f"invalid shape {item!r}; expected one of {', '.join(SHAPES)} or BATCHxSEQxHEADSxHEAD_DIM such as 2x16x4x64"
            )
        batch, seq, heads, head_dim = (int(group) for group in match.groups())
        if min(batch, seq, heads, head_dim) <= 0 or head_dim % 2:
            raise argparse.ArgumentTypeError(f"invalid shape {item!r}; sizes must be positive and HEAD_DIM even")
        shapes.append((item, (batch, seq, heads, head_dim)))
    return shapes


def parse_modes(text: str) -> list[str]:
    modes = parse_list(text)
    for mode in modes:
        if mode not in MODES:
            raise argparse.ArgumentTypeError(f"unknown mode {mode!r}; expected forward or forward+backward")
    return modes


def parse_peers(text: str) -> list[str]:
    peers = parse_list(text)
    for peer in peers:
        if peer not in PEERS:
            raise argparse.ArgumentTypeError(f"unknown peer {peer!r}; expected some of {', '.join(PEERS)}")
    return peers


def run(args: argparse.Namespace) -> int:
    import sys

    from ropekit._device import resolve_device
    from ropekit.bench.timing import configure_threads, describe_machine

    check_kv_heads(args.kv_heads, args.shapes)
    configure_threads(args.threads)
    try:
        device = resolve_device(args.device)
        if "ropekit" in args.peers:
            check_backend(args.backend, device, args.dtypes)
    except (RuntimeError, ValueError) as error:
        print(f"ropekit bench rope: error: {error}", file=sys.stderr)
        return 2
    rows = []
    for shape_name, shape in args.shapes:
        kv_heads = args.kv_heads if args.kv_heads is not None else shape[2]
        for dtype_name in args.dtypes:
            for mode in args.modes:
                print(f"timing {shape_name} {dtype_name} {mode}", file=sys.stderr, flush=True)
                rows.extend(bench_case(shape_name, shape, kv_heads, dtype_name, mode, args, device))

    print(format_table(rows, COLUMNS))
    for row in rows:
        if row["status"] != "ok":
            print(f"{row['status']}: {row['peer']} {row['shape']} {row['dtype']} {row['mode']}: {row['reason']}")
    if args.json is not None:
        write_json_atomic(args.json, {"benchmark": "rope", "machine": describe_machine(device), "rows": rows})
        print(f"wrote {args.json}", file=sys.stderr)
    # A peer that is not installed is skipped; a peer that crashed makes the run fail.
    failed = sum(row["status"] == "failed" for row in rows)
    if failed:
        print(f"ropekit bench rope: {failed} row(s) failed; the table lists why", file=sys.stderr)
        return 1
    return 0


def check_backend(backend: str, device: Any, dtype_names: list[str]) -> None:
    """Raise ValueError when ropekit's ``--backend`` cannot run on ``device`` in one of the dtypes."""
    import torch

    from ropekit.bench.timing import DTYPES
    from ropekit.kernels import select_backend

    for name in dtype_names:
        probe = torch.empty(1, 1, 1, 2, dtype=DTYPES[name], device=device)
        try:
            select_backend(probe, probe, backend)
        except ValueError as error:
            raise ValueError(f"--backend {backend} cannot time {name} on {device}: {error}") from None


def check_kv_heads(kv_heads: int | None, shapes: list[tuple[str, tuple[int, int, int, int]]]) -> None:
    """Raise ValueError unless ``kv_heads`` divides the query heads of every shape.

    In grouped-query attention each key head serves an equal group of query heads, so the
    query head count must be a multiple of the key head count.
    """
    if kv_heads is None:
        return
    for name, (_, _, heads, _) in shapes:
        if heads % kv_heads:
            divisors = ", ".join(str(value) for value in range(1, heads + 1) if heads % value == 0)
            raise ValueError(
                f"--kv-heads {kv_heads} does not divide the {heads} query heads of shape {name!r}; "
                f"expected one of {divisors}"
            )


@dataclass
class Case:
    """The inputs shared by every peer for one row group."""

    q: Any  # [batch, seq, heads, head_dim]
    k: Any  # [batch, seq, kv_heads, head_dim]
    angles: Any  # [seq, head_dim // 2], float64
    mode: str
    backend: str


def bench_case(
    shape_name: str,
    shape: tuple[int, int, int, int],
    kv_heads: int,
    dtype_name: str,
    mode: str,
    args: argparse.Namespace,
    device: Any,
) -> list[dict[str, Any]]:
    """Time every requested peer on one shape, dtype and mode; return one row per peer."""
    import torch

    from ropekit.bench.timing import DTYPES, median_ms, time_call
    from ropekit.rope.frequencies import default_inv_freq

    batch, seq, heads, head_dim = shape
    dtype = DTYPES[dtype_name]
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(batch, seq, heads, head_dim, generator=generator).to(device=device, dtype=dtype)
    k = torch.randn(batch, seq, kv_heads, head_dim, generator=generator).to(device=device, dtype=dtype)
    positions = torch.arange(seq, dtype=torch.float64, device=device)
    angles = positions[:, None] * default_inv_freq(head_dim, 10000.0).to(device)
    case = Case(q=q, k=k, angles=angles, mode=mode, backend=args.backend)
    moved_bytes = 2 * (q.nbytes + k.nbytes) * (2 if mode == "forward+backward" else 1)

    rows = []
    for peer in args.peers:
        row: dict[str, Any] = {
            "peer": peer,
            "shape": f"{batch}x{seq}x{heads}x{head_dim}",
            "kv_heads": kv_heads,
            "dtype": dtype_name,
            "mode": mode,
            "status": "ok",
            "reason": None,
        }
        try:
            label, call, error = prepare_peer(peer, case)
            row["peer"] = label
            row["max_abs_error"] = error
            seconds = time_call(call, device, warmup=args.warmup, repeats=args.repeats, min_sample_seconds=MIN_SAMPLE_SECONDS)
        except PeerSkipped as skipped:
            row.update(status="skipped", reason=str(skipped))
        except Exception as error:  # a peer that crashes must not stop the other rows
            logger.warning("peer %s failed on %s %s %s: %s", peer, row["shape"], dtype_name, mode, error)
            row.update(status="failed", reason=f"{type(error).__name__}: {error}")
        else:
            row["ms"] = median_ms(seconds)
            row["gbps"] = moved_bytes / (row["ms"] * 1e-3) / 1e9
        rows.append(row)

    add_ratios(rows)
    return rows


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Add copy_ratio (copy ms / ms) and eager_ratio (transformers eager ms / ms) to timed rows."""
    reference_ms = {row["peer"]: row.get("ms") for row in rows}
    copy_ms = reference_ms.get("copy")
    eager_ms = reference_ms.get("transformers")
    for row in rows:
        ms = row.get("ms")
        if ms is None:
            continue
        row["copy_ratio"] = copy_ms / ms if copy_ms else None
        row["eager_ratio"] = eager_ms / ms if eager_ms else None


# Peers ---------------------------------------------------------------------------------------
# Each prepare function returns (label, call, max_abs_error): call() runs one timed iteration
# (forward, or forward and backward), and max_abs_error compares the peer's forward output
# with the float64 reference in the peer's own layout.

Forward = Callable[[Any, Any], tuple[Any, Any]]


def prepare_peer(peer: str, case: Case) -> tuple[str, Callable[[], Any], float | None]:
    if peer == "copy":
        return prepare_copy(case)
    preparers = {
        "ropekit": prepare_ropekit,
        "transformers": prepare_transformers,
        "transformers-compile": prepare_transformers_compile,
        "rotary-embedding-torch": prepare_rotary_embedding_torch,
        "flash-attn": prepare_flash_attn,
        "liger": prepare_liger,
    }
    label, forward, interleaved, to_native, from_native = preparers[peer](case)
    q, k = to_native(case.q), to_native(case.k)
    error = max_abs_error(case, forward, interleaved, to_native, from_native)
    return label, make_call(forward, q, k, case.mode), error


def prepare_copy(case: Case) -> tuple[str, Callable[[], Any], None]:
    q, k = case.q, case.k
    if case.mode == "forward":
        return "copy", lambda: (q.clone(), k.clone()), None
    # forward+backward moves q and k twice, as a rotation's forward and backward do.
    return "copy", lambda: (q.clone(), k.clone(), q.clone(), k.clone()), None


def make_call(forward: Forward, q: Any, k: Any, mode: str) -> Callable[[], Any]:
    import torch

    if mode == "forward":
        return lambda: forward(q, k)

    q = q.detach().requires_grad_(True)
    k = k.detach().requires_grad_(True)
    grad_q, grad_k = torch.randn_like(q), torch.randn_like(k)

    def forward_backward() -> Any:
        q_out, k_out = forward(q, k)
        return torch.autograd.grad((q_out, k_out), (q, k), (grad_q, grad_k))

    return forward_backward


def max_abs_error(case: Case, forward: Forward, interleaved: bool, to_native: Callable, from_native: Callable) -> float:
    """Return the largest deviation of the peer's forward from a float64 rotation of the same inputs."""
    import torch

    from ropekit.rope.apply import apply_rotary

    if interleaved:
        table = case.angles.repeat_interleave(2, dim=-1)
    else:
        table = torch.cat((case.angles, case.angles), dim=-1)
    cos, sin = table.cos()[:, None, :], table.sin()[:, None, :]  # [seq, 1, head_dim]
    with torch.no_grad():
        q_out, k_out = forward(to_native(case.q), to_native(case.k))
        q_out, k_out = from_native(q_out), from_native(k_out)
    expected_q = apply_rotary(case.q.double(), cos, sin, interleaved=interleaved)
    expected_k = apply_rotary(case.k.double(), cos, sin, interleaved=interleaved)
    return max((q_out.double() - expected_q).abs().max().item(), (k_out.double() - expected_k).abs().max().item())


def identity(x: Any) -> Any:
    return x


def to_heads_first(x: Any) -> Any:
    """[batch, seq, heads, dim] -> a contiguous [batch, heads, seq, dim] copy (made before timing)."""
    return x.transpose(1, 2).contiguous()


def from_heads_first(x: Any) -> Any:
    return x.transpose(1, 2)


def prepare_ropekit(case: Case) -> tuple[str, Forward, bool, Callable, Callable]:
    import torch

    from ropekit.kernels import rotate_qk, select_backend

    backend = select_backend(case.q, case.k, case.backend)
    table = torch.cat((case.angles, case.angles), dim=-1)
    cos, sin = table.cos().float(), table.sin().float()  # [seq, head_dim], float32

    def forward(q: Any, k: Any) -> tuple[Any, Any]:
        return rotate_qk(q, k, cos, sin, interleaved=False, backend=backend)

    return f"ropekit ({backend})", forward, False, identity, identity


def import_transformers_apply() -> Callable:
    try:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    except ImportError as error:
        raise PeerSkipped(f"transformers is not installed ({error})") from error
    return apply_rotary_pos_emb


def transformers_tables(case: Case) -> tuple[Any, Any]:
    """cos and sin [1, seq, head_dim] in the input dtype, as LlamaRotaryEmbedding returns them."""
    import torch

    table = torch.cat((case.angles, case.angles), dim=-1).float()
    return table.cos()[None].to(case.q.dtype), table.sin()[None].to(case.q.dtype)


def prepare_transformers(case: Case) -> tuple[str, Forward, bool, Callable, Callable]:
    apply_rotary_pos_emb = import_transformers_apply()
    cos, sin = transformers_tables(case)

    def forward(q: Any, k: Any) -> tuple[Any, Any]:
        return apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=2)

    return "transformers", forward, False, identity, identity


def prepare_transformers_compile(case: Case) -> tuple[str, Forward, bool, Callable, Callable]:
    import torch

    apply_rotary_pos_emb = import_transformers_apply()
    cos, sin = transformers_tables(case)
    # A fresh compilation per row, so the rows never hit dynamo's recompilation limit.
    torch._dynamo.reset()
    compiled = torch.compile(apply_rotary_pos_emb, dynamic=False)

    def forward(q: Any, k: Any) -> tuple[Any, Any]:
        return compiled(q, k, cos, sin, unsqueeze_dim=2)

    return "transformers-compile", forward, False, identity, identity


def prepare_rotary_embedding_torch(case: Case) -> tuple[str, Forward, bool, Callable, Callable]:
    try:
        from rotary_embedding_torch import apply_rotary_emb
    except ImportError as error:
        raise PeerSkipped(f"rotary-embedding-torch is not installed ({error})") from error

    # rotary-embedding-torch pairs adjacent channels and takes the angles, [seq, 1, head_dim].
    freqs = case.angles.repeat_interleave(2, dim=-1).float()[:, None, :]

    def forward(q: Any, k: Any) -> tuple[Any, Any]:
        return apply_rotary_emb(freqs, q, seq_dim=-3, freqs_seq_dim=0), apply_rotary_emb(freqs, k, seq_dim=-3, freqs_seq_dim=0)

    return "rotary-embedding-torch", forward, True, identity, identity


def require_cuda(case: Case, peer: str) -> None:
    if case.q.device.type != "cuda":
        raise PeerSkipped(f"{peer} runs only on a CUDA device, and this run is on {case.q.device}")


def prepare_flash_attn(case: Case) -> tuple[str, Forward, bool, Callable, Callable]:
    require_cuda(case, "flash-attn")
    try:
        from flash_attn.layers.rotary import apply_rotary_emb
    except ImportError as error:
        raise PeerSkipped(f"flash-attn is not installed ({error})") from error

    cos, sin = case.angles.cos().to(case.q.dtype), case.angles.sin().to(case.q.dtype)  # [seq, head_dim // 2]

    def forward(q: Any, k: Any) -> tuple[Any, Any]:
        return apply_rotary_emb(q, cos, sin, interleaved=False), apply_rotary_emb(k, cos, sin, interleaved=False)

    return "flash-attn", forward, False, identity, identity


def prepare_liger(case: Case) -> tuple[str, Forward, bool, Callable, Callable]:
    require_cuda(case, "liger")
    try:
        from liger_kernel.transformers.rope import liger_rotary_pos_emb
    except ImportError as error:
        raise PeerSkipped(f"liger-kernel is not installed ({error})") from error

    cos, sin = transformers_tables(case)

    def forward(q: Any, k: Any) -> tuple[Any, Any]:
        # Liger takes q and k as [batch, heads, seq, head_dim].
        return liger_rotary_pos_emb(q, k, cos, sin)

    return "liger", forward, False, to_heads_first, from_heads_first
