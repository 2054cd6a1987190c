"""A small causal 3-D video autoencoder the project trains itself (4x temporal, 8x spatial, like Wan's VAE).

video (B, 3, T, H, W), T = 1 + 4k  ->  latent (B, C, 1 + k, H / 8, W / 8).

Structure (cheap enough to train on a laptop CPU in minutes):
- causal space-time patches: latent frame 0 codes frame 0 alone (a 1x8x8 patch, 192 values); latent
  frame j >= 1 codes frames 4j-3 .. 4j (a 4x8x8 patch, 768 values);
- a linear path in each direction, initialised from a PCA of training patches (`init_pca`), so the
  untrained-but-initialised codec is already the best linear codec of its size;
- nonlinear residual paths that start at zero: the encoder adds a correction computed from the patch
  and its spatial neighbours; the decoder adds a correction from a causal 3x3x3 neighbourhood of
  latents (previous and current latent frames only) through a small MLP. Training only improves on PCA.

The encoder output is normalised by per-channel statistics measured after training (buffers `latent_mean`,
`latent_std`), so latents are roughly zero-mean, unit-variance for the generator.
Weights ship as `model.safetensors` (fp16) + `config.json` + `card.json`; load with `from_pretrained`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import LatentCodec
from .pixel import depth_to_space, space_to_depth

FIRST, REST = 3 * 8 * 8, 3 * 4 * 8 * 8  # patch sizes: frame 0 alone, then groups of 4 frames


@dataclass
class AutoencoderConfig:
    latent_channels: int = 16
    enc_width: int = 128      # encoder correction MLP width
    dec_width: int = 192      # decoder correction MLP width
    dec_layers: int = 2       # hidden 1x1 layers in the decoder correction


class CausalConv3d(nn.Conv3d):
    """Conv3d with kernel (kt, kh, kw): 'same' spatially, causal in time (left pad by repeating the first frame)."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int]):
        super().__init__(cin, cout, kernel, padding=(0, kernel[1] // 2, kernel[2] // 2))
        self.time_pad = kernel[0] - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_pad:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
        return super().forward(x)


def to_patches(video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, 1 + 4k, H, W) -> first (B, 192, 1, H/8, W/8), rest (B, 768, k, H/8, W/8)."""
    return space_to_depth(video[:, :, :1], (1, 8, 8)), space_to_depth(video[:, :, 1:], (4, 8, 8))


def from_patches(first: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """Inverse of `to_patches`."""
    return torch.cat([depth_to_space(first, (1, 8, 8)), depth_to_space(rest, (4, 8, 8))], dim=2)


def _zero(layer: nn.Module) -> nn.Module:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        c, w = cfg.latent_channels, cfg.enc_width
        self.lin_first, self.lin_rest = nn.Conv3d(FIRST, c, 1), nn.Conv3d(REST, c, 1)
        self.hid_first, self.hid_rest = nn.Conv3d(FIRST, w, 1), nn.Conv3d(REST, w, 1)
        self.context = CausalConv3d(w, w, (1, 3, 3))
        self.out = _zero(nn.Conv3d(w, c, 1))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        first, rest = to_patches(video)
        z = torch.cat([self.lin_first(first), self.lin_rest(rest)], dim=2)
        h = F.silu(torch.cat([self.hid_first(first), self.hid_rest(rest)], dim=2))
        return z + self.out(F.silu(self.context(h)) + h)


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        c, w = cfg.latent_channels, cfg.dec_width
        self.lin_first, self.lin_rest = nn.Conv3d(c, FIRST, 1), nn.Conv3d(c, REST, 1)
        self.inp = CausalConv3d(c, w, (2, 3, 3))
        self.hidden = nn.ModuleList(nn.Conv3d(w, w, 1) for _ in range(cfg.dec_layers))
        self.head_first, self.head_rest = _zero(nn.Conv3d(w, FIRST, 1)), _zero(nn.Conv3d(w, REST, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.inp(z))
        for layer in self.hidden:
            h = h + F.silu(layer(h))
        first = self.lin_first(z[:, :, :1]) + self.head_first(h[:, :, :1])
        rest = self.lin_rest(z[:, :, 1:]) + self.head_rest(h[:, :, 1:])
        return from_patches(first, rest)


class VideoAutoencoder(LatentCodec):
    """Small causal video autoencoder: factor (4, 8, 8), `latent_channels` channels (default 16)."""

    causal = True
    factor = (4, 8, 8)

    def __init__(self, config: AutoencoderConfig | None = None, name: str = "autoencoder"):
        super().__init__()
        self.config = config or AutoencoderConfig()
        self.channels = self.config.latent_channels
        self.name = name
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.register_buffer("latent_mean", torch.zeros(self.channels))
        self.register_buffer("latent_std", torch.ones(self.channels))

    @torch.no_grad()
    def init_pca(self, videos: torch.Tensor) -> None:
        """Set both linear paths to the PCA of the patches of `videos` (N, 3, 1 + 4k, H, W)."""
        first, rest = to_patches(videos)
        c = self.channels
        for patches, enc, dec in ((first, self.encoder.lin_first, self.decoder.lin_first),
                                  (rest, self.encoder.lin_rest, self.decoder.lin_rest)):
            p = patches.transpose(0, 1).flatten(1).T.float()              # (N, D)
            mean = p.mean(0)
            centred = p - mean
            cov = (centred.T @ centred).double() / len(p)                   # (D, D)
            _, vecs = torch.linalg.eigh(cov)                                # ascending eigenvalues
            basis = vecs[:, -c:].flip(1).T                                  # (C, D), largest first
            mean = mean.double()
            enc.weight.copy_(basis.float()[:, :, None, None, None])
            enc.bias.copy_(-(basis @ mean).float())
            dec.weight.copy_(basis.T.float()[:, :, None, None, None])
            dec.bias.copy_(mean.float())

    def _stats(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1, 1)
        return self.latent_mean.to(ref).view(shape), self.latent_std.to(ref).view(shape)

    def encode_raw(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 3, T, H, W) -> un-normalised latent (B, C, 1 + (T-1)/4, H/8, W/8)."""
        self.check_video(video)
        return self.encoder(video)

    def decode_raw(self, latent: torch.Tensor) -> torch.Tensor:
        """un-normalised latent (B, C, T', H', W') -> video (B, 3, 1 + 4 (T'-1), 8 H', 8 W')."""
        self.check_latent(latent)
        return self.decoder(latent)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 3, T, H, W) in [-1, 1], T = 1 + 4k -> normalised latent (B, C, 1 + k, H/8, W/8)."""
        mean, std = self._stats(video)
        return (self.encode_raw(video) - mean) / std

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """normalised latent (B, C, 1 + k, H', W') -> video (B, 3, 1 + 4k, 8 H', 8 W'), clamped to [-1, 1]."""
        mean, std = self._stats(latent)
        return self.decode_raw(latent * std + mean).clamp(-1, 1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Reconstruction (unclamped), for training: (B, 3, T, H, W) -> same."""
        return self.decoder(self.encoder(video))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- files ---------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path, card: dict | None = None, dtype: torch.dtype = torch.float16) -> Path:
        """Write model.safetensors (weights in `dtype`; latent statistics in float32), config.json, card.json."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: (v.to(dtype) if v.is_floating_point() and not k.startswith("latent_") else v).contiguous()
                 for k, v in self.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt", "codec": "eflow-video-ae"})
        (folder / "config.json").write_text(json.dumps(asdict(self.config), indent=1))
        if card is not None:
            (folder / "card.json").write_text(json.dumps(card, indent=1))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> "VideoAutoencoder":
        """Load a folder written by `save_pretrained` (weights are upcast to float32, eval mode, no grad)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        weights, config = folder / "model.safetensors", folder / "config.json"
        if not weights.is_file() or not config.is_file():
            raise FileNotFoundError(f"{folder} is not an autoencoder checkpoint (needs model.safetensors and config.json)")
        model = cls(AutoencoderConfig(**json.loads(config.read_text())), name=f"autoencoder:{folder.name}")
        state = {k: v.float() for k, v in load_file(str(weights)).items()}
        model.load_state_dict(state)
        return model.to(device).eval().requires_grad_(False)
