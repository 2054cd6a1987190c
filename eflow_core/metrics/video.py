"""Video tensor layout conversions shared by the metrics.

Two layouts meet here:
- model input: float (B, 3, T, H, W) in [-1, 1] (what datasets yield, batched);
- pipeline output: uint8 (B, T, H, W, 3) (what `EFlowPipeline.generate_batch` returns).
"""
from __future__ import annotations

import numpy as np
import torch


def to_model_input(videos: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Any supported clip batch -> float32 (B, 3, T, H, W) in [-1, 1].

    Accepts uint8 (B, T, H, W, 3) (pipeline output) or float (B, 3, T, H, W) in [-1, 1].
    """
    if isinstance(videos, np.ndarray):
        videos = torch.from_numpy(videos)
    if not isinstance(videos, torch.Tensor):
        raise TypeError(f"expected a tensor of clips, got {type(videos).__name__}")
    if videos.ndim != 5:
        raise ValueError(f"expected a batch of clips with 5 dims; got shape {tuple(videos.shape)}")
    if videos.dtype == torch.uint8:
        if videos.shape[-1] != 3:
            raise ValueError(f"uint8 clips must be (B, T, H, W, 3); got shape {tuple(videos.shape)}")
        return videos.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)
    if videos.shape[1] != 3:
        raise ValueError(f"float clips must be (B, 3, T, H, W) in [-1, 1]; got shape {tuple(videos.shape)}")
    return videos.float()


def to_uint8(videos: torch.Tensor) -> torch.Tensor:
    """float (B, 3, T, H, W) in [-1, 1] -> uint8 (B, T, H, W, 3), the pipeline's output layout."""
    x = ((videos.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 4, 1).contiguous()
