"""Transformer blocks of the VideoDiT: AdaLN-Zero DiT block (self-attention, optional text cross-attention,
FFN; paper Sec. 5.1, App. B.1), the conditioning embedders and the final layer."""
from __future__ import annotations

import math

import torch
from torch import nn

from eflow_core.config import ModelConfig
from eflow_core.model.attention import CrossAttention, GatedLocalGlobalAttention, SoftmaxAttention


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """AdaLN: x (B, N, C) * (1 + scale) + shift, with shift, scale (B, C)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class ScalarEmbedder(nn.Module):
    """A scalar per sample (time, time gap, guidance scale) -> (B, C): sinusoidal features + MLP (DiT)."""

    def __init__(self, dim: int, frequency_dim: int = 256, scale: float = 1000.0):
        super().__init__()
        self.frequency_dim, self.scale = frequency_dim, scale
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        half = self.frequency_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=value.device, dtype=torch.float32) / half)
        args = value.float()[:, None] * self.scale * freqs[None]
        features = torch.cat([args.cos(), args.sin()], dim=-1)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class FeedForward(nn.Sequential):
    """Linear(dim, hidden) -> GELU (tanh) -> Linear(hidden, dim): (..., dim) -> (..., dim).

    Sampling on CUDA runs the first layer's bias and GELU in its matmul's epilogue
    (`torch._addmm_activation`: cuBLASLt's GELU_BIAS, the same tanh GELU), which saves a separate pass
    over the `hidden`-wide activations: a 4-step 480p sample of the 1.5B preset took 1.069 s against
    1.097 s on an H100 (docs/BENCHMARKS.md §4a). Training (it has no derivative), autocast, swapped-in
    layers (FP8) and the CPU (whose `_addmm_activation` uses the erf GELU) take the plain path;
    `fuse_gelu = False` forces it. Subclassing nn.Sequential keeps the state-dict keys `0.*`, `2.*`.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.fuse_gelu = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, _, second = self
        plain = (not self.fuse_gelu or not x.is_cuda or type(first) is not nn.Linear or first.bias is None
                 or torch.is_autocast_enabled("cuda")
                 or (torch.is_grad_enabled() and (x.requires_grad or first.weight.requires_grad)))
        if plain:
            return super().forward(x)
        hidden = torch._addmm_activation(first.bias, x.reshape(-1, x.shape[-1]), first.weight.t(), use_gelu=True)
        return second(hidden.view(*x.shape[:-1], hidden.shape[-1]))


class DiTBlock(nn.Module):
    """x <- x + g1 * Attn(AdaLN(x)); x <- x + CrossAttn(LN(x), text); x <- x + g2 * FFN(AdaLN(x)).

    Attention is GLGA or full softmax by `config.block_attention(index)`. The modulation (shift, scale,
    gate for attention and FFN) comes from the conditioning vector c (B, C) and starts at zero
    (adaLN-Zero), so every block starts as the identity.
    forward(x (B, N, C), c (B, C), rope, positions (B, N), radius, context (B, L, C) | None,
    context_mask (B, L) | None) -> (B, N, C).
    """

    def __init__(self, config: ModelConfig, index: int):
        super().__init__()
        dim = config.dim
        self.attention_kind = config.block_attention(index)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        if self.attention_kind == "softmax":
            self.attn = SoftmaxAttention(dim, config.num_heads, config.qk_norm)
        else:
            self.attn = GatedLocalGlobalAttention(dim, config.num_heads, config.qk_norm, config.gate_per_head,
                                                  config.backend, branches=self.attention_kind)
        self.cross = CrossAttention(dim, config.num_heads, config.qk_norm) if config.text_dim else None
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6) if config.text_dim else None
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ffn = FeedForward(dim, config.ffn_dim)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x, c, rope, positions, radius, context=None, context_mask=None):
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = self.modulation(c).chunk(6, dim=-1)
        x = x + gate_a[:, None] * self.attn(modulate(self.norm1(x), shift_a, scale_a), rope, positions, radius)
        if self.cross is not None:
            x = x + self.cross(self.norm_cross(x), context, context_mask)
        x = x + gate_f[:, None] * self.ffn(modulate(self.norm2(x), shift_f, scale_f))
        return x


class FinalLayer(nn.Module):
    """AdaLN + linear to patch values, zero-initialised: (B, N, C) -> (B, N, patch_volume * channels)."""

    def __init__(self, dim: int, out_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out_features)
        for layer in (self.modulation[1], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))
