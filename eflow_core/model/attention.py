"""Self-attention modules of the VideoDiT: Gated Local-Global Attention (GLGA, paper Sec. 4.1) and the
full softmax attention interleaved every K blocks, plus the text cross-attention.

Every attention computation goes through `kernels` (one entry per operation, backend by dispatcher).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from eflow_core import kernels
from eflow_core.model.rope import apply_rope

RMS_EPS = 1e-6


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float = RMS_EPS) -> torch.Tensor:
    """RMSNorm over the last dimension: x (..., D), weight (D,) or None -> (..., D) in x's dtype.

    The weight is cast to x's dtype, as autocast casts a Linear's weight. PyTorch's fused RMSNorm
    kernel needs the two dtypes to match; an fp32 weight on a bf16 activation takes the composite path
    (several elementwise kernels with fp32 temporaries; benchmarks/rms_norm_dtype.py).
    """
    return F.rms_norm(x, (x.shape[-1],), None if weight is None else weight.to(x.dtype), eps)


class RMSNorm(nn.RMSNorm):
    """`nn.RMSNorm` over the last dimension whose weight follows the input's dtype (see `rms_norm`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def glga_window(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor, radius: int,
                backend: str = "auto", branches: str = "glga") -> torch.Tensor | None:
    """GLGA's local branch before its RMSNorm (Eq. 6): window softmax attention of q, k, v (B, H, N, D)
    over the original positions (B, N) -> (B, H, N, D); None when `branches` == "linear"."""
    if branches not in ("glga", "window"):
        return None
    return kernels.window_attention(q, k, v, positions, positions, radius, backend=backend)


def glga_combine(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o_local: torch.Tensor | None,
                 gate_logits: torch.Tensor, norm_global_weight: torch.Tensor | None = None,
                 norm_local_weight: torch.Tensor | None = None, backend: str = "auto",
                 branches: str = "glga") -> torch.Tensor:
    """GLGA after the window softmax: the linear branch, both RMSNorms and the gates (Eq. 5, 7, 8).

    q, k, v: (B, H, N, D), RoPE already applied to q and k; o_local: (B, H, N, D) the raw window
    attention output (Eq. 6; None when `branches` == "linear"); gate_logits: (B, H or 1, N, 2)
    pre-sigmoid [global, local] gates. Every operation here costs O(N D^2) or less per head, so
    `GatedLocalGlobalAttention` recomputes this function in the backward instead of saving its
    intermediates. Returns (B, H, N, D) in q's dtype.
    """
    gates = torch.sigmoid(gate_logits.to(torch.promote_types(gate_logits.dtype, torch.float32))).to(q.dtype)
    out = 0
    if branches in ("glga", "linear"):
        o_global = kernels.linear_attention(q, k, v, backend=backend)                  # Eq. 5
        o_global = rms_norm(o_global, norm_global_weight)
        out = out + gates[..., 0:1] * o_global
    if branches in ("glga", "window"):
        o_local = rms_norm(o_local, norm_local_weight)
        out = out + gates[..., 1:2] * o_local                                          # Eq. 8
    return out


def glga_mix(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor, radius: int,
             gate_logits: torch.Tensor, norm_global_weight: torch.Tensor | None = None,
             norm_local_weight: torch.Tensor | None = None, backend: str = "auto",
             branches: str = "glga") -> torch.Tensor:
    """The attention core of GLGA (projections excluded): Eq. 5-8, as one plain composition.

    q, k, v: (B, H, N, D), RoPE already applied to q and k; positions: (B, N) int64 original raster
    positions (ascending); radius: local window radius |W|/2 in raster positions;
    gate_logits: (B, H or 1, N, 2) pre-sigmoid [global, local] gates (Eq. 7).
    O = sigmoid(g_global) * RMSNorm(Q (K^T V)) + sigmoid(g_local) * RMSNorm(window softmax attention).
    `branches` = "linear" or "window" keeps one branch (ablations; its gate still applies).
    Returns (B, H, N, D) in q's dtype. Autograd saves every intermediate here; the module recomputes
    the `glga_combine` part instead (same values).
    """
    o_local = glga_window(q, k, v, positions, radius, backend, branches)
    return glga_combine(q, k, v, o_local, gate_logits, norm_global_weight, norm_local_weight, backend, branches)


class QKVProjection(nn.Module):
    """Shared Q, K, V projection with optional RMSNorm on q, k and RoPE (B, N, C) -> 3 x (B, H, N, D)."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = RMSNorm(self.head_dim, eps=RMS_EPS) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim, eps=RMS_EPS) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        return apply_rope(q, *rope), apply_rope(k, *rope), v


class GatedLocalGlobalAttention(nn.Module):
    """GLGA (Fig. 3b): shared QKV + RoPE; global linear branch and local window branch, each RMS-normed;
    input-aware sigmoid gates per token (and head) fuse them (Eq. 5-8).

    forward(x (B, N, C), rope, positions (B, N), radius) -> (B, N, C). With `capture` set, the last
    forward's gates are kept in `self.captured` as (B, N, H_g, 2) floats in [0, 1] ([global, local]).
    `branches` selects "glga" (both), "linear" or "window" for the attention ablations.

    Activation memory: with `recompute` (the default) and grad enabled, the gate projection,
    `glga_combine` (linear branch, RMSNorms, gates) and the output projection run under a non-reentrant
    `torch.utils.checkpoint`: autograd keeps only their inputs (x, q, k, v and the window output, which
    the QKV projection and the window attention save anyway) and recomputes the O(N D^2) rest in the
    backward, so a GLGA block saves one (B, N, C) tensor less than a softmax block of the same width,
    the output projection's input (docs/DESIGN.md "CLI to trainer to loss to network").
    `recompute = False` saves every intermediate (the plain composition `glga_mix`; same values and
    gradients).
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, gate_per_head: bool = True,
                 backend: str = "auto", branches: str = "glga"):
        super().__init__()
        self.proj_in = QKVProjection(dim, num_heads, qk_norm)
        head_dim = dim // num_heads
        self.gate_heads = num_heads if gate_per_head else 1
        self.gate = nn.Linear(dim, 2 * self.gate_heads)                     # W_g of Eq. 7
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)                                      # both gates start at 0.5
        self.norm_global_weight = nn.Parameter(torch.ones(head_dim))
        self.norm_local_weight = nn.Parameter(torch.ones(head_dim))
        self.proj_out = nn.Linear(dim, dim)
        self.backend, self.branches = backend, branches
        self.recompute = True
        self.capture = False
        self.captured: torch.Tensor | None = None

    def gate_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid gates (Eq. 7): x (B, N, C) -> (B, H_g, N, 2), [global, local]."""
        b, n, _ = x.shape
        return self.gate(x).view(b, n, self.gate_heads, 2).transpose(1, 2)

    def _combine_and_project(self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             o_local: torch.Tensor | None) -> torch.Tensor:
        """Gates from x (B, N, C), `glga_combine` of q, k, v, o_local (B, H, N, D), then the output
        projection -> (B, N, C)."""
        b, n, c = x.shape
        o = glga_combine(q, k, v, o_local, self.gate_logits(x), self.norm_global_weight, self.norm_local_weight,
                         self.backend, self.branches)
        return self.proj_out(o.transpose(1, 2).reshape(b, n, c))

    def forward(self, x: torch.Tensor, rope, positions: torch.Tensor, radius: int) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type) and x.dtype != torch.float64:
            # the cast autocast gives each projection, made once: the QKV and gate projections (and the
            # recomputed part) then share one saved copy of x
            x = x.to(torch.get_autocast_dtype(x.device.type))
        q, k, v = self.proj_in(x, rope)
        if self.capture:                                        # inspection only: computes the gates once more
            self.captured = torch.sigmoid(self.gate_logits(x).detach().float()).transpose(1, 2)
        o_local = glga_window(q, k, v, positions, radius, self.backend, self.branches)
        if self.recompute and torch.is_grad_enabled():          # nothing random inside: no RNG state to keep
            return checkpoint(self._combine_and_project, x, q, k, v, o_local, use_reentrant=False,
                              preserve_rng_state=False)
        return self._combine_and_project(x, q, k, v, o_local)


class SoftmaxAttention(nn.Module):
    """Full softmax self-attention over the tokens present (interleaved every K blocks; the baseline)."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True):
        super().__init__()
        self.proj_in = QKVProjection(dim, num_heads, qk_norm)
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope, positions: torch.Tensor, radius: int) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.proj_in(x, rope)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.proj_out(o.transpose(1, 2).reshape(b, n, c))


class CrossAttention(nn.Module):
    """Attention from video tokens (B, N, C) to text tokens (B, L, C) with a key mask (B, L) bool."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = RMSNorm(self.head_dim, eps=RMS_EPS) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim, eps=RMS_EPS) if qk_norm else nn.Identity()
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q_norm(self.q(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2))
        k, v = self.kv(context).view(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, self.k_norm(k), v, attn_mask=context_mask[:, None, None, :])
        return self.proj_out(o.transpose(1, 2).reshape(b, n, c))
