"""Adapter for diffusers' `AutoencoderKLWan` (Wan 2.1 / 2.2 VAE) loaded from a local folder.

Latents are the posterior mode normalised with the config's `latents_mean` / `latents_std` (as Wan's
pipelines do), so the generator sees roughly unit-variance latents. Nothing is downloaded.

Decoding several latent frames per decoder call. diffusers' `AutoencoderKLWan._decode` runs its causal
decoder once per latent frame and carries the last two input frames of every causal convolution in a
feature cache. Nothing in that cache needs the calls to be one frame long: a causal convolution's output
frame depends on its own input frame and the two before, whether those came in this call or the cache.
The first call must hold the first latent frame alone (the temporal upsamplers skip it, marking their
cache "Rep"); after that, any split of the remaining frames gives the same video. With
`latent_frames_per_call = k` the decoder runs on [1, k, k, ..., rest] frames: fewer, larger
convolutions and fewer cache concatenations, for k times the activation memory of one call.
`tests/test_codecs.py` checks the equality against `vae.decode` on Wan 2.1- and 2.2-style decoders.
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

    def __init__(self, vae, name: str = "wan", latent_frames_per_call: int = 1):
        super().__init__()
        if latent_frames_per_call < 1:
            raise ValueError(f"latent_frames_per_call must be >= 1, got {latent_frames_per_call}")
        self.vae = vae.eval().requires_grad_(False)
        self.latent_frames_per_call = latent_frames_per_call
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
                        dtype: torch.dtype = torch.float32, latent_frames_per_call: int = 1) -> "WanCodec":
        """Load `AutoencoderKLWan` from a local folder (the VAE folder itself, or a pipeline folder with `vae/`)."""
        from diffusers import AutoencoderKLWan

        path = Path(path)
        subfolder = None
        if not (path / "config.json").is_file() and (path / "vae" / "config.json").is_file():
            subfolder = "vae"
        if not (path / "config.json").is_file() and subfolder is None:
            raise FileNotFoundError(f"no Wan VAE at {path}: expected config.json (+ weights) there or in {path / 'vae'}")
        vae = AutoencoderKLWan.from_pretrained(str(path), subfolder=subfolder, local_files_only=True, torch_dtype=dtype)
        return cls(vae.to(device), name=f"wan:{path.name}", latent_frames_per_call=latent_frames_per_call)

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
        z = (latent.float() * std + mean).to(dtype)
        if self.latent_frames_per_call == 1 or self.vae.use_tiling:
            video = self.vae.decode(z).sample          # diffusers' own loop: one latent frame a call, or tiles
        else:
            video = self._decode_in_chunks(z, self.latent_frames_per_call)
        return video.float().clamp(-1, 1)

    def _decode_in_chunks(self, z: torch.Tensor, frames_per_call: int) -> torch.Tensor:
        """z (B, z_dim, T', H', W') un-normalised -> video (B, 3, 1 + 4 (T' - 1), 8 H', 8 W'); `decode` clamps it.

        `AutoencoderKLWan._decode` with the decoder called on [1, k, k, ..., rest] latent frames instead of
        one at a time (module docstring); the same cache, the same modules."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        vae = self.vae
        frames = z.shape[2]
        bounds = [0, *range(1, frames, frames_per_call), frames]
        vae.clear_cache()
        x = vae.post_quant_conv(z)
        pieces = []
        for start, end in zip(bounds[:-1], bounds[1:]):
            vae._conv_idx = [0]
            pieces.append(vae.decoder(x[:, :, start:end], feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                                      first_chunk=start == 0))
        vae.clear_cache()
        video = torch.cat(pieces, dim=2)
        if vae.config.patch_size is not None:
            video = unpatchify(video, patch_size=vae.config.patch_size)
        return video
