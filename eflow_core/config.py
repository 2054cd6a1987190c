"""Plain dataclass configs: model presets (paper Tab. 5), the solution-flow objective, training phases.

Everything that decides a shape or a hyper-parameter lives here, so a checkpoint's `config.json`
is enough to rebuild the network and to say how it was trained.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ModelConfig:
    """VideoDiT shape (paper Fig. 3, App. B.1, Tab. 5).

    The latent video is (C, T', H', W'); `patch_size` = (p_t, p_h, p_w) turns it into
    N = T'/p_t * H'/p_h * W'/p_w tokens. Blocks are numbered 1..depth over encoder, middle and
    decoder; block i uses full softmax attention when `softmax_every > 0 and i % softmax_every == 0`,
    GLGA otherwise (or `attention` for the ablations: every block "softmax", "linear" or "window").
    """

    name: str = "custom"
    in_channels: int = 4
    patch_size: tuple[int, int, int] = (1, 2, 2)
    dim: int = 768
    num_heads: int = 12
    ffn_dim: int = 3072
    encoder_depth: int = 2
    middle_depth: int = 10
    decoder_depth: int = 2
    softmax_every: int = 7          # Tab. 5 "softmax-attn ratio 6:1" -> every 7th block
    attention: str = "glga"         # glga | softmax | linear | window (all blocks; ablations)
    window_frames: int = 4          # m: |W| = m * H'/p_h * W'/p_w tokens, radius |W|/2 (App. B.1)
    gate_per_head: bool = True      # gates per (token, head) rather than per token (Eq. 7)
    qk_norm: bool = True            # RMSNorm on q and k before RoPE (Wan-style; stabilises bf16)
    num_classes: int = 0            # > 0: class-conditional (label -1 = null)
    text_dim: int = 0               # > 0: text cross-attention from tokens of this width
    time_condition: str = "t_minus_s"  # second time input: "t_minus_s" or "s"
    drop_ratio: float = 0.75        # the paper's training drop (Sec. 3.2), kept for old cards; training
                                    # reads TrainConfig.phases, which set VideoDiT.drop_ratio per phase
    drop_group: tuple[int, int, int] = (1, 2, 2)  # token-grid group for structured sampling (SPRINT)
    rope_theta: float = 10000.0
    backend: str = "auto"           # kernels backend for the attention ops

    @property
    def depth(self) -> int:
        return self.encoder_depth + self.middle_depth + self.decoder_depth

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def token_values(self) -> int:
        """Latent values per token: in_channels x patch volume (the final layer's output width)."""
        return self.in_channels * self.patch_size[0] * self.patch_size[1] * self.patch_size[2]

    def head_rank_problem(self) -> str | None:
        """Why this model cannot remove noise, or None.

        The network's output F is a linear map of a `dim`-wide hidden state (FinalLayer), so per token
        it lies in a subspace of rank <= dim. Every sampler update, x + (s - t) F (Eq. 2), leaves the
        component of x orthogonal to that subspace untouched: when token_values > dim, the noise in
        those directions (from the start, or from Algorithm 2's last re-noising) survives into every
        sample (a third of the directions for 384 values and dim 256).
        """
        if self.token_values <= self.dim:
            return None
        return (f"model '{self.name}': {self.token_values} latent values per token (in_channels {self.in_channels} x "
                f"patch {tuple(self.patch_size)}) exceed its width dim={self.dim}; the output head has rank <= {self.dim}, "
                f"so {self.token_values - self.dim} noise directions per token can never be removed. Use a latent "
                f"codec (data.codec=autoencoder), smaller patches or a wider model")

    def block_attention(self, index: int) -> str:
        """Attention kind of block `index` (0-based over the whole network)."""
        if self.attention != "glga":
            return self.attention
        if self.softmax_every > 0 and (index + 1) % self.softmax_every == 0:
            return "softmax"
        return "glga"

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


# Paper Tab. 5 shapes. Our parameter counts differ a little from the paper's (per-block AdaLN as in
# DiT, a Linear(2D -> D) SPRINT fusion, GLGA gates); `python -m eflow_core.config` prints them.
MODEL_PRESETS: dict[str, ModelConfig] = {
    # Tests: a few thousand parameters per block, every code path (GLGA, softmax, cross-attention).
    "tiny": ModelConfig(name="tiny", in_channels=4, patch_size=(1, 2, 2), dim=64, num_heads=4, ffn_dim=128,
                        encoder_depth=1, middle_depth=2, decoder_depth=1, softmax_every=3, window_frames=2),
    # The shipped CPU models' network. shapes-t2v (TRAIN_PRESETS) overrides the patch: 17x64x64 video
    # through the project's autoencoder (4x8x8, 16 channels) -> 5x8x8 latent, 1x1x1 patches -> 320
    # tokens of 16 values (a token's values must not exceed dim: ModelConfig.head_rank_problem).
    # Sized to generate 4 steps in < 1 s on 2 CPU cores (0.25-0.33 s measured, docs/BENCHMARKS.md §2).
    "demo": ModelConfig(name="demo", in_channels=16, patch_size=(1, 2, 2), dim=256, num_heads=4, ffn_dim=1024,
                        encoder_depth=2, middle_depth=4, decoder_depth=2, softmax_every=4, window_frames=4,
                        drop_group=(1, 2, 2)),
    "B": ModelConfig(name="B", in_channels=16, dim=768, num_heads=12, ffn_dim=3072,
                     encoder_depth=2, middle_depth=10, decoder_depth=2, softmax_every=7, window_frames=4),
    "XL": ModelConfig(name="XL", in_channels=16, dim=1152, num_heads=16, ffn_dim=4608,
                      encoder_depth=3, middle_depth=22, decoder_depth=3, softmax_every=9, window_frames=4),
    "XXL": ModelConfig(name="XXL", in_channels=16, dim=2304, num_heads=24, ffn_dim=8064,
                       encoder_depth=4, middle_depth=28, decoder_depth=4, softmax_every=9, window_frames=4),
    "1.5B": ModelConfig(name="1.5B", in_channels=16, dim=1536, num_heads=12, ffn_dim=7680,
                        encoder_depth=3, middle_depth=22, decoder_depth=3, softmax_every=9, window_frames=6,
                        text_dim=4096),
}

PAPER_PARAMS = {"B": 128e6, "XL": 529e6, "XXL": 3e9, "1.5B": 1.5e9}


@dataclass
class FlowConfig:
    """Solution-flow objective (Sec. 3.1, 4.2, App. B.2; SoFlow defaults where the paper is silent)."""

    # batch split (Algorithm 1): FM share a, SCM share b, MVA share 1 - a - b once MVA is on
    fm_ratio: float = 0.75
    scm_ratio: float = 0.25
    mva_ratio: float = 0.0          # the trainer's phase sets this > 0 when MVA is switched on
    # time sampling, t = sigmoid(u), u ~ N(mu, sigma^2), then shift (Eq. 26, Tab. 5)
    t_mu: float = 0.0
    t_sigma: float = 1.0
    t_shift: float = 3.0
    s_mu: float = -1.0
    s_sigma: float = 0.8
    s_shift: float = 1.0
    # adaptive loss weight 1 / (MSE + eps)^p  (Eq. 3; "loss weight coefficient" 1.0 is p)
    adaptive_p: float = 1.0
    adaptive_eps: float = 0.01
    # p of the SCM weight 1 / (MSE_q + eps)^p (Eq. 4) when it should differ from the FM one; None = adaptive_p
    # (the paper and SoFlow use one p for both). The 2-D toy tests use FM p = 0 (p = 1 there collapses mass
    # onto the heavy modes) with SCM p = 0.5: the SCM difference quotient carries the noise of the
    # conditional velocity v = x1 - x0 times the map's Jacobian, which is large where the map is sharp,
    # and p > 0 damps those samples (p = 0.5 makes the gradient that of ||f_t - f_l||, an L2-norm loss
    # like iCT's pseudo-Huber); see tests/test_flow_toy.py.
    scm_adaptive_p: float | None = None
    # SCM intermediate time l = t + (s - t) r, r decays log-linearly r_start -> r_end over r_steps
    r_start: float = 0.1
    r_end: float = 0.002
    r_steps: int = 100_000
    min_gap: float = 1e-3           # t > l > s kept at least this far apart
    # guidance (Eq. 9, 11; App. B.2)
    guidance: str = "pdg"           # pdg (weak path) | cfg (full unconditional pass) | none
    guidance_min: float = 2.5
    guidance_max: float = 4.5
    guidance_inference: float = 4.0
    p_drop: float = 0.2             # null-condition probability; those samples train the weak path (w = 0)
    velocity_mix: float = 0.25      # SoFlow "velocity mix ratio"
    # Our addition (not in the paper): this share of the conditional FM samples is trained with
    # guidance input 1.0 on the plain conditional velocity, so the classical 2-NFE CFG baseline
    # (`SolutionFlow.sample_ode(cfg=True)`) can ask the same network for its unguided velocity.
    # A plain flow-matching + CFG baseline is guidance="cfg", p_unguided=1.0, fm_ratio=1.0 with no SCM
    # or MVA share (benchmarks/ablations.py, variant "fm").
    p_unguided: float = 0.1
    # SCM loss scale: 1.0 = the paper's Eq. 4 weight; 0.5 reproduces SoFlow's code, whose surrogate
    # loss has half the gradient of Eq. 4 (see eflow_core/flow/losses.py).
    scm_weight_scale: float = 1.0
    # MVA (Eq. 12): t > l > s on a K-point shifted grid
    mva_grid_points: int = 64
    mva_shift: float = 3.0
    # Eq. 12 is a plain squared error ("none"); "adaptive" multiplies it by the detached
    # 1 / (MSE + eps)^p of Eq. 3 like the FM and SCM terms (an option; the paper does not say).
    mva_weighting: str = "none"
    # inference schedule (Algorithm 2): N points uniform in [0, 1], shifted
    inference_shift: float = 3.0
    # Algorithm 2 feeds the guidance w to the steps that start at t_n >= guidance_t_min and w = 1 (the plain
    # conditional map) to the later, re-noised steps (`SolutionFlow.sample`). 0.0 = w at every step, Algorithm 2
    # as App. B.3 prints it. With shift 3 the steps below 0.8 are t_n = 0.75 (2 steps), 0.75, 0.5 (4 steps) and
    # 0.75 ... 0.3 (8 steps): issue 23 measured that the PDG-guided map from these noise levels is what made
    # more steps worse (see the sampler's docstring).
    guidance_t_min: float = 0.8

    def replace(self, **changes: Any) -> "FlowConfig":
        return dataclasses.replace(self, **changes)


@dataclass
class Phase:
    """One stretch of training (App. C): until `until` (fraction of total steps) use these settings."""

    until: float = 1.0
    drop_ratio: float = 0.0
    mva_ratio: float = 0.0
    fm_ratio: float = 0.75
    scm_ratio: float = 0.25


def default_phases() -> list[Phase]:
    """App. C.1: 75% drop without MVA for the first 80%, then dense with MVA."""
    return [Phase(until=0.8, drop_ratio=0.75, mva_ratio=0.0, fm_ratio=0.75, scm_ratio=0.25),
            Phase(until=1.0, drop_ratio=0.0, mva_ratio=0.25, fm_ratio=0.5, scm_ratio=0.25)]


@dataclass
class DataConfig:
    """What the trainer feeds on. `kind`: shapes | scenes | shapes+scenes | actions | kinetics."""

    kind: str = "shapes"
    root: str = ""                  # Kinetics-layout folder for actions / kinetics
    num_frames: int = 16
    size: int = 64
    frame_stride: int = 2
    num_samples: int = 20_000       # synthetic worlds: size of the (deterministic) training set
    num_workers: int = 0
    codec: str = "pixel"            # pixel | autoencoder:PATH | wan:PATH
    codec_factor: tuple[int, int, int] = (1, 4, 4)  # pixel codec space-to-depth (t, h, w)
    text_encoder: str = "minilm"    # minilm | t5:PATH | none (class-conditional)
    text_cache: str = ""            # folder of the on-disk text-embedding cache ("" = no cache)
    decoded_cache: str = ""         # Kinetics layouts: folder of decoded clips (.npy) reused across epochs
    resident: bool = False          # render the training set once, keep it on the device as uint8 (data/resident.py)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=lambda: MODEL_PRESETS["tiny"])
    flow: FlowConfig = field(default_factory=FlowConfig)
    data: DataConfig = field(default_factory=DataConfig)
    phases: list[Phase] = field(default_factory=default_phases)
    steps: int = 1000
    batch_size: int = 16            # per process
    lr: float = 1e-4                # App. C.1: constant 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0
    mixed_precision: str = "auto"   # auto: bf16 on GPU, fp32 on CPU
    max_bad_steps: int = 5          # stop after this many non-finite steps in a row
    compile: bool = False           # GPU: torch.compile each DiT block (VideoDiT.compile_blocks)
    # GPU, one process or DDP (not fsdp): record the whole update (loss, backward, clip, AdamW, EMA; DDP's
    # all-reduces) as one CUDA graph per phase and replay it (eflow_core/captured_step.py): the step costs
    # the GPU's time, not Python's launches
    capture: bool = False
    # Several processes: shard weights, Adam state and EMA per DiT block (FSDP2, eflow_core/parallel.py) instead
    # of DDP's full copy per process; checkpoints become torch.distributed.checkpoint folders. For the presets
    # whose training state does not fit one GPU (README, "Several GPUs").
    fsdp: bool = False
    # Start from these weights instead of a fresh init (a shipped name such as "shapes-t2v", a shipped
    # folder, or a training folder: its EMA). The optimizer starts fresh; the exported model card adds
    # the earlier runs to its lineage and counts their steps. Lets a model grow over short GPU leases.
    init_from: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "TrainConfig":
        d = dict(d)
        model = ModelConfig(**_tuples(d.pop("model", {})))
        flow = FlowConfig(**d.pop("flow", {}))
        data = DataConfig(**_tuples(d.pop("data", {})))
        phases = [Phase(**p) for p in d.pop("phases", [dataclasses.asdict(p) for p in default_phases()])]
        return TrainConfig(model=model, flow=flow, data=data, phases=phases, **d)


def _tuples(d: dict) -> dict:
    """JSON turns tuples into lists; turn them back for the tuple-typed fields."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def model_config_from_dict(d: dict) -> ModelConfig:
    return ModelConfig(**_tuples(d))


TRAIN_PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(model=MODEL_PRESETS["tiny"].replace(in_channels=12),
                        data=DataConfig(kind="shapes", num_frames=4, size=16, codec_factor=(1, 2, 2)),
                        steps=20, batch_size=4, warmup_steps=2, checkpoint_every=10, log_every=1),
    # The app's default model (issue 6): shapes text-to-video at the demo preset, in the project's
    # autoencoder latent (17 x 64 x 64 -> 5 x 8 x 8 x 16). 1x1x1 patches: 320 tokens of 16 values, one
    # per 8 x 8-pixel latent cell. With 1x2x2 patches (80 tokens, 16 x 16 pixels each) squares and
    # triangles came out as round blobs: 47.7% shape adherence after 1,208 steps, 83% after 1,855,
    # against 87% for 1x1x1 after 623 steps (docs/RESULTS.md, 2026-11-30).
    "shapes-t2v": TrainConfig(model=MODEL_PRESETS["demo"].replace(text_dim=384, patch_size=(1, 1, 1)),
                              data=DataConfig(kind="shapes", num_frames=17, size=64, codec="autoencoder"),
                              steps=20_000, batch_size=64, lr=3e-4, warmup_steps=500, ema_decay=0.999,
                              checkpoint_every=1000),
    # Class-conditional on the generated Kinetics-layout `actions` set. Pixel codec: the shapes
    # autoencoder keeps only 92% of the actions probe's accuracy (22 dB). 48 x 1x2x2 = 192 values per
    # token <= dim 256; 16 x 8 x 8 = 1,024 tokens.
    # Guidance scales from 1 in training (App. B.2: w ~ U(w_min, w_max) per batch; FlowConfig's default range
    # is [2.5, 4.5]). Trained on that range only, every guided sample drew "expanding ripples" as a zoom;
    # with w in [1, 4.5] it draws them 30 of 30 at 4 steps (docs/RESULTS.md, 2026-12-07).
    "actions-b": TrainConfig(model=MODEL_PRESETS["demo"].replace(num_classes=10, in_channels=48),
                             flow=FlowConfig(guidance_min=1.0),
                             data=DataConfig(kind="actions", num_frames=16, size=64, codec_factor=(1, 4, 4),
                                             text_encoder="none"),
                             steps=20_000, batch_size=64, lr=3e-4, warmup_steps=500, checkpoint_every=1000),
}


def load_train_config(name_or_file: str, overrides: list[str] | None = None) -> TrainConfig:
    """A preset name or a JSON file (a saved config.json or a model card), then `key=value` overrides
    (dotted keys: `model.dim=128`)."""
    if name_or_file in TRAIN_PRESETS:
        cfg = TrainConfig.from_dict(dataclasses.asdict(TRAIN_PRESETS[name_or_file]))
    elif Path(name_or_file).is_file():      # a config.json, or a model card (its "config": the recipe it trained with)
        saved = json.loads(Path(name_or_file).read_text())
        cfg = TrainConfig.from_dict(saved["config"] if isinstance(saved.get("config"), dict) else saved)
    else:
        raise ValueError(f"unknown config {name_or_file!r}: use one of {sorted(TRAIN_PRESETS)} or a JSON file")
    d = cfg.to_dict()
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        target = d
        *parents, leaf = key.split(".")
        for p in parents:
            if p not in target or not isinstance(target[p], dict):
                raise ValueError(f"unknown config key {key!r}")
            target = target[p]
        if leaf not in target:
            raise ValueError(f"unknown config key {key!r}")
        target[leaf] = json.loads(value) if _looks_json(value) else value
    return TrainConfig.from_dict(d)


def _looks_json(value: str) -> bool:
    try:
        json.loads(value)
        return True
    except ValueError:
        return False

