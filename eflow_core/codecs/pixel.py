"""Pixel codec: no learning, exact — space-to-depth by (ft, fh, fw); (1, 4, 4) turns 3 channels into 48."""
from __future__ import annotations

import torch

from .base import LatentCodec


def space_to_depth(x: torch.Tensor, factor: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, C * ft * fh * fw, T / ft, H / fh, W / fw); channel index = ((c * ft + i) * fh + j) * fw + k."""
    ft, fh, fw = factor
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // ft, ft, h // fh, fh, w // fw, fw)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * ft * fh * fw, t // ft, h // fh, w // fw)


def depth_to_space(x: torch.Tensor, factor: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of `space_to_depth`: (B, C * ft * fh * fw, T, H, W) -> (B, C, T * ft, H * fh, W * fw)."""
    ft, fh, fw = factor
    b, cf, t, h, w = x.shape
    c = cf // (ft * fh * fw)
    x = x.reshape(b, c, ft, fh, fw, t, h, w)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, t * ft, h * fh, w * fw)


class PixelCodec(LatentCodec):
    """Identity + space-to-depth. encode/decode are exact inverses (bit for bit)."""

    causal = False

    def __init__(self, factor: tuple[int, int, int] = (1, 4, 4)):
        super().__init__()
        factor = tuple(int(f) for f in factor)
        if len(factor) != 3 or min(factor) < 1:
            raise ValueError(f"pixel codec factor must be three positive ints (ft, fh, fw), got {factor}")
        self.factor = factor
        self.channels = 3 * factor[0] * factor[1] * factor[2]
        self.name = "pixel" if factor == (1, 1, 1) else f"pixel-{factor[0]}x{factor[1]}x{factor[2]}"

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 3, T, H, W) -> latent (B, 3 * ft * fh * fw, T / ft, H / fh, W / fw)."""
        self.check_video(video)
        return space_to_depth(video, self.factor)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent (B, 3 * ft * fh * fw, T', H', W') -> video (B, 3, T' * ft, H' * fh, W' * fw)."""
        self.check_latent(latent)
        return depth_to_space(latent, self.factor)
