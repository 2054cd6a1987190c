"""Window attention through flash-attn's sliding window, for dense (nothing dropped) sequences.

flash-attn windows are index windows: query i sees keys [i - left, i + right]. They equal the
position window only when positions are exactly 0..N-1 in every row and Nq == Nk; the dispatcher
checks that. flash-attn is optional (CUDA, fp16/bf16 only).
"""
from __future__ import annotations

import importlib

import torch


def flash_module():
    """The imported `flash_attn` module, or None when it is not installed / not importable."""
    try:
        return importlib.import_module("flash_attn")
    except Exception:            # ImportError, or a broken CUDA extension
        return None


def positions_are_dense(q_pos: torch.Tensor, k_pos: torch.Tensor) -> bool:
    """True when q_pos == k_pos == arange(N) in every batch row (a host sync)."""
    if q_pos.shape != k_pos.shape:
        return False
    ar = torch.arange(q_pos.shape[1], device=q_pos.device, dtype=q_pos.dtype)
    return bool((q_pos == ar).all()) and bool((k_pos == ar).all())


def flash_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, radius: int) -> torch.Tensor:
    """Sliding-window attention with flash-attn for positions == arange(N).

    q, k, v: (B, H, N, D) fp16/bf16 on CUDA. Returns (B, H, N, D). Differentiable (flash-attn's own
    backward). Raises RuntimeError when flash-attn is not installed.
    """
    fa = flash_module()
    if fa is None:
        raise RuntimeError("flash-attn is not installed; use backend='triton', 'flex' or 'chunked'")
    out = fa.flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                             softmax_scale=q.shape[-1] ** -0.5, causal=False,
                             window_size=(int(radius), int(radius)))
    return out.transpose(1, 2)
