"""VideoDiT (paper Fig. 3, Sec. 3.2, 4.1, App. B.1): patchify -> encoder blocks on all tokens -> middle
blocks on the kept tokens (SPRINT token dropping) -> fusion with the encoder output through the long
residual -> decoder blocks on all tokens -> unpatchify.

The network computes F(x_t, t, s, c, w) of the solution map f = x_t + (s - t) F (Eq. 2). It follows
the protocol of `eflow_core.flow`: `model(x_t, t, s, cond, guidance, weak=False) -> F`.
"""
from __future__ import annotations

import contextlib
import math
import warnings

import torch
from torch import nn

from eflow_core.conditioning import NULL_LABEL, Condition, TextCondition
from eflow_core.config import ModelConfig
from eflow_core.model.attention import GatedLocalGlobalAttention
from eflow_core.model.blocks import DiTBlock, FinalLayer, ScalarEmbedder
from eflow_core.model.rope import rope_tables


def structured_keep_indices(grid_thw: tuple[int, int, int], group: tuple[int, int, int], drop_ratio: float,
                            batch: int, device: torch.device, generator: torch.Generator | None = None
                            ) -> torch.Tensor:
    """SPRINT structured group-wise token sampling (App. B.2).

    The token grid (T, H, W) is cut into groups of `group` = (g_t, g_h, g_w) neighbouring tokens
    (partial groups at the edges). Exactly n_keep = ceil(N (1 - drop_ratio)) tokens are kept per
    sample: every group first gives its randomly chosen first member, then its second, ... so the kept
    count of any two groups differs by at most one; which tokens inside a group is random.
    Returns (B, n_keep) int64 raster positions, ascending (raster order keeps the window band narrow).
    """
    t, h, w = grid_thw
    n = t * h * w
    n_keep = math.ceil(n * (1.0 - drop_ratio) - 1e-9)
    pos = torch.arange(n, device=device)
    gt, gh, gw = group
    group_id = (((pos // (h * w)) // gt) * math.ceil(h / gh) + ((pos // w) % h) // gh) * math.ceil(w / gw) \
        + (pos % w) // gw                                                              # (N,)
    u = torch.rand(batch, n, device=device, generator=generator)
    order = torch.argsort(group_id[None] + u, dim=1)                # tokens sorted by (group, random)
    sorted_group = group_id[order]
    group_start = torch.searchsorted(sorted_group.contiguous(), sorted_group.contiguous(), right=False)
    rank_sorted = torch.arange(n, device=device)[None] - group_start   # rank of each token inside its group
    rank = torch.empty_like(rank_sorted).scatter_(1, order, rank_sorted)
    v = torch.rand(batch, n, device=device, generator=generator)
    priority = torch.argsort(rank.float() + v, dim=1)               # rank 0 of every group first, then rank 1...
    return priority[:, :n_keep].sort(dim=1).values


class VideoDiT(nn.Module):
    """F_theta(x_t, t, s, c, w) over latent videos.

    forward(x (B, C, T, H, W), t (B,), s (B,), cond, guidance (B,), weak=False) -> (B, C, T, H, W).
    cond: None, labels (B,) int64 (-1 = null) or TextCondition (tokens (B, L, text_dim), mask (B, L)).
    Token dropping of the middle stack happens when the module is in training mode and
    `self.drop_ratio > 0` (the trainer sets it per phase; it starts at 0). `weak=True` is the PDG weak
    path (Eq. 10): the middle stack is skipped and its output replaced by [MASK] tokens everywhere, as in
    SPRINT's unconditional path; middle-stack parameters are not touched.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        problem = config.head_rank_problem()
        if problem:                    # loadable (old checkpoints), but the Trainer refuses to train it
            warnings.warn(problem, stacklevel=2)
        dim = config.dim
        pt, ph, pw = config.patch_size
        self.patch_volume = pt * ph * pw
        self.patch_embed = nn.Linear(config.in_channels * self.patch_volume, dim)
        self.time_embed = ScalarEmbedder(dim)
        self.gap_embed = ScalarEmbedder(dim)            # t - s (or s)
        self.guidance_embed = ScalarEmbedder(dim, scale=100.0)
        if config.num_classes:
            self.class_embed = nn.Embedding(config.num_classes + 1, dim)  # last row = null label
        if config.text_dim:
            self.text_proj = nn.Sequential(nn.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"),
                                           nn.Linear(dim, dim))
            self.text_null = nn.Parameter(torch.randn(1, 1, dim) * 0.02)  # always-present key; alone = null prompt
            self.pooled_proj = nn.Linear(dim, dim)
        blocks = [DiTBlock(config, i) for i in range(config.depth)]
        e, m = config.encoder_depth, config.middle_depth
        self.encoder = nn.ModuleList(blocks[:e])
        self.middle = nn.ModuleList(blocks[e:e + m])
        self.decoder = nn.ModuleList(blocks[e + m:])
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.fuse = nn.Linear(2 * dim, dim)             # SPRINT fusion of [middle (+ masks), encoder]
        self.final = FinalLayer(dim, config.in_channels * self.patch_volume)
        self.drop_ratio = 0.0
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.mask_token, std=0.02)
        for block in self.modules():     # adaLN-Zero and zero gates survive the generic init
            if isinstance(block, (DiTBlock, FinalLayer)):
                nn.init.zeros_(block.modulation[1].weight)
                nn.init.zeros_(block.modulation[1].bias)
            if isinstance(block, FinalLayer):
                nn.init.zeros_(block.linear.weight)
                nn.init.zeros_(block.linear.bias)
            if isinstance(block, GatedLocalGlobalAttention):
                nn.init.zeros_(block.gate.weight)
                nn.init.zeros_(block.gate.bias)

    # ----------------------------------------------------------------- shapes
    def token_grid(self, latent_thw: tuple[int, int, int]) -> tuple[int, int, int]:
        pt, ph, pw = self.config.patch_size
        t, h, w = latent_thw
        if t % pt or h % ph or w % pw:
            raise ValueError(f"latent size {latent_thw} is not divisible by the patch size {self.config.patch_size}")
        return t // pt, h // ph, w // pw

    def window_radius(self, grid_thw: tuple[int, int, int]) -> int:
        """|W| / 2 with |W| = m frames of tokens (App. B.1)."""
        return self.config.window_frames * grid_thw[1] * grid_thw[2] // 2

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, N, C * pt * ph * pw), tokens in raster (t, h, w) order."""
        b, c, t, h, w = x.shape
        pt, ph, pw = self.config.patch_size
        x = x.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw)
        return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, (t // pt) * (h // ph) * (w // pw), -1)

    def unpatchify(self, tokens: torch.Tensor, latent_thw: tuple[int, int, int]) -> torch.Tensor:
        """(B, N, C * pt * ph * pw) -> (B, C, T, H, W)."""
        b = tokens.shape[0]
        pt, ph, pw = self.config.patch_size
        gt, gh, gw = self.token_grid(latent_thw)
        x = tokens.reshape(b, gt, gh, gw, -1, pt, ph, pw)
        return x.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(b, -1, gt * pt, gh * ph, gw * pw)

    # ----------------------------------------------------------- conditioning
    def condition_vector(self, t, s, guidance, cond: Condition):
        """(c (B, C), context (B, 1 + L, C) | None, context_mask (B, 1 + L) | None)."""
        second = t - s if self.config.time_condition == "t_minus_s" else s
        c = self.time_embed(t) + self.gap_embed(second) + self.guidance_embed(guidance)
        context = context_mask = None
        if self.config.num_classes:
            if not torch.is_tensor(cond):
                raise TypeError("this model is class-conditional: pass labels (B,) int64, -1 for null")
            labels = torch.where(cond == NULL_LABEL, torch.full_like(cond, self.config.num_classes), cond)
            c = c + self.class_embed(labels)
        elif self.config.text_dim:
            if not isinstance(cond, TextCondition):
                raise TypeError("this model is text-conditional: pass a TextCondition")
            b = t.shape[0]
            tokens = self.text_proj(cond.tokens.to(c.dtype))
            mask = cond.mask.to(torch.bool)
            context = torch.cat([self.text_null.expand(b, -1, -1).to(tokens.dtype), tokens], dim=1)
            context_mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=mask.device), mask], dim=1)
            weights = context_mask.to(tokens.dtype)[..., None]
            pooled = (context * weights).sum(1) / weights.sum(1)      # null rows pool to the null token
            c = c + self.pooled_proj(pooled)
        return c, context, context_mask

    def keep_pattern(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """The tokens a training pass keeps: (B, n_keep) int64 raster positions for latents x
        (B, C, T, H, W) from `structured_keep_indices` at `drop_ratio`, drawn from `generator` (or the
        global RNG) on its device; None when no token is dropped (eval mode or drop_ratio 0). The
        training objective draws one per row and hands it to every pass of the row (`keep_indices`)."""
        if not (self.training and self.drop_ratio > 0):
            return None
        grid = self.token_grid(tuple(x.shape[2:]))
        device = generator.device if generator is not None else x.device
        keep = structured_keep_indices(grid, self.config.drop_group, self.drop_ratio, x.shape[0], device, generator)
        return keep.to(x.device)

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, cond: Condition = None,
                guidance: torch.Tensor | None = None, weak: bool = False,
                keep_indices: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        latent_thw = tuple(x.shape[2:])
        grid = self.token_grid(latent_thw)
        n = grid[0] * grid[1] * grid[2]
        radius = self.window_radius(grid)
        if guidance is None:
            guidance = torch.ones(b, device=x.device)
        c, context, context_mask = self.condition_vector(t, s, guidance, cond)

        h = self.patch_embed(self.patchify(x))                                   # (B, N, C)
        # contiguous like the kept-token positions, so compiled blocks see one stride layout
        positions = torch.arange(n, device=x.device).expand(b, n).contiguous()
        rope = rope_tables(positions, grid, self.config.head_dim, self.config.rope_theta)
        for block in self.encoder:
            h = block(h, c, rope, positions, radius, context, context_mask)
        encoded = h

        middle_out = self.mask_token.to(h.dtype).expand(b, n, -1)
        if not weak:
            if keep_indices is None and self.training and self.drop_ratio > 0:
                keep_indices = structured_keep_indices(grid, self.config.drop_group, self.drop_ratio, b, x.device)
            if keep_indices is not None:                                         # SPRINT: middle on kept tokens
                gather = keep_indices[..., None].expand(-1, -1, h.shape[-1])
                h_mid = torch.gather(h, 1, gather)
                mid_rope = rope_tables(keep_indices, grid, self.config.head_dim, self.config.rope_theta)
                mid_positions = keep_indices
            else:
                h_mid, mid_rope, mid_positions = h, rope, positions
            for block in self.middle:
                h_mid = block(h_mid, c, mid_rope, mid_positions, radius, context, context_mask)
            if keep_indices is not None:                                         # scatter back, [MASK] elsewhere
                middle_out = middle_out.clone().scatter(1, gather, h_mid)
            else:
                middle_out = h_mid
        h = self.fuse(torch.cat([middle_out, encoded], dim=-1))                 # long residual fusion
        for block in self.decoder:
            h = block(h, c, rope, positions, radius, context, context_mask)
        return self.unpatchify(self.final(h, c), latent_thw)

    # ------------------------------------------------------------ inspection
    @contextlib.contextmanager
    def capture_gates(self):
        """Within the context, every GLGA layer keeps its gates; yields a dict filled on exit:
        {layer index: (B, N_layer, H_g, 2) tensor, [global, local]} (middle layers see the kept tokens)."""
        layers = {i: blk.attn for i, blk in enumerate(self.blocks)
                  if isinstance(blk.attn, GatedLocalGlobalAttention)}
        for attn in layers.values():
            attn.capture, attn.captured = True, None
        gates: dict[int, torch.Tensor] = {}
        try:
            yield gates
        finally:
            for i, attn in layers.items():
                if attn.captured is not None:
                    gates[i] = attn.captured
                attn.capture, attn.captured = False, None

    @property
    def blocks(self) -> list[DiTBlock]:
        return [*self.encoder, *self.middle, *self.decoder]

    def compile_blocks(self, dynamic: bool | None = None, backend: str = "inductor") -> "VideoDiT":
        """Regional compilation: `torch.compile` every DiTBlock in place (its norms, modulation, RoPE,
        gates and residuals fuse into a few kernels; blocks of one kind share the compiled code, so
        compiling costs one block, not the whole depth). Parameter names and state dicts are unchanged.
        dynamic=None lets torch mark a dimension dynamic after its first recompile, so the trainer's
        varying batch shares (FM / SCM / MVA / weak) and token counts (drop on / off) compile a few
        times, not once per shape. `backend`: torch.compile's ("aot_eager" traces without generating
        code: the tests use it to check tracing on the CPU). Returns self."""
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 32)
        for block in self.blocks:
            block.compile(dynamic=dynamic, backend=backend)
        return self


def count_parameters(config: ModelConfig) -> int:
    """Parameters of the VideoDiT that `config` describes (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        model = VideoDiT(config)
    return sum(p.numel() for p in model.parameters())
