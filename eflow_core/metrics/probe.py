"""The project's video probe: a small 3-D CNN classifier with one head per attribute.

It is trained on the real clips of a synthetic world (`train_probe`) and then serves two metrics:
- probe-FD: the Fréchet distance between Gaussian fits of its penultimate embedding
  (`VideoProbe.features`, (B, F)) on generated and on real clips (`eflow_core.metrics.frechet`);
- adherence: does the probe read the attributes a prompt asked for off the generated clip
  (`eflow_core.metrics.adherence`).

Saved as `checkpoints/probe-<world>/probe.safetensors` + `probe.json` (the card: world, heads and
their vocabularies, architecture, held-out accuracy per head, steps, wall time, command).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from eflow_core.checkpoint import SHIPPED_DIR
from eflow_core.metrics.video import to_model_input

PROBE_WEIGHTS = "probe.safetensors"
PROBE_CARD = "probe.json"
DEFAULT_CHANNELS = (8, 24, 48, 96)


class VideoProbe(nn.Module):
    """A small 3-D CNN over clips with a shared embedding and one linear head per attribute.

    heads: {attribute name: vocabulary (list of class names)}, e.g. {"color": [...6], "shape": [...3]}.
    Input: (B, 3, T, H, W) float in [-1, 1]; trained at 16x64x64; frames of another size are resized to
    `in_size`, other T (>= 1) work through the adaptive pooling. Layout at 16x64x64 (channels c1..c4):
        Conv(2x3x3, stride 2 in time) -> ReLU -> MaxPool(1x2x2)    (c1, 8, 32, 32)   full-resolution edges
        Conv(1x3x3) -> ReLU -> MaxPool(1x2x2)                      (c2, 8, 16, 16)
        Conv(1x3x3) -> ReLU -> MaxPool(2x2x2)                      (c3, 4, 8, 8)
        Conv(3x3x3) -> ReLU                                        (c4, 4, 8, 8)     motion
        [global max, global mean] -> Linear -> GELU                (feature_dim,)    the embedding
    Global max pooling makes local detectors (corners, edges, direction-selective motion filters)
    position-invariant (a 2x2x2 pooled grid instead did not learn shape in 150 steps); the mean adds
    how much of a feature there is (object size, background). No batch statistics: a clip's embedding
    does not depend on its batch. `features(x)` -> (B, feature_dim); `forward(x)` -> {head: logits (B, n_head)}.
    """

    def __init__(self, heads: dict[str, list[str]], channels: tuple[int, int, int, int] = DEFAULT_CHANNELS,
                 feature_dim: int = 128, in_size: int = 64):
        super().__init__()
        if not heads:
            raise ValueError("a probe needs at least one head")
        if len(channels) != 4:
            raise ValueError(f"channels must give 4 widths, got {channels}")
        self.vocabularies = {name: list(vocab) for name, vocab in heads.items()}
        self.channels = tuple(channels)
        self.feature_dim = feature_dim
        self.in_size = in_size
        c1, c2, c3, c4 = channels
        self.stages = nn.Sequential(
            nn.Conv3d(3, c1, (2, 3, 3), stride=(2, 1, 1), padding=(0, 1, 1)), nn.ReLU(),
            nn.MaxPool3d((1, 2, 2), ceil_mode=True),
            nn.Conv3d(c1, c2, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU(), nn.MaxPool3d((1, 2, 2), ceil_mode=True),
            nn.Conv3d(c2, c3, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU(), nn.MaxPool3d((2, 2, 2), ceil_mode=True),
            nn.Conv3d(c3, c4, 3, padding=1), nn.ReLU(),
        )
        self.embed = nn.Linear(2 * c4, feature_dim)
        # Standardisation of the embedding on real held-out clips (set by `calibrate_features`): centred,
        # and divided by ONE scale (the RMS spread over dimensions) so probe-FD is in units of the real
        # data's average per-dimension variance. A single scale keeps the geometry and cannot blow up
        # a dimension that is (nearly) constant on real clips. Identity until calibrated.
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))  # all entries equal: the one scale
        self.heads = nn.ModuleDict({name: nn.Linear(feature_dim, len(vocab)) for name, vocab in heads.items()})

    def config(self) -> dict:
        return {"heads": self.vocabularies, "channels": list(self.channels), "feature_dim": self.feature_dim,
                "in_size": self.in_size}

    def _prepare(self, video: torch.Tensor) -> torch.Tensor:
        x = to_model_input(video).to(next(self.parameters()).device)
        if x.shape[-1] != self.in_size or x.shape[-2] != self.in_size:
            b, c, t, h, w = x.shape
            frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
            frames = F.interpolate(frames, size=(self.in_size, self.in_size), mode="bilinear",
                                   align_corners=False, antialias=h > self.in_size or w > self.in_size)
            x = frames.reshape(b, t, c, self.in_size, self.in_size).permute(0, 2, 1, 3, 4)
        if x.shape[2] == 1:  # a single frame: hold it for the first (two-frame) convolution
            x = x.expand(-1, -1, 2, -1, -1)
        return x

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) float in [-1, 1] (or uint8 (B, T, H, W, 3)) -> (B, feature_dim) embedding.

        Standardised by the real-clip statistics stored in the probe (see `calibrate_features`).
        """
        return (self._embedding(video) - self.feature_mean) / self.feature_std

    def _embedding(self, video: torch.Tensor) -> torch.Tensor:
        """The raw penultimate embedding (B, feature_dim) the heads read."""
        x = self.stages(self._prepare(video))
        pooled = torch.cat([x.amax(dim=(2, 3, 4)), x.mean(dim=(2, 3, 4))], dim=1)  # (B, 2 c4)
        return F.gelu(self.embed(pooled))

    def classify(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Standardised features (B, feature_dim) -> {head: logits (B, n_head)}."""
        z = features * self.feature_std + self.feature_mean
        return {name: head(z) for name, head in self.heads.items()}

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, T, H, W) -> {head: logits (B, len(vocabulary))}."""
        z = self._embedding(video)
        return {name: head(z) for name, head in self.heads.items()}

    @torch.no_grad()
    def calibrate_features(self, real_videos: torch.Tensor, batch_size: int = 64) -> None:
        """Set the feature standardisation from real clips (N, 3, T, H, W): mean (F,), one RMS scale."""
        was_training = self.training
        self.eval()
        z = torch.cat([self._embedding(real_videos[i:i + batch_size]) for i in range(0, real_videos.shape[0],
                                                                                      batch_size)])
        self.feature_mean.copy_(z.mean(dim=0))
        self.feature_std.fill_(z.var(dim=0).mean().sqrt().clamp_min(1e-6).item())
        self.train(was_training)

    @torch.no_grad()
    def predict(self, video: torch.Tensor, batch_size: int = 64) -> dict[str, torch.Tensor]:
        """Top-1 class index per head: {head: (B,) int64}, computed in batches, eval mode."""
        was_training = self.training
        self.eval()
        out: dict[str, list[torch.Tensor]] = {name: [] for name in self.heads}
        for start in range(0, video.shape[0], batch_size):
            for name, logits in self(video[start:start + batch_size]).items():
                out[name].append(logits.argmax(dim=1).cpu())
        self.train(was_training)
        return {name: torch.cat(v) for name, v in out.items()}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ----------------------------------------------------------------------------------------- save / load

def save_probe(probe: VideoProbe, directory: str | Path, card: dict | None = None) -> Path:
    """Write `probe.safetensors` and `probe.json` (config + card fields) into `directory`."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in probe.state_dict().items()}
    save_file(state, str(directory / PROBE_WEIGHTS))
    meta = dict(card or {})
    meta["config"] = probe.config()
    meta["parameters"] = probe.num_parameters()
    meta["weights_bytes"] = (directory / PROBE_WEIGHTS).stat().st_size
    (directory / PROBE_CARD).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def default_probe_dir(world: str) -> Path:
    """`checkpoints/probe-<world>` at the repository root."""
    return SHIPPED_DIR / f"probe-{world}"


def load_probe(path_or_world: str | Path, device: str | torch.device | None = None) -> VideoProbe:
    """Load a saved probe from a directory, or by world name from `checkpoints/probe-<world>/`.

    Returns the probe in eval mode with its card on `probe.card`. Raises FileNotFoundError (one
    sentence) when there is no probe there.
    """
    from safetensors.torch import load_file

    directory = Path(path_or_world)
    if not (directory / PROBE_CARD).is_file() and not directory.is_dir():
        directory = default_probe_dir(str(path_or_world))
    card_path, weights_path = directory / PROBE_CARD, directory / PROBE_WEIGHTS
    if not card_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"no probe at {str(directory)!r} (expected {PROBE_WEIGHTS} and {PROBE_CARD}); "
                                f"train one with `eflow train-probe --world <world>`.")
    card = json.loads(card_path.read_text())
    cfg = card["config"]
    probe = VideoProbe(cfg["heads"], channels=tuple(cfg["channels"]), feature_dim=cfg["feature_dim"],
                       in_size=cfg.get("in_size", 64))
    state = load_file(str(weights_path))
    for key in ("feature_mean", "feature_std"):  # probes saved before calibration existed: identity
        state.setdefault(key, getattr(probe, key).clone())
    probe.load_state_dict(state)
    probe.card = dict(card, path=str(directory))
    return probe.to(device or "cpu").eval()


# ---------------------------------------------------------------------------------------------- training

def _collate(dataset, indices, world) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Items `indices` of `dataset` -> videos (B, 3, T, H, W), targets {head: (B,) int64}."""
    items = [dataset[int(i)] for i in indices]
    videos = torch.stack([it["video"] for it in items])
    targets = {name: torch.tensor([world.targets(it)[name] for it in items]) for name in world.heads}
    return videos, targets


@torch.no_grad()
def probe_accuracy(probe: VideoProbe, videos: torch.Tensor, targets: dict[str, torch.Tensor],
                   batch_size: int = 64) -> dict[str, float]:
    """Top-1 accuracy per head on clips (N, 3, T, H, W) with targets {head: (N,)}; plus `all` (every head right)."""
    pred = probe.predict(videos, batch_size=batch_size)
    acc = {name: (pred[name] == targets[name]).float().mean().item() for name in probe.heads}
    acc["all"] = torch.stack([pred[n] == targets[n] for n in probe.heads]).all(dim=0).float().mean().item()
    return acc


def train_probe(world: str = "shapes", steps: int = 800, batch_size: int = 32, lr: float = 3e-3,
                num_frames: int = 16, size: int = 64, eval_clips: int = 600, seed: int = 0,
                channels: tuple[int, int, int, int] = DEFAULT_CHANNELS, feature_dim: int = 128,
                noise_augment: float = 0.08,
                out_dir: str | Path | None = None, progress: bool = True, threads: int | None = None,
                command: str | None = None) -> tuple[VideoProbe, dict]:
    """Train a probe on the real clips of `world` and measure it on held-out clips.

    Training clips are fresh every step (the world's `train` split, indices step * batch_size + i);
    held-out clips come from the `eval` split (held-out caption templates, separate random stream).
    Worlds whose clips are read at several frame strides (actions: 1 and 2) alternate them by step,
    and the held-out clips are split evenly over them.
    Augmentation: additive Gaussian noise with a per-clip std drawn from U(0, noise_augment), so the
    probe reads attributes through the mild noise generated clips carry. AdamW, one-cycle schedule.
    Returns (probe in eval mode, card dict); with `out_dir` the probe and card are saved there.
    """
    from tqdm.auto import tqdm

    from eflow_core.metrics.worlds import get_world

    if threads:
        torch.set_num_threads(threads)
    spec = get_world(world)
    torch.manual_seed(seed)
    probe = VideoProbe(spec.heads, channels=channels, feature_dim=feature_dim, in_size=size)
    strides = spec.train_strides
    # One training / held-out set per frame stride; step i (clip i) uses stride strides[i % len(strides)].
    train_sets = [spec.dataset(split="train", num_samples=steps * batch_size, seed=seed + 100 * k,
                               num_frames=num_frames, size=size, frame_stride=st) for k, st in enumerate(strides)]
    eval_sets = [spec.dataset(split="eval", num_samples=eval_clips, seed=seed + 1 + 100 * k, num_frames=num_frames,
                              size=size, frame_stride=st) for k, st in enumerate(strides)]
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    probe.train()
    bar = tqdm(range(steps), desc=f"probe-{world}", disable=not progress, mininterval=2.0)
    for step in bar:
        videos, targets = _collate(train_sets[step % len(strides)], range(step * batch_size, (step + 1) * batch_size),
                                   spec)
        if noise_augment > 0:
            std = torch.rand(videos.shape[0], 1, 1, 1, 1, generator=gen) * noise_augment
            videos = (videos + std * torch.randn(videos.shape, generator=gen)).clamp(-1, 1)
        logits = probe(videos)
        losses = {name: F.cross_entropy(logits[name], targets[name]) for name in spec.heads}
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(probe.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 10 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}",
                            **{n: f"{(logits[n].argmax(1) == targets[n]).float().mean().item():.2f}"
                               for n in spec.heads})
    train_seconds = time.perf_counter() - start
    probe.eval()
    eval_videos, eval_targets, by_stride = [], {name: [] for name in spec.heads}, {}
    for st, eval_set in zip(strides, eval_sets):
        idx = range(strides.index(st), eval_clips, len(strides))  # every clip index once over the strides
        v, t = _collate(eval_set, idx, spec)
        eval_videos.append(v)
        for name in t:
            eval_targets[name].append(t[name])
        if len(strides) > 1:
            by_stride[str(st)] = {k: round(a, 4) for k, a in probe_accuracy(probe, v, t).items()}
    eval_videos = torch.cat(eval_videos)
    eval_targets = {name: torch.cat(v) for name, v in eval_targets.items()}
    accuracy = probe_accuracy(probe, eval_videos, eval_targets)
    probe.calibrate_features(eval_videos)
    card = {
        "kind": "video-probe",
        "world": world,
        "vocabularies": spec.heads,
        "heldout_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
        "heldout": {"split": "eval", "clips": eval_clips, "seeds": [seed + 1 + 100 * k for k in range(len(strides))],
                    "frame_strides": list(strides), **({"accuracy_by_stride": by_stride} if by_stride else {})},
        "features": {"dim": feature_dim, "standardised_on": "the held-out clips (mean, one RMS scale)"},
        "input": {"layout": "(B, 3, T, H, W) float in [-1, 1]", "num_frames": num_frames, "size": size},
        "train": {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "noise_augment": noise_augment,
                  "clips_seen": steps * batch_size, "wall_seconds": round(train_seconds, 1),
                  "threads": torch.get_num_threads()},
        "command": command or f"eflow train-probe --world {world} --steps {steps} --batch-size {batch_size}",
    }
    probe.card = card
    if out_dir is not None:
        save_probe(probe, out_dir, card)
        probe.card = json.loads((Path(out_dir) / PROBE_CARD).read_text())
    return probe, card

