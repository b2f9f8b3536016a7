"""The fused RoPE backends against a float64 rotation built from ropekit.rope.apply_rotary.

Every fused backend (torch, the C kernel, Triton) is checked for both layouts, partial
rotary, odd sizes, GQA/MQA head counts, the three input layouts, offsets, per-row positions
and packing, gradients, in-place writes and the memory around its tensors. Without a GPU
the Triton kernel runs on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1), so its
cases use small shapes.
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

if not torch.cuda.is_available():
    # Must be set before the first Triton launch in this process, which wraps the kernel.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from ropekit.kernels import (
    apply_rotary_qk,
    available_backends,
    cpu_backend,
    may_share_elements,
    rotate_qk,
    select_backend,
    triton_backend,
)
from ropekit.kernels.ops import direct_call_allowed
from ropekit.rope.apply import apply_rotary
from ropekit.rope.frequencies import default_inv_freq

FUSED_BACKENDS = ("torch", "cpu", "triton")
LAYOUTS = pytest.mark.parametrize("interleaved", [False, True], ids=["half", "interleaved"])
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)

# (q heads, k heads, head_dim, rotary_dim): MHA, GQA and MQA, full and partial rotary, odd head_dim.
HEAD_CASES = [
    (1, 1, 8, 8),
    (3, 1, 10, 6),
    (5, 5, 16, 16),
    (6, 2, 9, 4),
    (7, 7, 12, 12),
    (20, 4, 8, 6),
]


@pytest.fixture(params=FUSED_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name = request.param
    if name == "cpu" and not cpu_backend.available():
        pytest.skip("the C kernel did not build on this machine (no C compiler); the warning log says why")
    if name == "triton" and triton_backend.triton is None:
        pytest.skip("triton is not installed (pip install 'ropekit[triton]')")
    if name == "triton" and not triton_backend.available_for(device_for(name)):
        pytest.skip("Triton needs a CUDA device or TRITON_INTERPRET=1 set before its first launch")
    return name


def device_for(backend: str) -> torch.device:
    if backend == "triton" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def pair_angles(positions: torch.Tensor, rotary_dim: int) -> torch.Tensor:
    """Return float64 angles positions x inv_freq, shape positions.shape + (rotary_dim // 2,)."""
    return positions.to(torch.float64).unsqueeze(-1) * default_inv_freq(rotary_dim, 10000.0).to(positions.device)


def tables(angles: torch.Tensor, interleaved: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Return float32 cos and sin in the layout's column order (each pair angle twice)."""
    full = angles.repeat_interleave(2, dim=-1) if interleaved else torch.cat((angles, angles), dim=-1)
    return full.cos().float(), full.sin().float()


def expected_rotation(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool, seq_dim: int
) -> torch.Tensor:
    """Rotate x in float64 with apply_rotary; cos and sin are per token: [batch, seq, r] or, packed, [tokens, r]."""
    cos, sin = cos.double(), sin.double()
    if seq_dim == 0:
        cos, sin = cos[:, None, :], sin[:, None, :]
    elif seq_dim == 2:
        cos, sin = cos[:, None], sin[:, None]
    else:
        cos, sin = cos[:, :, None], sin[:, :, None]
    return apply_rotary(x.double(), cos, sin, interleaved=interleaved)


def assert_rotation_close(actual: torch.Tensor, expected: torch.Tensor, source: torch.Tensor, what: str) -> None:
    """Compare with tolerances derived from the dtype.

    rtol is one unit in the last place of the output dtype, which bounds its final rounding;
    atol covers the compute dtype's rounding of two products and a sum on inputs of size
    max|source|.
    """
    compute_dtype = torch.float64 if source.dtype == torch.float64 else torch.float32
    scale = max(source.abs().max().item(), 1.0)
    torch.testing.assert_close(
        actual.double(),
        expected,
        rtol=torch.finfo(source.dtype).eps,
        atol=4 * torch.finfo(compute_dtype).eps * scale,
        msg=lambda message: f"{what}: {message}",
    )


def random_qk(batch, seq, q_heads, k_heads, head_dim, dtype, device, seed=0, seq_dim=1):
    generator = torch.Generator().manual_seed(seed)

    def make(heads: int) -> torch.Tensor:
        shape = {0: (batch * seq, heads, head_dim), 1: (batch, seq, heads, head_dim), 2: (batch, heads, seq, head_dim)}
        return torch.randn(shape[seq_dim], generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)

    return make(q_heads), make(k_heads)


# Equality with the reference ---------------------------------------------------------------


@LAYOUTS
@DTYPES
def test_fused_matches_reference_heads_table(backend, interleaved, dtype):
    device = device_for(backend)
    batch, seq = 2, 5
    for q_heads, k_heads, head_dim, rotary_dim in HEAD_CASES:
        q, k = random_qk(batch, seq, q_heads, k_heads, head_dim, dtype, device)
        cos, sin = tables(pair_angles(torch.arange(seq, device=device) + 3, rotary_dim), interleaved)

        q_out, k_out = rotate_qk(q, k, cos, sin, interleaved=interleaved, backend=backend)

        per_token_cos, per_token_sin = cos.expand(batch, seq, rotary_dim), sin.expand(batch, seq, rotary_dim)
        case = f"{backend} heads {q_heads}/{k_heads} head_dim {head_dim} rotary_dim {rotary_dim}"
        assert q_out.dtype == dtype, case
        assert q_out.shape == q.shape, case
        assert k_out.shape == k.shape, case
        assert_rotation_close(q_out, expected_rotation(q, per_token_cos, per_token_sin, interleaved, 1), q, f"q, {case}")
        assert_rotation_close(k_out, expected_rotation(k, per_token_cos, per_token_sin, interleaved, 1), k, f"k, {case}")
        assert torch.equal(q_out[..., rotary_dim:], q[..., rotary_dim:]), f"q pass-through changed, {case}"
        assert torch.equal(k_out[..., rotary_dim:], k[..., rotary_dim:]), f"k pass-through changed, {case}"


@LAYOUTS
def test_fused_float16(backend, interleaved):
    if backend == "cpu":
        pytest.skip("the C kernel implements float32, bfloat16 and float64; float16 uses the torch backend")
    device = device_for(backend)
    q, k = random_qk(2, 5, 6, 2, 12, torch.float16, device)
    cos, sin = tables(pair_angles(torch.arange(5, device=device) + 100, 10), interleaved)

    q_out, k_out = rotate_qk(q, k, cos, sin, interleaved=interleaved, backend=backend)

    per_token_cos, per_token_sin = cos.expand(2, 5, 10), sin.expand(2, 5, 10)
    assert q_out.dtype == torch.float16
    assert_rotation_close(q_out, expected_rotation(q, per_token_cos, per_token_sin, interleaved, 1), q, "q")
    assert_rotation_close(k_out, expected_rotation(k, per_token_cos, per_token_sin, interleaved, 1), k, "k")


@pytest.mark.parametrize("q_heads, k_heads", [(128, 8), (128, 128)])
def test_fused_many_heads(backend, q_heads, k_heads):
    device = device_for(backend)
    q, k = random_qk(1, 2, q_heads, k_heads, 128, torch.bfloat16, device)
    cos, sin = tables(pair_angles(torch.arange(2, device=device) + 1000, 128), False)

    q_out, k_out = rotate_qk(q, k, cos, sin, interleaved=False, backend=backend)

    per_token_cos, per_token_sin = cos.expand(1, 2, 128), sin.expand(1, 2, 128)
    assert_rotation_close(q_out, expected_rotation(q, per_token_cos, per_token_sin, False, 1), q, "q")
    assert_rotation_close(k_out, expected_rotation(k, per_token_cos, per_token_sin, False, 1), k, "k")


@LAYOUTS
@pytest.mark.parametrize("seq_dim", [0, 1, 2])
def test_fused_matches_reference_layouts(backend, interleaved, seq_dim):
    device = device_for(backend)
    batch, seq = (1, 9) if seq_dim == 0 else (3, 7)
    q, k = random_qk(batch, seq, 5, 1, 12, torch.float32, device, seq_dim=seq_dim)
    cos, sin = tables(pair_angles(torch.arange(seq, device=device), 10), interleaved)

    q_out, k_out = rotate_qk(q, k, cos, sin, interleaved=interleaved, seq_dim=seq_dim, backend=backend)

    if seq_dim == 0:
        per_token_cos, per_token_sin = cos, sin
    else:
        per_token_cos, per_token_sin = cos.expand(batch, seq, 10), sin.expand(batch, seq, 10)
    assert_rotation_close(q_out, expected_rotation(q, per_token_cos, per_token_sin, interleaved, seq_dim), q, "q")
    assert_rotation_close(k_out, expected_rotation(k, per_token_cos, per_token_sin, interleaved, seq_dim), k, "k")


@LAYOUTS
def test_fused_per_row_tables(backend, interleaved):
    device = device_for(backend)
    batch, seq = 3, 4
    q, k = random_qk(batch, seq, 3, 1, 8, torch.float32, device)
    positions = torch.tensor([[0, 1, 2, 3], [40, 41, 42, 43], [7, 3, 9, 1]], device=device)
    cos, sin = tables(pair_angles(positions, 8), interleaved)  # [batch, seq, 8]

    q_out, k_out = rotate_qk(q, k, cos, sin, interleaved=interleaved, backend=backend)

    assert_rotation_close(q_out, expected_rotation(q, cos, sin, interleaved, 1), q, "q")
    assert_rotation_close(k_out, expected_rotation(k, cos, sin, interleaved, 1), k, "k")

    # One row per batch element, broadcast over seq: [batch, 1, rotary_dim].
    q_out, k_out = rotate_qk(q, k, cos[:, :1], sin[:, :1], interleaved=interleaved, backend=backend)

    broadcast_cos, broadcast_sin = cos[:, :1].expand(batch, seq, 8), sin[:, :1].expand(batch, seq, 8)
    assert_rotation_close(q_out, expected_rotation(q, broadcast_cos, broadcast_sin, interleaved, 1), q, "q, broadcast")
    assert_rotation_close(k_out, expected_rotation(k, broadcast_cos, broadcast_sin, interleaved, 1), k, "k, broadcast")


@LAYOUTS
def test_fused_positions_and_offsets(backend, interleaved):
    device = device_for(backend)
    batch, seq, rotary_dim = 3, 5, 8
    q, k = random_qk(batch, seq, 6, 2, 10, torch.float32, device)
    cos, sin = tables(pair_angles(torch.arange(64, device=device), rotary_dim), interleaved)
    row_positions = torch.tensor([[4, 9, 1, 0, 30], [5, 6, 7, 8, 9], [50, 2, 2, 3, 11]], device=device)
    offsets = torch.tensor([0, 3, 7], device=device)
    cases = {
        "default positions": ({}, torch.arange(seq, device=device).expand(batch, seq)),
        "int offset": ({"offset": 11}, (torch.arange(seq, device=device) + 11).expand(batch, seq)),
        "tensor offset": ({"offset": offsets}, torch.arange(seq, device=device) + offsets[:, None]),
        "shared positions": ({"positions": row_positions[1]}, row_positions[1].expand(batch, seq)),
        "per-row positions": ({"positions": row_positions}, row_positions),
        "per-row positions and offset": ({"positions": row_positions, "offset": offsets}, row_positions + offsets[:, None]),
    }
    for name, (options, positions) in cases.items():
        q_out, k_out = apply_rotary_qk(q, k, cos, sin, interleaved=interleaved, backend=backend, **options)

        expected_cos, expected_sin = cos[positions], sin[positions]
        assert_rotation_close(q_out, expected_rotation(q, expected_cos, expected_sin, interleaved, 1), q, f"q, {name}")
        assert_rotation_close(k_out, expected_rotation(k, expected_cos, expected_sin, interleaved, 1), k, f"k, {name}")


@LAYOUTS
def test_fused_packing_equals_separate_sequences(backend, interleaved):
    device = device_for(backend)
    lengths = [3, 1, 5]
    q, k = random_qk(1, sum(lengths), 3, 1, 8, torch.float32, device, seq_dim=0)
    cos, sin = tables(pair_angles(torch.arange(32, device=device), 8), interleaved)
    cu_seqlens = torch.tensor([0, 3, 4, 9], device=device, dtype=torch.int32)
    offsets = torch.tensor([0, 10, 2], device=device)

    q_out, k_out = apply_rotary_qk(
        q, k, cos, sin, cu_seqlens=cu_seqlens, offset=offsets, interleaved=interleaved, seq_dim=0, backend=backend
    )

    starts = cu_seqlens.tolist()
    for index, (start, end) in enumerate(zip(starts[:-1], starts[1:])):
        # Packing restarts positions at each sequence: the same as rotating the sequence alone.
        alone_q, alone_k = apply_rotary_qk(
            q[start:end][None], k[start:end][None], cos, sin, offset=int(offsets[index]), interleaved=interleaved, backend="reference"
        )
        assert_rotation_close(q_out[start:end], alone_q[0].double(), q, f"q of sequence {index}")
        assert_rotation_close(k_out[start:end], alone_k[0].double(), k, f"k of sequence {index}")


def test_fused_batched_decode_rows(backend):
    device = device_for(backend)
    batch = 4
    q, k = random_qk(batch, 1, 5, 1, 8, torch.float32, device)
    cos, sin = tables(pair_angles(torch.arange(100, device=device), 8), False)
    offsets = torch.tensor([0, 17, 99, 3], device=device)

    q_out, k_out = apply_rotary_qk(q, k, cos, sin, offset=offsets, backend=backend)

    for row in range(batch):
        q_row, k_row = apply_rotary_qk(q[row : row + 1], k[row : row + 1], cos, sin, offset=int(offsets[row]), backend=backend)
        assert torch.equal(q_out[row : row + 1], q_row), f"q row {row} differs from a call on that row alone"
        assert torch.equal(k_out[row : row + 1], k_row), f"k row {row} differs from a call on that row alone"


def test_fused_q_and_k_independent(backend):
    device = device_for(backend)
    q, k = random_qk(2, 6, 3, 3, 8, torch.float32, device)
    cos, sin = tables(pair_angles(torch.arange(6, device=device), 8), False)

    q_out, k_out = rotate_qk(q, k, cos, sin, interleaved=False, backend=backend)
    q_again, k_changed = rotate_qk(q, k * 3 + 1, cos, sin, interleaved=False, backend=backend)

    assert not torch.equal(q, k)
    assert not torch.allclose(q_out, k_out), "q and k outputs are equal for different inputs"
    assert torch.equal(q_again, q_out), "changing k changed q's output"
    assert not torch.equal(k_changed, k_out), "changing k left k's output unchanged"


# Memory: strides, views, in place ----------------------------------------------------------


@LAYOUTS
def test_fused_non_contiguous_inputs(backend, interleaved):
    device = device_for(backend)
    batch, seq, heads, head_dim = 2, 5, 3, 8
    generator = torch.Generator().manual_seed(1)
    # A fused qkv projection output: q and k are views with a head stride of 3 * heads * head_dim.
    qkv = torch.randn(batch, seq, 3 * heads, head_dim, generator=generator).to(device)
    q, k = qkv[:, :, :heads], qkv[:, :, heads : 2 * heads]
    # A channel stride of 2 as well (the strided path of each kernel).
    wide = torch.randn(batch, seq, heads, 2 * head_dim, generator=generator).to(device)
    cos, sin = tables(pair_angles(torch.arange(seq, device=device), head_dim), interleaved)
    per_token = (cos.expand(batch, seq, head_dim), sin.expand(batch, seq, head_dim))

    for name, (q_view, k_view) in {"head-strided views": (q, k), "channel-strided q": (wide[..., ::2], k)}.items():
        assert not q_view.is_contiguous()
        q_out, k_out = rotate_qk(q_view, k_view, cos, sin, interleaved=interleaved, backend=backend)
        assert_rotation_close(q_out, expected_rotation(q_view, *per_token, interleaved, 1), q_view, f"q, {name}")
        assert_rotation_close(k_out, expected_rotation(k_view, *per_token, interleaved, 1), k_view, f"k, {name}")


@LAYOUTS
def test_fused_in_place_equals_out_of_place(backend, interleaved):
    device = device_for(backend)
    q, k = random_qk(2, 5, 6, 2, 10, torch.bfloat16, device)
    cos, sin = tables(pair_angles(torch.arange(5, device=device), 6), interleaved)
    q_expected, k_expected = rotate_qk(q, k, cos, sin, interleaved=interleaved, backend=backend)

    q_in, k_in = q.clone(), k.clone()
    q_result, k_result = rotate_qk(q_in, k_in, cos, sin, interleaved=interleaved, inplace=True, backend=backend)

    assert q_result is q_in
    assert k_result is k_in
    assert torch.equal(q_in, q_expected)
    assert torch.equal(k_in, k_expected)


@pytest.mark.parametrize("q_requires_grad", [False, True], ids=["plain_q", "grad_q"])
def test_in_place_write_is_seen_by_autograd(backend, q_requires_grad):
    # q @ w saves q for w's gradient, so rotating q in place afterwards must make backward fail.
    device = device_for(backend)
    q, k = random_qk(1, 4, 2, 1, 8, torch.float32, device)
    if q_requires_grad:
        q = q.clone().requires_grad_(True) * 1.0
    w = torch.randn(8, 3, device=device, requires_grad=True)
    loss = (q @ w).sum()
    cos, sin = tables(pair_angles(torch.arange(4, device=device), 8), False)

    rotate_qk(q, k, cos, sin, interleaved=False, inplace=True, backend=backend)

    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_in_place_rejects_inference_tensor_outside_inference_mode(backend):
    with torch.inference_mode():
        q, k = random_qk(1, 4, 2, 1, 8, torch.float32, device_for(backend))
    cos, sin = tables(pair_angles(torch.arange(4, device=q.device), 8), False)
    before = q.clone()

    with pytest.raises(RuntimeError, match="q is an inference tensor"):
        rotate_qk(q, k, cos, sin, interleaved=False, inplace=True, backend=backend)
    assert torch.equal(q, before)


def test_in_place_inside_inference_mode(backend):
    q, k = random_qk(1, 4, 2, 1, 8, torch.float32, device_for(backend))
    cos, sin = tables(pair_angles(torch.arange(4, device=q.device), 8), False)
    expected_q, _ = rotate_qk(q, k, cos, sin, interleaved=False, backend="reference")

    with torch.inference_mode():
        rotate_qk(q, k, cos, sin, interleaved=False, inplace=True, backend=backend)

    assert_rotation_close(q, expected_q.double(), expected_q, "q")


def test_in_place_gqa_decode_split_views(backend):
    # One decode token per row: q and k of a fused qkv buffer differ in the stride of seq (size 1).
    device = device_for(backend)
    fused, _ = random_qk(4, 1, 12, 1, 8, torch.float32, device)
    fused = fused.reshape(4, 1, 12 * 8)
    q, k = fused[..., : 8 * 8].view(4, 1, 8, 8), fused[..., 8 * 8 : 10 * 8].view(4, 1, 2, 8)
    cos, sin = tables(pair_angles(torch.arange(16, device=device), 8), False)
    expected_q, expected_k = apply_rotary_qk(q, k, cos, sin, offset=7, backend="reference")

    apply_rotary_qk(q, k, cos, sin, offset=7, inplace=True, backend=backend)

    assert_rotation_close(q, expected_q.double(), expected_q, "q")
    assert_rotation_close(k, expected_k.double(), expected_k, "k")


def test_in_place_rejects_overlap_across_storages():
    # Two torch storages over one numpy buffer: rows 1 of q and 0 of k are the same memory.
    numpy = pytest.importorskip("numpy")
    buffer = numpy.random.default_rng(0).standard_normal((3, 4, 2, 8)).astype(numpy.float32)
    q, k = torch.from_numpy(buffer[0:2]), torch.from_numpy(buffer[1:3])
    cos, sin = tables(pair_angles(torch.arange(4), 8), False)

    with pytest.raises(ValueError, match="q and k share memory elements"):
        rotate_qk(q, k, cos, sin, interleaved=False, inplace=True, backend="cpu" if cpu_backend.available() else "torch")


def negated_view_case(device):
    """q as .conj().imag, a view whose negation is a flag rather than memory, and a plain k."""
    source = torch.randn(1, 4, 2, 8, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    q = source.to(device).conj().imag
    k = torch.randn(1, 4, 2, 8, generator=torch.Generator().manual_seed(1)).to(device)
    cos, sin = tables(pair_angles(torch.arange(4, device=device), 8), False)
    return q, k, cos, sin


def test_fused_negated_view(backend):
    q, k, cos, sin = negated_view_case(device_for(backend))
    assert q.is_neg()
    expected_q, _ = rotate_qk(q.clone(), k, cos, sin, interleaved=False, backend="reference")

    q_out, _ = rotate_qk(q, k, cos, sin, interleaved=False, backend=backend)

    assert_rotation_close(q_out, expected_q.double(), expected_q, "q")


def test_in_place_rejects_negated_view(backend):
    q, k, cos, sin = negated_view_case(device_for(backend))

    with pytest.raises(ValueError, match="q is a view with lazy negation"):
        rotate_qk(q, k, cos, sin, interleaved=False, inplace=True, backend=backend)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_fused_call_recorded_by_jit_trace(backend):
    q, k = random_qk(1, 4, 2, 1, 8, torch.float32, device_for(backend))
    cos, sin = tables(pair_angles(torch.arange(4, device=q.device), 8), False)

    traced = torch.jit.trace(lambda q, k: rotate_qk(q, k, cos, sin, interleaved=False, backend=backend), (q, k))

    q_new, k_new = random_qk(1, 4, 2, 1, 8, torch.float32, q.device, seed=5)
    expected = rotate_qk(q_new, k_new, cos, sin, interleaved=False, backend="reference")
    for actual, reference_output, name in zip(traced(q_new, k_new), expected, ("q", "k")):
        assert_rotation_close(actual, reference_output.double(), reference_output, name)


def test_in_place_split_qkv_views(backend):
    # q, k and v sliced from one fused projection share a buffer but no element.
    device = device_for(backend)
    fused, _ = random_qk(2, 5, 8, 1, 10, torch.float32, device)  # [2, 5, 8 heads, 10]: 4 q, 2 k, 2 v heads
    q, k = fused[:, :, :4], fused[:, :, 4:6]
    cos, sin = tables(pair_angles(torch.arange(5, device=device), 10), False)
    q_expected, k_expected = rotate_qk(q, k, cos, sin, interleaved=False, backend="reference")
    v_before = fused[:, :, 6:].clone()

    rotate_qk(q, k, cos, sin, interleaved=False, inplace=True, backend=backend)

    assert_rotation_close(q, q_expected.double(), q_expected, "q")
    assert_rotation_close(k, k_expected.double(), k_expected, "k")
    assert torch.equal(fused[:, :, 6:], v_before)


@pytest.mark.parametrize("overlap", ["same_tensor", "shared_heads"])
def test_in_place_rejects_shared_elements(backend, overlap):
    x, _ = random_qk(2, 5, 4, 1, 8, torch.float32, device_for(backend))
    q, k = (x, x) if overlap == "same_tensor" else (x, x[:, :, 2:])
    cos, sin = tables(pair_angles(torch.arange(5, device=x.device), 8), False)
    before = x.clone()

    with pytest.raises(ValueError, match="q and k share memory elements"):
        rotate_qk(q, k, cos, sin, interleaved=False, inplace=True, backend=backend)
    assert torch.equal(x, before)


def test_in_place_reference_rejects_shared_elements():
    x, _ = random_qk(2, 5, 4, 1, 8, torch.float32, "cpu")
    cos, sin = tables(pair_angles(torch.arange(5), 8), False)

    with pytest.raises(ValueError, match="q and k share memory elements"):
        rotate_qk(x, x[:, :, 1:], cos, sin, interleaved=False, inplace=True, backend="reference")


def element_addresses(x: torch.Tensor) -> set[int]:
    return {
        x.data_ptr() + x.element_size() * sum(i * stride for i, stride in zip(index, x.stride()))
        for index in itertools.product(*(range(n) for n in x.shape))
    }


view_slices = st.tuples(st.integers(0, 4), st.integers(1, 5), st.sampled_from([1, 1, 2]))


@settings(max_examples=300, deadline=None)
@given(st.lists(view_slices, min_size=4, max_size=4), st.lists(view_slices, min_size=4, max_size=4), st.booleans())
def test_may_share_elements_against_addresses(first, second, transposed):
    buffer = torch.zeros(3, 5, 6, 4)

    def view(spec):
        slices = tuple(slice(min(start, n - 1), min(start, n - 1) + length, step) for (start, length, step), n in zip(spec, buffer.shape))
        result = buffer[slices]
        return result.transpose(1, 2) if transposed else result

    a, b = view(first), view(second)
    shared = bool(element_addresses(a) & element_addresses(b))

    strides_agree = all(
        stride_a == stride_b
        for n_a, n_b, stride_a, stride_b in zip(a.shape, b.shape, a.stride(), b.stride())
        if n_a > 1 and n_b > 1
    )
    if shared:
        assert may_share_elements(a, b)
    elif strides_agree:
        assert not may_share_elements(a, b)


@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "in_place"])
def test_fused_guard_bands_untouched(backend, inplace):
    device = device_for(backend)
    batch, seq, heads, head_dim, rotary_dim = 2, 4, 3, 10, 6
    # q and k live inside larger buffers: 1 extra batch row, 2 extra heads, 3 channels either side.
    generator = torch.Generator().manual_seed(2)
    q_buffer = torch.randn(batch + 1, seq, heads + 2, head_dim + 6, generator=generator).to(device)
    k_buffer = torch.randn(batch + 1, seq, heads + 2, head_dim + 6, generator=generator).to(device)
    q = q_buffer[:batch, :, 1 : heads + 1, 3 : head_dim + 3]
    k = k_buffer[1:, :, 2:, 3 : head_dim + 3]
    q_buffer_before, k_buffer_before = q_buffer.clone(), k_buffer.clone()
    q_before, k_before = q.clone(), k.clone()
    cos, sin = tables(pair_angles(torch.arange(seq, device=device), rotary_dim), False)

    q_out, k_out = rotate_qk(q, k, cos, sin, interleaved=False, inplace=inplace, backend=backend)

    q_mask = torch.ones_like(q_buffer, dtype=torch.bool)
    q_mask[:batch, :, 1 : heads + 1, 3 : head_dim + 3] = False
    k_mask = torch.ones_like(k_buffer, dtype=torch.bool)
    k_mask[1:, :, 2:, 3 : head_dim + 3] = False
    assert torch.equal(q_buffer[q_mask], q_buffer_before[q_mask]), "memory around q was written"
    assert torch.equal(k_buffer[k_mask], k_buffer_before[k_mask]), "memory around k was written"
    expected_q = expected_rotation(q_before, cos.expand(batch, seq, rotary_dim), sin.expand(batch, seq, rotary_dim), False, 1)
    assert_rotation_close(q_out, expected_q, q_before, "q")
    if not inplace:
        assert torch.equal(q, q_before), "an out-of-place call changed q"
        assert torch.equal(k, k_before), "an out-of-place call changed k"


# Gradients ---------------------------------------------------------------------------------


@LAYOUTS
@pytest.mark.parametrize("seq_dim", [0, 1, 2])
def test_fused_gradients_match_reference_autograd(backend, interleaved, seq_dim):
    device = device_for(backend)
    batch, seq = (1, 7) if seq_dim == 0 else (2, 5)
    q, k = random_qk(batch, seq, 3, 1, 10, torch.float64, device, seq_dim=seq_dim)
    cos, sin = tables(pair_angles(torch.arange(seq, device=device) + 2, 6), interleaved)
    grad_q, grad_k = random_qk(batch, seq, 3, 1, 10, torch.float64, device, seed=5, seq_dim=seq_dim)

    def gradients(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        q_leaf, k_leaf = q.clone().requires_grad_(True), k.clone().requires_grad_(True)
        q_out, k_out = rotate_qk(q_leaf, k_leaf, cos, sin, interleaved=interleaved, seq_dim=seq_dim, backend=name)
        return torch.autograd.grad((q_out, k_out), (q_leaf, k_leaf), (grad_q, grad_k))

    fused_q, fused_k = gradients(backend)
    reference_q, reference_k = gradients("reference")

    torch.testing.assert_close(fused_q, reference_q, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fused_k, reference_k, rtol=1e-12, atol=1e-12)


def test_fused_gradient_of_unused_output(backend):
    device = device_for(backend)
    q, k = random_qk(2, 3, 2, 1, 8, torch.float64, device)
    q, k = q.requires_grad_(True), k.requires_grad_(True)
    cos, sin = tables(pair_angles(torch.arange(3, device=device), 8), False)

    q_out, _ = rotate_qk(q, k, cos, sin, interleaved=False, backend=backend)
    q_out.sum().backward()

    assert torch.equal(k.grad, torch.zeros_like(k))
    assert q.grad.abs().sum() > 0


def test_fused_in_place_gradients(backend):
    device = device_for(backend)
    q_leaf, k_leaf = random_qk(2, 4, 3, 1, 8, torch.float64, device)
    q_leaf.requires_grad_(True)
    k_leaf.requires_grad_(True)
    cos, sin = tables(pair_angles(torch.arange(4, device=device), 8), True)
    grad_q, grad_k = random_qk(2, 4, 3, 1, 8, torch.float64, device, seed=9)

    q_out, k_out = rotate_qk(q_leaf * 1, k_leaf * 1, cos, sin, interleaved=True, inplace=True, backend=backend)
    fused = torch.autograd.grad((q_out, k_out), (q_leaf, k_leaf), (grad_q, grad_k))
    q_ref, k_ref = rotate_qk(q_leaf, k_leaf, cos, sin, interleaved=True, backend="reference")
    reference = torch.autograd.grad((q_ref, k_ref), (q_leaf, k_leaf), (grad_q, grad_k))

    torch.testing.assert_close(fused[0], reference[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fused[1], reference[1], rtol=1e-12, atol=1e-12)


def test_fused_gradcheck(backend):
    device = device_for(backend)
    if backend == "triton" and device.type == "cpu":
        pytest.skip("gradcheck makes ~100 launches, too slow for the Triton interpreter; the gradient test covers Triton")
    q, k = random_qk(1, 3, 2, 1, 6, torch.float64, device)
    cos, sin = tables(pair_angles(torch.arange(3, device=device), 4), False)

    def rotate(q_input: torch.Tensor, k_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rotate_qk(q_input, k_input, cos, sin, interleaved=False, backend=backend)

    assert torch.autograd.gradcheck(rotate, (q.requires_grad_(True), k.requires_grad_(True)))


# Dispatch, compile and errors ----------------------------------------------------------------


@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "in_place"])
def test_c_kernel_threads_split_tokens(inplace):
    if not cpu_backend.available():
        pytest.skip("the C kernel did not build on this machine")
    batch, seq, heads, head_dim = 2, 65, 8, 128  # enough elements for more than one thread
    q, k = random_qk(batch, seq, heads, heads // 4, head_dim, torch.float32, "cpu")
    cos, sin = tables(pair_angles(torch.arange(seq), head_dim), False)
    expected_q = expected_rotation(q, cos.expand(batch, seq, head_dim), sin.expand(batch, seq, head_dim), False, 1)
    expected_k = expected_rotation(k, cos.expand(batch, seq, head_dim), sin.expand(batch, seq, head_dim), False, 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        q_out, k_out = rotate_qk(q.clone(), k.clone(), cos, sin, interleaved=False, inplace=inplace, backend="cpu")
    finally:
        torch.set_num_threads(threads)

    assert_rotation_close(q_out, expected_q, q, "q")
    assert_rotation_close(k_out, expected_k, k, "k")


def large_qk_case(seq: int = 1024):
    """q and k of 4 MiB each in float32 (1 x seq x 8 x 128), with their float64 expected rotation."""
    q, k = random_qk(1, seq, 8, 8, 128, torch.float32, "cpu")
    cos, sin = tables(pair_angles(torch.arange(seq), 128), False)
    per_token_cos, per_token_sin = cos.expand(1, seq, 128), sin.expand(1, seq, 128)
    expected_q = expected_rotation(q, per_token_cos, per_token_sin, False, 1)
    expected_k = expected_rotation(k, per_token_cos, per_token_sin, False, 1)
    return q, k, cos, sin, expected_q, expected_k


class CountingLibrary:
    """Wraps the loaded C kernel and records the byte counts passed to the huge-page advice."""

    def __init__(self, library):
        self.library = library
        self.advised: list[int] = []

    def ropekit_advise_huge_pages(self, address, bytes_):
        self.advised.append(bytes_)
        return self.library.ropekit_advise_huge_pages(address, bytes_)

    def ropekit_rotate(self, job, threads):
        return self.library.ropekit_rotate(job, threads)


@pytest.fixture
def counting_library(monkeypatch):
    if not cpu_backend.available():
        pytest.skip("the C kernel did not build on this machine")
    counting = CountingLibrary(cpu_backend.load_library())
    monkeypatch.setattr(cpu_backend, "load_library", lambda: counting)
    return counting


@pytest.mark.parametrize("huge_pages", ["1", "0"])
def test_c_kernel_large_output_matches_reference(monkeypatch, huge_pages):
    if not cpu_backend.available():
        pytest.skip("the C kernel did not build on this machine")
    monkeypatch.setenv("ROPEKIT_HUGE_PAGES", huge_pages)
    q, k, cos, sin, expected_q, expected_k = large_qk_case()

    q_out, k_out = rotate_qk(q, k, cos, sin, interleaved=False, backend="cpu")

    assert_rotation_close(q_out, expected_q, q, "q")
    assert_rotation_close(k_out, expected_k, k, "k")


def test_huge_page_advice_large_outputs(counting_library):
    q, k, cos, sin, _, _ = large_qk_case()

    rotate_qk(q, k, cos, sin, interleaved=False, backend="cpu")

    assert counting_library.advised == [q.nbytes, k.nbytes]


def test_c_kernel_no_huge_page_advice_in_place(counting_library):
    q, k, cos, sin, _, _ = large_qk_case()

    rotate_qk(q, k, cos, sin, interleaved=False, inplace=True, backend="cpu")

    assert counting_library.advised == []


def test_no_huge_page_advice_small_outputs(counting_library):
    q, k, cos, sin, _, _ = large_qk_case(seq=1023)  # one token under 4 MiB

    rotate_qk(q, k, cos, sin, interleaved=False, backend="cpu")

    assert counting_library.advised == []


def test_c_kernel_huge_page_advice_turned_off(counting_library, monkeypatch):
    monkeypatch.setenv("ROPEKIT_HUGE_PAGES", "0")
    q, k, cos, sin, _, _ = large_qk_case()

    rotate_qk(q, k, cos, sin, interleaved=False, backend="cpu")

    assert counting_library.advised == []


@pytest.mark.parametrize("seq", [1024, 1], ids=["large_output", "small_output"])
def test_c_kernel_rejects_unknown_huge_pages_setting(counting_library, monkeypatch, seq):
    monkeypatch.setenv("ROPEKIT_HUGE_PAGES", "yes")
    q, k, cos, sin, _, _ = large_qk_case(seq)

    with pytest.raises(ValueError, match="ROPEKIT_HUGE_PAGES must be 0 or 1, got 'yes'"):
        rotate_qk(q, k, cos, sin, interleaved=False, backend="cpu")


# (dtype, head_dim, rotary_dim, interleaved): odd tails, and heads wide enough for 16-lane vectors.
BUILD_VARIANT_CASES = [
    (torch.bfloat16, 10, 8, True),
    (torch.bfloat16, 128, 128, False),
    (torch.float32, 136, 128, False),
    (torch.float64, 96, 64, True),
]


@pytest.mark.parametrize("extra_flags", cpu_backend.BUILD_VARIANTS, ids=["all_clones", "no_avx512_clone", "no_clones"])
@pytest.mark.parametrize(("dtype", "head_dim", "rotary_dim", "interleaved"), BUILD_VARIANT_CASES)
def test_c_kernel_build_variants(monkeypatch, tmp_path, extra_flags, dtype, head_dim, rotary_dim, interleaved):
    compiler = cpu_backend.find_compiler()
    if compiler is None:
        pytest.skip("no C compiler on this machine")
    # Every fallback build must compute the same rotation as the reference.
    path = cpu_backend.build(compiler, tmp_path, (*cpu_backend.C_FLAGS, *extra_flags))
    monkeypatch.setattr(cpu_backend, "load_library", lambda: cpu_backend.open_library(path))
    q, k = random_qk(2, 3, 3, 1, head_dim, dtype, "cpu")
    cos, sin = tables(pair_angles(torch.arange(3), rotary_dim), interleaved)

    q_out, k_out = rotate_qk(q, k, cos, sin, interleaved=interleaved, backend="cpu")

    per_token_cos, per_token_sin = cos.expand(2, 3, rotary_dim), sin.expand(2, 3, rotary_dim)
    assert_rotation_close(q_out, expected_rotation(q, per_token_cos, per_token_sin, interleaved, 1), q, "q")
    assert_rotation_close(k_out, expected_rotation(k, per_token_cos, per_token_sin, interleaved, 1), k, "k")


def test_c_kernel_build_falls_back_to_fewer_clones(monkeypatch):
    attempts = []

    def build(compiler, folder, flags=cpu_backend.C_FLAGS):
        extra_flags = flags[len(cpu_backend.C_FLAGS) :]
        attempts.append(extra_flags)
        if not extra_flags:
            raise subprocess.CalledProcessError(1, [compiler], stderr="error: bad value 'x86-64-v4' for 'arch='")
        return Path(folder) / "built.so"

    monkeypatch.setattr(cpu_backend, "build", build)

    assert cpu_backend.build_with_fallbacks("cc").name == "built.so"
    assert attempts == [(), ("-DROPEKIT_NO_AVX512_CLONE",)]


def test_auto_picks_c_kernel_on_cpu():
    q = torch.zeros(1, 2, 1, 4)
    expected = "cpu" if cpu_backend.available() else "torch"
    assert select_backend(q, q) == expected
    assert select_backend(q.half(), q.half()) == "torch"
    assert "triton" not in available_backends("cpu")[:2]


def test_auto_uses_reference_when_tables_need_gradients():
    q, k = random_qk(1, 3, 2, 1, 4, torch.float64, "cpu")
    angles = pair_angles(torch.arange(3), 4).requires_grad_(True)
    full = torch.cat((angles, angles), dim=-1)

    q_out, _ = rotate_qk(q, k, full.cos(), full.sin(), interleaved=False)
    (gradient,) = torch.autograd.grad(q_out.sum(), angles)

    assert gradient.abs().sum() > 0


def test_c_kernel_missing_compiler_logs_once(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="ropekit.kernels"):
        library = cpu_backend.load_library.__wrapped__()
    assert library is None
    assert len(caplog.records) == 1
    assert "no C compiler" in caplog.records[0].getMessage()


def test_c_kernel_failed_build_logs_once(monkeypatch, tmp_path, caplog):
    failing = tmp_path / "failing-cc"
    failing.write_text("#!/bin/sh\necho 'error: unsupported' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setenv("CC", str(failing))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="ropekit.kernels"):
        library = cpu_backend.load_library.__wrapped__()
    assert library is None
    assert len(caplog.records) == 1
    assert "unsupported" in caplog.records[0].getMessage()


@pytest.mark.slow
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "in_place"])
def test_fused_under_torch_compile(backend, inplace):
    device = device_for(backend)
    q, k = random_qk(2, 4, 3, 1, 8, torch.float32, device)
    cos, sin = tables(pair_angles(torch.arange(4, device=device), 8), False)

    def attention_inputs(q_input: torch.Tensor, k_input: torch.Tensor) -> torch.Tensor:
        q_rotated, k_rotated = rotate_qk(q_input * 2, k_input * 2, cos, sin, interleaved=False, inplace=inplace, backend=backend)
        return q_rotated.sum(dim=2) + k_rotated.sum(dim=2)

    compiled = torch.compile(attention_inputs, backend="aot_eager", fullgraph=True)
    q_leaf, k_leaf = q.clone().requires_grad_(True), k.clone().requires_grad_(True)
    result = compiled(q_leaf, k_leaf)
    result.square().sum().backward()
    q_eager, k_eager = q.clone().requires_grad_(True), k.clone().requires_grad_(True)
    expected = attention_inputs(q_eager, k_eager)
    expected.square().sum().backward()

    torch.testing.assert_close(result, expected)
    torch.testing.assert_close(q_leaf.grad, q_eager.grad)
    torch.testing.assert_close(k_leaf.grad, k_eager.grad)


class OperatorRecorder(TorchDispatchMode):
    """Records the name of every operator that reaches the dispatcher."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "in_place"])
def test_fused_call_visible_to_dispatch_modes(backend, inplace):
    q, k = random_qk(2, 4, 3, 1, 8, torch.float32, device_for(backend))
    cos, sin = tables(pair_angles(torch.arange(4, device=q.device), 8), False)

    with OperatorRecorder() as recorder:
        rotate_qk(q, k, cos, sin, interleaved=False, inplace=inplace, backend=backend)

    expected = "ropekit.rotate_qk_.default" if inplace else "ropekit.rotate_qk.default"
    assert expected in recorder.names


def test_fused_call_on_fake_tensors(backend):
    with FakeTensorMode():
        q, k = torch.empty(2, 4, 3, 8), torch.empty(2, 4, 1, 8)
        cos, sin = torch.empty(4, 8), torch.empty(4, 8)
        q_out, k_out = rotate_qk(q, k, cos, sin, interleaved=False, backend=backend)

    assert (q_out.shape, k_out.shape) == (q.shape, k.shape)


def test_fused_call_named_in_profiles(backend):
    q, k = random_qk(2, 4, 3, 1, 8, torch.float32, device_for(backend))
    cos, sin = tables(pair_angles(torch.arange(4, device=q.device), 8), False)

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        rotate_qk(q, k, cos, sin, interleaved=False, backend=backend)

    assert "ropekit::rotate_qk" in {event.key for event in profiler.key_averages()}


def test_direct_call_only_for_plain_eager_tensors():
    plain = torch.zeros(2)

    assert direct_call_allowed(plain, None)
    with OperatorRecorder():
        assert not direct_call_allowed(plain)
    with FakeTensorMode():
        fake = torch.empty(2)
    assert not direct_call_allowed(fake)


def test_errors_name_the_argument():
    q, k = random_qk(1, 3, 2, 1, 8, torch.float32, "cpu")
    cos, sin = tables(pair_angles(torch.arange(3), 8), False)
    with pytest.raises(ValueError, match="backend"):
        rotate_qk(q, k, cos, sin, interleaved=False, backend="fast")
    with pytest.raises(TypeError, match="same dtype"):
        rotate_qk(q, k.double(), cos, sin, interleaved=False)
    with pytest.raises(ValueError, match="seq_dim"):
        rotate_qk(q, k, cos, sin, interleaved=False, seq_dim=3)
    with pytest.raises(ValueError, match="rotary_dim"):
        rotate_qk(q, k, cos[:, :7], sin[:, :7], interleaved=False)
    with pytest.raises(ValueError, match="do not match"):
        rotate_qk(q, k, cos[:2], sin[:2], interleaved=False)
    with pytest.raises(ValueError, match=r"positions must lie in \[0, 3\)"):
        apply_rotary_qk(q, k, cos, sin, offset=1)
    with pytest.raises(ValueError, match="cu_seqlens needs packed"):
        apply_rotary_qk(q, k, cos, sin, cu_seqlens=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="cu_seqlens must start at 0"):
        apply_rotary_qk(q[0], k[0], cos, sin, cu_seqlens=torch.tensor([0, 2]), seq_dim=0)
    with pytest.raises(TypeError, match="positions must be an integer tensor"):
        apply_rotary_qk(q, k, cos, sin, positions=torch.zeros(3))
    with pytest.raises(ValueError, match="cannot be rotated in place"):
        rotate_qk(q[:1].expand(4, -1, -1, -1), k[:1].expand(4, -1, -1, -1), cos, sin, interleaved=False, inplace=True)
    with pytest.raises(TypeError, match="interleaved must be a bool"):
        rotate_qk(q, k, cos, sin, interleaved=1)
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(ValueError, match="backend 'triton'"):
            rotate_qk(q, k, cos, sin, interleaved=False, backend="triton")
