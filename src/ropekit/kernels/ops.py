"""The fused rotation as torch operators and as an autograd function.

``ropekit::rotate_qk`` (new outputs) and ``ropekit::rotate_qk_`` (in place) are registered
with ``torch.library.custom_op``, so ``torch.compile`` keeps each call as one opaque node
instead of tracing into ctypes or a Triton launch. ``RotateQK`` wraps them in a
``torch.autograd.Function``: the rotation is orthogonal, so its backward is the same
kernel with the angle negated (``conjugate=True``). The cos and sin tables are constants
for autograd; callers that need gradients for them use the reference backend.

Every operator takes q and k in the caller's layout (``seq_dim`` 0, 1 or 2) and tables of
``rotary_dim // 2`` columns in the compute dtype. Each token's table row comes from ``rows``,
an int64 [batch, seq] tensor (a packed input has batch 1), or, when ``rows`` is None, from
``affine_rows`` = [batch_stride, seq_stride, offset] (see ``ropekit.kernels.rows.AffineRows``).
"""

from __future__ import annotations

from typing import Any

import torch

from ropekit.kernels import cpu_backend, torch_backend, triton_backend
from ropekit.kernels.rows import AffineRows, Rows

# Fused backends and the function that runs each.
FUSED_BACKENDS = {
    "torch": torch_backend.rotate,
    "cpu": cpu_backend.rotate,
    "triton": triton_backend.rotate,
}


def to_tokens_first(x: torch.Tensor, seq_dim: int) -> torch.Tensor:
    """Return a [batch, seq, heads, head_dim] view of x (packed [tokens, heads, head_dim] gets batch 1)."""
    if seq_dim == 0:
        return x.unsqueeze(0)
    if seq_dim == 2:
        return x.transpose(1, 2)
    return x


def resolve_rows(rows: torch.Tensor | None, affine_rows: list[int]) -> Rows:
    """Return the row source that the operator arguments describe."""
    if rows is not None:
        if affine_rows:
            raise ValueError(f"affine_rows must be empty when a rows tensor is given, got {affine_rows}")
        return rows
    if len(affine_rows) != 3:
        raise ValueError(f"affine_rows must be [batch_stride, seq_stride, offset] without a rows tensor, got {affine_rows}")
    return AffineRows(*affine_rows)


def affine_arguments(rows: Rows) -> tuple[torch.Tensor | None, list[int]]:
    """Split a row source into the operators' (rows, affine_rows) arguments."""
    if isinstance(rows, AffineRows):
        return None, list(rows)
    return rows, []


def rotate_qk_out_of_place(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    rows: torch.Tensor | None,
    affine_rows: list[int],
    seq_dim: int,
    interleaved: bool,
    conjugate: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    q_out = torch.empty_like(q)
    k_out = torch.empty_like(k)
    FUSED_BACKENDS[backend](
        to_tokens_first(q, seq_dim),
        to_tokens_first(k, seq_dim),
        to_tokens_first(q_out, seq_dim),
        to_tokens_first(k_out, seq_dim),
        cos,
        sin,
        resolve_rows(rows, affine_rows),
        interleaved=interleaved,
        conjugate=conjugate,
        copy_tail=True,
    )
    return q_out, k_out


rotate_qk_op = torch.library.custom_op("ropekit::rotate_qk", rotate_qk_out_of_place, mutates_args=())


@rotate_qk_op.register_fake
def _(q, k, cos, sin, rows, affine_rows, seq_dim, interleaved, conjugate, backend):  # noqa: ANN001, ANN202
    return torch.empty_like(q), torch.empty_like(k)


def rotate_qk_in_place(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    rows: torch.Tensor | None,
    affine_rows: list[int],
    seq_dim: int,
    interleaved: bool,
    conjugate: bool,
    backend: str,
) -> None:
    q_view, k_view = to_tokens_first(q, seq_dim), to_tokens_first(k, seq_dim)
    FUSED_BACKENDS[backend](
        q_view,
        k_view,
        q_view,
        k_view,
        cos,
        sin,
        resolve_rows(rows, affine_rows),
        interleaved=interleaved,
        conjugate=conjugate,
        copy_tail=False,
    )


rotate_qk_inplace_op = torch.library.custom_op("ropekit::rotate_qk_", rotate_qk_in_place, mutates_args=("q", "k"))


@rotate_qk_inplace_op.register_fake
def _(q, k, cos, sin, rows, affine_rows, seq_dim, interleaved, conjugate, backend):  # noqa: ANN001, ANN202
    return None


def is_plain_tensor(tensor: torch.Tensor) -> bool:
    """Return True for a torch.Tensor itself: not a subclass (FakeTensor, Parameter) or a functorch wrapper."""
    return type(tensor) is torch.Tensor and not torch._C._functorch.is_functorch_wrapped_tensor(tensor)


def direct_call_allowed(*tensors: torch.Tensor | None) -> bool:
    """Return True when calling a backend function directly is the same as calling its operator.

    The operators exist for torch.compile, torch.export, torch.jit.trace, dispatch modes such
    as FakeTensorMode or FlopCounterMode, and torch.profiler, which must each see a call as
    one named node. A plain eager call on plain tensors gains nothing from the dispatcher, whose
    Python path costs tens of microseconds per call, about as much as rotating one decode
    step of q and k on a CPU.
    """
    if torch.compiler.is_compiling() or torch.autograd._profiler_enabled() or torch.jit.is_tracing():
        return False
    if torch._C._len_torch_dispatch_stack() or torch._C._len_torch_function_stack():
        return False
    for tensor in tensors:
        if tensor is None:
            continue
        if not is_plain_tensor(tensor):
            return False
        if tensor.is_neg() or tensor.is_conj():
            return False  # lazy negation: the dispatcher materialises it, raw memory lacks it
    return True


def call_rotate_qk(*arguments: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``ropekit::rotate_qk`` on its arguments, directly where ``direct_call_allowed`` allows it."""
    if direct_call_allowed(*arguments[:5]):  # q, k, cos, sin, rows
        return rotate_qk_out_of_place(*arguments)
    return torch.ops.ropekit.rotate_qk(*arguments)


def call_rotate_qk_in_place(*arguments: Any) -> None:
    """Run ``ropekit::rotate_qk_`` on its arguments, directly where ``direct_call_allowed`` allows it."""
    if direct_call_allowed(*arguments[:5]):  # q, k, cos, sin, rows
        rotate_qk_in_place(*arguments)
        # The dispatcher bumps the version counters of mutated arguments, and so must a direct
        # call. Autograd then rejects a backward through tensors saved before the write.
        torch.autograd.graph.increment_version(arguments[:2])
    else:
        torch.ops.ropekit.rotate_qk_(*arguments)


class RotateQK(torch.autograd.Function):
    """Rotate q and k with a fused backend; the backward rotates the gradients by -angle."""

    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        rows: torch.Tensor | None,
        affine_rows: list[int],
        seq_dim: int,
        interleaved: bool,
        inplace: bool,
        backend: str,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.save_for_backward(cos, sin, rows)
        ctx.affine_rows, ctx.seq_dim, ctx.interleaved, ctx.backend = affine_rows, seq_dim, interleaved, backend
        if inplace:
            call_rotate_qk_in_place(q, k, cos, sin, rows, affine_rows, seq_dim, interleaved, False, backend)
            ctx.mark_dirty(q, k)
            return q, k
        return call_rotate_qk(q, k, cos, sin, rows, affine_rows, seq_dim, interleaved, False, backend)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_q: torch.Tensor, grad_k: torch.Tensor) -> tuple[Any, ...]:
        cos, sin, rows = ctx.saved_tensors
        grad_q, grad_k = call_rotate_qk(
            grad_q, grad_k, cos, sin, rows, ctx.affine_rows, ctx.seq_dim, ctx.interleaved, True, ctx.backend
        )
        return grad_q, grad_k, None, None, None, None, None, None, None, None
