"""Exact position-banded window attention in plain PyTorch, query block by query block.

Positions are ascending per row, so the keys a block of queries can see form one contiguous index
range [lo, hi) of the key sequence, found with `torch.searchsorted` on the key positions. Each block
attends only to that slice, so time and memory are O(N * window) instead of O(N^2). The backward
pass recomputes each block's probabilities (FlashAttention style) instead of saving them, so
training memory stays O(N * D) plus one block of scores. Inside a block only the edge key columns
need the position mask. Gradients are first order (once_differentiable).

Batch rows may hold different positions (dropped tokens); a block uses the union of the rows' key
ranges and masks each row exactly, so results are exact for any ascending positions.
"""
from __future__ import annotations

import math

import torch

# One block of scores holds about this many fp32 elements (B * H * block_q * keys): 32 MiB on the
# CPU (cache friendly, low peak memory), 256 MiB on a GPU (fewer, larger kernels).
_SCORE_BUDGET = {"cpu": 8 * 1024 * 1024, "cuda": 64 * 1024 * 1024}


def _block_size(batch_heads: int, nq: int, nk: int, radius: int, q_pos: torch.Tensor,
                k_pos: torch.Tensor) -> int:
    """Query block length. A block of bq queries computes about (bq + window) keys per query, so
    bq ~ window / 8 wastes ~12% on out-of-window scores while keeping Python overhead low
    (measured on CPU: 128 is best for a 1025-key window). Clamped to [128, 512], then halved
    until one block of fp32 scores (batch_heads * bq * keys elements) fits the budget."""
    span_q = int(q_pos[:, -1].max() - q_pos[:, 0].min()) + 1       # positions covered by queries
    span_k = max(int(k_pos[:, -1].max() - k_pos[:, 0].min()) + 1, 1)
    keys_per_query = min(nk, (2 * radius + 1) * nk / span_k)
    bq = 128
    while bq < 512 and 2 * bq <= keys_per_query / 8:
        bq *= 2
    while bq > 16:
        block_span = bq * span_q / nq + 2 * radius + 1                # positions one block can see
        keys = min(nk, int(block_span * nk / span_k) + 1)
        if batch_heads * bq * keys <= _SCORE_BUDGET.get(q_pos.device.type, _SCORE_BUDGET["cpu"]):
            break
        bq //= 2
    return bq


def _block_ranges(q_pos: torch.Tensor, k_pos: torch.Tensor, radius: int, bq: int) -> list[tuple[int, ...]]:
    """Per query block: (q0, q1, k0, k1, c0, c1, has_empty).

    [k0, k1) covers every row's visible keys; keys in [c0, c1) are visible to every query of the
    block in every row (no mask needed there); has_empty: some query of the block sees no key.
    """
    nq = q_pos.shape[1]
    qp, kp = q_pos.contiguous(), k_pos.contiguous()
    lo = torch.searchsorted(kp, qp - radius, right=False)          # (B, Nq) first visible key
    hi = torch.searchsorted(kp, qp + radius, right=True)           # one past the last
    starts = torch.arange(0, nq, bq, device=q_pos.device)
    ends = torch.clamp(starts + bq, max=nq)
    k0 = lo[:, starts].min(0).values
    k1 = torch.maximum(hi[:, ends - 1].max(0).values, k0)
    c0 = torch.minimum(torch.maximum(lo[:, ends - 1].max(0).values, k0), k1)
    c1 = torch.maximum(torch.minimum(hi[:, starts].min(0).values, k1), c0)
    empty = (hi <= lo).any(0).long()                                # (Nq,)
    has_empty = torch.zeros(len(starts), dtype=torch.long, device=q_pos.device).index_add_(
        0, torch.div(torch.arange(nq, device=q_pos.device), bq, rounding_mode="floor"), empty) > 0
    rows = torch.stack([starts, ends, k0, k1, c0, c1, has_empty.long()], 1).tolist()   # one host sync
    return [tuple(r[:6]) + (bool(r[6]),) for r in rows]


def _probabilities(q_blk, k_blk, qp, kp, radius, k0, c0, c1, has_empty):
    """Softmax probabilities (B, H, bq, bk) of one block, fp32; q_blk is pre-scaled by 1/sqrt(D).

    Only the edge columns [k0, c0) and [c1, k1) are masked; rows with no visible key give zeros.
    """
    s = torch.matmul(q_blk, k_blk.transpose(-1, -2))
    for a, b in ((0, c0 - k0), (c1 - k0, s.shape[-1])):
        if b > a:
            visible = (qp[:, :, None] - kp[:, None, a:b]).abs() <= radius     # (B, bq, b - a)
            s[..., a:b].masked_fill_(~visible[:, None], float("-inf"))
    p = torch.softmax(s, dim=-1)
    if has_empty:
        p = p.nan_to_num_(0.0)
    return p


class _ChunkedWindowAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, q_pos, k_pos, radius):
        B, H, nq, D = q.shape
        nk = k.shape[2]
        scale = 1.0 / math.sqrt(D)
        out = torch.zeros(B, H, nq, v.shape[-1], dtype=torch.float32, device=q.device)
        if nq and nk:
            bq = _block_size(B * H, nq, nk, radius, q_pos, k_pos)
            for q0, q1, k0, k1, c0, c1, has_empty in _block_ranges(q_pos, k_pos, radius, bq):
                if k1 <= k0:
                    continue
                p = _probabilities(q[:, :, q0:q1].float() * scale, k[:, :, k0:k1].float(), q_pos[:, q0:q1],
                                   k_pos[:, k0:k1], radius, k0, c0, c1, has_empty)
                out[:, :, q0:q1] = torch.matmul(p, v[:, :, k0:k1].float())
                del p
        result = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, q_pos, k_pos, result)
        ctx.radius = radius
        return result

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do):
        q, k, v, q_pos, k_pos, out = ctx.saved_tensors
        radius = ctx.radius
        B, H, nq, D = q.shape
        nk = k.shape[2]
        scale = 1.0 / math.sqrt(D)
        do = do.float()
        delta = (out.float() * do).sum(-1, keepdim=True)                    # (B, H, nq, 1)
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        dk = torch.zeros(k.shape, dtype=torch.float32, device=q.device)
        dv = torch.zeros(v.shape, dtype=torch.float32, device=q.device)
        if nq and nk:
            bq = _block_size(B * H, nq, nk, radius, q_pos, k_pos)
            for q0, q1, k0, k1, c0, c1, has_empty in _block_ranges(q_pos, k_pos, radius, bq):
                if k1 <= k0:
                    continue
                qb = q[:, :, q0:q1].float() * scale
                kb, vb = k[:, :, k0:k1].float(), v[:, :, k0:k1].float()
                p = _probabilities(qb, kb, q_pos[:, q0:q1], k_pos[:, k0:k1], radius, k0, c0, c1, has_empty)
                dob = do[:, :, q0:q1]
                dv[:, :, k0:k1] += torch.matmul(p.transpose(-1, -2), dob)
                ds = torch.matmul(dob, vb.transpose(-1, -2)).sub_(delta[:, :, q0:q1]).mul_(p)   # dL/d(scaled score)
                dq[:, :, q0:q1] += torch.matmul(ds, kb).mul_(scale)
                dk[:, :, k0:k1] += torch.matmul(ds.transpose(-1, -2), qb)           # qb carries the scale
                del p, ds
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None


def chunked_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
                             k_pos: torch.Tensor, radius: int) -> torch.Tensor:
    """Exact window attention by query blocks over position-derived key slices.

    q: (B, H, Nq, D), k: (B, H, Nk, D), v: (B, H, Nk, Dv); q_pos: (B, Nq), k_pos: (B, Nk) int64,
    ascending per row. Computes in fp32, returns (B, H, Nq, Dv) in q's dtype. Differentiable
    w.r.t. q, k, v with O(N * D) saved memory (blocks are recomputed in backward).
    """
    return _ChunkedWindowAttention.apply(q, k, v, q_pos, k_pos, int(radius))
