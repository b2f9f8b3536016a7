"""CPU backend: a small C kernel, compiled on first use and called through ctypes.

The kernel reads each q and k element once and writes it once. For every token it looks
up that token's cos and sin row and rotates every head of q and then of k. When it writes
to a new tensor, it also copies the pass-through channels. It takes any strides, so
transposed or sliced views need no copy. Work is split over tokens between
``torch.get_num_threads()`` POSIX threads when a call is large enough to repay starting them.
A large new output is backed by 2 MiB transparent huge pages where Linux allows it, which
saves one page fault per 4 KiB of output (``ROPEKIT_HUGE_PAGES=0`` turns this off).

Why C and ctypes rather than a torch C++ extension: the kernel needs no torch headers, so
it builds in well under a second with the system C compiler (``$CC``, else ``cc``, ``gcc``
or ``clang``) and needs neither ninja nor a matching torch build. The shared library is
cached under ``$TORCH_EXTENSIONS_DIR/ropekit_rope_cpu`` (default
``~/.cache/torch_extensions``), named by a hash of the source, the compiler and the flags,
so each machine builds it once. When no compiler is found or the build fails, one warning
is logged and ``available()`` returns False; dispatch then uses the torch backend.

bfloat16 is converted to float32 for the arithmetic and rounded back to nearest-even, the
same rounding as ``c10::BFloat16``; float64 computes in float64.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from ropekit._environment import huge_pages_enabled
from ropekit._io import atomic_path
from ropekit.kernels.rows import Rows, row_arguments

logger = logging.getLogger("ropekit.kernels")

# The dtypes the C kernel implements, with the code it expects in rope_job.dtype.
DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float64: 2}

# Elements of q and k per thread. Smaller calls use fewer threads, because starting a POSIX
# thread costs tens of microseconds (an estimate), about the time to rotate this many elements.
ELEMENTS_PER_THREAD = 1 << 18

# Out-of-place outputs of at least this many bytes get transparent huge pages (see
# ropekit_advise_huge_pages in the C source). A smaller output may hold no aligned 2 MiB page.
# ROPEKIT_HUGE_PAGES=0 turns the advice off. That helps where Linux compacts memory on a
# huge-page fault, if that stall costs more than the page faults it saves.
HUGE_PAGE_ADVICE_BYTES = 4 << 20

# -ffp-contract=off keeps a * b - c * d as two roundings, as torch's eager reference computes it.
C_FLAGS = ("-O3", "-std=c11", "-ffp-contract=off", "-shared", "-fPIC", "-pthread")

C_SOURCE = r"""
#define _DEFAULT_SOURCE /* madvise under -std=c11 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

/* One tensor seen as [batch, seq, heads, head_dim]; strides in elements. */
typedef struct {
    const void *input;
    void *output;
    int64_t heads, head_dim;
    int64_t input_stride[4];
    int64_t output_stride[4];
} rope_tensor;

typedef struct {
    rope_tensor tensors[2];
    int64_t tensor_count, batch, seq, half;
    const void *cos, *sin;       /* [table_rows, half] */
    int64_t table_stride[2];
    const int64_t *rows;         /* [batch, seq] table row of each token, or NULL */
    int64_t rows_stride[2];      /* index = b * rows_stride[0] + s * rows_stride[1] */
    int64_t row_offset;          /* without rows, the row is index + row_offset */
    int32_t dtype;               /* 0 float32, 1 bfloat16 (float32 tables), 2 float64 */
    int32_t interleaved, conjugate, copy_tail;
} rope_job;

static inline float bf16_load(uint16_t value) {
    uint32_t bits = (uint32_t)value << 16;
    float result;
    memcpy(&result, &bits, sizeof result);
    return result;
}

/* Round to nearest, ties to even, as c10::BFloat16 does; NaN stays a quiet NaN. Branch-free so that it vectorises. */
static inline uint16_t bf16_store(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    const uint32_t quiet_nan = (bits >> 16) | 0x40u;
    return (uint16_t)((bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

#define LOAD_SAME(v) (v)
#define STORE_SAME(v) (v)
#define CHUNK 16

#if defined(__clang__)
#define IGNORE_ASSUMED_DEPENDENCES _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define IGNORE_ASSUMED_DEPENDENCES _Pragma("GCC ivdep")
#else
#define IGNORE_ASSUMED_DEPENDENCES
#endif

/*
 * On x86-64, build the contiguous loops for AVX-512 (x86-64-v4) and AVX2 as well, and pick at
 * load time (GCC and Clang). On an AMD EPYC with AVX-512, the AVX-512 clone cut a decode-sized
 * bfloat16 call (32 x 1 x 32 x 128) from 94 to 68 microseconds.
 * Compilers that do not know x86-64-v4 (GCC before 11) get ROPEKIT_NO_AVX512_CLONE.
 */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(ROPEKIT_NO_CLONES)
#if defined(ROPEKIT_NO_AVX512_CLONE)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#endif
#else
#define VECTOR_CLONES
#endif

/*
 * Pair i of a head is (x[first(i)], x[first(i) + partner]): first(i) = i and partner = half in
 * the half layout, first(i) = 2i and partner = 1 in the interleaved layout. The rotation by
 * angle a is (x1 cos a - x2 sin a, x2 cos a + x1 sin a); sin_row already carries the sign of
 * a (negated for the backward). Out-of-place calls write a fresh tensor, hence `restrict`.
 * Strided heads load a chunk of pairs in full before storing any of it, so an in-place
 * call reads every value before it overwrites it.
 */
#define DEFINE_KERNEL(NAME, T, C, LOAD, STORE)                                                   \
VECTOR_CLONES static void NAME##_half(const T *restrict in, T *restrict out, const C *restrict c,              \
                        const C *restrict s, int64_t half) {                                     \
    for (int64_t j = 0; j < half; ++j) {                                                         \
        const C x1 = LOAD(in[j]), x2 = LOAD(in[j + half]);                                       \
        out[j] = STORE(x1 * c[j] - x2 * s[j]);                                                   \
        out[j + half] = STORE(x2 * c[j] + x1 * s[j]);                                            \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
VECTOR_CLONES static void NAME##_pairs(const T *restrict in, T *restrict out, const C *restrict c,             \
                         const C *restrict s, int64_t half) {                                    \
    for (int64_t j = 0; j < half; ++j) {                                                         \
        const C x1 = LOAD(in[2 * j]), x2 = LOAD(in[2 * j + 1]);                                  \
        out[2 * j] = STORE(x1 * c[j] - x2 * s[j]);                                               \
        out[2 * j + 1] = STORE(x2 * c[j] + x1 * s[j]);                                           \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
static void NAME##_chunked(const T *in, T *out, int64_t in_d, int64_t out_d,                     \
                           const C *restrict c, const C *restrict s, int64_t half, int64_t step, \
                           int64_t partner) {                                                    \
    C x1[CHUNK], x2[CHUNK];                                                                      \
    for (int64_t start = 0; start < half; start += CHUNK) {                                      \
        const int64_t count = half - start < CHUNK ? half - start : CHUNK;                       \
        for (int64_t j = 0; j < count; ++j) {                                                    \
            const int64_t channel = (start + j) * step;                                          \
            x1[j] = LOAD(in[channel * in_d]);                                                    \
            x2[j] = LOAD(in[(channel + partner) * in_d]);                                        \
        }                                                                                        \
        for (int64_t j = 0; j < count; ++j) {                                                    \
            const int64_t channel = (start + j) * step, i = start + j;                           \
            out[channel * out_d] = STORE(x1[j] * c[i] - x2[j] * s[i]);                           \
            out[(channel + partner) * out_d] = STORE(x2[j] * c[i] + x1[j] * s[i]);               \
        }                                                                                        \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* In place: iteration j reads and writes only its own pair, so no iteration depends on another. */ \
VECTOR_CLONES static void NAME##_half_in_place(T *x, const C *restrict c, const C *restrict s,   \
                                               int64_t half) {                                   \
    IGNORE_ASSUMED_DEPENDENCES                                                                   \
    for (int64_t j = 0; j < half; ++j) {                                                         \
        const C x1 = LOAD(x[j]), x2 = LOAD(x[j + half]);                                         \
        x[j] = STORE(x1 * c[j] - x2 * s[j]);                                                     \
        x[j + half] = STORE(x2 * c[j] + x1 * s[j]);                                              \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
VECTOR_CLONES static void NAME##_pairs_in_place(T *x, const C *restrict c, const C *restrict s,  \
                                                int64_t half) {                                  \
    IGNORE_ASSUMED_DEPENDENCES                                                                   \
    for (int64_t j = 0; j < half; ++j) {                                                         \
        const C x1 = LOAD(x[2 * j]), x2 = LOAD(x[2 * j + 1]);                                    \
        x[2 * j] = STORE(x1 * c[j] - x2 * s[j]);                                                 \
        x[2 * j + 1] = STORE(x2 * c[j] + x1 * s[j]);                                             \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
static void NAME##_head(const T *in, T *out, int64_t in_d, int64_t out_d, const C *cos_row,      \
                        const C *sin_row, int64_t half, int64_t step, int64_t partner) {         \
    if (in != out && in_d == 1 && out_d == 1) {                                                  \
        if (step == 1) NAME##_half(in, out, cos_row, sin_row, half);                             \
        else NAME##_pairs(in, out, cos_row, sin_row, half);                                      \
    } else if (in_d == 1 && out_d == 1) {                                                        \
        if (step == 1) NAME##_half_in_place(out, cos_row, sin_row, half);                        \
        else NAME##_pairs_in_place(out, cos_row, sin_row, half);                                 \
    } else {                                                                                     \
        NAME##_chunked(in, out, in_d, out_d, cos_row, sin_row, half, step, partner);             \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* cos_row and sin_row are scratch buffers of job->half values. */                               \
static void NAME(const rope_job *job, int64_t token_begin, int64_t token_end, C *cos_row,        \
                 C *sin_row) {                                                                   \
    const C *cos_table = (const C *)job->cos, *sin_table = (const C *)job->sin;                  \
    const int64_t half = job->half, step = job->interleaved ? 2 : 1;                             \
    const int64_t partner = job->interleaved ? 1 : half;                                         \
    const C sign = job->conjugate ? (C)-1 : (C)1;                                                \
    for (int64_t token = token_begin; token < token_end; ++token) {                             \
        const int64_t b = token / job->seq, s = token % job->seq;                               \
        const int64_t index = b * job->rows_stride[0] + s * job->rows_stride[1];                 \
        const int64_t row = job->rows != NULL ? job->rows[index] : index + job->row_offset;      \
        for (int64_t i = 0; i < half; ++i) {                                                     \
            cos_row[i] = cos_table[row * job->table_stride[0] + i * job->table_stride[1]];       \
            sin_row[i] = sign * sin_table[row * job->table_stride[0] + i * job->table_stride[1]]; \
        }                                                                                        \
        for (int64_t t = 0; t < job->tensor_count; ++t) {                                       \
            const rope_tensor *x = &job->tensors[t];                                             \
            const int64_t in_d = x->input_stride[3], out_d = x->output_stride[3];                \
            for (int64_t h = 0; h < x->heads; ++h) {                                             \
                const T *in = (const T *)x->input + b * x->input_stride[0]                       \
                              + s * x->input_stride[1] + h * x->input_stride[2];                 \
                T *out = (T *)x->output + b * x->output_stride[0] + s * x->output_stride[1]      \
                         + h * x->output_stride[2];                                              \
                NAME##_head(in, out, in_d, out_d, cos_row, sin_row, half, step, partner);        \
                if (job->copy_tail) {                                                            \
                    for (int64_t j = 2 * half; j < x->head_dim; ++j) out[j * out_d] = in[j * in_d]; \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
}

DEFINE_KERNEL(rotate_float32, float, float, LOAD_SAME, STORE_SAME)
DEFINE_KERNEL(rotate_bfloat16, uint16_t, float, bf16_load, bf16_store)
DEFINE_KERNEL(rotate_float64, double, double, LOAD_SAME, STORE_SAME)

/* Returns 0, or 2 when the scratch rows cannot be allocated. */
static int rotate_tokens(const rope_job *job, int64_t token_begin, int64_t token_end) {
    const size_t width = job->dtype == 2 ? sizeof(double) : sizeof(float);
    void *scratch = malloc(2 * (size_t)(job->half > 0 ? job->half : 1) * width);
    if (scratch == NULL) return 2;
    if (job->dtype == 0) {
        rotate_float32(job, token_begin, token_end, (float *)scratch, (float *)scratch + job->half);
    } else if (job->dtype == 1) {
        rotate_bfloat16(job, token_begin, token_end, (float *)scratch, (float *)scratch + job->half);
    } else {
        rotate_float64(job, token_begin, token_end, (double *)scratch, (double *)scratch + job->half);
    }
    free(scratch);
    return 0;
}

typedef struct {
    const rope_job *job;
    int64_t token_begin, token_end;
    int status;
} rope_slice;

static void *rotate_slice(void *argument) {
    rope_slice *slice = (rope_slice *)argument;
    slice->status = rotate_tokens(slice->job, slice->token_begin, slice->token_end);
    return NULL;
}

/*
 * Ask Linux to back the 2 MiB-aligned part of [address, address + bytes) with transparent
 * huge pages, before anything writes there. A fresh output of a large call otherwise takes
 * one page fault per 4 KiB page, and those faults cost more than the rotation itself. This
 * is what torch's CPU allocator does for every allocation when THP_MEM_ALLOC_ENABLE=1
 * (c10/core/impl/alloc_cpu.cpp). Returns madvise's result, or 0 where it does not apply.
 */
int ropekit_advise_huge_pages(void *address, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)2 << 20;
    const uintptr_t begin = ((uintptr_t)address + huge - 1) & ~(huge - 1);
    const uintptr_t end = ((uintptr_t)address + (uintptr_t)bytes) & ~(huge - 1);
    if (bytes > 0 && end > begin) return madvise((void *)begin, end - begin, MADV_HUGEPAGE);
#else
    (void)address;
    (void)bytes;
#endif
    return 0;
}

#define MAX_THREADS 256

/*
 * Rotate every token of job on up to `threads` threads (the calling thread included).
 * Returns 0 on success, 1 for an unknown dtype, 2 when scratch memory cannot be allocated.
 * A thread that fails to start has its share run on the calling thread.
 */
int ropekit_rotate(const rope_job *job, int64_t threads) {
    if (job->dtype < 0 || job->dtype > 2) return 1;
    const int64_t tokens = job->batch * job->seq;
    if (threads > tokens) threads = tokens;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads <= 1) return rotate_tokens(job, 0, tokens);

    pthread_t handles[MAX_THREADS];
    rope_slice slices[MAX_THREADS];
    int started[MAX_THREADS];
    for (int64_t i = 0; i < threads; ++i) {
        slices[i].job = job;
        slices[i].token_begin = tokens * i / threads;
        slices[i].token_end = tokens * (i + 1) / threads;
        slices[i].status = 0;
    }
    for (int64_t i = 1; i < threads; ++i) {
        started[i] = pthread_create(&handles[i], NULL, rotate_slice, &slices[i]) == 0;
        if (!started[i]) rotate_slice(&slices[i]);
    }
    rotate_slice(&slices[0]);
    int status = slices[0].status;
    for (int64_t i = 1; i < threads; ++i) {
        if (started[i]) pthread_join(handles[i], NULL);
        if (slices[i].status != 0) status = slices[i].status;
    }
    return status;
}
"""


class RopeTensor(ctypes.Structure):
    _fields_ = [
        ("input", ctypes.c_void_p),
        ("output", ctypes.c_void_p),
        ("heads", ctypes.c_int64),
        ("head_dim", ctypes.c_int64),
        ("input_stride", ctypes.c_int64 * 4),
        ("output_stride", ctypes.c_int64 * 4),
    ]


class RopeJob(ctypes.Structure):
    _fields_ = [
        ("tensors", RopeTensor * 2),
        ("tensor_count", ctypes.c_int64),
        ("batch", ctypes.c_int64),
        ("seq", ctypes.c_int64),
        ("half", ctypes.c_int64),
        ("cos", ctypes.c_void_p),
        ("sin", ctypes.c_void_p),
        ("table_stride", ctypes.c_int64 * 2),
        ("rows", ctypes.c_void_p),
        ("rows_stride", ctypes.c_int64 * 2),
        ("row_offset", ctypes.c_int64),
        ("dtype", ctypes.c_int32),
        ("interleaved", ctypes.c_int32),
        ("conjugate", ctypes.c_int32),
        ("copy_tail", ctypes.c_int32),
    ]


def cache_dir() -> Path:
    """Return the folder for the compiled library, under torch's extensions folder."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is None:
        cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(cache_home, "torch_extensions")
    return Path(root) / "ropekit_rope_cpu"


def find_compiler() -> str | None:
    """Return the C compiler to use: $CC when set (even if missing), else cc, gcc or clang."""
    if os.environ.get("CC"):
        return shutil.which(os.environ["CC"])
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def build(compiler: str, folder: Path, flags: tuple[str, ...] = C_FLAGS) -> Path:
    """Compile the kernel into ``folder`` unless a build of the same source is there; return its path.

    The library is written to a temporary name and renamed into place, so processes that
    build at the same time never load a half-written file.
    """
    key = "\n".join((C_SOURCE, compiler, " ".join(flags), platform.machine()))
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    library = folder / f"rope_cpu_{digest}.so"
    if library.is_file():
        return library

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch, atomic_path(library) as output:
        source = Path(scratch) / "rope_cpu.c"
        source.write_text(C_SOURCE)
        subprocess.run(
            [compiler, *flags, str(source), "-o", str(output)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
    return library


@functools.cache
def load_library() -> ctypes.CDLL | None:
    """Build (once per machine) and load the kernel; return None, logging one warning, on failure."""
    compiler = find_compiler()
    if compiler is None:
        logger.warning(
            "no C compiler found (set CC, or install cc, gcc or clang); the CPU RoPE kernel falls back to torch operations"
        )
        return None
    try:
        return open_library(build_with_fallbacks(compiler))
    except subprocess.CalledProcessError as error:
        logger.warning(
            "building the CPU RoPE kernel with %s failed, so it falls back to torch operations: %s",
            compiler,
            error.stderr.strip()[-500:],
        )
        return None
    except (OSError, subprocess.SubprocessError) as error:
        logger.warning("the CPU RoPE kernel is unavailable, so it falls back to torch operations: %s", error)
        return None


# Builds to try in order, from the most per-CPU code to none. Per-CPU clones need ifunc
# support from the C library (glibc has it, musl does not).
BUILD_VARIANTS = ((), ("-DROPEKIT_NO_AVX512_CLONE",), ("-DROPEKIT_NO_CLONES",))


def build_with_fallbacks(compiler: str) -> Path:
    """Build the first variant of BUILD_VARIANTS that compiles; raise the last variant's error if none does."""
    for extra_flags in BUILD_VARIANTS[:-1]:
        try:
            return build(compiler, cache_dir(), (*C_FLAGS, *extra_flags))
        except subprocess.CalledProcessError:
            logger.debug("building the CPU RoPE kernel with %s failed; trying a build with fewer CPU clones", extra_flags)
    return build(compiler, cache_dir(), (*C_FLAGS, *BUILD_VARIANTS[-1]))


def open_library(path: Path) -> ctypes.CDLL:
    """Load a built kernel and declare the signature of its entry point."""
    library = ctypes.CDLL(str(path))
    library.ropekit_rotate.argtypes = [ctypes.POINTER(RopeJob), ctypes.c_int64]
    library.ropekit_rotate.restype = ctypes.c_int
    library.ropekit_advise_huge_pages.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    library.ropekit_advise_huge_pages.restype = ctypes.c_int
    return library


# torch.compile treats the result as a constant of the traced graph instead of tracing the build.
@torch.compiler.assume_constant_result
def available() -> bool:
    return load_library() is not None


def describe_tensor(source: torch.Tensor, target: torch.Tensor) -> RopeTensor:
    return RopeTensor(
        input=source.data_ptr(),
        output=target.data_ptr(),
        heads=source.shape[2],
        head_dim=source.shape[3],
        input_stride=(ctypes.c_int64 * 4)(*source.stride()),
        output_stride=(ctypes.c_int64 * 4)(*target.stride()),
    )


def advise_huge_pages(library: ctypes.CDLL, source: torch.Tensor, target: torch.Tensor) -> None:
    """Ask for huge pages under a large out-of-place output before the kernel first writes it."""
    if target.data_ptr() == source.data_ptr():
        return
    storage = target.untyped_storage()
    if storage.nbytes() >= HUGE_PAGE_ADVICE_BYTES:
        library.ropekit_advise_huge_pages(storage.data_ptr(), storage.nbytes())


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
    """Rotate q into q_out and k into k_out ([batch, seq, heads, head_dim] views on the CPU).

    cos and sin are [table_rows, rotary_dim // 2] in float32 (float64 for float64 q and k).
    rows is an int64 [batch, seq] tensor of table rows, or an ``AffineRows`` formula. ``conjugate`` rotates by -angle (the
    backward); ``copy_tail`` copies the channels past rotary_dim (False when writing in place).
    """
    library = load_library()
    if library is None:
        raise RuntimeError("the CPU RoPE kernel is unavailable; see the warning logged when it failed to build")
    if cos.stride() != sin.stride():
        # The kernel walks both tables with one pair of strides.
        cos, sin = cos.contiguous(), sin.contiguous()

    batch, seq = q.shape[:2]
    rows_tensor, rows_stride, row_offset = row_arguments(rows)
    job = RopeJob(
        tensors=(RopeTensor * 2)(describe_tensor(q, q_out), describe_tensor(k, k_out)),
        tensor_count=2,
        batch=batch,
        seq=seq,
        half=cos.shape[1],
        cos=cos.data_ptr(),
        sin=sin.data_ptr(),
        table_stride=(ctypes.c_int64 * 2)(*cos.stride()),
        rows=None if rows_tensor is None else rows_tensor.data_ptr(),
        rows_stride=(ctypes.c_int64 * 2)(*rows_stride),
        row_offset=row_offset,
        dtype=DTYPE_CODES[q.dtype],
        interleaved=int(interleaved),
        conjugate=int(conjugate),
        copy_tail=int(copy_tail),
    )
    if huge_pages_enabled():  # also rejects an invalid ROPEKIT_HUGE_PAGES on every call, not only large ones
        for source, target in ((q, q_out), (k, k_out)):
            advise_huge_pages(library, source, target)
    elements = q.numel() + k.numel()
    threads = max(1, min(torch.get_num_threads(), elements // ELEMENTS_PER_THREAD))
    status = library.ropekit_rotate(ctypes.byref(job), threads)
    if status == 2:
        raise MemoryError("the CPU RoPE kernel could not allocate its scratch rows")
    if status != 0:
        raise RuntimeError(f"the CPU RoPE kernel rejected the call with status {status} (dtype {q.dtype})")
