"""Latent codecs: one interface (`LatentCodec`), three implementations, one factory.

    codec = load_codec("pixel", factor=(1, 4, 4))        # exact space-to-depth, 48 channels
    codec = load_codec("autoencoder")                    # the shipped checkpoints/codec-shapes-ae
    codec = load_codec("autoencoder:/path/to/folder")    # any folder written by train_autoencoder
    codec = load_codec("wan:/path/to/Wan2.1-T2V-1.3B-Diffusers")  # diffusers AutoencoderKLWan, local

    latent = codec.encode(video)      # (B, 3, T, H, W) in [-1, 1] -> (B, C, T', H', W')
    video = codec.decode(latent)      # -> (B, 3, T, H, W)
    codec.latent_shape(T, H, W)       # -> (C, T', H', W')
"""
from __future__ import annotations

from pathlib import Path

import torch

from eflow_core.checkpoint import SHIPPED_DIR

from .autoencoder import AutoencoderConfig, VideoAutoencoder
from .base import LatentCodec
from .pixel import PixelCodec, depth_to_space, space_to_depth

__all__ = ["AutoencoderConfig", "LatentCodec", "PixelCodec", "VideoAutoencoder", "WanCodec", "depth_to_space",
           "load_codec", "shipped_autoencoder_path", "space_to_depth"]

SHIPPED_AUTOENCODER = "codec-shapes-ae"


def shipped_autoencoder_path(name: str = SHIPPED_AUTOENCODER) -> Path:
    """checkpoints/<name> in the repository this package lives in."""
    return SHIPPED_DIR / name


def load_codec(spec: str = "pixel", factor: tuple[int, int, int] = (1, 4, 4),
               device: str | torch.device = "cpu") -> LatentCodec:
    """Build a codec from a spec: "pixel" | "autoencoder[:PATH]" | "wan:PATH" (`factor` is the pixel codec's)."""
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "pixel":
        return PixelCodec(tuple(factor)).to(device)
    if kind in ("autoencoder", "ae"):
        path = Path(arg) if arg else shipped_autoencoder_path()
        if not path.is_dir():
            raise FileNotFoundError(f"autoencoder checkpoint folder {path} does not exist")
        return VideoAutoencoder.from_pretrained(path, device=device)
    if kind == "wan":
        if not arg:
            raise ValueError("the wan codec needs a local folder: use 'wan:/path/to/vae'")
        from .wan import WanCodec

        return WanCodec.from_pretrained(arg, device=device)
    raise ValueError(f"unknown codec {spec!r}: use 'pixel', 'autoencoder[:PATH]' or 'wan:PATH'")


def __getattr__(name: str):
    if name == "WanCodec":  # keeps `import eflow_core.codecs` free of diffusers
        from .wan import WanCodec

        return WanCodec
    raise AttributeError(name)
