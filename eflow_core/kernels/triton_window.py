"""Position-banded window attention in Triton (FlashAttention-2 style), forward and backward.

Tokens are sorted by their original raster position, so the keys visible to a query form one
contiguous index range. On the host, `torch.searchsorted` gives, per query i, the first visible key
lo[i] and one past the last hi[i] (and the transposed table per key for the backward). A block of
queries [m0, m1) then needs keys [lo[m0], hi[m1-1]); every key in [lo[m1-1], hi[m0]) is visible
to all of its queries. The kernels walk that range in three phases: masked edge blocks, mask-free
interior blocks (no position loads, no compares), masked edge blocks. Dropped-token sequences only
visit reachable keys. The tables depend on positions only, not on block sizes, so autotuning is free
to pick block sizes.

Numerics: fp16/bf16 (or fp32) inputs, fp32 accumulation, online softmax in base 2 (exp2) with the
scale folded into log2(e)/sqrt(D); the forward saves lse2 = log2(sum exp2(...)) per query (+inf for a
query with no visible key, so its backward probabilities are 0 and its output is 0). Backward: a
preprocessing kernel computes delta = rowsum(o * do); a dk/dv kernel iterates over the query blocks
of each key block; a dq kernel over the key blocks of each query block; no atomics (the default,
"split"). The "atomic" backward (EFLOW_TRITON_BWD=atomic) drops the dq kernel: the dk/dv kernel adds
each key block's share of dq into an fp32 buffer with atomics (5 block matmuls instead of 7). With TMA
descriptors on, each (key block, query block) share goes in as one bulk reduction of the whole tile
(`tensor_descriptor.atomic_add`, FlashAttention-3's way) instead of one atomic per element.

Loads: on Hopper (CUDA capability >= 9) the streamed tiles (K, V in the forward and dq kernels; Q, dO
and the per-query lse2 and delta vectors in the dk/dv kernel) come through TMA tensor descriptors;
otherwise through pointer arithmetic (EFLOW_TRITON_TMA, see below). Both paths are tested under the
interpreter. The vectors are copied by the preprocessing kernel into rows padded to a multiple of 4
entries (16 bytes), and the dk/dv kernel starts its query range at a multiple of 4, as Triton's 1-D
descriptor loads require. One bulk copy per vector and step replaced 16 per-entry copies per thread
each and cut that kernel from 4.65 to 4.09 ms at N = 32,760 on an H200 (docs/BENCHMARKS.md §3 run G).

On Hopper (CUDA capability 9.x), fp16/bf16 with head dim 64 or 128, the forward and the dq kernel are
replaced by warp-specialised Gluon kernels with the same arguments (eflow_core/kernels/gluon_window.py; EFLOW_GLUON,
see below): forward + backward 1.27-1.29x FlexAttention at N = 32,760 on an H200 (BENCHMARKS §3 run H).

Under TRITON_INTERPRET=1 (CPU tests) each kernel uses one small config; note the interpreter computes
bf16 tl.dot wrongly, so interpreted tests use fp32/fp16.
"""
from __future__ import annotations

import math
import os
import warnings

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
LOG2E = 1.4426950408889634
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128, 256)
# fp32 entries per 16 bytes: lse2 / delta rows are padded to, and dk/dv query ranges start at, multiples
# of this, as Triton's 1-D descriptor loads need 16-byte aligned starts
VECTOR_ALIGN = tl.constexpr(4)


def _configs(gpu_list, interp):
    """triton.Config list: several on a GPU (autotuned), exactly one under the interpreter. Entries are
    (BLOCK_M, BLOCK_N, num_warps, num_stages) or that plus a dict of extra constexprs and "maxnreg"."""
    if INTERPRET:
        return [triton.Config(interp, num_warps=4, num_stages=1)]
    configs = []
    for m, n, w, s, *extra in gpu_list:
        extra = dict(extra[0]) if extra else {}
        maxnreg = extra.pop("maxnreg", None)
        configs.append(triton.Config({"BLOCK_M": m, "BLOCK_N": n, **extra}, num_warps=w, num_stages=s,
                                     maxnreg=maxnreg))
    return configs


# (BLOCK_M, BLOCK_N, num_warps, num_stages[, extra]). Chosen from ptxas resource usage for sm_90, bf16,
# head dim 128 with TMA loads (registers, spills inside the loops, shared memory <= 227 KiB). In the
# dk/dv kernel BLOCK_N is the key block it owns and BLOCK_M the query step. Configs that do not fit
# (fp32, head dim 256) are skipped by autotune (OutOfResources); the small last config of each list
# keeps those compilable.
# - Several CTAs per SM: an H100/H200 SM has 64 K registers and 228 KiB of shared memory. Independent
#   CTAs overlap one's exponentials with another's matmuls, which the two warpgroups of one 8-warp CTA,
#   kept in step by its barriers, do not. 64 x 64 with 4 warps and 2 stages fits two (<= 255 registers
#   x 128 threads, <= 113 KiB each): in the dk/dv kernel this cut 5.10 ms to 4.60 ms at N = 32,760 on an
#   H200 (BENCHMARKS §3 run F). The forward's 64 x 32 tiles fit three (140 registers, 65 KiB with 3
#   stages) or, capped at 128 registers ("maxnreg"; the few spills fall outside the loop), four.
# - Triton's fused-attention tutorial shapes for Hopper (4 warps, 5 stages; 32 x 128 for dk/dv, 128 x
#   32 for dq) spill 3.4 KB and 0.8 KB inside their loops with Triton 3.6 and never won (runs D, E).
#   Dropped after run G, where they lost by 7% or more: 64 x 64 dk/dv with 8 warps (its two warpgroups
#   split the 64 keys' columns, so P and dS go through shared memory) and 64 x 32 dq tiles.
_FWD = [(64, 64, 4, 3), (64, 64, 4, 2), (128, 64, 8, 3), (128, 128, 8, 2), (64, 32, 4, 2, {"maxnreg": 128}),
        (32, 32, 4, 2)]
_BWD_DKDV = [(64, 64, 4, 2), (64, 128, 8, 3), (32, 64, 4, 3), (32, 128, 8, 3), (16, 32, 4, 2)]
_BWD_DQ = [(128, 64, 8, 3), (64, 64, 4, 2), (64, 128, 8, 2), (32, 16, 4, 2)]
# Autotuning is keyed by head dim, precision, load path and SIZE_CLASS = bit length of the longer
# sequence: a configuration tuned at one length is not reused at a 4x shorter or longer one (the
# band's trip count, and with it the best tile, changes with dropped tokens).
_TUNE_KEY = ["HEAD_DIM", "PRECISION", "USE_DESC", "SIZE_CLASS"]


@triton.jit
def _phase_bounds(lo, full_lo, full_hi, hi, BLOCK: tl.constexpr):
    """Split [lo, hi) into masked [lo, a), mask-free [a, b) (whole blocks inside [full_lo, full_hi)),
    masked [b, hi)."""
    a = lo + tl.cdiv(tl.maximum(full_lo - lo, 0), BLOCK) * BLOCK
    a = tl.minimum(a, hi)
    b = a + (tl.maximum(full_hi - a, 0) // BLOCK) * BLOCK
    return a, b


@triton.jit
def _block_range(LO, HI, first, last, BLOCK: tl.constexpr, ALIGN: tl.constexpr = 1):
    """For the rows first..last of one block, with per-row visible ranges [LO[i], HI[i]) that grow
    with i: the range [lo, hi) some row reaches, split into masked [lo, a), mask-free [a, c) (reached
    by every row) and masked [c, hi). lo is rounded down to a multiple of ALIGN (the rows added are
    masked out: they see none of the block's rows). Returns (lo, a, c, hi)."""
    lo = tl.load(LO + first)
    lo = lo - lo % ALIGN
    hi = tl.load(HI + last)
    a, c = _phase_bounds(lo, tl.load(LO + last), tl.load(HI + first), hi, BLOCK)
    return lo, a, c, hi


@triton.jit
def _rows_source(base, n_rows, stride, HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr, USE_DESC: tl.constexpr):
    """What `_load_rows` reads from: a TMA tensor descriptor over the (n_rows, HEAD_DIM) matrix at
    `base`, or the base pointer itself."""
    if USE_DESC:
        src = tl.make_tensor_descriptor(base, [n_rows, HEAD_DIM], [stride, 1], [BLOCK, HEAD_DIM])
    else:
        src = base
    return src


@triton.jit
def _vector_source(base, n, BLOCK: tl.constexpr, USE_DESC: tl.constexpr):
    """What `_load_vector` reads from: a 1-D TMA descriptor over the n fp32 entries at `base` (16-byte
    aligned: n is padded to a multiple of 4; loads must start at multiples of 4 too), or the base
    pointer itself."""
    if USE_DESC:
        src = tl.make_tensor_descriptor(base, [n], [1], [BLOCK])
    else:
        src = base
    return src


@triton.jit
def _load_rows(src, stride, row0, end, offs_d,
               BLOCK: tl.constexpr, MASKED: tl.constexpr, USE_DESC: tl.constexpr):
    """Rows [row0, row0 + BLOCK) of a (rows, HEAD_DIM) matrix. Pointer path: rows >= end read as 0
    when MASKED. Descriptor path: rows past the matrix read as 0, rows in [end, rows) are real data
    that the caller masks out."""
    if USE_DESC:
        x = src.load([row0, 0])
    else:
        offs = row0 + tl.arange(0, BLOCK)
        if MASKED:
            x = tl.load(src + offs[:, None] * stride + offs_d[None, :], mask=(offs < end)[:, None], other=0.0)
        else:
            x = tl.load(src + offs[:, None] * stride + offs_d[None, :])
    return x


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, qpos, k_src, v_src, kpos_base, stride_kn, stride_vn, offs_d,
               start, end, radius, qk_scale,
               BLOCK_N: tl.constexpr, MASKED: tl.constexpr, PRECISION: tl.constexpr, USE_DESC: tl.constexpr):
    for n0 in range(start, end, BLOCK_N):
        k = _load_rows(k_src, stride_kn, n0, end, offs_d, BLOCK_N, MASKED, USE_DESC)
        v = _load_rows(v_src, stride_vn, n0, end, offs_d, BLOCK_N, MASKED, USE_DESC)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)                       # (BLOCK_M, BLOCK_N)
        if MASKED:
            offs_n = n0 + tl.arange(0, BLOCK_N)
            inside = offs_n < end
            kpos = tl.load(kpos_base + offs_n, mask=inside, other=0)
            visible = (tl.abs(qpos[:, None] - kpos[None, :]) <= radius) & inside[None, :]
            s = tl.where(visible, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)                 # rows with nothing yet
        else:
            m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
            m_use = m_new
        p = tl.exp2(s * qk_scale - m_use[:, None])           # the scale goes into one FMA before each exp2
        alpha = tl.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.autotune(configs=_configs(_FWD, {"BLOCK_M": 32, "BLOCK_N": 16}), key=_TUNE_KEY)
@triton.jit
def _window_fwd(Q, K, V, O, LSE, QPOS, KPOS, KLO, KHI,
                sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
                H, NQ, NK, radius, qk_scale, SIZE_CLASS,
                HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr, USE_DESC: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    m0 = pid_m * BLOCK_M
    m_last = tl.minimum(m0 + BLOCK_M, NQ) - 1
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < NQ

    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqn + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    qpos = tl.load(QPOS + b * NQ + offs_m, mask=row_ok, other=0)
    lo, a, c, hi = _block_range(KLO + b * NQ, KHI + b * NQ, m0, m_last, BLOCK_N)   # keys of this query block

    k_src = _rows_source(K + b * skb + h * skh, NK, skn, HEAD_DIM, BLOCK_N, USE_DESC)
    v_src = _rows_source(V + b * svb + h * svh, NK, svn, HEAD_DIM, BLOCK_N, USE_DESC)
    kpos_base = KPOS + b * NK
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, qpos, k_src, v_src, kpos_base, skn, svn, offs_d,
                               lo, a, radius, qk_scale, BLOCK_N, True, PRECISION, USE_DESC)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, qpos, k_src, v_src, kpos_base, skn, svn, offs_d,
                               a, c, radius, qk_scale, BLOCK_N, False, PRECISION, USE_DESC)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, qpos, k_src, v_src, kpos_base, skn, svn, offs_d,
                               c, hi, radius, qk_scale, BLOCK_N, True, PRECISION, USE_DESC)

    has_key = l_i > 0.0
    out = acc / tl.where(has_key, l_i, 1.0)[:, None]
    lse2 = tl.where(has_key, m_i + tl.log2(tl.where(has_key, l_i, 1.0)), float("inf"))
    tl.store(O + b * sob + h * soh + offs_m[:, None] * son + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=row_ok[:, None])
    tl.store(LSE + bh * NQ + offs_m, lse2, mask=row_ok)


@triton.jit
def _bwd_preprocess(O, DO, LSE, LSE_PAD, DELTA, sob, soh, son, sdb, sdh, sdn, H, NQ, NQP,
                    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta = rowsum(o * do), and lse2 copied, into rows padded to NQP entries (a multiple of 4, for
    16-byte aligned TMA rows); the padding holds lse2 = +inf and delta = 0 (probability 0)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < NQ
    o = tl.load(O + b * sob + h * soh + offs_m[:, None] * son + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + offs_m[:, None] * sdn + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    lse = tl.load(LSE + bh * NQ + offs_m, mask=row_ok, other=float("inf"))
    tl.store(DELTA + bh * NQP + offs_m, delta, mask=offs_m < NQP)
    tl.store(LSE_PAD + bh * NQP + offs_m, lse, mask=offs_m < NQP)


@triton.jit
def _load_vector(src, row0, end, BLOCK: tl.constexpr, MASKED: tl.constexpr, USE_DESC: tl.constexpr, other):
    """Entries [row0, row0 + BLOCK) of a per-query fp32 vector (lse2, delta). Pointer path: entries >= end
    read as `other` when MASKED. Descriptor path (one bulk copy instead of one load per entry and
    thread): entries past the padded row read as 0, those in [end, padded end) are real or padding
    (+inf lse2, 0 delta); the caller masks them out."""
    if USE_DESC:
        x = src.load([row0])
    else:
        offs = row0 + tl.arange(0, BLOCK)
        if MASKED:
            x = tl.load(src + offs, mask=offs < end, other=other)
        else:
            x = tl.load(src + offs)
    return x


@triton.jit
def _dkdv_inner(dk, dv, k, v, kpos, q_src, do_src, qpos_base, lse_src, delta_src, sqn, sdn, offs_d,
                start, end, radius, qk_scale, dq_dst, sm_scale,
                BLOCK_M: tl.constexpr, MASKED: tl.constexpr, PRECISION: tl.constexpr, USE_DESC: tl.constexpr,
                FUSE_DQ: tl.constexpr, HEAD_DIM: tl.constexpr, TMA_ATOMIC: tl.constexpr):
    for m0 in range(start, end, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        q = _load_rows(q_src, sqn, m0, end, offs_d, BLOCK_M, MASKED, USE_DESC)
        do = _load_rows(do_src, sdn, m0, end, offs_d, BLOCK_M, MASKED, USE_DESC)
        lse = _load_vector(lse_src, m0, end, BLOCK_M, MASKED, USE_DESC, float("inf"))
        delta = _load_vector(delta_src, m0, end, BLOCK_M, MASKED, USE_DESC, 0.0)
        s_t = tl.dot(k, tl.trans(q), input_precision=PRECISION)                     # (BLOCK_N, BLOCK_M)
        p_t = tl.exp2(s_t * qk_scale - lse[None, :])
        if MASKED:
            inside = offs_m < end
            qpos = tl.load(qpos_base + offs_m, mask=inside, other=0)
            visible = (tl.abs(kpos[:, None] - qpos[None, :]) <= radius) & inside[None, :]
            p_t = tl.where(visible, p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=PRECISION)
        dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=PRECISION)
        if FUSE_DQ:      # FlashAttention-2 style: this key block's share of dq, added atomically in fp32
            dq_part = tl.dot(tl.trans(ds_t).to(k.dtype), k, input_precision=PRECISION) * sm_scale
            if TMA_ATOMIC:
                # one bulk reduction per tile: rows past NQ are clipped; rows in [end, NQ) add exact
                # zeros (their p, ds and dq share are 0: `visible` masks them)
                dq_dst.atomic_add([m0, 0], dq_part)
            else:
                dq_ptrs = dq_dst + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
                if MASKED:
                    tl.atomic_add(dq_ptrs, dq_part, mask=(offs_m < end)[:, None], sem="relaxed")
                else:
                    tl.atomic_add(dq_ptrs, dq_part, sem="relaxed")
    return dk, dv


@triton.autotune(configs=_configs(_BWD_DKDV, {"BLOCK_M": 16, "BLOCK_N": 32}),
                 key=_TUNE_KEY + ["FUSE_DQ", "TMA_ATOMIC"],
                 reset_to_zero=["DQ32"])          # autotuning reruns the kernel: its atomics must not pile up
@triton.jit
def _window_bwd_dkdv(Q, K, V, DO, DK, DV, LSE, DELTA, QPOS, KPOS, QLO, QHI, DQ32,
                     sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn,
                     sdkb, sdkh, sdkn, sdvb, sdvh, sdvn,
                     H, NQ, NQP, NK, radius, qk_scale, sm_scale, SIZE_CLASS,
                     HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr, USE_DESC: tl.constexpr,
                     FUSE_DQ: tl.constexpr, TMA_ATOMIC: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr):
    pid_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    n0 = pid_n * BLOCK_N
    n_last = tl.minimum(n0 + BLOCK_N, NK) - 1
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    col_ok = offs_n < NK

    k = tl.load(K + b * skb + h * skh + offs_n[:, None] * skn + offs_d[None, :], mask=col_ok[:, None], other=0.0)
    v = tl.load(V + b * svb + h * svh + offs_n[:, None] * svn + offs_d[None, :], mask=col_ok[:, None], other=0.0)
    kpos = tl.load(KPOS + b * NK + offs_n, mask=col_ok, other=0)
    # queries of this key block; with descriptors every query block starts 16-byte aligned in lse2 / delta
    lo, a, c, hi = _block_range(QLO + b * NK, QHI + b * NK, n0, n_last, BLOCK_M,
                                VECTOR_ALIGN if USE_DESC else 1)

    q_src = _rows_source(Q + b * sqb + h * sqh, NQ, sqn, HEAD_DIM, BLOCK_M, USE_DESC)
    do_src = _rows_source(DO + b * sdb + h * sdh, NQ, sdn, HEAD_DIM, BLOCK_M, USE_DESC)
    qpos_base = QPOS + b * NQ
    lse_src = _vector_source(LSE + bh * NQP, NQP, BLOCK_M, USE_DESC)          # padded rows of NQP entries
    delta_src = _vector_source(DELTA + bh * NQP, NQP, BLOCK_M, USE_DESC)
    dq_base = DQ32 + bh * NQ * HEAD_DIM          # (B, H, NQ, D) contiguous fp32; unused unless FUSE_DQ
    if TMA_ATOMIC and USE_DESC:
        dq_dst = tl.make_tensor_descriptor(dq_base, [NQ, HEAD_DIM], [HEAD_DIM, 1], [BLOCK_M, HEAD_DIM])
    else:
        dq_dst = dq_base
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dk, dv = _dkdv_inner(dk, dv, k, v, kpos, q_src, do_src, qpos_base, lse_src, delta_src, sqn, sdn, offs_d,
                         lo, a, radius, qk_scale, dq_dst, sm_scale, BLOCK_M, True, PRECISION, USE_DESC,
                         FUSE_DQ, HEAD_DIM, TMA_ATOMIC and USE_DESC)
    dk, dv = _dkdv_inner(dk, dv, k, v, kpos, q_src, do_src, qpos_base, lse_src, delta_src, sqn, sdn, offs_d,
                         a, c, radius, qk_scale, dq_dst, sm_scale, BLOCK_M, False, PRECISION, USE_DESC,
                         FUSE_DQ, HEAD_DIM, TMA_ATOMIC and USE_DESC)
    dk, dv = _dkdv_inner(dk, dv, k, v, kpos, q_src, do_src, qpos_base, lse_src, delta_src, sqn, sdn, offs_d,
                         c, hi, radius, qk_scale, dq_dst, sm_scale, BLOCK_M, True, PRECISION, USE_DESC,
                         FUSE_DQ, HEAD_DIM, TMA_ATOMIC and USE_DESC)
    tl.store(DK + b * sdkb + h * sdkh + offs_n[:, None] * sdkn + offs_d[None, :],
             (dk * sm_scale).to(DK.dtype.element_ty), mask=col_ok[:, None])
    tl.store(DV + b * sdvb + h * sdvh + offs_n[:, None] * sdvn + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=col_ok[:, None])


@triton.jit
def _dq_inner(dq, q, do, lse, delta, qpos, k_src, v_src, kpos_base, skn, svn, offs_d,
              start, end, radius, qk_scale,
              BLOCK_N: tl.constexpr, MASKED: tl.constexpr, PRECISION: tl.constexpr, USE_DESC: tl.constexpr):
    for n0 in range(start, end, BLOCK_N):
        k = _load_rows(k_src, skn, n0, end, offs_d, BLOCK_N, MASKED, USE_DESC)
        v = _load_rows(v_src, svn, n0, end, offs_d, BLOCK_N, MASKED, USE_DESC)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        p = tl.exp2(s * qk_scale - lse[:, None])
        if MASKED:
            offs_n = n0 + tl.arange(0, BLOCK_N)
            inside = offs_n < end
            kpos = tl.load(kpos_base + offs_n, mask=inside, other=0)
            visible = (tl.abs(qpos[:, None] - kpos[None, :]) <= radius) & inside[None, :]
            p = tl.where(visible, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)
    return dq


@triton.autotune(configs=_configs(_BWD_DQ, {"BLOCK_M": 32, "BLOCK_N": 16}), key=_TUNE_KEY)
@triton.jit
def _window_bwd_dq(Q, K, V, DO, DQ, LSE, DELTA, QPOS, KPOS, KLO, KHI,
                   sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn, sdqb, sdqh, sdqn,
                   H, NQ, NQP, NK, radius, qk_scale, sm_scale, SIZE_CLASS,
                   HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr, USE_DESC: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    m0 = pid_m * BLOCK_M
    m_last = tl.minimum(m0 + BLOCK_M, NQ) - 1
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < NQ

    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqn + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + offs_m[:, None] * sdn + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + bh * NQP + offs_m, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + bh * NQP + offs_m, mask=row_ok, other=0.0)
    qpos = tl.load(QPOS + b * NQ + offs_m, mask=row_ok, other=0)
    lo, a, c, hi = _block_range(KLO + b * NQ, KHI + b * NQ, m0, m_last, BLOCK_N)

    k_src = _rows_source(K + b * skb + h * skh, NK, skn, HEAD_DIM, BLOCK_N, USE_DESC)
    v_src = _rows_source(V + b * svb + h * svh, NK, svn, HEAD_DIM, BLOCK_N, USE_DESC)
    kpos_base = KPOS + b * NK
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    dq = _dq_inner(dq, q, do, lse, delta, qpos, k_src, v_src, kpos_base, skn, svn, offs_d,
                   lo, a, radius, qk_scale, BLOCK_N, True, PRECISION, USE_DESC)
    dq = _dq_inner(dq, q, do, lse, delta, qpos, k_src, v_src, kpos_base, skn, svn, offs_d,
                   a, c, radius, qk_scale, BLOCK_N, False, PRECISION, USE_DESC)
    dq = _dq_inner(dq, q, do, lse, delta, qpos, k_src, v_src, kpos_base, skn, svn, offs_d,
                   c, hi, radius, qk_scale, BLOCK_N, True, PRECISION, USE_DESC)
    tl.store(DQ + b * sdqb + h * sdqh + offs_m[:, None] * sdqn + offs_d[None, :],
             (dq * sm_scale).to(DQ.dtype.element_ty), mask=row_ok[:, None])


# ----------------------------------------------------------------------------------------------- host


def position_tables(q_pos: torch.Tensor, k_pos: torch.Tensor, radius: int):
    """Visible index ranges from ascending positions (all int32, contiguous).

    q_pos: (B, Nq), k_pos: (B, Nk). Returns (qpos32, kpos32, klo, khi, qlo, qhi):
    klo/khi (B, Nq): query i sees keys [klo[i], khi[i]); qlo/qhi (B, Nk): key j is seen by
    queries [qlo[j], qhi[j]). Self-attention (k_pos is q_pos) reuses the query tables for the keys:
    half the launches of this host-side step, which runs before every forward.
    """
    qp = q_pos.to(torch.int64).contiguous()
    r = int(radius)

    def ranges(sorted_pos, pos):                       # where [pos - r, pos + r] starts and ends in sorted_pos
        return (torch.searchsorted(sorted_pos, pos - r, right=False, out_int32=True),
                torch.searchsorted(sorted_pos, pos + r, right=True, out_int32=True))

    if k_pos is q_pos:
        qp32 = qp.to(torch.int32)
        klo, khi = ranges(qp, qp)
        return qp32, qp32, klo, khi, klo, khi
    kp = k_pos.to(torch.int64).contiguous()
    klo, khi = ranges(kp, qp)
    qlo, qhi = ranges(qp, kp)
    return qp.to(torch.int32), kp.to(torch.int32), klo, khi, qlo, qhi


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs: "tf32x3" (three tf32 tensor-core products, ~fp32 accuracy; plain tf32 would cost
    # ~1e-3 relative error, and "ieee" FMA dots spill badly and take minutes to compile for sm_90).
    # 16-bit inputs: tensor cores directly (the value only matters for fp32).
    return "tf32x3" if dtype == torch.float32 else "tf32"


def _size_class(nq: int, nk: int) -> int:
    """The autotune key's size bucket (see _TUNE_KEY)."""
    return max(nq, nk).bit_length()


def _strides(t: torch.Tensor):
    return t.stride(0), t.stride(1), t.stride(2)


# TMA tensor descriptors (Hopper+): K/V (forward, dq) and Q/dO (dk/dv) tiles are loaded by the copy
# engine instead of per-element pointers, which frees ~64 registers per thread (no spills at
# 128 x 64 tiles, head dim 128, measured with ptxas for sm_90) and lets loads pipeline.
# EFLOW_TRITON_TMA: "auto" (default: CUDA capability >= 9), "1" (wherever Triton supports it,
# including the interpreter), "0" (never). A failed descriptor launch switches to pointer loads.
_TMA = {"mode": os.environ.get("EFLOW_TRITON_TMA", "auto"), "broken": None}


# Backward: "split" (default: a dk/dv kernel and a dq kernel, no atomics; 7 block matmuls per visible
# pair) or "atomic" (FlashAttention-2 style: the dk/dv kernel also adds each key block's dq share into
# an fp32 buffer with atomics; 5 matmuls, plus atomic traffic: with TMA descriptors on, one bulk
# reduction per tile where this Triton has tensor_descriptor.atomic_add; still slower than "split" with
# dense bands, docs/BENCHMARKS.md §3 run E). EFLOW_TRITON_BWD picks one; the GPU benchmark
# (benchmarks/attention.py) times both. The atomic sums run in no fixed order, so dq is not bitwise
# reproducible from run to run (the trainer's exact resume holds with "split" only).
_BWD = {"mode": "split"}
BACKWARD_MODES = ("split", "atomic")


def set_backward_mode(mode: str) -> None:
    """One of BACKWARD_MODES (see above)."""
    if mode not in BACKWARD_MODES:
        raise ValueError(f"backward mode must be one of {BACKWARD_MODES}, got {mode!r}")
    _BWD["mode"] = mode


def backward_mode() -> str:
    return _BWD["mode"]


set_backward_mode(os.environ.get("EFLOW_TRITON_BWD", "split"))     # a typo fails here, not silently


# Gluon kernels: "auto" (default) runs the warp-specialised Gluon forward and dq kernels
# (eflow_core/kernels/gluon_window.py) on CUDA capability 9.x (their warpgroup MMAs exist on Hopper only) for
# fp16/bf16 with head dim 64 or 128 and TMA-compatible strides, and the Triton kernels elsewhere; "off"
# always runs the Triton kernels. EFLOW_GLUON picks one. A Gluon build or launch failure is recorded,
# warned about once, and the Triton kernels run from then on (same outputs).
GLUON_MODES = ("auto", "off")
_GLUON = {"mode": "auto", "broken": None}
GLUON_HEAD_DIMS = (64, 128)


def set_gluon_mode(mode: str) -> None:
    """One of GLUON_MODES (see above); also clears a recorded Gluon failure."""
    if mode not in GLUON_MODES:
        raise ValueError(f"Gluon mode must be one of {GLUON_MODES}, got {mode!r}")
    _GLUON["mode"], _GLUON["broken"] = mode, None


set_gluon_mode(os.environ.get("EFLOW_GLUON", "auto"))


def _gluon_module():
    """kernels.gluon_window, or None where it cannot be imported (no triton.experimental.gluon, or a
    Gluon API other than the one the kernels are written for)."""
    if INTERPRET:
        return None
    try:
        from eflow_core.kernels import gluon_window
    except Exception:                                  # noqa: BLE001 - any import failure means "not here"
        return None
    return gluon_window


def gluon_status() -> str:
    """One line: where the Gluon forward and dq kernels run, or why they do not."""
    if _GLUON["broken"]:
        return f"off: a Gluon kernel failed ({_GLUON['broken'][:200]})"
    if _GLUON["mode"] == "off":
        return "off: EFLOW_GLUON=off"
    if _gluon_module() is None:
        return "off: no usable triton.experimental.gluon"
    return (f"forward and dq on CUDA capability 9.x for fp16/bf16, head dims {GLUON_HEAD_DIMS}, 16-byte aligned "
            "rows; the Triton kernels elsewhere")


def _use_gluon(*tensors: torch.Tensor) -> bool:
    q = tensors[0]
    if _GLUON["mode"] != "auto" or _GLUON["broken"] or q.device.type != "cuda":
        return False
    if torch.cuda.get_device_capability(q.device)[0] != 9:
        return False
    if q.dtype not in (torch.float16, torch.bfloat16) or q.shape[-1] not in GLUON_HEAD_DIMS:
        return False
    return _use_descriptors(*tensors) and _gluon_module() is not None


def _try_gluon(name: str, nq: int, batch_heads: int, args) -> bool:
    """Launch the Gluon kernel `name` (autotuned) on the arguments of its Triton counterpart; on a build
    or launch failure record why, warn once, and return False (the caller runs the Triton kernel)."""
    gluon = _gluon_module()
    try:
        _ensure_allocator(args[0].device)             # the loader warp builds TMA descriptors in-kernel
        getattr(gluon, name)[gluon.grid(nq, batch_heads)](*args, HEAD_DIM=args[0].shape[-1])
        return True
    except Exception as exc:                           # noqa: BLE001 - fall back, keep the message
        _GLUON["broken"] = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"Triton window attention: the Gluon kernel {name} failed, using the Triton kernels "
                      f"({type(exc).__name__}: {str(exc)[:300]})")
        return False


def set_tma_mode(mode: str) -> None:
    """"auto", "1" or "0" (see above); also clears a recorded failure."""
    if mode not in ("auto", "1", "0"):
        raise ValueError(f"TMA mode must be 'auto', '1' or '0', got {mode!r}")
    _TMA["mode"], _TMA["broken"] = mode, None


def tma_status() -> str:
    """One line: whether the descriptor path is used and why (not), and whether the atomic backward's
    dq adds are bulk reductions."""
    if _TMA["broken"]:
        return f"off: a descriptor launch failed ({_TMA['broken'][:200]})"
    if not hasattr(tl, "make_tensor_descriptor"):
        return "off: this Triton has no tl.make_tensor_descriptor"
    status = {"0": "off: EFLOW_TRITON_TMA=0", "1": "on where supported (EFLOW_TRITON_TMA=1)"}.get(
        _TMA["mode"], "auto: on for CUDA capability >= 9 with 16-byte aligned rows")
    if _DESC_ATOMIC["broken"]:
        return (f"{status}; atomic backward: per-element dq atomics "
                f"(bulk reductions failed: {_DESC_ATOMIC['broken'][:120]})")
    return status + ("; atomic backward: bulk dq reductions" if _descriptor_atomics()
                     else "; atomic backward: per-element dq atomics")


def _tuned_kernels() -> dict:
    """The autotuned kernels by the names the benchmarks report."""
    kernels = {"forward": _window_fwd, "backward dk/dv": _window_bwd_dkdv, "backward dq": _window_bwd_dq}
    gluon = _gluon_module()
    if gluon is not None:
        kernels.update({"forward (gluon)": gluon.window_fwd_ws, "backward dq (gluon)": gluon.window_bwd_dq_ws})
    return kernels


def autotune_choices() -> dict[str, dict[str, str]]:
    """The configuration autotune picked per kernel and key so far: {kernel: {key: config}} (benchmarks)."""
    return {name: {str(key): str(config) for key, config in getattr(kernel, "cache", {}).items()}
            for name, kernel in _tuned_kernels().items()}


def autotune_timings() -> dict[str, dict[str, float]]:
    """Median ms of every configuration in each kernel's latest autotuning run (Triton's own
    benchmark, on the arguments of that call): {kernel: {config: ms}}, fastest first (benchmarks)."""
    out = {}
    for name, kernel in _tuned_kernels().items():
        timings = getattr(kernel, "configs_timings", None) or {}
        ms = {str(config): float(t[0] if isinstance(t, (list, tuple)) else t) for config, t in timings.items()}
        out[name] = dict(sorted(ms.items(), key=lambda item: item[1]))
    return out


def _use_descriptors(*tensors: torch.Tensor) -> bool:
    mode = _TMA["mode"]
    if mode == "0" or _TMA["broken"] or not hasattr(tl, "make_tensor_descriptor"):
        return False
    dev = tensors[0].device
    if dev.type == "cuda":
        if not hasattr(triton, "set_allocator"):
            return False
        if mode == "auto" and torch.cuda.get_device_capability(dev)[0] < 9:
            return False
    elif not (INTERPRET and mode == "1"):
        return False
    for t in tensors:                       # TMA: 16-byte aligned base and row strides
        if t.data_ptr() % 16 or any((st * t.element_size()) % 16 for st in t.stride()[:-1]):
            return False
    return True


_DESC_ATOMIC = {"broken": None}     # why the bulk dq reductions failed, once they have


def _descriptor_atomics() -> bool:
    """Whether the atomic backward may add dq tiles through a descriptor (a bulk TMA reduction): this
    Triton has `tensor_descriptor.atomic_add` (the interpreter does not implement it) and it has not
    failed here. Applies only where the kernel also runs with descriptors (USE_DESC)."""
    return (not INTERPRET and not _DESC_ATOMIC["broken"]
            and hasattr(getattr(tl, "tensor_descriptor", None), "atomic_add"))


def _scratch(size: int, alignment: int, stream):
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _ensure_allocator(device: torch.device) -> None:
    """In-kernel descriptors need a small global scratch buffer per launch (Triton's allocator hook).
    Triton keeps the allocator in a ContextVar, so it is set on every launch: autograd runs the
    backward kernels in its own thread, where a value set once in the main thread is not seen."""
    if device.type == "cuda":
        triton.set_allocator(_scratch)


def _try_descriptor_launch(kernel, grid, args, broken: dict, fallback: str, **meta) -> bool:
    """Launch a variant that uses tensor descriptors (USE_DESC=True); if it fails to compile or launch,
    record why in `broken` (so it is not tried again), warn once that `fallback` runs instead, and
    return False."""
    try:
        _ensure_allocator(args[0].device)
        kernel[grid](*args, USE_DESC=True, **meta)
        return True
    except Exception as exc:                           # noqa: BLE001 - fall back, keep the message
        broken["broken"] = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"Triton window attention: {fallback} ({type(exc).__name__}: {str(exc)[:300]})")
        return False


def _launch(kernel, grid, args, use_desc: bool, **meta) -> None:
    """Launch with USE_DESC; if the descriptor variant fails, run the pointer-load variant (same results)."""
    if use_desc and _try_descriptor_launch(kernel, grid, args, _TMA,
                                           "TMA descriptor path failed, using pointer loads", **meta):
        return
    kernel[grid](*args, USE_DESC=False, **meta)


def _check(q, k, v, q_pos, k_pos):
    B, H, nq, D = q.shape
    if k.shape[:2] != (B, H) or v.shape != k.shape or k.shape[-1] != D:
        raise ValueError(f"triton window attention needs q (B,H,Nq,D), k and v (B,H,Nk,D); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if D not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"triton window attention supports head dims {SUPPORTED_HEAD_DIMS}, got {D}")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32) or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"triton window attention needs q, k, v of one dtype fp16/bf16/fp32, got {q.dtype}")
    if q_pos.shape != (B, nq) or k_pos.shape != (B, k.shape[2]):
        raise ValueError("q_pos must be (B, Nq) and k_pos (B, Nk)")


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


# The kernels are wrapped as torch custom ops (forward and backward), so torch.compile treats each
# launch as one opaque node with a known output shape (register_fake) instead of tracing into
# Triton's launcher, and compiled model blocks keep these kernels.
@torch.library.custom_op("eflow::triton_window_fwd", mutates_args=())
def _window_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qpos32: torch.Tensor, kpos32: torch.Tensor,
                   klo: torch.Tensor, khi: torch.Tensor, qlo: torch.Tensor, qhi: torch.Tensor,
                   radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(o (B, H, Nq, D) in q's dtype, lse2 (B, H, Nq) fp32). qlo/qhi are unused here; they are inputs
    so that the backward can save them."""
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    B, H, nq, D = q.shape
    nk = k.shape[2]
    o = torch.empty(B, H, nq, D, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, H, nq, dtype=torch.float32, device=q.device)
    if nq > 0:
        if nk == 0:
            o.zero_()
            lse.fill_(float("inf"))
        else:
            args = (q, k, v, o, lse, qpos32, kpos32, klo, khi, *_strides(q), *_strides(k), *_strides(v),
                    *_strides(o), H, nq, nk, int(radius), LOG2E / math.sqrt(D), _size_class(nq, nk))
            if not (_use_gluon(q, k, v) and _try_gluon("window_fwd_ws", nq, B * H, args)):
                grid = lambda meta: (triton.cdiv(nq, meta["BLOCK_M"]), B * H)
                _launch(_window_fwd, grid, args, _use_descriptors(k, v), HEAD_DIM=D, PRECISION=_precision(q.dtype))
    return o, lse


@_window_fwd_op.register_fake
def _(q, k, v, qpos32, kpos32, klo, khi, qlo, qhi, radius):
    B, H, nq, D = q.shape
    return q.new_empty(B, H, nq, D), q.new_empty(B, H, nq, dtype=torch.float32)


def backward_vectors(o: torch.Tensor, do: torch.Tensor, lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The backward kernels' per-query vectors from o, do (B, H, Nq, D) and lse2 (B, H, Nq): (lse2, delta =
    rowsum(o * do)), each (B, H, NQP) fp32 with rows padded to NQP, a multiple of VECTOR_ALIGN (16 bytes,
    for TMA); the padding holds lse2 = +inf and delta = 0."""
    B, H, nq, D = o.shape
    nqp = triton.cdiv(nq, VECTOR_ALIGN.value) * VECTOR_ALIGN.value
    lse_pad = torch.empty(B, H, nqp, dtype=torch.float32, device=o.device)
    delta = torch.empty(B, H, nqp, dtype=torch.float32, device=o.device)
    pre_block = 64
    _bwd_preprocess[(triton.cdiv(nqp, pre_block), B * H)](o, do, lse, lse_pad, delta, *_strides(o), *_strides(do),
                                                          H, nq, nqp, HEAD_DIM=D, BLOCK_M=pre_block)
    return lse_pad, delta


@torch.library.custom_op("eflow::triton_window_bwd", mutates_args=())
def _window_bwd_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                   lse: torch.Tensor, qpos32: torch.Tensor, kpos32: torch.Tensor, klo: torch.Tensor,
                   khi: torch.Tensor, qlo: torch.Tensor, qhi: torch.Tensor,
                   radius: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) from the output gradient do (B, H, Nq, D) and the forward's o and lse2."""
    q, k, v, o, do = (_last_dim_contiguous(t) for t in (q, k, v, o, do))
    B, H, nq, D = q.shape
    nk = k.shape[2]
    if nq == 0 or nk == 0:
        return q.new_zeros(q.shape), k.new_zeros(k.shape), v.new_zeros(v.shape)
    dk, dv = k.new_empty(k.shape), v.new_empty(v.shape)                              # every element written
    sm_scale = 1.0 / math.sqrt(D)
    prec = _precision(q.dtype)
    lse_pad, delta = backward_vectors(o, do, lse)
    nqp = lse_pad.shape[-1]
    common = (H, nq, nqp, nk, int(radius), sm_scale * LOG2E, sm_scale, _size_class(nq, nk))
    grid_kv = lambda meta: (triton.cdiv(nk, meta["BLOCK_N"]), B * H)
    fuse_dq = backward_mode() == "atomic"
    # the atomic path accumulates dq here; the split path never touches it (FUSE_DQ is a constexpr)
    dq32 = (torch.zeros(B, H, nq, D, dtype=torch.float32, device=q.device) if fuse_dq
            else torch.empty(1, dtype=torch.float32, device=q.device))
    args = (q, k, v, do, dk, dv, lse_pad, delta, qpos32, kpos32, qlo, qhi, dq32, *_strides(q), *_strides(k),
            *_strides(v), *_strides(do), *_strides(dk), *_strides(dv), *common)
    use_desc = _use_descriptors(q, do)
    if fuse_dq and use_desc and _descriptor_atomics():
        # its own fallback: a failure here turns off the bulk adds only, not TMA loads
        if _try_descriptor_launch(_window_bwd_dkdv, grid_kv, args, _DESC_ATOMIC,
                                  "bulk dq reductions failed, using per-element atomics",
                                  HEAD_DIM=D, PRECISION=prec, FUSE_DQ=True, TMA_ATOMIC=True):
            return dq32.to(q.dtype), dk, dv
        dq32.zero_()
    _launch(_window_bwd_dkdv, grid_kv, args, use_desc, HEAD_DIM=D, PRECISION=prec, FUSE_DQ=fuse_dq, TMA_ATOMIC=False)
    if fuse_dq:
        return dq32.to(q.dtype), dk, dv
    dq = q.new_empty(q.shape)
    args = (q, k, v, do, dq, lse_pad, delta, qpos32, kpos32, klo, khi, *_strides(q), *_strides(k), *_strides(v),
            *_strides(do), *_strides(dq), *common)
    if not (_use_gluon(q, k, v, do) and _try_gluon("window_bwd_dq_ws", nq, B * H, args)):
        grid_q = lambda meta: (triton.cdiv(nq, meta["BLOCK_M"]), B * H)
        _launch(_window_bwd_dq, grid_q, args, _use_descriptors(k, v), HEAD_DIM=D, PRECISION=prec)
    return dq, dk, dv


@_window_bwd_op.register_fake
def _(do, q, k, v, o, lse, qpos32, kpos32, klo, khi, qlo, qhi, radius):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _window_setup_context(ctx, inputs, output):
    q, k, v, qpos32, kpos32, klo, khi, qlo, qhi, radius = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, qpos32, kpos32, klo, khi, qlo, qhi)
    ctx.radius = radius


def _window_backward(ctx, do, dlse):
    q, k, v, o, lse, *tables = ctx.saved_tensors
    dq, dk, dv = _window_bwd_op(do, q, k, v, o, lse, *tables, ctx.radius)
    return dq, dk, dv, None, None, None, None, None, None, None


_window_fwd_op.register_autograd(_window_backward, setup_context=_window_setup_context)


def triton_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
                            k_pos: torch.Tensor, radius: int) -> torch.Tensor:
    """Window attention with the Triton kernels (CUDA, or CPU under TRITON_INTERPRET=1).

    q: (B, H, Nq, D), k, v: (B, H, Nk, D) of one dtype (fp16/bf16/fp32), D in 16..256 (power of 2);
    q_pos: (B, Nq), k_pos: (B, Nk) integer positions, ascending per row, |pos| + radius < 2**31
    (the kernels use int32 positions; not checked, to avoid a host sync).
    Returns (B, H, Nq, D) in q's dtype; differentiable w.r.t. q, k, v.
    """
    _check(q, k, v, q_pos, k_pos)
    o, _ = _window_fwd_op(q, k, v, *position_tables(q_pos, k_pos, radius), int(radius))
    return o
