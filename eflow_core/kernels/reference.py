"""Pure-PyTorch definitions of the attention operations. These ARE the specification: every other
backend is tested against them. They materialise full N x N matrices, so use them on small inputs."""
from __future__ import annotations

import math

import torch


def window_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
                               k_pos: torch.Tensor, radius: int) -> torch.Tensor:
    """Softmax attention of each query to the keys whose original position lies within `radius`.

    q: (B, H, Nq, D), k, v: (B, H, Nk, D); q_pos: (B, Nq), k_pos: (B, Nk) int64 raster positions.
    Key j is visible to query i iff |q_pos[i] - k_pos[j]| <= radius; scale 1/sqrt(D).
    A query with no visible key gets a zero output. Returns (B, H, Nq, D) in q's dtype.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = torch.einsum("bhid,bhjd->bhij", q.float(), k.float()) * scale
    visible = (q_pos[:, :, None] - k_pos[:, None, :]).abs() <= radius          # (B, Nq, Nk)
    scores = scores.masked_fill(~visible[:, None], float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return torch.einsum("bhij,bhjd->bhid", weights, v.float()).to(q.dtype)


def linear_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Denominator-free linear attention (Eq. 5): o_i = q_i S with S = sum_j k_j^T v_j per (batch, head).

    q, k: (B, H, N, D), v: (B, H, N, Dv). Returns (B, H, N, Dv) in q's dtype.
    """
    summary = torch.einsum("bhnd,bhne->bhde", k.float(), v.float())
    return torch.einsum("bhnd,bhde->bhne", q.float(), summary).to(q.dtype)
