"""Window attention through torch's scaled_dot_product_attention with a dense band mask.

The mask is (B, 1, Nq, Nk) booleans, so memory is O(N^2): use it for small N only (it is the
cross-check backend, and the fastest choice for short sequences on some devices).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def band_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, radius: int) -> torch.Tensor:
    """Boolean visibility (B, Nq, Nk): True where |q_pos[i] - k_pos[j]| <= radius."""
    return (q_pos[:, :, None] - k_pos[:, None, :]).abs() <= radius


def sdpa_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
                          k_pos: torch.Tensor, radius: int) -> torch.Tensor:
    """Window attention with SDPA and a dense band mask.

    q: (B, H, Nq, D), k: (B, H, Nk, D), v: (B, H, Nk, Dv); q_pos: (B, Nq), k_pos: (B, Nk).
    Returns (B, H, Nq, Dv) in q's dtype. Queries with no visible key get zeros (and zero grads):
    their mask row is opened to keep softmax finite and their output is multiplied by 0.
    """
    visible = band_mask(q_pos, k_pos, radius)                       # (B, Nq, Nk)
    has_key = visible.any(-1)                                       # (B, Nq)
    # No branch on has_key (a host sync, and a graph break under torch.compile): open the rows of
    # key-less queries and zero their outputs afterwards; a no-op when every query has a key.
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=(visible | ~has_key[:, :, None])[:, None])
    return out * has_key[:, None, :, None].to(out.dtype)
