"""GPU backend: one Triton kernel rotates q and k.

Grid: axis 0 is the token (batch * seq). Axis 1 walks blocks of BLOCK_H heads, the q blocks
first and then the k blocks, so one launch covers q and k, and any head count works (GQA and
MQA included). Each program loads its token's cos and sin row once
(a float32 table, or float64 for float64 inputs) and rotates BLOCK_H heads x half pairs
in that precision; with ``copy_tail`` it also copies the channels past rotary_dim.
Every tensor is addressed through its strides, so transposed and sliced views are read
and written where they are, without a copy.

On a machine without a GPU the kernel runs on CPU tensors under ``TRITON_INTERPRET=1``
(Triton's interpreter), which the tests use at small shapes. ``triton.jit`` chooses between
compiling and interpreting when it wraps a function, so the functions below are wrapped at
the first launch, and the value of TRITON_INTERPRET then holds for the rest of the process.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch

from ropekit.kernels.rows import Rows, row_arguments

try:
    import triton
    import triton.language as tl
except ImportError:  # the "triton" extra is not installed
    triton = None
    tl = None

# Elements (heads x pairs) one program rotates per tensor block; a power of two.
# NOTE: chosen without GPU measurements (Triton's default num_warps too); tune it with
# `ropekit bench rope --device cuda` on the target GPU.
BLOCK_ELEMENTS = 1024


def available_for(device: torch.device) -> bool:
    """Return whether the kernel can run on tensors of ``device``."""
    if triton is None:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and interpreter_enabled()


# torch.compile treats the result as a constant of the traced graph.
@torch.compiler.assume_constant_result
def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:

    def _rotate_heads(
        x_ptr,
        out_ptr,
        cos,
        sin,
        b,
        s,
        head_start,
        heads,
        head_dim,
        x_stride_b,
        x_stride_s,
        x_stride_h,
        x_stride_d,
        out_stride_b,
        out_stride_s,
        out_stride_h,
        out_stride_d,
        half,
        INTERLEAVED: tl.constexpr,
        COPY_TAIL: tl.constexpr,
        BLOCK_H: tl.constexpr,
        BLOCK_P: tl.constexpr,
        BLOCK_T: tl.constexpr,
    ):
        # Rotate heads [head_start, head_start + BLOCK_H) of one token of one tensor.
        head = head_start + tl.arange(0, BLOCK_H)
        pair = tl.arange(0, BLOCK_P)
        mask = (head[:, None] < heads) & (pair[None, :] < half)
        if INTERLEAVED:
            first = 2 * pair  # pair i is (x[2i], x[2i + 1])
            second = first + 1
        else:
            first = pair  # pair i is (x[i], x[i + half])
            second = pair + half

        x_row = x_ptr + b * x_stride_b + s * x_stride_s + head[:, None] * x_stride_h
        out_row = out_ptr + b * out_stride_b + s * out_stride_s + head[:, None] * out_stride_h
        x1 = tl.load(x_row + first[None, :] * x_stride_d, mask=mask, other=0.0).to(cos.dtype)
        x2 = tl.load(x_row + second[None, :] * x_stride_d, mask=mask, other=0.0).to(cos.dtype)
        rotated_first = x1 * cos[None, :] - x2 * sin[None, :]
        rotated_second = x2 * cos[None, :] + x1 * sin[None, :]
        out_type = out_ptr.dtype.element_ty
        tl.store(out_row + first[None, :] * out_stride_d, rotated_first.to(out_type), mask=mask)
        tl.store(out_row + second[None, :] * out_stride_d, rotated_second.to(out_type), mask=mask)

        if COPY_TAIL:
            for tail_start in range(2 * half, head_dim, BLOCK_T):
                channel = tail_start + tl.arange(0, BLOCK_T)
                tail_mask = (head[:, None] < heads) & (channel[None, :] < head_dim)
                values = tl.load(x_row + channel[None, :] * x_stride_d, mask=tail_mask)
                tl.store(out_row + channel[None, :] * out_stride_d, values, mask=tail_mask)

    def _rotate_qk_kernel(
        q_ptr,
        k_ptr,
        q_out_ptr,
        k_out_ptr,
        cos_ptr,
        sin_ptr,
        rows_ptr,
        seq,
        q_heads,
        k_heads,
        q_head_dim,
        k_head_dim,
        half,
        q_stride_b,
        q_stride_s,
        q_stride_h,
        q_stride_d,
        k_stride_b,
        k_stride_s,
        k_stride_h,
        k_stride_d,
        q_out_stride_b,
        q_out_stride_s,
        q_out_stride_h,
        q_out_stride_d,
        k_out_stride_b,
        k_out_stride_s,
        k_out_stride_h,
        k_out_stride_d,
        table_stride_row,
        table_stride_pair,
        rows_stride_b,
        rows_stride_s,
        row_offset,
        HAS_ROWS: tl.constexpr,
        INTERLEAVED: tl.constexpr,
        CONJUGATE: tl.constexpr,
        COPY_TAIL: tl.constexpr,
        BLOCK_H: tl.constexpr,
        BLOCK_P: tl.constexpr,
        BLOCK_T: tl.constexpr,
    ):
        token = tl.program_id(0).to(tl.int64)
        head_block = tl.program_id(1)
        b = token // seq
        s = token % seq

        # The token's row of the cos and sin tables: read from rows, or index + row_offset.
        index = b * rows_stride_b + s * rows_stride_s
        if HAS_ROWS:
            row = tl.load(rows_ptr + index).to(tl.int64)
        else:
            row = index + row_offset
        pair = tl.arange(0, BLOCK_P)
        table_offsets = row * table_stride_row + pair * table_stride_pair
        cos = tl.load(cos_ptr + table_offsets, mask=pair < half, other=0.0)
        sin = tl.load(sin_ptr + table_offsets, mask=pair < half, other=0.0)
        if CONJUGATE:
            sin = -sin  # rotation by -angle: the backward of the rotation

        q_blocks = tl.cdiv(q_heads, BLOCK_H)
        if head_block < q_blocks:
            _rotate_heads(
                q_ptr, q_out_ptr, cos, sin, b, s, head_block * BLOCK_H, q_heads, q_head_dim,
                q_stride_b, q_stride_s, q_stride_h, q_stride_d,
                q_out_stride_b, q_out_stride_s, q_out_stride_h, q_out_stride_d,
                half, INTERLEAVED, COPY_TAIL, BLOCK_H, BLOCK_P, BLOCK_T,
            )  # fmt: skip
        else:
            _rotate_heads(
                k_ptr, k_out_ptr, cos, sin, b, s, (head_block - q_blocks) * BLOCK_H, k_heads, k_head_dim,
                k_stride_b, k_stride_s, k_stride_h, k_stride_d,
                k_out_stride_b, k_out_stride_s, k_out_stride_h, k_out_stride_d,
                half, INTERLEAVED, COPY_TAIL, BLOCK_H, BLOCK_P, BLOCK_T,
            )  # fmt: skip


@functools.cache
def compiled_kernel() -> object:
    """Wrap the kernel and its helper with ``triton.jit``; return the kernel."""
    # The kernel calls _rotate_heads by its module-level name, so that name must be the wrapped helper.
    global _rotate_heads
    _rotate_heads = triton.jit(_rotate_heads)
    return triton.jit(_rotate_qk_kernel)


def block_sizes(half: int, q: torch.Tensor, k: torch.Tensor) -> tuple[int, int, int]:
    """Return (BLOCK_H, BLOCK_P, BLOCK_T) for ``half`` pairs and the tails of q and k."""
    block_pairs = triton.next_power_of_2(max(half, 1))
    max_heads = max(q.shape[2], k.shape[2], 1)
    block_heads = max(1, min(triton.next_power_of_2(max_heads), BLOCK_ELEMENTS // block_pairs))
    longest_tail = max(q.shape[3], k.shape[3]) - 2 * half
    block_tail = min(triton.next_power_of_2(max(longest_tail, 1)), 64)
    return block_heads, block_pairs, block_tail


def rotate(
    q: torch.Tensor,
    k: torch.Tensor,
    q_out: torch.Tensor,
    k_out: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    rows: Rows,
    *,
    interleaved: bool,
    conjugate: bool,
    copy_tail: bool,
) -> None:
    """Rotate q into q_out and k into k_out; the arguments are those of ``cpu_backend.rotate``."""
    if triton is None:
        raise RuntimeError("the triton backend needs the triton package: pip install 'ropekit[triton]'")
    if cos.stride() != sin.stride():
        # The kernel walks both tables with one pair of strides.
        cos, sin = cos.contiguous(), sin.contiguous()

    batch, seq = q.shape[:2]
    half = cos.shape[1]
    block_heads, block_pairs, block_tail = block_sizes(half, q, k)
    head_blocks = triton.cdiv(q.shape[2], block_heads) + triton.cdiv(k.shape[2], block_heads)
    if batch * seq == 0 or head_blocks == 0:
        return
    grid = (batch * seq, head_blocks)
    rows_tensor, rows_stride, row_offset = row_arguments(rows)
    # Without a rows tensor the kernel never reads rows_ptr, so cos is passed as a placeholder pointer.
    rows_pointer = cos if rows_tensor is None else rows_tensor
    # Launch on q's GPU, which need not be the current one.
    context = torch.cuda.device(q.device) if q.device.type == "cuda" else contextlib.nullcontext()
    with context:
        compiled_kernel()[grid](
            q, k, q_out, k_out, cos, sin, rows_pointer,
            seq, q.shape[2], k.shape[2], q.shape[3], k.shape[3], half,
            *q.stride(), *k.stride(), *q_out.stride(), *k_out.stride(),
            *cos.stride(), *rows_stride, row_offset,
            HAS_ROWS=rows_tensor is not None, INTERLEAVED=interleaved, CONJUGATE=conjugate, COPY_TAIL=copy_tail,
            BLOCK_H=block_heads, BLOCK_P=block_pairs, BLOCK_T=block_tail,
        )  # fmt: skip

