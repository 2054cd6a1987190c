"""The `@triton.jit` kernels of the window attention (FlashAttention-2 style), with their autotune configs.

Kernels (grids and arguments are set up by `launch.py`):
- `_window_fwd`: the forward, one CTA per (query block, batch x head): o and lse2 (base-2 log-sum-exp);
- `_bwd_preprocess`: delta = rowsum(o * do) and lse2 into rows padded to a multiple of VECTOR_ALIGN;
- `_window_bwd_dkdv`: dk, dv per key block over its query blocks (with FUSE_DQ, the "atomic" backward, also
  each key block's share of dq, added atomically);
- `_window_bwd_dq`: dq per query block over its key blocks (the "split" backward).
Each walks its band in three phases (masked edge blocks, mask-free interior blocks, masked edge blocks)
from the position tables (`_block_range`); the forward and dq kernels share their per-CTA prologue
(`_cta_rows`). The numerics and load paths are described in the package docstring (`__init__.py`).

Under TRITON_INTERPRET=1 (CPU tests) each kernel has one small config; note the interpreter computes
bf16 tl.dot wrongly, so interpreted tests use fp32/fp16.
"""
from __future__ import annotations

import triton
import triton.language as tl

from eflow_core.kernels.triton_window.modes import INTERPRET

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
#   x 128 threads, <= 113 KiB each), which made the dk/dv kernel faster (docs/BENCHMARKS.md §3 run F).
#   The forward's 64 x 32 tiles fit three (140 registers, 65 KiB with 3 stages) or, capped at 128
#   registers ("maxnreg"; the few spills fall outside the loop), four.
# - Triton's fused-attention tutorial shapes for Hopper (4 warps, 5 stages; 32 x 128 for dk/dv, 128 x
#   32 for dq) spill 3.4 KB and 0.8 KB inside their loops with Triton 3.6 and never won (runs D, E).
#   Dropped after run G, where they lost (docs/BENCHMARKS.md §3): 64 x 64 dk/dv with 8 warps (its two
#   warpgroups split the 64 keys' columns, so P and dS go through shared memory) and 64 x 32 dq tiles.
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
def _cta_rows(KLO, KHI, H, NQ, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The prologue of the forward and dq kernels (grid (cdiv(NQ, BLOCK_M), B * H)): this CTA's query rows
    offs_m = m0 + [0, BLOCK_M) of (batch b, head h), bh = b H + h (int64), row_ok = offs_m < NQ, and the
    keys those rows reach in `_block_range`'s three phases [lo, a), [a, c), [c, hi) (KLO, KHI: the (B, NQ)
    int32 tables of `position_tables`). Returns (b, h, bh, offs_m, row_ok, lo, a, c, hi)."""
    m0 = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    offs_m = m0 + tl.arange(0, BLOCK_M)
    row_ok = offs_m < NQ
    lo, a, c, hi = _block_range(KLO + b * NQ, KHI + b * NQ, m0, tl.minimum(m0 + BLOCK_M, NQ) - 1, BLOCK_N)
    return b, h, bh, offs_m, row_ok, lo, a, c, hi


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
    b, h, bh, offs_m, row_ok, lo, a, c, hi = _cta_rows(KLO, KHI, H, NQ, BLOCK_M, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqn + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    qpos = tl.load(QPOS + b * NQ + offs_m, mask=row_ok, other=0)

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
    b, h, bh, offs_m, row_ok, lo, a, c, hi = _cta_rows(KLO, KHI, H, NQ, BLOCK_M, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqn + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + offs_m[:, None] * sdn + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + bh * NQP + offs_m, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + bh * NQP + offs_m, mask=row_ok, other=0.0)
    qpos = tl.load(QPOS + b * NQ + offs_m, mask=row_ok, other=0)

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

