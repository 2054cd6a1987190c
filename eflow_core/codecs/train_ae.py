"""Train the small video autoencoder on a synthetic world and measure it on held-out clips.

    eflow train-codec --out checkpoints/codec-shapes-ae --steps 3000      # the CLI (eflow_core/cli.py)

`train_autoencoder(...)` is the library entry; the folder it writes loads with
`VideoAutoencoder.from_pretrained` or `load_codec("autoencoder:FOLDER")`.
"""
from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from .autoencoder import AutoencoderConfig, VideoAutoencoder


def _world(kind: str, split: str, num_frames: int, size: int, seed: int, num_samples: int):
    from eflow_core.data import make_world

    return make_world(kind, split=split, num_frames=num_frames, size=size, seed=seed, num_samples=num_samples)


def _batch(ds, indices) -> torch.Tensor:
    return torch.stack([ds[int(i)]["video"] for i in indices])


def _windows(x: torch.Tensor, num_frames: int, crop: int | None, gen: torch.Generator) -> torch.Tensor:
    """Random time windows and 8-aligned spatial crops: (B, 3, T, H, W) -> (B, 3, num_frames, crop, crop)."""
    out = []
    for clip in x:
        t0 = int(torch.randint(0, clip.shape[1] - num_frames + 1, (1,), generator=gen))
        clip = clip[:, t0:t0 + num_frames]
        if crop is not None and crop < clip.shape[-1]:
            cells = (clip.shape[-1] - crop) // 8 + 1
            y0, x0 = (8 * int(v) for v in torch.randint(0, cells, (2,), generator=gen))
            clip = clip[:, :, y0:y0 + crop, x0:x0 + crop]
        out.append(clip)
    return torch.stack(out)


def psnr(reference: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Per-clip PSNR in dB of videos in [-1, 1] after 8-bit quantisation: (B, 3, T, H, W) x 2 -> (B,)."""
    a = ((reference.float() + 1) * 127.5).round().clamp(0, 255)
    b = ((reconstruction.float() + 1) * 127.5).round().clamp(0, 255)
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(255.0 ** 2 / mse)


@torch.no_grad()
def evaluate_psnr(model: VideoAutoencoder, world: str = "shapes", num_clips: int = 32, num_frames: int = 17,
                  size: int = 64, seed: int = 0, batch_size: int = 8) -> float:
    """Mean PSNR (dB) of encode -> decode over `num_clips` held-out (split="eval") clips of `world`."""
    ds = _world(world, "eval", num_frames, size, seed, num_clips)
    model.eval()
    values = []
    for start in range(0, num_clips, batch_size):
        x = _batch(ds, range(start, min(num_clips, start + batch_size)))
        values.append(psnr(x, model.decode(model.encode(x))))
    return float(torch.cat(values).mean())


@torch.no_grad()
def calibrate_latents(model: VideoAutoencoder, ds, num_clips: int = 64, batch_size: int = 8) -> None:
    """Set `latent_mean` / `latent_std` (per channel) from `num_clips` clips of `ds`."""
    zs = [model.encode_raw(_batch(ds, range(s, min(num_clips, s + batch_size)))) for s in range(0, num_clips, batch_size)]
    z = torch.cat(zs).transpose(0, 1).flatten(1)
    model.latent_mean.copy_(z.mean(1))
    model.latent_std.copy_(z.std(1).clamp_min(1e-3))


def train_autoencoder(out_dir: str | Path, world: str = "shapes", steps: int = 3000, batch_size: int = 4,
                      num_frames: int = 9, size: int = 64, lr: float = 2e-3, seed: int = 0, crop: int | None = 32,
                      source_frames: int = 17,
                      config: AutoencoderConfig | None = None, eval_clips: int = 32, eval_frames: int = 17,
                      max_minutes: float | None = None, log_every: int = 50, progress: bool = True,
                      pca_clips: int = 256, command: str = "") -> dict:
    """Train a `VideoAutoencoder` on `world` clips generated on the fly, save it to `out_dir`.

    Each training sample is a random window of `num_frames` (= 1 + 4k) frames out of a `source_frames`
    clip (so motion per frame matches full-length clips), randomly cropped to `crop` x `crop` pixels
    (multiples of 8; None: no crop) — the network is convolutional, and crops make CPU training ~4x cheaper.

    The linear paths start from a PCA of `pca_clips` training clips (`VideoAutoencoder.init_pca`).
    Loss: MSE + 0.1 L1 on pixels plus 1e-4 * mean latent^2 (keeps the latent scale bounded). AdamW, linear
    warm-up then cosine decay to lr / 20. `max_minutes` caps wall time: the
    cosine schedule then follows whichever of steps / time runs out first, so it always anneals.
    Returns the model card (also written as `out_dir/card.json`): config, data, steps, held-out PSNR (dB)
    of `eval_clips` `split="eval"` clips of `eval_frames` frames, parameter count and file size.
    """
    from tqdm import tqdm

    torch.manual_seed(seed)
    cfg = config or AutoencoderConfig()
    model = VideoAutoencoder(cfg, name=f"autoencoder:{Path(out_dir).name}")
    model.latent_shape(num_frames, size, size)  # clear error for a bad frame count
    ds = _world(world, "train", max(source_frames, num_frames), size, seed, 10 ** 9)
    if crop is not None and (crop % 8 or crop > size):
        raise ValueError(f"crop must be a multiple of 8 and at most size, got {crop}")
    if pca_clips:
        pca_ds = _world(world, "train", 1 + 4 * ((max(source_frames, num_frames) - 1) // 4), size, seed + 2, pca_clips)
        model.init_pca(_batch(pca_ds, range(pca_clips)))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    warmup = min(200, steps // 10)

    def progress_at(step: int) -> float:
        """Fraction of training done: by steps, or by wall time when `max_minutes` is the tighter limit."""
        p = (step - warmup) / max(1, steps - warmup)
        if max_minutes:
            p = max(p, (time.time() - start) / (60 * max_minutes))
        return min(1.0, p)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        return lr / 20 + (lr - lr / 20) * 0.5 * (1 + math.cos(math.pi * progress_at(step)))

    gen = torch.Generator().manual_seed(seed)
    start = time.time()
    history = []
    bar = tqdm(range(steps), desc="train autoencoder", disable=not progress, mininterval=5)
    step = 0
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        idx = torch.randint(0, 10 ** 9, (batch_size,), generator=gen)
        x = _windows(_batch(ds, idx), num_frames, crop, gen)
        model.train()
        z = model.encoder(x)
        y = model.decoder(z)
        mse = F.mse_loss(y, x)
        loss = mse + 0.1 * (y - x).abs().mean() + 1e-4 * z.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            train_psnr = float(10 * torch.log10(4.0 / mse.detach().clamp_min(1e-10)))
            history.append({"step": step, "loss": float(loss.detach()), "train_psnr": round(train_psnr, 2),
                            "seconds": round(time.time() - start, 1)})
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", psnr=f"{train_psnr:.1f}")
            if not progress:
                print(json.dumps(history[-1]), flush=True)
        if step >= warmup and progress_at(step) >= 1.0:
            break
    trained_steps = step + 1
    model.eval()
    calibrate_latents(model, _world(world, "train", eval_frames, size, seed + 1, 64))
    # measure with the weights exactly as shipped (fp16 round trip)
    out = Path(out_dir)
    model.save_pretrained(out)
    shipped = VideoAutoencoder.from_pretrained(out)
    value = evaluate_psnr(shipped, world, eval_clips, eval_frames, size, seed)
    card = {
        "name": out.name,
        "kind": "eflow-video-autoencoder",
        "config": asdict(cfg),
        "factor": list(model.factor),
        "latent_channels": cfg.latent_channels,
        "data": {"world": world, "train_frames": num_frames, "source_frames": source_frames, "size": size,
                 "crop": crop, "seed": seed},
        "train": {"steps": trained_steps, "planned_steps": steps, "batch_size": batch_size, "lr": lr,
                  "seconds": round(time.time() - start, 1), "device": "cpu",
                  "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()},
        "metrics": {"psnr_db_heldout": round(value, 2),
                    "heldout": {"world": world, "split": "eval", "clips": eval_clips, "frames": eval_frames,
                                "size": size, "quantised_8bit": True}},
        "parameters": model.num_parameters(),
        "file_bytes": (out / "model.safetensors").stat().st_size,
        "weights_dtype": "float16",
        "command": command,
        "history": history[-40:],
    }
    (out / "card.json").write_text(json.dumps(card, indent=1))
    return card

