"""Window attention through torch's FlexAttention with a block mask built from positions.

The block mask lets FlexAttention skip key blocks that no query of a block can see. On CUDA the
mask is built with `create_block_mask(..., _compile=True)` (otherwise it is built densely: N^2
booleans, 116 GiB at 124,800 tokens) and flex_attention runs through torch.compile. Sequences are
padded to a multiple of the 128 block size; padded keys are invisible and padded queries dropped.
On the CPU FlexAttention runs forward only (its backward raises NotImplementedError).
"""
from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

BLOCK = 128


def _pad_len(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _pad_positions(pos: torch.Tensor, n_pad: int) -> torch.Tensor:
    """(B, N) -> (B, n_pad), repeating the last position (keeps rows ascending)."""
    extra = n_pad - pos.shape[1]
    if extra == 0:
        return pos.contiguous()
    fill = pos[:, -1:] if pos.shape[1] else torch.zeros_like(pos[:, :1])
    return torch.cat([pos, fill.expand(-1, extra)], 1).contiguous()


def build_block_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, radius: int, compile_mask: bool | None = None):
    """FlexAttention BlockMask for |q_pos - k_pos| <= radius on padded lengths.

    q_pos: (B, Nq), k_pos: (B, Nk) int64. Returns a BlockMask of shape (B, 1, pad(Nq), pad(Nk)).
    compile_mask defaults to True on CUDA (required at large N), False on the CPU.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    B, nq = q_pos.shape
    nk = k_pos.shape[1]
    nq_pad, nk_pad = _pad_len(max(nq, 1)), _pad_len(max(nk, 1))
    qp, kp = _pad_positions(q_pos, nq_pad), _pad_positions(k_pos, nk_pad)
    r = int(radius)

    def mask_mod(b, h, q_idx, kv_idx):
        return ((qp[b, q_idx] - kp[b, kv_idx]).abs() <= r) & (kv_idx < nk) & (q_idx < nq)

    if compile_mask is None:
        compile_mask = q_pos.device.type == "cuda"
    return create_block_mask(mask_mod, B, None, nq_pad, nk_pad, device=q_pos.device, BLOCK_SIZE=BLOCK,
                             _compile=compile_mask)


@functools.lru_cache(maxsize=None)
def compiled_flex_attention():
    """torch.compile(flex_attention), built once per process. Default (automatic) dynamic shapes:
    the first N compiles a static graph, a second N recompiles once with symbolic lengths, later
    lengths reuse it, so a sweep over N does not recompile per shape."""
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention)


def flex_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
                          k_pos: torch.Tensor, radius: int, block_mask=None, compiled: bool | None = None) -> torch.Tensor:
    """Window attention with FlexAttention.

    q: (B, H, Nq, D), k: (B, H, Nk, D), v: (B, H, Nk, Dv); q_pos: (B, Nq), k_pos: (B, Nk) int64.
    block_mask: from `build_block_mask` (pass it to reuse one mask across layers/calls).
    compiled: run flex_attention through torch.compile (default: on CUDA). Returns (B, H, Nq, Dv).
    Fully masked queries output zeros (FlexAttention's convention, same as the reference).
    """
    from torch.nn.attention.flex_attention import flex_attention

    if q.device.type == "cpu" and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise NotImplementedError("FlexAttention has no backward on the CPU; use backend='chunked'")
    nq, nk = q.shape[2], k.shape[2]
    if block_mask is None:
        block_mask = build_block_mask(q_pos, k_pos, radius)
    nq_pad, nk_pad = block_mask.shape[-2], block_mask.shape[-1]
    qq = F.pad(q, (0, 0, 0, nq_pad - nq)) if nq_pad > nq else q
    kk = F.pad(k, (0, 0, 0, nk_pad - nk)) if nk_pad > nk else k
    vv = F.pad(v, (0, 0, 0, nk_pad - nk)) if nk_pad > nk else v
    if compiled is None:
        compiled = q.device.type == "cuda"
    if compiled:
        out = compiled_flex_attention()(qq, kk, vv, block_mask=block_mask, scale=q.shape[-1] ** -0.5)
    else:
        with warnings.catch_warnings():   # "called without torch.compile": intended (CPU / tests)
            warnings.filterwarnings("ignore", message=".*without torch.compile.*")
            out = flex_attention(qq, kk, vv, block_mask=block_mask, scale=q.shape[-1] ** -0.5)
    return out[:, :, :nq]
