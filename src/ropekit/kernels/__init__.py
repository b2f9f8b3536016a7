"""Fast RoPE apply for q and k together, dispatched by device and dtype.

Two entry points share one set of backends:

- ``rotate_qk(q, k, cos, sin, ...)`` takes cos and sin for each token: [seq, rotary_dim],
  [batch, seq, rotary_dim] or, packed, [total_tokens, rotary_dim]. A dimension of size 1
  broadcasts. ``RotaryEmbedding`` calls this.
- ``apply_rotary_qk(q, k, cos, sin, positions=..., offset=..., cu_seqlens=...)`` takes cos
  and sin indexed by position, [max_positions, rotary_dim], and looks up each token's row
  itself, so no per-token table is materialised.

In both, q and k are [batch, seq, heads, head_dim] (``seq_dim=1``), [batch, heads, seq,
head_dim] (``seq_dim=2``) or packed [total_tokens, heads, head_dim] (``seq_dim=0``). q and k
may have different head counts (GQA, MQA) and head sizes, but must share dtype and device.
Their first ``rotary_dim`` channels are rotated and the rest pass through. The tables are in
the layout given by ``interleaved``, with the attention scale already applied. Because each
pair angle appears twice in them (see ``ropekit.rope.apply_rotary``), the fused backends read
one copy: columns [0, rotary_dim / 2) of the half layout, the even columns of the
interleaved layout.

Backends (each equals ``ropekit.rope.apply_rotary`` up to the rounding of its dtype):
- ``"reference"``: ``ropekit.rope.apply_rotary``, plain torch autograd.
- ``"torch"``: vectorised torch operations; any device and dtype.
- ``"cpu"``: a C kernel built on first use (see ``ropekit.kernels.cpu_backend``); CPU
  tensors of float32, bfloat16 or float64.
- ``"triton"``: one Triton kernel for q and k; CUDA tensors, or CPU tensors under
  ``TRITON_INTERPRET=1``.
- ``"auto"``: triton on CUDA, cpu on the CPU, else torch (never the Triton interpreter);
  reference when cos or sin requires a gradient, because the fused backends treat the
  tables as constants.
Fused backends compute in float32, or in float64 for float64 q and k.
"""

from __future__ import annotations

import torch

from ropekit.kernels import cpu_backend, triton_backend
from ropekit.kernels.ops import RotateQK, affine_arguments, call_rotate_qk, call_rotate_qk_in_place, is_plain_tensor
from ropekit.kernels.rows import AffineRows, Rows

BACKENDS = ("auto", "reference", "torch", "cpu", "triton")

# Dtypes each fused backend implements; the torch backend takes any floating dtype.
CPU_DTYPES = frozenset(cpu_backend.DTYPE_CODES)
TRITON_DTYPES = frozenset((torch.float32, torch.bfloat16, torch.float16, torch.float64))

__all__ = ["BACKENDS", "apply_rotary_qk", "available_backends", "rotate_qk", "select_backend"]


def available_backends(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> list[str]:
    """Return the backends that can run on ``device`` and ``dtype`` here, in the order "auto" prefers them.

    On CUDA the Triton kernel comes first. On the CPU the interpreted Triton kernel comes
    after torch, because the interpreter is slow and meant for tests.
    """
    device = torch.device(device)
    names = []
    if device.type == "cpu" and dtype in CPU_DTYPES and cpu_backend.available():
        names.append("cpu")
    triton_ok = dtype in TRITON_DTYPES and triton_backend.available_for(device)
    if triton_ok and device.type == "cuda":
        names.append("triton")
    names.append("torch")
    if triton_ok and device.type != "cuda":
        names.append("triton")
    names.append("reference")
    return names


def select_backend(
    q: torch.Tensor, k: torch.Tensor, backend: str = "auto", *, tables_require_grad: bool = False
) -> str:
    """Return the backend that will rotate q and k: ``backend`` itself, or what "auto" picks.

    Raises ValueError for an unknown name, or a named backend that cannot run on q and k.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "reference":
        return backend
    if backend == "auto":
        if tables_require_grad and torch.is_grad_enabled():
            return "reference"
        return available_backends(q.device, q.dtype)[0]
    if backend == "cpu" and not (q.device.type == "cpu" and q.dtype in CPU_DTYPES):
        raise ValueError(
            f"backend 'cpu' runs on CPU tensors of {sorted(map(str, CPU_DTYPES))}, got {q.dtype} on {q.device}"
        )
    if backend == "cpu" and not cpu_backend.available():
        raise ValueError("backend 'cpu' is unavailable because its C kernel failed to build (see the logged warning)")
    if backend == "triton" and not triton_backend.available_for(q.device):
        raise ValueError(
            f"backend 'triton' needs the triton package and a CUDA tensor (or TRITON_INTERPRET=1 for CPU tensors), "
            f"got a tensor on {q.device}"
        )
    if backend == "triton" and q.dtype not in TRITON_DTYPES:
        raise ValueError(f"backend 'triton' supports {sorted(map(str, TRITON_DTYPES))}, got {q.dtype}")
    return backend


def rotate_qk(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    interleaved: bool,
    seq_dim: int = 1,
    inplace: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k by per-token cos and sin tables; return (q, k) rotated.

    With ``inplace=True`` q and k are overwritten and returned; otherwise new tensors are
    returned and q and k are unchanged. In place, q and k may be views of one buffer (q and
    k sliced from a fused qkv projection) but must not share an element. Expanded tensors,
    lazily negated views, and inference tensors outside ``torch.inference_mode`` are
    rejected too.
    """
    check_qk(q, k, seq_dim)
    check_tables(cos, sin, q, k)
    batch, seq = token_grid(q, seq_dim)
    table_batch, table_seq = per_token_table_grid(cos, batch, seq, seq_dim)

    # Row of each token in the flattened [table_batch * table_seq, rotary_dim] table.
    # An axis of size 1 broadcasts through a zero stride.
    rows = AffineRows(table_seq if table_batch > 1 else 0, 1 if table_seq > 1 else 0, 0)
    table_cos = cos.reshape(table_batch * table_seq, cos.shape[-1])
    table_sin = sin.reshape(table_batch * table_seq, sin.shape[-1])
    return rotate_rows(q, k, table_cos, table_sin, rows, interleaved, seq_dim, inplace, backend)


def apply_rotary_qk(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    positions: torch.Tensor | None = None,
    offset: int | torch.Tensor = 0,
    cu_seqlens: torch.Tensor | None = None,
    interleaved: bool = False,
    seq_dim: int = 1,
    inplace: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k by cos and sin tables indexed by position; return (q, k) rotated.

    cos and sin are [max_positions, rotary_dim]. A token's position is ``offset`` plus:
    - its entry of ``positions`` ([seq] shared by the batch, [batch, seq], or [total_tokens]
      when packed), when given;
    - with ``cu_seqlens`` (packed input, ``seq_dim=0``), its index within its own sequence;
    - otherwise its index along seq.
    ``offset`` is an int, or a tensor with one value per batch row (per sequence when packed).
    Every position must be a row of the table. positions and cu_seqlens exclude each other.
    """
    check_qk(q, k, seq_dim)
    check_tables(cos, sin, q, k)
    if cos.dim() != 2:
        raise ValueError(f"cos and sin must be [max_positions, rotary_dim] tables, got shape {tuple(cos.shape)}")
    batch, seq = token_grid(q, seq_dim)
    rows = position_rows(batch, seq, seq_dim, positions, offset, cu_seqlens, q.device)
    check_rows_in_table(rows, batch, seq, cos.shape[0])
    return rotate_rows(q, k, cos, sin, rows, interleaved, seq_dim, inplace, backend)


def rotate_rows(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    rows: Rows,
    interleaved: bool,
    seq_dim: int,
    inplace: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate token (b, s) of q and k by its table row; cos and sin are [table_rows, rotary_dim]."""
    if not isinstance(interleaved, bool):
        raise TypeError(f"interleaved must be a bool, got {interleaved!r}")
    if not isinstance(inplace, bool):
        raise TypeError(f"inplace must be a bool, got {inplace!r}")
    if inplace:
        check_writable(q, "q")
        check_writable(k, "k")
        # NOTE: torch.compile cannot trace storage addresses, so compiled code skips this check,
        # as do fake, meta and functorch tensors, which have no addresses to compare.
        if has_addresses(q, k) and may_share_elements(q, k):
            raise ValueError(
                "q and k share memory elements (for example one tensor passed as both), so rotating them in place "
                "would rotate those elements twice; pass inplace=False, or q and k that do not overlap"
            )
    chosen = select_backend(q, k, backend, tables_require_grad=cos.requires_grad or sin.requires_grad)
    if chosen == "reference":
        if isinstance(rows, AffineRows):
            rows = rows.tensor(*token_grid(q, seq_dim), q.device)
        return rotate_reference(q, k, cos[rows], sin[rows], interleaved, seq_dim, inplace)

    # The fused backends read one copy of each pair angle, in the compute dtype.
    compute_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    half = cos.shape[-1] // 2
    columns = slice(0, 2 * half, 2) if interleaved else slice(0, half)
    half_cos = cos[:, columns].detach().to(compute_dtype)
    half_sin = sin[:, columns].detach().to(compute_dtype)
    rows_tensor, affine_rows = affine_arguments(rows)
    arguments = (half_cos, half_sin, rows_tensor, affine_rows, seq_dim, interleaved)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        return RotateQK.apply(q, k, *arguments, inplace, chosen)

    # Without autograd the operators run directly, which saves the Function's overhead per call.
    if inplace:
        call_rotate_qk_in_place(q, k, *arguments, False, chosen)
        return q, k
    return call_rotate_qk(q, k, *arguments, False, chosen)


def rotate_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    interleaved: bool,
    seq_dim: int,
    inplace: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate with ``ropekit.rope.apply_rotary``; cos and sin are per token, [batch, seq, rotary_dim]."""
    # Imported here because ropekit.rope imports this package (RotaryEmbedding calls rotate_qk).
    from ropekit.rope.apply import apply_rotary

    if seq_dim == 0:
        cos, sin = cos[0].unsqueeze(-2), sin[0].unsqueeze(-2)  # [tokens, 1, rotary_dim]
    elif seq_dim == 2:
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [batch, 1, seq, rotary_dim]
    else:
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # [batch, seq, 1, rotary_dim]
    q_out = apply_rotary(q, cos, sin, interleaved=interleaved)
    k_out = apply_rotary(k, cos, sin, interleaved=interleaved)
    if not inplace:
        return q_out, k_out
    q.copy_(q_out)
    k.copy_(k_out)
    return q, k


# Input checks -------------------------------------------------------------------------------


def check_qk(q: torch.Tensor, k: torch.Tensor, seq_dim: int) -> None:
    for name, x in (("q", q), ("k", k)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if seq_dim not in (0, 1, 2):
        raise ValueError(
            f"seq_dim must be 1 for [batch, seq, heads, head_dim], 2 for [batch, heads, seq, head_dim] "
            f"or 0 for packed [tokens, heads, head_dim], got {seq_dim!r}"
        )
    expected_dims = 3 if seq_dim == 0 else 4
    for name, x in (("q", q), ("k", k)):
        if x.dim() != expected_dims:
            raise ValueError(f"{name} must have {expected_dims} dimensions with seq_dim={seq_dim}, got shape {tuple(x.shape)}")
    if q.dtype != k.dtype:
        raise TypeError(f"q and k must have the same dtype, got q {q.dtype} and k {k.dtype}")
    if q.device != k.device:
        raise ValueError(f"q and k must be on the same device, got q on {q.device} and k on {k.device}")
    if token_grid(q, seq_dim) != token_grid(k, seq_dim):
        raise ValueError(
            f"q and k must have the same batch and sequence sizes, got q {tuple(q.shape)} and k {tuple(k.shape)} "
            f"with seq_dim={seq_dim}"
        )


def check_writable(x: torch.Tensor, name: str) -> None:
    """Raise when an in-place write is not allowed: an inference tensor outside inference mode
    (RuntimeError, as torch's own in-place operations raise), a lazily negated view, or an
    element reachable through several indices (ValueError)."""
    # Dynamo cannot trace is_inference() or is_neg(); compiled code relies on torch's own checks.
    eager = not torch.compiler.is_compiling()
    if eager and x.is_inference() and not torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{name} is an inference tensor, which cannot be rotated in place outside torch.inference_mode(); "
            "rotate it inside inference_mode, pass inplace=False, or pass a clone"
        )
    if eager and (x.is_neg() or x.is_conj()):
        raise ValueError(
            f"{name} is a view with lazy negation or conjugation (for example .conj().imag), which the fused "
            f"kernels cannot write in place; pass inplace=False, or {name}.resolve_neg() to rotate a copy"
        )
    for size, stride in zip(x.shape, x.stride()):
        if size > 1 and stride == 0:
            raise ValueError(
                f"{name} is expanded (stride 0 over a dimension of size {size}), so it cannot be rotated in place; "
                "pass inplace=False or a tensor with its own memory"
            )


def has_addresses(*tensors: torch.Tensor) -> bool:
    """Return True for plain tensors with real memory, outside torch.compile."""
    if torch.compiler.is_compiling():
        return False
    return all(is_plain_tensor(tensor) and tensor.device.type != "meta" for tensor in tensors)


# Index combinations may_share_elements tries before it assumes an overlap.
OVERLAP_SEARCH_LIMIT = 10_000


def may_share_elements(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Return False when no element of ``a`` is an element of ``b`` (proven), else True.

    Views split from one buffer, such as q and k sliced from a fused qkv projection, have
    overlapping address ranges but no shared element. When both views step through memory
    alike (equal strides wherever both have more than one index), a shared element exists
    when address(b) - address(a) = sum_d c_d * stride_d for index differences c_d in
    [-(b.shape[d] - 1), a.shape[d] - 1]. The search below tries each dimension's feasible
    c_d from the largest stride down. Other stride patterns, different dtypes, or a search
    longer than OVERLAP_SEARCH_LIMIT steps count as an overlap. The check compares
    addresses, so it also covers two storages over one memory (from_numpy, DLPack).
    """
    if a.numel() == 0 or b.numel() == 0:
        return False
    a_start, b_start = a.data_ptr(), b.data_ptr()
    a_end = a_start + a.element_size() * (1 + sum((n - 1) * stride for n, stride in zip(a.shape, a.stride())))
    b_end = b_start + b.element_size() * (1 + sum((n - 1) * stride for n, stride in zip(b.shape, b.stride())))
    if a_end <= b_start or b_end <= a_start:
        return False
    if a.dtype != b.dtype or a.dim() != b.dim():
        return True
    delta, misaligned = divmod(b_start - a_start, a.element_size())
    if misaligned:
        return True
    strides = []
    for n_a, n_b, stride_a, stride_b in zip(a.shape, b.shape, a.stride(), b.stride()):
        if n_a > 1 and n_b > 1 and stride_a != stride_b:
            return True
        # A dimension of size 1 on one side fixes that side's index at 0, so only the other
        # side's stride moves the address there.
        strides.append(stride_a if n_a > 1 else stride_b)

    # (stride, lowest c, highest c) for every dimension that can move the address.
    axes = sorted(
        ((stride, -(n_b - 1), n_a - 1) for stride, n_a, n_b in zip(strides, a.shape, b.shape) if stride > 0),
        reverse=True,
    )
    # reach[i]: the lowest and highest sum of c_d * stride_d over axes i and later.
    reach = [(0, 0)] * (len(axes) + 1)
    for index in range(len(axes) - 1, -1, -1):
        stride, low, high = axes[index]
        reach[index] = (reach[index + 1][0] + low * stride, reach[index + 1][1] + high * stride)

    steps = 0
    pending = [(0, delta)]  # (axis index, remaining offset to cover)
    while pending:
        index, remaining = pending.pop()
        if index == len(axes):
            if remaining == 0:
                return True
            continue
        stride, low, high = axes[index]
        inner_low, inner_high = reach[index + 1]
        first = max(low, -((inner_high - remaining) // stride))  # ceil((remaining - inner_high) / stride)
        last = min(high, (remaining - inner_low) // stride)
        for c in range(first, last + 1):
            steps += 1
            if steps > OVERLAP_SEARCH_LIMIT:
                return True
            pending.append((index + 1, remaining - c * stride))
    return False


def check_tables(cos: torch.Tensor, sin: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> None:
    for name, table in (("cos", cos), ("sin", sin)):
        if not isinstance(table, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(table).__name__}")
        if not table.dtype.is_floating_point:
            raise TypeError(f"{name} must have a floating dtype, got {table.dtype}")
        if table.device != q.device:
            raise ValueError(f"{name} must be on q's device {q.device}, got {table.device}")
    if cos.shape != sin.shape:
        raise ValueError(f"cos and sin must have the same shape, got cos {tuple(cos.shape)} and sin {tuple(sin.shape)}")
    rotary_dim = cos.shape[-1] if cos.dim() else 0
    if cos.dim() < 2 or rotary_dim == 0 or rotary_dim % 2:
        raise ValueError(f"cos and sin must end in an even, non-zero rotary_dim, got shape {tuple(cos.shape)}")
    if rotary_dim > min(q.shape[-1], k.shape[-1]):
        raise ValueError(
            f"cos and sin cover rotary_dim={rotary_dim} channels but q has head_dim {q.shape[-1]} "
            f"and k has head_dim {k.shape[-1]}"
        )


def token_grid(x: torch.Tensor, seq_dim: int) -> tuple[int, int]:
    """Return (batch, seq) of x; a packed input is one row of all its tokens."""
    if seq_dim == 0:
        return 1, x.shape[0]
    return x.shape[0], x.shape[seq_dim]


def per_token_table_grid(cos: torch.Tensor, batch: int, seq: int, seq_dim: int) -> tuple[int, int]:
    """Return (table_batch, table_seq) of per-token cos, checking that it broadcasts to (batch, seq)."""
    if cos.dim() == 2:
        table_batch, table_seq = 1, cos.shape[0]
    elif cos.dim() == 3 and seq_dim != 0:
        table_batch, table_seq = cos.shape[0], cos.shape[1]
    else:
        expected = "[tokens, rotary_dim]" if seq_dim == 0 else "[seq, rotary_dim] or [batch, seq, rotary_dim]"
        raise ValueError(f"cos and sin must be {expected} with seq_dim={seq_dim}, got shape {tuple(cos.shape)}")
    if table_batch not in (1, batch) or table_seq not in (1, seq):
        raise ValueError(
            f"cos and sin of shape {tuple(cos.shape)} do not match {batch} batch rows of {seq} tokens; "
            "give one table row per token"
        )
    return table_batch, table_seq


def position_rows(
    batch: int,
    seq: int,
    seq_dim: int,
    positions: torch.Tensor | None,
    offset: int | torch.Tensor,
    cu_seqlens: torch.Tensor | None,
    device: torch.device,
) -> Rows:
    """Return the table row (position) of every token: an int64 [batch, seq] tensor or a formula."""
    if positions is not None and cu_seqlens is not None:
        raise ValueError("pass positions or cu_seqlens, not both: positions already give every token's position")

    if cu_seqlens is not None:
        if seq_dim != 0:
            raise ValueError(f"cu_seqlens needs packed q and k ([tokens, heads, head_dim], seq_dim=0), got seq_dim={seq_dim}")
        check_integer("cu_seqlens", cu_seqlens, device)
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
            raise ValueError(f"cu_seqlens must be 1-D with at least 2 entries, got shape {tuple(cu_seqlens.shape)}")
        starts = cu_seqlens.to(torch.int64)
        if starts[0].item() != 0 or starts[-1].item() != seq or bool((starts[1:] < starts[:-1]).any()):
            raise ValueError(
                f"cu_seqlens must start at 0, never decrease and end at the token count {seq}, got {cu_seqlens.tolist()}"
            )
        tokens = torch.arange(seq, device=device)
        sequence = torch.searchsorted(starts[1:], tokens, right=True)  # sequence index of each token
        rows = tokens - starts[sequence]
        return (rows + broadcast_offset(offset, starts.numel() - 1, device, "sequence")[sequence]).view(1, seq)

    if positions is None and isinstance(offset, int) and not isinstance(offset, bool):
        return AffineRows(0, 1, offset)
    if positions is None:
        rows = torch.arange(seq, device=device).expand(batch, seq)
    else:
        check_integer("positions", positions, device)
        if positions.shape not in (torch.Size([seq]), torch.Size([batch, seq])):
            raise ValueError(f"positions must be [{seq}] or [{batch}, {seq}] for these q and k, got {tuple(positions.shape)}")
        rows = positions.to(torch.int64).expand(batch, seq)
    return rows + broadcast_offset(offset, batch, device, "batch row").view(-1, 1)


def broadcast_offset(offset: int | torch.Tensor, count: int, device: torch.device, unit: str) -> torch.Tensor:
    """Return offset as an int64 tensor of ``count`` values (an int is shared by all)."""
    if isinstance(offset, bool) or not isinstance(offset, (int, torch.Tensor)):
        raise TypeError(f"offset must be an int or an integer tensor, got {offset!r}")
    if isinstance(offset, int):
        return torch.full((count,), offset, dtype=torch.int64, device=device)
    check_integer("offset", offset, device)
    if offset.dim() == 0:
        return offset.to(torch.int64).expand(count)
    if offset.shape != (count,):
        raise ValueError(f"offset must be an int or hold one value per {unit} ({count}), got shape {tuple(offset.shape)}")
    return offset.to(torch.int64)


def check_integer(name: str, tensor: torch.Tensor, device: torch.device) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be an integer tensor, got {type(tensor).__name__}")
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {tensor.dtype}")
    if tensor.device != device:
        raise ValueError(f"{name} must be on q's device {device}, got {tensor.device}")


def check_rows_in_table(rows: Rows, batch: int, seq: int, table_rows: int) -> None:
    """Raise ValueError when a position falls outside the table (a fused kernel would read out of bounds)."""
    if batch * seq == 0:
        return
    if isinstance(rows, AffineRows):
        lowest, highest = rows.bounds(batch, seq)
    else:
        # NOTE: on a GPU these two reads synchronise with the device once per call.
        lowest, highest = rows.min().item(), rows.max().item()
    if lowest < 0 or highest >= table_rows:
        raise ValueError(
            f"positions must lie in [0, {table_rows}) to index cos and sin of {table_rows} rows, "
            f"got positions from {lowest} to {highest}; extend the tables or check positions and offset"
        )
