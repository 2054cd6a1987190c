"""Tiny anti-aliased rasteriser for the synthetic worlds: signed distances -> coverage in [0, 1].

Every function works on a whole clip at once: centres and sizes are arrays of shape (T,), the result is
coverage (T, H, W) float32 — a pixel whose centre lies on the edge gets 0.5, and coverage falls off
linearly over one pixel, which is what supersampling a box filter would give for straight edges.
"""
from __future__ import annotations

import numpy as np


def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates y (1, H, 1), x (1, 1, W), float32, in pixels."""
    c = np.arange(size, dtype=np.float32) + 0.5
    return c[None, :, None], c[None, None, :]


def coverage(sdf: np.ndarray) -> np.ndarray:
    """Signed distance in pixels (negative inside) -> coverage in [0, 1]."""
    return np.clip(0.5 - sdf, 0.0, 1.0)


def _col(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float32).reshape(-1, 1, 1)


def circle_sdf(size: int, cx, cy, radius) -> np.ndarray:
    y, x = pixel_grid(size)
    return np.sqrt((x - _col(cx)) ** 2 + (y - _col(cy)) ** 2) - _col(radius)


def box_sdf(size: int, cx, cy, half_w, half_h=None, angle=0.0) -> np.ndarray:
    """Rectangle centred at (cx, cy) with half sizes, rotated by `angle` radians (arrays (T,) or scalars)."""
    y, x = pixel_grid(size)
    dx, dy = x - _col(cx), y - _col(cy)
    a = _col(angle)
    if np.any(a != 0):
        c, s = np.cos(a), np.sin(a)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    hw = _col(half_w)
    hh = hw if half_h is None else _col(half_h)
    qx, qy = np.abs(dx) - hw, np.abs(dy) - hh
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0)


def triangle_sdf(size: int, cx, cy, radius, angle=0.0) -> np.ndarray:
    """Equilateral triangle (pointing up at angle 0) inscribed in a circle of `radius` around (cx, cy).

    Distance = max over the three edges of the signed distance to the edge's line (exact near edges,
    slightly rounded corners).
    """
    y, x = pixel_grid(size)
    dx, dy = x - _col(cx), y - _col(cy)
    r = _col(radius)
    a = _col(angle)
    d = None
    for k in range(3):
        # outward normals at 90, 210, 330 degrees (image y points down; apex up)
        th = a + np.pi / 2 + k * 2 * np.pi / 3
        nx, ny = np.cos(th), np.sin(th)
        e = dx * nx + dy * ny - r / 2  # the inradius is r / 2
        d = e if d is None else np.maximum(d, e)
    return d


def segment_sdf(size: int, x0, y0, x1, y1, width) -> np.ndarray:
    """Thick line segment from (x0, y0) to (x1, y1) with round caps."""
    y, x = pixel_grid(size)
    x0, y0, x1, y1 = map(_col, (x0, y0, x1, y1))
    px, py = x - x0, y - y0
    vx, vy = x1 - x0, y1 - y0
    h = np.clip((px * vx + py * vy) / np.maximum(vx * vx + vy * vy, 1e-6), 0, 1)
    return np.sqrt((px - vx * h) ** 2 + (py - vy * h) ** 2) - _col(width) / 2


def ring_sdf(size: int, cx, cy, radius, width) -> np.ndarray:
    return np.abs(circle_sdf(size, cx, cy, radius)) - _col(width) / 2


def blend(canvas: np.ndarray, alpha: np.ndarray, color) -> np.ndarray:
    """canvas (T, H, W, 3) float32 in [0, 1]; alpha (T, H, W); color (3,) or (T, 3) -> canvas, in place."""
    c = np.asarray(color, dtype=np.float32)
    c = c.reshape(-1, 1, 1, 3) if c.ndim == 2 else c.reshape(1, 1, 1, 3)
    a = alpha[..., None]
    canvas *= 1.0 - a
    canvas += a * c
    return canvas


def to_video_tensor(canvas: np.ndarray):
    """canvas (T, H, W, 3) float in [0, 1] -> torch float32 (3, T, H, W) in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(canvas.transpose(3, 0, 1, 2)) * 2.0 - 1.0)
