"""The latent-codec interface every codec follows (pixel, the project's small autoencoder, Wan's VAE).

video: float (B, 3, T, H, W) in [-1, 1]  <->  latent: float (B, C, T', H', W').
`factor` = (ft, fh, fw): H' = H / fh, W' = W / fw; T' = T / ft for the pixel codec and
1 + (T - 1) / ft for causal codecs (the first frame is coded alone).
"""
from __future__ import annotations

import torch
from torch import nn


class LatentCodec(nn.Module):
    """Base class. Subclasses set `name`, `channels`, `factor`, `causal` and implement `encode` / `decode`."""

    name: str = "codec"
    channels: int = 3
    factor: tuple[int, int, int] = (1, 1, 1)
    causal: bool = False  # True: T' = 1 + (T - 1) / ft

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 3, T, H, W) in [-1, 1] -> latent (B, C, T', H', W')."""
        raise NotImplementedError

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent (B, C, T', H', W') -> video (B, 3, T, H, W), roughly in [-1, 1]."""
        raise NotImplementedError

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T', H', W') of the latent of a (num_frames, height, width) video; a clear ValueError if it does not divide."""
        ft, fh, fw = self.factor
        if height % fh or width % fw:
            raise ValueError(f"{self.name} codec needs height and width divisible by {fh} and {fw}, got {height}x{width}")
        if self.causal:
            if (num_frames - 1) % ft:
                raise ValueError(f"{self.name} codec needs num_frames = 1 + {ft}k (e.g. {1 + ft * 4}), got {num_frames}")
            t = 1 + (num_frames - 1) // ft
        else:
            if num_frames % ft:
                raise ValueError(f"{self.name} codec needs num_frames divisible by {ft}, got {num_frames}")
            t = num_frames // ft
        return (self.channels, t, height // fh, width // fw)

    def check_video(self, video: torch.Tensor) -> None:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"{self.name} codec expects video (B, 3, T, H, W), got {tuple(video.shape)}")
        self.latent_shape(*video.shape[2:])

    def check_latent(self, latent: torch.Tensor) -> None:
        if latent.ndim != 5 or latent.shape[1] != self.channels:
            raise ValueError(f"{self.name} codec expects latent (B, {self.channels}, T', H', W'), got {tuple(latent.shape)}")

    def extra_repr(self) -> str:
        return f"name={self.name!r}, channels={self.channels}, factor={self.factor}, causal={self.causal}"
