"""Adapter for diffusers' `AutoencoderKLWan` (Wan 2.1 / 2.2 VAE) loaded from a local folder.

Latents are the posterior mode normalised with the config's `latents_mean` / `latents_std` (as Wan's
pipelines do), so the generator sees roughly unit-variance latents. Nothing is downloaded.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .base import LatentCodec

log = logging.getLogger(__name__)


class WanCodec(LatentCodec):
    """Wan VAE: factor (4, 8, 8) for Wan 2.1 (16 channels); causal, T' = 1 + (T - 1) / 4."""

    causal = True

    def __init__(self, vae, name: str = "wan"):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        cfg = vae.config
        self.name = name
        self.channels = int(cfg.z_dim)
        ft = int(getattr(cfg, "scale_factor_temporal", None) or 4)
        fs = int(getattr(cfg, "scale_factor_spatial", None) or 8)
        self.factor = (ft, fs, fs)
        mean, std = list(cfg.latents_mean or []), list(cfg.latents_std or [])
        if len(mean) != self.channels or len(std) != self.channels:
            log.warning("Wan VAE config has no latents_mean/std for %d channels; latents are not normalised", self.channels)
            mean, std = [0.0] * self.channels, [1.0] * self.channels
        self.register_buffer("latent_mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("latent_std", torch.tensor(std, dtype=torch.float32))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "WanCodec":
        """Load `AutoencoderKLWan` from a local folder (the VAE folder itself, or a pipeline folder with `vae/`)."""
        from diffusers import AutoencoderKLWan

        path = Path(path)
        subfolder = None
        if not (path / "config.json").is_file() and (path / "vae" / "config.json").is_file():
            subfolder = "vae"
        if not (path / "config.json").is_file() and subfolder is None:
            raise FileNotFoundError(f"no Wan VAE at {path}: expected config.json (+ weights) there or in {path / 'vae'}")
        vae = AutoencoderKLWan.from_pretrained(str(path), subfolder=subfolder, local_files_only=True, torch_dtype=dtype)
        return cls(vae.to(device), name=f"wan:{path.name}")

    def _stats(self, ref: torch.Tensor):
        shape = (1, -1, 1, 1, 1)
        return self.latent_mean.to(ref).view(shape), self.latent_std.to(ref).view(shape)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 3, T, H, W) in [-1, 1], T = 1 + 4k -> normalised latent (B, z_dim, 1 + k, H/8, W/8)."""
        self.check_video(video)
        dtype = next(self.vae.parameters()).dtype
        z = self.vae.encode(video.to(dtype)).latent_dist.mode().float()
        mean, std = self._stats(z)
        return (z - mean) / std

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """normalised latent (B, z_dim, T', H', W') -> video (B, 3, 1 + 4 (T' - 1), 8 H', 8 W') in [-1, 1]."""
        self.check_latent(latent)
        mean, std = self._stats(latent.float())
        dtype = next(self.vae.parameters()).dtype
        video = self.vae.decode((latent.float() * std + mean).to(dtype)).sample
        return video.float().clamp(-1, 1)
