"""The torch side of the Triton window attention: custom ops, autograd and the public entry point.

This module owns
- the custom ops `eflow::triton_window_fwd` (`_window_fwd_op`) and `eflow::triton_window_bwd`
  (`_window_bwd_op`), with their fake (meta) implementations, whose bodies are the launchers of
  `launch.py`;
- the autograd formula that ties them together (`register_autograd`);
- `triton_window_attention`, the checked entry point that `eflow_core.kernels.dispatch` calls.
The custom ops register when this module is imported (by the package).
"""
from __future__ import annotations

import torch

from eflow_core.kernels.triton_window.launch import position_tables, window_backward, window_forward

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128, 256)


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


# The kernels are wrapped as torch custom ops (forward and backward), so torch.compile treats each
# launch as one opaque node with a known output shape (register_fake) instead of tracing into
# Triton's launcher, and compiled model blocks keep these kernels.
@torch.library.custom_op("eflow::triton_window_fwd", mutates_args=())
def _window_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qpos32: torch.Tensor, kpos32: torch.Tensor,
                   klo: torch.Tensor, khi: torch.Tensor, qlo: torch.Tensor, qhi: torch.Tensor,
                   radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(o (B, H, Nq, D) in q's dtype, lse2 (B, H, Nq) fp32). qlo/qhi are unused here; they are inputs
    so that the backward can save them."""
    return window_forward(q, k, v, qpos32, kpos32, klo, khi, radius)


@_window_fwd_op.register_fake
def _(q, k, v, qpos32, kpos32, klo, khi, qlo, qhi, radius):
    B, H, nq, D = q.shape
    return q.new_empty(B, H, nq, D), q.new_empty(B, H, nq, dtype=torch.float32)


@torch.library.custom_op("eflow::triton_window_bwd", mutates_args=())
def _window_bwd_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                   lse: torch.Tensor, qpos32: torch.Tensor, kpos32: torch.Tensor, klo: torch.Tensor,
                   khi: torch.Tensor, qlo: torch.Tensor, qhi: torch.Tensor,
                   radius: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) from the output gradient do (B, H, Nq, D) and the forward's o and lse2."""
    return window_backward(do, q, k, v, o, lse, qpos32, kpos32, klo, khi, qlo, qhi, radius)


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
