"""Warp-specialised window attention for Hopper in Gluon: the forward and the backward's dq kernel,
with FlashAttention-3's division of work.

Same contracts as `triton_window._window_fwd` and `triton_window._window_bwd_dq` (position-banded keys,
base-2 softmax statistics, the same arguments), but the work of one CTA is split by role, not by rows:

- a loader warp copies each consumer's 64-row tiles once (Q; Q and dO for dq) and then streams 64- or
  128-key K and V blocks through a ring of shared-memory stages with TMA, signalling each on an mbarrier;
- two consumer warpgroups, one per 64-row tile, keep those rows in registers as the left operand of
  asynchronous warpgroup MMAs (forward: S = Q K^T, O += P V; dq: S = Q K^T, dP = dO V^T, dq += dS K) and
  hand each stage back when done with it. The loader runs on 24 registers per thread, the consumers on 240.

Why it is faster than the Triton kernels at head dim 128 (docs/BENCHMARKS.md §3 run H): in Triton's
64 x 64 forward, every S product reads the queries from shared memory and each CTA streams its own K and
V, about 39 bytes of shared-memory traffic per thousand matmul FLOPs, close to the SM's 128 bytes per
clock at the tensor cores' rate. Rows in registers and one K/V stream for two warpgroups cut that to
about 23. The consumers run out of step (only the stage barriers tie them), so one's exponentials overlap
the other's matmuls. Timings against the Triton kernels: docs/BENCHMARKS.md §3 run H.

Each consumer walks the CTA's key blocks in five runs (blocks none of its rows sees, masked edge blocks,
mask-free interior blocks, masked edge blocks, unseen blocks), each its own loop with a constexpr mask
flag. A per-block `if` choosing the masked path, with the MMA result flowing through it, was miscompiled
by Triton 3.6 whenever BLOCK_N equals the head dim (run H, call 1).

Gluon is Triton's explicit-layout dialect (`triton.experimental.gluon`); its API still changes between
releases, so the host side (`kernels.triton_window`) falls back to the Triton kernels when these fail to
build or launch. Written for and timed with Triton 3.6 (torch 2.11); the CPU tests compile them for sm_90
with the installed Triton (tests/test_kernels_gluon.py).
"""
from __future__ import annotations

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait

# TMA global -> shared copy: `async_copy_global_to_shared` in Triton 3.6, renamed `async_load` later
_tma_load = tma.async_load if hasattr(tma, "async_load") else tma.async_copy_global_to_shared

CONSUMERS = gl.constexpr(2)        # consumer warpgroups per CTA, one 64-row query tile each
ROWS = gl.constexpr(64)            # query rows per consumer: one warpgroup MMA tile
LOADER_REGS = gl.constexpr(24)     # registers per thread of the loader warp (it holds scalars only)


@gluon.jit
def _loader(Q, DO, K, V, sqn, sdn, skn, svn, NQ, NK, m0, lo, n_blocks,
            row_smem, k_smem, v_smem, row_ready, k_ready, v_ready, kv_empty,
            HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, ROW_OPERANDS: gl.constexpr):
    """One warp: each consumer's row tiles once (Q; and dO when ROW_OPERANDS == 2), then K and V blocks
    [lo + j BLOCK_N, ...) into stage j % STAGES. Q, DO, K, V point at this (batch, head)'s (N, HEAD_DIM)
    matrices; rows past N arrive as zeros."""
    row_bytes: gl.constexpr = ROWS * HEAD_DIM * Q.dtype.element_ty.primitive_bitwidth // 8
    block_bytes: gl.constexpr = BLOCK_N * HEAD_DIM * K.dtype.element_ty.primitive_bitwidth // 8
    q_desc = tma.make_tensor_descriptor(Q, [NQ, HEAD_DIM], [sqn, 1], [ROWS, HEAD_DIM], row_smem.type.layout)
    k_desc = tma.make_tensor_descriptor(K, [NK, HEAD_DIM], [skn, 1], [BLOCK_N, HEAD_DIM], k_smem.type.layout)
    v_desc = tma.make_tensor_descriptor(V, [NK, HEAD_DIM], [svn, 1], [BLOCK_N, HEAD_DIM], v_smem.type.layout)
    if ROW_OPERANDS == 2:
        do_desc = tma.make_tensor_descriptor(DO, [NQ, HEAD_DIM], [sdn, 1], [ROWS, HEAD_DIM], row_smem.type.layout)
    for c in gl.static_range(CONSUMERS):
        mbarrier.expect(row_ready.index(c), ROW_OPERANDS * row_bytes)
        _tma_load(q_desc, [m0 + c * ROWS, 0], row_ready.index(c), row_smem.index(c * ROW_OPERANDS))
        if ROW_OPERANDS == 2:
            _tma_load(do_desc, [m0 + c * ROWS, 0], row_ready.index(c), row_smem.index(c * ROW_OPERANDS + 1))
    for j in range(n_blocks):
        s = j % STAGES
        mbarrier.wait(kv_empty.index(s), ((j // STAGES) & 1) ^ 1)     # both consumers are done with it
        n0 = lo + j * BLOCK_N
        mbarrier.expect(k_ready.index(s), block_bytes)
        _tma_load(k_desc, [n0, 0], k_ready.index(s), k_smem.index(s))
        mbarrier.expect(v_ready.index(s), block_bytes)
        _tma_load(v_desc, [n0, 0], v_ready.index(s), v_smem.index(s))


@gluon.jit
def _release_blocks(j0, j1, k_ready, v_ready, kv_empty, STAGES: gl.constexpr):
    """Blocks j0..j1-1 that no row of this warpgroup sees: wait for them like the others (the stage
    barriers count every block) and hand the stage back."""
    for j in range(j0, j1):
        s = j % STAGES
        phase = (j // STAGES) & 1
        mbarrier.wait(k_ready.index(s), phase)
        mbarrier.wait(v_ready.index(s), phase)
        mbarrier.arrive(kv_empty.index(s), count=1)


@gluon.jit
def _issue_scores(q, k_smem, k_ready, j, s_zero, STAGES: gl.constexpr):
    """Wait for key block j's stage and issue S = Q K^T on it (asynchronous: wait on the returned token).
    q: this consumer's rows in registers; s_zero: zeros in the scores' layout (ROWS, BLOCK_N), which
    carries the MMA shape. Returns (token, stage, phase)."""
    s = j % STAGES
    phase = (j // STAGES) & 1
    mbarrier.wait(k_ready.index(s), phase)
    return warpgroup_mma(q, k_smem.index(s).permute((1, 0)), s_zero, use_acc=False, is_async=True), s, phase


@gluon.jit
def _block_runs(KLO, KHI, first, last, lo, BLOCK_N: gl.constexpr):
    """For rows first..last of a consumer, the CTA's key blocks (keys lo + j BLOCK_N ...) in five runs,
    as the Triton kernels' three phases: [0, j_seen) no row sees, [j_seen, j_inner) masked edge blocks,
    [j_inner, j_outer) mask-free (every row sees every key), [j_outer, j_unseen) masked edge blocks,
    [j_unseen, n_blocks) none seen. From the keys some row sees [KLO[first], KHI[last]) and those every
    row sees [KLO[last], KHI[first]), both inside the CTA's [lo, hi)."""
    j_seen = (gl.load(KLO + first) - lo) // BLOCK_N
    j_unseen = gl.cdiv(gl.load(KHI + last) - lo, BLOCK_N)
    j_inner = gl.minimum(gl.maximum(gl.cdiv(gl.load(KLO + last) - lo, BLOCK_N), j_seen), j_unseen)
    j_outer = gl.minimum(gl.maximum((gl.load(KHI + first) - lo) // BLOCK_N, j_inner), j_unseen)
    return j_seen, j_inner, j_outer, j_unseen


@gluon.jit
def _visible(scores, qpos, KPOS, lo, hi, j, radius, BLOCK_N: gl.constexpr):
    """(ROWS, BLOCK_N) bool in scores' layout: key lo + j BLOCK_N + n is inside [lo, hi) and within
    `radius` of the row's query position."""
    offs_n = lo + j * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, scores.type.layout))
    inside = offs_n < hi
    kpos = gl.load(KPOS + offs_n, mask=inside, other=0)
    return (gl.abs(qpos[:, None] - kpos[None, :]) <= radius) & inside[None, :]


@gluon.constexpr_function
def _scores_layout(block_n):
    """Warpgroup MMA layout of one consumer's scores (ROWS, block_n)."""
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, block_n, 16])


@gluon.constexpr_function
def _output_layout(head_dim):
    """Warpgroup MMA layout of one consumer's outputs (ROWS, head_dim): O, dq."""
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, head_dim, 16])


@gluon.jit
def _consumer_rows(QPOS, NQ, m0, c, layout: gl.constexpr):
    """This consumer's rows: (offs_m (ROWS,) in `layout`, row_ok, qpos, first, last)."""
    row0 = m0 + c * ROWS
    offs_m = row0 + gl.arange(0, ROWS, layout=layout)
    row_ok = offs_m < NQ
    qpos = gl.load(QPOS + offs_m, mask=row_ok, other=0)
    return offs_m, row_ok, qpos, gl.minimum(row0, NQ - 1), gl.minimum(row0 + ROWS, NQ) - 1


@gluon.jit
def _store_rows(X, sxn, x, NQ, m0, c):
    """Rows [m0 + c ROWS, + ROWS) of the (NQ, HEAD_DIM) matrix at X (row stride sxn) from x."""
    offs_m = m0 + c * ROWS + gl.arange(0, ROWS, layout=gl.SliceLayout(1, x.type.layout))
    offs_d = gl.arange(0, x.shape[1], layout=gl.SliceLayout(0, x.type.layout))
    gl.store(X + offs_m[:, None] * sxn + offs_d[None, :], x.to(X.dtype.element_ty), mask=(offs_m < NQ)[:, None])


# -------------------------------------------------------------------------------------------- forward

@gluon.jit
def _attend_blocks(acc, m_i, l_i, q, qpos, j0, j1, lo, hi, KPOS, radius, qk_scale,
                   k_smem, v_smem, k_ready, v_ready, kv_empty,
                   HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, MASKED: gl.constexpr):
    """Online softmax over key blocks j0..j1-1: acc (ROWS, HEAD_DIM) fp32, row max m_i and sum l_i
    (ROWS,) in base 2; MASKED: compare positions (edge blocks), else every key is visible to every row.
    Returns the updated (acc, m_i, l_i)."""
    s_layout: gl.constexpr = _scores_layout(BLOCK_N)
    o_layout: gl.constexpr = _output_layout(HEAD_DIM)
    p_operand: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    s_zero = gl.zeros([ROWS, BLOCK_N], gl.float32, layout=s_layout)
    for j in range(j0, j1):
        scores, s, phase = _issue_scores(q, k_smem, k_ready, j, s_zero, STAGES)
        scores = warpgroup_mma_wait(0, deps=[scores])                         # S = Q K^T (ROWS, BLOCK_N)
        if MASKED:
            scores = gl.where(_visible(scores, qpos, KPOS, lo, hi, j, radius, BLOCK_N), scores, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(scores, 1) * qk_scale)
        m_use = gl.where(m_new == float("-inf"), 0.0, m_new)                     # rows with nothing yet
        p = gl.exp2(scores * qk_scale - m_use[:, None])       # the scale goes into one FMA before each exp2
        alpha = gl.exp2(m_i - m_use)
        l_i = l_i * alpha + gl.sum(p, 1)
        acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
        p_op = gl.convert_layout(p.to(v_smem.dtype), p_operand)
        mbarrier.wait(v_ready.index(s), phase)
        acc = warpgroup_mma(p_op, v_smem.index(s), acc, is_async=True)           # O += P V
        acc = warpgroup_mma_wait(0, deps=[acc])
        mbarrier.arrive(kv_empty.index(s), count=1)
        m_i = m_new
    return acc, m_i, l_i


@gluon.jit
def _fwd_consumer(O, LSE, QPOS, KPOS, KLO, KHI, son, NQ, radius, qk_scale, m0, lo, hi, n_blocks, c,
                  row_smem, k_smem, v_smem, row_ready, k_ready, v_ready, kv_empty,
                  HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr):
    """One warpgroup of the forward: query rows [m0 + c ROWS, + ROWS) against the CTA's key blocks.
    O, LSE, QPOS, KLO, KHI point at this (batch, head)'s rows; KPOS at its keys' positions."""
    s_layout: gl.constexpr = _scores_layout(BLOCK_N)
    o_layout: gl.constexpr = _output_layout(HEAD_DIM)
    s_rows: gl.constexpr = gl.SliceLayout(1, s_layout)
    offs_m, row_ok, qpos, first, last = _consumer_rows(QPOS, NQ, m0, c, s_rows)
    j_seen, j_inner, j_outer, j_unseen = _block_runs(KLO, KHI, first, last, lo, BLOCK_N)

    mbarrier.wait(row_ready.index(c), 0)
    q = row_smem.index(c).load(gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2))  # in registers
    m_i = gl.full([ROWS], float("-inf"), gl.float32, layout=s_rows)
    l_i = gl.zeros([ROWS], gl.float32, layout=s_rows)
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, layout=o_layout)
    _release_blocks(0, j_seen, k_ready, v_ready, kv_empty, STAGES)
    acc, m_i, l_i = _attend_blocks(acc, m_i, l_i, q, qpos, j_seen, j_inner, lo, hi, KPOS, radius, qk_scale,
                                   k_smem, v_smem, k_ready, v_ready, kv_empty, HEAD_DIM, BLOCK_N, STAGES, True)
    acc, m_i, l_i = _attend_blocks(acc, m_i, l_i, q, qpos, j_inner, j_outer, lo, hi, KPOS, radius, qk_scale,
                                   k_smem, v_smem, k_ready, v_ready, kv_empty, HEAD_DIM, BLOCK_N, STAGES, False)
    acc, m_i, l_i = _attend_blocks(acc, m_i, l_i, q, qpos, j_outer, j_unseen, lo, hi, KPOS, radius, qk_scale,
                                   k_smem, v_smem, k_ready, v_ready, kv_empty, HEAD_DIM, BLOCK_N, STAGES, True)
    _release_blocks(j_unseen, n_blocks, k_ready, v_ready, kv_empty, STAGES)

    has_key = l_i > 0.0                                  # a query with no visible key: output 0, lse2 +inf
    gl.store(LSE + offs_m, gl.where(has_key, m_i + gl.log2(gl.where(has_key, l_i, 1.0)), float("inf")), mask=row_ok)
    _store_rows(O, son, acc / gl.convert_layout(gl.where(has_key, l_i, 1.0), gl.SliceLayout(1, o_layout))[:, None],
                NQ, m0, c)


# ------------------------------------------------------------------------------------------ backward dq

@gluon.jit
def _dq_blocks(dq, q, do, lse, delta, qpos, j0, j1, lo, hi, KPOS, radius, qk_scale,
               k_smem, v_smem, k_ready, v_ready, kv_empty,
               HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, MASKED: gl.constexpr):
    """dq (ROWS, HEAD_DIM) fp32 += dS K over key blocks j0..j1-1, with P = exp2(S scale - lse2) and
    dS = P (dO V^T - delta) (FlashAttention-2's backward); MASKED as in `_attend_blocks`."""
    s_layout: gl.constexpr = _scores_layout(BLOCK_N)
    o_layout: gl.constexpr = _output_layout(HEAD_DIM)
    ds_operand: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    s_zero = gl.zeros([ROWS, BLOCK_N], gl.float32, layout=s_layout)
    for j in range(j0, j1):
        scores, s, phase = _issue_scores(q, k_smem, k_ready, j, s_zero, STAGES)
        mbarrier.wait(v_ready.index(s), phase)
        dp = warpgroup_mma(do, v_smem.index(s).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        scores, dp = warpgroup_mma_wait(0, deps=[scores, dp])                 # S = Q K^T, dP = dO V^T
        p = gl.exp2(scores * qk_scale - lse[:, None])
        if MASKED:
            p = gl.where(_visible(scores, qpos, KPOS, lo, hi, j, radius, BLOCK_N), p, 0.0)
        ds = gl.convert_layout((p * (dp - delta[:, None])).to(k_smem.dtype), ds_operand)
        dq = warpgroup_mma(ds, k_smem.index(s), dq, is_async=True)                 # dq += dS K
        dq = warpgroup_mma_wait(0, deps=[dq])
        mbarrier.arrive(kv_empty.index(s), count=1)
    return dq


@gluon.jit
def _dq_consumer(DQ, LSE, DELTA, QPOS, KPOS, KLO, KHI, sdqn, NQ, radius, qk_scale, sm_scale, m0, lo, hi, n_blocks,
                 c, row_smem, k_smem, v_smem, row_ready, k_ready, v_ready, kv_empty,
                 HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr):
    """One warpgroup of the dq kernel: rows [m0 + c ROWS, + ROWS). LSE and DELTA point at this (batch,
    head)'s padded rows of lse2 and delta = rowsum(o * do); the rest as in `_fwd_consumer`."""
    s_layout: gl.constexpr = _scores_layout(BLOCK_N)
    o_layout: gl.constexpr = _output_layout(HEAD_DIM)
    s_rows: gl.constexpr = gl.SliceLayout(1, s_layout)
    row_operand: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2)
    offs_m, row_ok, qpos, first, last = _consumer_rows(QPOS, NQ, m0, c, s_rows)
    j_seen, j_inner, j_outer, j_unseen = _block_runs(KLO, KHI, first, last, lo, BLOCK_N)
    lse = gl.load(LSE + offs_m, mask=row_ok, other=float("inf"))             # +inf: probability 0
    delta = gl.load(DELTA + offs_m, mask=row_ok, other=0.0)

    mbarrier.wait(row_ready.index(c), 0)
    q = row_smem.index(2 * c).load(row_operand)                               # Q and dO in registers
    do = row_smem.index(2 * c + 1).load(row_operand)
    dq = gl.zeros([ROWS, HEAD_DIM], gl.float32, layout=o_layout)
    _release_blocks(0, j_seen, k_ready, v_ready, kv_empty, STAGES)
    dq = _dq_blocks(dq, q, do, lse, delta, qpos, j_seen, j_inner, lo, hi, KPOS, radius, qk_scale,
                    k_smem, v_smem, k_ready, v_ready, kv_empty, HEAD_DIM, BLOCK_N, STAGES, True)
    dq = _dq_blocks(dq, q, do, lse, delta, qpos, j_inner, j_outer, lo, hi, KPOS, radius, qk_scale,
                    k_smem, v_smem, k_ready, v_ready, kv_empty, HEAD_DIM, BLOCK_N, STAGES, False)
    dq = _dq_blocks(dq, q, do, lse, delta, qpos, j_outer, j_unseen, lo, hi, KPOS, radius, qk_scale,
                    k_smem, v_smem, k_ready, v_ready, kv_empty, HEAD_DIM, BLOCK_N, STAGES, True)
    _release_blocks(j_unseen, n_blocks, k_ready, v_ready, kv_empty, STAGES)
    _store_rows(DQ, sdqn, dq * sm_scale, NQ, m0, c)


# ---------------------------------------------------------------------------------------------- kernels

@gluon.jit
def _cta_tile(KLO, KHI, H, NQ, BLOCK_N: gl.constexpr):
    """This CTA's work: query rows [m0, m0 + CONSUMERS ROWS) of (batch b, head h), bh = b H + h (int64),
    the keys they reach [lo, hi) (KLO, KHI: (B, NQ) tables) and their number of BLOCK_N-key blocks.
    Returns (m0, b, h, bh, lo, hi, n_blocks)."""
    m0 = gl.program_id(0) * (CONSUMERS * ROWS)
    bh = gl.program_id(1).to(gl.int64)
    b = bh // H
    h = bh % H
    lo = gl.load(KLO + b * NQ + m0)
    hi = gl.load(KHI + b * NQ + gl.minimum(m0 + CONSUMERS * ROWS, NQ) - 1)
    return m0, b, h, bh, lo, hi, gl.cdiv(gl.maximum(hi - lo, 0), BLOCK_N)


@gluon.jit
def _stage_ring(dtype: gl.constexpr, ROW_OPERANDS: gl.constexpr, HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr,
                STAGES: gl.constexpr):
    """Shared memory and mbarriers: the consumers' row tiles (CONSUMERS * ROW_OPERANDS, ROWS, HEAD_DIM)
    with one `row_ready` barrier per consumer, and STAGES K and V blocks with `k_ready`, `v_ready` (the
    loader's copies landed) and `kv_empty` (both consumers are done: one arrival each)."""
    row_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([ROWS, HEAD_DIM], dtype)
    kv_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, HEAD_DIM], dtype)
    row_smem = gl.allocate_shared_memory(dtype, [CONSUMERS * ROW_OPERANDS, ROWS, HEAD_DIM], row_layout)
    k_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], kv_layout)
    v_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], kv_layout)
    row_ready = gl.allocate_shared_memory(gl.int64, [CONSUMERS, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    kv_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for c in gl.static_range(CONSUMERS):
        mbarrier.init(row_ready.index(c), count=1)
    for s in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(s), count=1)
        mbarrier.init(v_ready.index(s), count=1)
        mbarrier.init(kv_empty.index(s), count=CONSUMERS)
    return row_smem, k_smem, v_smem, row_ready, k_ready, v_ready, kv_empty


@gluon.jit
def _window_fwd_ws(Q, K, V, O, LSE, QPOS, KPOS, KLO, KHI,
                   sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
                   H, NQ, NK, radius, qk_scale, SIZE_CLASS,
                   HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
                   CONSUMER_REGS: gl.constexpr):
    """Forward. Grid `grid(NQ, B * H)`. The arguments of the Triton forward (`triton_window._window_fwd`):
    Q (B, H, NQ, D), K/V (B, H, NK, D) strided, 16-byte aligned rows; O like Q; LSE (B, H, NQ) fp32;
    QPOS/KLO/KHI (B, NQ), KPOS (B, NK) int32; SIZE_CLASS only keys the autotuning."""
    m0, b, h, bh, lo, hi, n_blocks = _cta_tile(KLO, KHI, H, NQ, BLOCK_N)
    row_smem, k_smem, v_smem, row_ready, k_ready, v_ready, kv_empty = _stage_ring(
        Q.dtype.element_ty, 1, HEAD_DIM, BLOCK_N, STAGES)
    o_rows = O + b * sob + h * soh
    lse_rows = LSE + bh * NQ
    gl.warp_specialize([
        (_fwd_consumer, (o_rows, lse_rows, QPOS + b * NQ, KPOS + b * NK, KLO + b * NQ, KHI + b * NQ, son, NQ,
                         radius, qk_scale, m0, lo, hi, n_blocks, 0, row_smem, k_smem, v_smem, row_ready, k_ready,
                         v_ready, kv_empty, HEAD_DIM, BLOCK_N, STAGES)),
        (_fwd_consumer, (o_rows, lse_rows, QPOS + b * NQ, KPOS + b * NK, KLO + b * NQ, KHI + b * NQ, son, NQ,
                         radius, qk_scale, m0, lo, hi, n_blocks, 1, row_smem, k_smem, v_smem, row_ready, k_ready,
                         v_ready, kv_empty, HEAD_DIM, BLOCK_N, STAGES)),
        (_loader, (Q + b * sqb + h * sqh, Q, K + b * skb + h * skh, V + b * svb + h * svh, sqn, sqn, skn, svn,
                   NQ, NK, m0, lo, n_blocks, row_smem, k_smem, v_smem, row_ready, k_ready, v_ready, kv_empty,
                   HEAD_DIM, BLOCK_N, STAGES, 1)),
    ], [4, 1], [CONSUMER_REGS, LOADER_REGS])


@gluon.jit
def _window_bwd_dq_ws(Q, K, V, DO, DQ, LSE, DELTA, QPOS, KPOS, KLO, KHI,
                      sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn, sdqb, sdqh, sdqn,
                      H, NQ, NQP, NK, radius, qk_scale, sm_scale, SIZE_CLASS,
                      HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
                      CONSUMER_REGS: gl.constexpr):
    """Backward dq. Grid `grid(NQ, B * H)`. The arguments of the Triton dq kernel
    (`triton_window._window_bwd_dq`): DO and DQ like Q; LSE and DELTA (B, H, NQP) fp32 rows padded to NQP."""
    m0, b, h, bh, lo, hi, n_blocks = _cta_tile(KLO, KHI, H, NQ, BLOCK_N)
    row_smem, k_smem, v_smem, row_ready, k_ready, v_ready, kv_empty = _stage_ring(
        Q.dtype.element_ty, 2, HEAD_DIM, BLOCK_N, STAGES)
    dq_rows = DQ + b * sdqb + h * sdqh
    gl.warp_specialize([
        (_dq_consumer, (dq_rows, LSE + bh * NQP, DELTA + bh * NQP, QPOS + b * NQ, KPOS + b * NK, KLO + b * NQ,
                        KHI + b * NQ, sdqn, NQ, radius, qk_scale, sm_scale, m0, lo, hi, n_blocks, 0, row_smem,
                        k_smem, v_smem, row_ready, k_ready, v_ready, kv_empty, HEAD_DIM, BLOCK_N, STAGES)),
        (_dq_consumer, (dq_rows, LSE + bh * NQP, DELTA + bh * NQP, QPOS + b * NQ, KPOS + b * NK, KLO + b * NQ,
                        KHI + b * NQ, sdqn, NQ, radius, qk_scale, sm_scale, m0, lo, hi, n_blocks, 1, row_smem,
                        k_smem, v_smem, row_ready, k_ready, v_ready, kv_empty, HEAD_DIM, BLOCK_N, STAGES)),
        (_loader, (Q + b * sqb + h * sqh, DO + b * sdb + h * sdh, K + b * skb + h * skh, V + b * svb + h * svh,
                   sqn, sdn, skn, svn, NQ, NK, m0, lo, n_blocks, row_smem, k_smem, v_smem, row_ready, k_ready,
                   v_ready, kv_empty, HEAD_DIM, BLOCK_N, STAGES, 2)),
    ], [4, 1], [CONSUMER_REGS, LOADER_REGS])


# (BLOCK_N, STAGES). One CTA per SM, 2 x 128 consumer threads at 240 registers. Forward: 64-key blocks in
# 3 or 4 stages (128 / 160 KiB of shared memory with the query tiles), 128-key blocks in 2 or 3 (160 /
# 224 KiB). dq: 64-key blocks only (S and dP of 128 keys would need 64 more registers per thread).
FWD_CONFIGS = [(64, 3), (64, 4), (128, 2), (128, 3)]
DQ_CONFIGS = [(64, 3), (64, 4)]


def _autotuned(kernel, configs):
    return triton.autotune(configs=[triton.Config({"BLOCK_N": n, "STAGES": s, "CONSUMER_REGS": 240}, num_warps=4)
                                    for n, s in configs], key=["HEAD_DIM", "SIZE_CLASS"])(kernel)


window_fwd_ws = _autotuned(_window_fwd_ws, FWD_CONFIGS)
window_bwd_dq_ws = _autotuned(_window_bwd_dq_ws, DQ_CONFIGS)


def grid(nq: int, batch_heads: int) -> tuple[int, int]:
    """Launch grid of both kernels for `nq` queries per (batch, head): one CTA per CONSUMERS * ROWS queries."""
    return triton.cdiv(nq, CONSUMERS.value * ROWS.value), batch_heads
