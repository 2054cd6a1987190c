"""Denominator-free linear attention in Triton: o = q (k^T v) per (batch, head), forward and backward.

Two kernels do all the work:
- `_at_b`: S = A^T B over the token axis, fp32 accumulation, split over the token axis into
  partial sums (written to a buffer and summed by torch: deterministic, no atomics) so that a small
  batch * heads still fills the GPU.
- `_x_m`: Y = X M with X (tokens, Dx) in the input dtype and M (Dx, Dm) fp32, read through strides so
  M^T costs nothing. For 16-bit X, M is split into a 16-bit high part and a 16-bit residual
  (two tensor-core dots), which keeps ~16 mantissa bits of M instead of 8.
Forward: S = K^T V, O = Q S. Backward: dQ = dO S^T, dS = Q^T dO, dK = V dS^T, dV = K dS.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128, 256)


def _cfgs(gpu, interp, names):
    if INTERPRET:
        return [triton.Config(dict(zip(names, interp)), num_warps=4, num_stages=1)]
    return [triton.Config(dict(zip(names, c[:-2])), num_warps=c[-2], num_stages=c[-1]) for c in gpu]


# (BLOCK_N, BLOCK_A, BLOCK_B, warps, stages); no register spills for bf16, head dim 128 on sm_90 (ptxas).
_AT_B = [(64, 64, 64, 4, 3), (128, 64, 64, 4, 3), (64, 128, 128, 8, 3), (128, 32, 64, 4, 3), (32, 32, 32, 4, 2)]
# (BLOCK_M, BLOCK_C, warps, stages); likewise.
_X_M = [(128, 64, 4, 3), (128, 128, 8, 3), (256, 64, 8, 3), (64, 64, 4, 3), (32, 32, 4, 2)]


def _fit_tiles(pairs):
    """early_config_prune hook: shrink tile sizes to the head dims (a tile never exceeds its dim)."""
    def prune(configs, nargs, **kwargs):
        args = {**nargs, **kwargs}
        out, seen = [], set()
        for c in configs:
            kw = dict(c.kwargs)
            for tile, dim in pairs:
                kw[tile] = min(kw[tile], args[dim])
            key = (tuple(sorted(kw.items())), c.num_warps, c.num_stages)
            if key not in seen:
                seen.add(key)
                out.append(triton.Config(kw, num_warps=c.num_warps, num_stages=c.num_stages))
        return out
    return {"early_config_prune": prune}


@triton.autotune(configs=_cfgs(_AT_B, (16, 16, 16), ("BLOCK_N", "BLOCK_A", "BLOCK_B")), key=["DA", "DB"],
                 prune_configs_by=_fit_tiles((("BLOCK_A", "DA"), ("BLOCK_B", "DB"))))
@triton.jit
def _at_b(A, B, P, H, N, ROWS, sab, sah, san, sbb, sbh, sbn,
          DA: tl.constexpr, DB: tl.constexpr, PRECISION: tl.constexpr,
          BLOCK_N: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr):
    """P[bh, split, a, b] = sum over rows n of this split of A[n, a] * B[n, b]."""
    split = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    tile = tl.program_id(2)
    n_tiles_b = DB // BLOCK_B
    ta = tile // n_tiles_b
    tb = tile % n_tiles_b
    b = bh // H
    h = bh % H
    offs_a = ta * BLOCK_A + tl.arange(0, BLOCK_A)
    offs_b = tb * BLOCK_B + tl.arange(0, BLOCK_B)
    start = split * ROWS
    end = tl.minimum(start + ROWS, N)
    acc = tl.zeros([BLOCK_A, BLOCK_B], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        ok = offs_n < end
        a = tl.load(A + b * sab + h * sah + offs_n[:, None] * san + offs_a[None, :], mask=ok[:, None], other=0.0)
        x = tl.load(B + b * sbb + h * sbh + offs_n[:, None] * sbn + offs_b[None, :], mask=ok[:, None], other=0.0)
        acc += tl.dot(tl.trans(a), x, input_precision=PRECISION)
    n_splits = tl.num_programs(0)
    out = P + (bh * n_splits + split) * DA * DB + offs_a[:, None] * DB + offs_b[None, :]
    tl.store(out, acc)


@triton.autotune(configs=_cfgs(_X_M, (16, 16), ("BLOCK_M", "BLOCK_C")), key=["DX", "DM", "SPLIT"],
                 prune_configs_by=_fit_tiles((("BLOCK_C", "DM"),)))
@triton.jit
def _x_m(X, M, Y, H, N, sxb, sxh, sxn, smb, smh, smr, smc, syb, syh, syn,
         DX: tl.constexpr, DM: tl.constexpr, SPLIT: tl.constexpr, PRECISION: tl.constexpr,
         BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """Y[b, h, n, c] = sum_r X[b, h, n, r] * M[b, h, r, c] (M fp32, strided)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, DX)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    ok = offs_m < N
    x = tl.load(X + b * sxb + h * sxh + offs_m[:, None] * sxn + offs_r[None, :], mask=ok[:, None], other=0.0)
    m = tl.load(M + b * smb + h * smh + offs_r[:, None] * smr + offs_c[None, :] * smc)
    if SPLIT:
        m_hi = m.to(x.dtype)
        m_lo = (m - m_hi.to(tl.float32)).to(x.dtype)
        acc = tl.dot(x, m_hi, input_precision=PRECISION)
        acc = tl.dot(x, m_lo, acc, input_precision=PRECISION)
    else:
        acc = tl.dot(x, m.to(x.dtype), input_precision=PRECISION)
    tl.store(Y + b * syb + h * syh + offs_m[:, None] * syn + offs_c[None, :], acc.to(Y.dtype.element_ty),
             mask=ok[:, None])


def _precision(dtype):
    # fp32: three tf32 tensor-core products (~fp32 accuracy); see triton_window._precision.
    return "tf32x3" if dtype == torch.float32 else "tf32"


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def at_b(a: torch.Tensor, b: torch.Tensor, rows: int | None = None) -> torch.Tensor:
    """S = A^T B per (batch, head): a (B, H, N, Da), b (B, H, N, Db) -> (B, H, Da, Db) fp32.

    rows: tokens per split (partial sum); default gives ~4 programs per SM, a multiple of 512.
    """
    B, H, N, DA = a.shape
    DB = b.shape[-1]
    if rows is None:
        target_splits = max(1, (4 * _num_sms(a.device)) // max(B * H, 1))
        rows = max(512, _cdiv(_cdiv(N, target_splits), 512) * 512)
    n_splits = max(1, _cdiv(N, rows))
    part = torch.empty(B * H, n_splits, DA, DB, dtype=torch.float32, device=a.device)
    grid = lambda meta: (n_splits, B * H, (DA // meta["BLOCK_A"]) * (DB // meta["BLOCK_B"]))
    _at_b[grid](a, b, part, H, N, rows, a.stride(0), a.stride(1), a.stride(2), b.stride(0), b.stride(1), b.stride(2),
                DA=DA, DB=DB, PRECISION=_precision(a.dtype))
    return part.sum(1).view(B, H, DA, DB)


def x_m(x: torch.Tensor, m: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """Y = X M per (batch, head): x (B, H, N, Dx), m (B, H, Dx, Dm) fp32 (any strides) -> (B, H, N, Dm)."""
    B, H, N, DX = x.shape
    DM = m.shape[-1]
    y = torch.empty(B, H, N, DM, dtype=out_dtype, device=x.device)
    if N == 0:
        return y
    grid = lambda meta: (triton.cdiv(N, meta["BLOCK_M"]), B * H, DM // meta["BLOCK_C"])
    _x_m[grid](x, m, y, H, N, x.stride(0), x.stride(1), x.stride(2), m.stride(0), m.stride(1), m.stride(2), m.stride(3),
               y.stride(0), y.stride(1), y.stride(2), DX=DX, DM=DM, SPLIT=x.dtype != torch.float32,
               PRECISION=_precision(x.dtype))
    return y


def _c(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


# Custom ops (see eflow_core/kernels/triton_window/ops.py): torch.compile keeps the launches as opaque nodes.
@torch.library.custom_op("eflow::triton_linear_fwd", mutates_args=())
def _linear_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(o = q S in q's dtype, S = k^T v (B, H, D, Dv) fp32)."""
    s = at_b(_c(k), _c(v))
    return x_m(_c(q), s, q.dtype), s


@_linear_fwd_op.register_fake
def _(q, k, v):
    B, H, _, D = q.shape
    return q.new_empty(*q.shape[:3], v.shape[-1]), q.new_empty(B, H, D, v.shape[-1], dtype=torch.float32)


@torch.library.custom_op("eflow::triton_linear_bwd", mutates_args=())
def _linear_bwd_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq = do S^T, dk = v dS^T, dv = k dS with dS = q^T do (fp32)."""
    q, k, v, do = _c(q), _c(k), _c(v), _c(do)
    dq = x_m(do, s.transpose(-1, -2), q.dtype)
    ds = at_b(q, do)
    return dq, x_m(v, ds.transpose(-1, -2), k.dtype), x_m(k, ds, v.dtype)


@_linear_bwd_op.register_fake
def _(do, q, k, v, s):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _linear_setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs, output[1])


def _linear_backward(ctx, do, ds):
    return _linear_bwd_op(do, *ctx.saved_tensors)


_linear_fwd_op.register_autograd(_linear_backward, setup_context=_linear_setup_context)


def _check(q, k, v):
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"linear attention needs q, k (B,H,N,D) and v (B,H,N,Dv); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[-1] not in SUPPORTED_HEAD_DIMS or v.shape[-1] not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"triton linear attention supports head dims {SUPPORTED_HEAD_DIMS}")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32) or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError("triton linear attention needs q, k, v of one dtype fp16/bf16/fp32")


def triton_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """o = q (k^T v) per (batch, head) with the Triton kernels (CUDA, or CPU under TRITON_INTERPRET=1).

    q, k: (B, H, N, D), v: (B, H, N, Dv); D, Dv in 16..256 (powers of 2); one dtype fp16/bf16/fp32.
    The k^T v summary is accumulated in fp32. Returns (B, H, N, Dv) in q's dtype; differentiable.
    """
    _check(q, k, v)
    return _linear_fwd_op(q, k, v)[0]
