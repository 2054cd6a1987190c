"""3-D rotary position embedding over (frame, row, column) of the token grid (paper Sec. 4.1: RoPE on Q, K).

Tables are computed from each token's ORIGINAL raster position, so a dropped-token sequence keeps
the rotation its tokens had in the full grid. The head dimension is split as in Wan: the time axis
gets D - 4 (D // 6) channels, height and width 2 (D // 6) each (all even).
"""
from __future__ import annotations

import torch


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels of the head dimension given to the (t, h, w) axes; each even, summing to head_dim."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def grid_coordinates(positions: torch.Tensor, grid_thw: tuple[int, int, int]) -> torch.Tensor:
    """Raster positions (..., N) int64 -> (..., N, 3) float coordinates (t, h, w) on a (T, H, W) grid."""
    _, height, width = grid_thw
    t = positions // (height * width)
    h = (positions // width) % height
    w = positions % width
    return torch.stack([t, h, w], dim=-1).float()


def rope_tables(positions: torch.Tensor, grid_thw: tuple[int, int, int], head_dim: int,
                theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for tokens at `positions`.

    positions: (B, N) int64 raster positions on the token grid `grid_thw` = (T, H, W).
    Returns (cos, sin), each (B, 1, N, head_dim // 2) float32 (broadcast over heads).
    """
    coords = grid_coordinates(positions, grid_thw)                       # (B, N, 3)
    angles = []
    for axis, dim in enumerate(axis_dims(head_dim)):
        freqs = theta ** (-torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)
        angles.append(coords[..., axis:axis + 1] * freqs)                 # (B, N, dim / 2)
    angle = torch.cat(angles, dim=-1)[:, None]                           # (B, 1, N, head_dim / 2)
    return angle.cos(), angle.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + D/2) of x (B, H, N, D) by the tables (B, 1, N, D/2); keeps x's dtype."""
    half = x.shape[-1] // 2
    compute = torch.promote_types(x.dtype, torch.float32)
    x1, x2 = x[..., :half].to(compute), x[..., half:].to(compute)
    cos, sin = cos.to(compute), sin.to(compute)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)
