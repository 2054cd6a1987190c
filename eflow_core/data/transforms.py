"""Frame sampling, resize + center crop, and uint8 <-> float tensor conversions.

uint8 frames: numpy (T, H, W, 3). Model tensors: float (C, T, H, W) (or (B, C, T, H, W)) in [-1, 1].
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def sample_frame_indices(total: int, num_frames: int, stride: int = 1, mode: str = "center",
                         generator: torch.Generator | None = None, short: str = "pad") -> np.ndarray:
    """Indices (num_frames,) int64 of frames to take from a clip of `total` frames.

    `mode`: "random" (training: a random start) or "center" (evaluation: the middle of the clip).
    A clip shorter than the span (num_frames - 1) * stride + 1 first gets the largest stride that fits;
    a clip with fewer than `num_frames` frames is then `short`="pad" (repeat the last frame: the clip ends
    in a hold) or "loop" (start over from its first frame).
    """
    if total < 1:
        raise ValueError("cannot sample frames from an empty clip")
    if num_frames < 1 or stride < 1:
        raise ValueError(f"num_frames and stride must be >= 1, got {num_frames}, {stride}")
    if mode not in ("random", "center"):
        raise ValueError(f"mode must be 'random' or 'center', got {mode!r}")
    if num_frames > 1:
        stride = max(1, min(stride, (total - 1) // (num_frames - 1)))
    span = (num_frames - 1) * stride + 1
    if span <= total:
        room = total - span
        if mode == "random":
            start = int(torch.randint(0, room + 1, (1,), generator=generator)) if room else 0
        else:
            start = room // 2
        return start + stride * np.arange(num_frames, dtype=np.int64)
    idx = np.arange(num_frames, dtype=np.int64)
    if short == "loop":
        return idx % total
    if short == "pad":
        return np.minimum(idx, total - 1)
    raise ValueError(f"short must be 'pad' or 'loop', got {short!r}")


def resize_center_crop(frames: np.ndarray | torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize (antialiased bilinear) so the frames cover `size`, then center-crop.

    frames: uint8 (T, H, W, 3) numpy or tensor -> uint8 tensor (T, size_h, size_w, 3).
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    x = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got {tuple(x.shape)}")
    t, h, w, _ = x.shape
    if (h, w) == (out_h, out_w):
        return x
    scale = max(out_h / h, out_w / w)
    nh, nw = max(out_h, round(h * scale)), max(out_w, round(w * scale))
    if (nh, nw) != (h, w):
        y = x.permute(0, 3, 1, 2).float()
        y = F.interpolate(y, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        x = y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    top, left = (nh - out_h) // 2, (nw - out_w) // 2
    return x[:, top:top + out_h, left:left + out_w].contiguous()


def frames_to_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (3, T, H, W) in [-1, 1]."""
    x = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got {tuple(x.shape)}")
    return x.permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0).contiguous()


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """float (3, T, H, W) in [-1, 1] -> uint8 numpy (T, H, W, 3); a batch (B, 3, T, H, W) -> (B, T, H, W, 3).

    Values outside [-1, 1] are clipped; rounding is to nearest, so frames_to_tensor -> tensor_to_frames is exact.
    """
    if video.ndim not in (4, 5) or video.shape[-4] != 3:
        raise ValueError(f"expected a video (3, T, H, W) or (B, 3, T, H, W), got {tuple(video.shape)}")
    x = ((video.detach().float().cpu() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    perm = (1, 2, 3, 0) if video.ndim == 4 else (0, 2, 3, 4, 1)
    return x.permute(*perm).contiguous().numpy()


def load_clip(path, num_frames: int = 16, size: int = 64, frame_stride: int = 2, mode: str = "center",
              generator: torch.Generator | None = None, short: str = "pad") -> torch.Tensor:
    """Read a video file and return a model clip: float (3, num_frames, size, size) in [-1, 1]."""
    from .video import read_video

    frames = read_video(path, short_side=size)
    idx = sample_frame_indices(len(frames), num_frames, frame_stride, mode, generator, short)
    return frames_to_tensor(resize_center_crop(frames[idx], size))
