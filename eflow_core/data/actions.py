"""`actions` world: class-conditional synthetic motions, and a writer that lays them out like Kinetics-700.

`make_actions(out_dir, classes=10, per_class=200, ...)` writes `out_dir/annotations/{split}.csv` and
`out_dir/{split}/{label}/{id}_{start:06d}_{end:06d}.mp4`, so the real `KineticsDataset` code path
(label folders with spaces, CSV parsing, decoding) is what reads it back. `ActionsWorld` is the same
generator as an in-memory map-style dataset (no files). Deterministic by (seed, split, index).
"""
from __future__ import annotations

import colorsys
import csv
import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from . import draw

log = logging.getLogger(__name__)

ACTION_CLASSES = [
    "bouncing ball", "spinning wheel", "waving flag", "falling blocks", "zooming in", "swinging pendulum",
    "orbiting moon", "rising bubbles", "expanding ripples", "blinking lights", "sliding doors", "drifting clouds",
]

# Label order of the default 10-class set: `ActionsWorld().classes`, and what `KineticsDataset` (sorted label
# names) gives for `make_actions(classes=10)` on disk — label i means CLASSES[i] everywhere.
CLASSES = sorted(ACTION_CLASSES[:10])

_SPLIT_CODE = {"train": 0, "val": 1, "eval": 1, "validate": 1, "test": 2}


def _color(rng: np.random.Generator, light: bool | None = None) -> np.ndarray:
    """A saturated random colour (3,) in [0, 1]."""
    h = rng.uniform()
    v = rng.uniform(0.75, 1.0) if light is None or light else rng.uniform(0.25, 0.45)
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.55, 0.95), v), np.float32)


def _background(rng: np.random.Generator, num_frames: int, size: int) -> np.ndarray:
    """Dark random colour with a faint vertical gradient: (T, H, W, 3)."""
    base = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.2, 0.6), rng.uniform(0.08, 0.3)), np.float32)
    ramp = np.linspace(-0.05, 0.05, size, dtype=np.float32)[:, None, None]
    frame = np.clip(base[None, None, :] + ramp, 0, 1) * np.ones((1, size, 1), np.float32)
    return np.broadcast_to(frame, (num_frames, size, size, 3)).copy()


def _bouncing_ball(c, t, rng, size):
    r = rng.uniform(0.07, 0.11) * size
    floor = size - 2 - r
    period = rng.uniform(14, 22)
    height = rng.uniform(0.35, 0.6) * size
    phase = rng.uniform(0, 1)
    u = ((t / period + phase) % 1.0) * 2 - 1                 # -1 .. 1 within one bounce
    cy = floor - height * (1 - u ** 2)
    vx = rng.uniform(0.4, 1.0) * rng.choice([-1, 1])
    x0 = rng.uniform(r + 2, size - r - 2)
    span = size - 2 * r - 4
    cx = r + 2 + np.abs(((x0 - r - 2 + vx * t) % (2 * span)) - span) * 1.0   # reflect at the walls
    draw.blend(c, draw.coverage(draw.circle_sdf(size, cx, cy, r)), _color(rng))


def _spinning_wheel(c, t, rng, size):
    cx, cy = rng.uniform(0.4, 0.6, 2) * size
    radius = rng.uniform(0.25, 0.33) * size
    col = _color(rng)
    omega = rng.uniform(0.12, 0.25) * rng.choice([-1, 1])
    n = int(rng.integers(3, 6))
    draw.blend(c, draw.coverage(draw.ring_sdf(size, cx, cy, radius, 0.07 * size)), col)
    for k in range(n):
        a = omega * t + 2 * math.pi * k / n
        sdf = draw.segment_sdf(size, cx, cy, cx + radius * np.cos(a), cy + radius * np.sin(a), 0.05 * size)
        draw.blend(c, draw.coverage(sdf), col)


def _waving_flag(c, t, rng, size):
    pole_x = rng.uniform(0.15, 0.3) * size
    top = rng.uniform(0.12, 0.25) * size
    w, h = rng.uniform(0.45, 0.6) * size, rng.uniform(0.25, 0.35) * size
    amp, k, omega = rng.uniform(0.04, 0.07) * size, rng.uniform(0.12, 0.2), rng.uniform(0.35, 0.6)
    y, x = draw.pixel_grid(size)
    u = np.clip(x - pole_x, 0, None)
    wave = amp * (u / w) * np.sin(k * u - omega * t[:, None, None])      # (T, 1, W): fixed at the pole
    inside_x = np.clip(0.5 - np.maximum(pole_x - x, x - pole_x - w), 0, 1)
    inside_y = np.clip(0.5 - np.maximum(top + wave - y, y - top - h - wave), 0, 1)
    draw.blend(c, inside_x * inside_y, _color(rng))
    draw.blend(c, draw.coverage(draw.segment_sdf(size, pole_x, top - 2, pole_x, size - 2, 0.04 * size)),
               np.array([0.8, 0.8, 0.8], np.float32))


def _falling_blocks(c, t, rng, size):
    for _ in range(int(rng.integers(3, 6))):
        half = rng.uniform(0.05, 0.09) * size
        x = rng.uniform(half + 1, size - half - 1)
        start = rng.uniform(-0.6, 0.3) * t[-1]
        speed = rng.uniform(1.5, 3.0) * size / 64
        y = np.minimum(-half + speed * np.clip(t - start, 0, None), size - half - 1)   # lands on the floor
        draw.blend(c, draw.coverage(draw.box_sdf(size, x, y, half)), _color(rng))


def _zooming_in(c, t, rng, size):
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    period0 = rng.uniform(6, 10) * size / 64
    scale = np.exp(rng.uniform(0.02, 0.04) * t)[:, None, None]            # pattern grows: zoom in
    y, x = draw.pixel_grid(size)
    d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / (period0 * scale)
    stripes = np.clip(np.sin(2 * math.pi * d) * 3 + 0.5, 0, 1)
    draw.blend(c, stripes.astype(np.float32), _color(rng))


def _swinging_pendulum(c, t, rng, size):
    px, py = rng.uniform(0.4, 0.6) * size, rng.uniform(0.05, 0.15) * size
    length = rng.uniform(0.5, 0.65) * size
    amp, omega, phase = math.radians(rng.uniform(25, 45)), rng.uniform(0.18, 0.3), rng.uniform(0, 2 * math.pi)
    a = amp * np.sin(omega * t + phase)
    bx, by = px + length * np.sin(a), py + length * np.cos(a)
    draw.blend(c, draw.coverage(draw.segment_sdf(size, px, py, bx, by, 0.03 * size)), np.full(3, 0.75, np.float32))
    draw.blend(c, draw.coverage(draw.circle_sdf(size, bx, by, 0.08 * size)), _color(rng))


def _orbiting_moon(c, t, rng, size):
    cx, cy = rng.uniform(0.42, 0.58, 2) * size
    draw.blend(c, draw.coverage(draw.circle_sdf(size, cx, cy, rng.uniform(0.1, 0.15) * size)), _color(rng))
    rad, omega, phase = rng.uniform(0.28, 0.36) * size, rng.uniform(0.12, 0.22) * rng.choice([-1, 1]), rng.uniform(0, 6.3)
    mx, my = cx + rad * np.cos(omega * t + phase), cy + 0.6 * rad * np.sin(omega * t + phase)
    draw.blend(c, draw.coverage(draw.circle_sdf(size, mx, my, 0.06 * size)), _color(rng))


def _rising_bubbles(c, t, rng, size):
    for _ in range(int(rng.integers(3, 7))):
        r = rng.uniform(0.04, 0.08) * size
        x0, y0 = rng.uniform(r, size - r), rng.uniform(0.3, 1.3) * size
        speed = rng.uniform(1.0, 2.2) * size / 64
        wob = rng.uniform(1, 3) * np.sin(rng.uniform(0.2, 0.4) * t + rng.uniform(0, 6.3))
        draw.blend(c, draw.coverage(draw.ring_sdf(size, x0 + wob, y0 - speed * t, r, 0.03 * size + 0.6)), _color(rng))


def _expanding_ripples(c, t, rng, size):
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    col = _color(rng)
    speed, gap = rng.uniform(0.8, 1.4) * size / 64, rng.uniform(8, 14) * size / 64
    for k in range(6):
        r = speed * t + k * gap - 2 * gap
        a = draw.coverage(draw.ring_sdf(size, cx, cy, np.maximum(r, 0.1), 0.04 * size))
        fade = np.clip(1.2 - r / (0.7 * size), 0, 1) * (r > 0)
        draw.blend(c, a * fade[:, None, None].astype(np.float32), col)


def _blinking_lights(c, t, rng, size):
    n = int(rng.integers(2, 4))
    col = _color(rng)
    for i in range(n):
        for j in range(n):
            cx, cy = (i + 0.5) * size / n, (j + 0.5) * size / n
            period, phase = rng.uniform(6, 14), rng.uniform(0, 1)
            on = (((t / period + phase) % 1.0) < 0.5).astype(np.float32)
            a = draw.coverage(draw.circle_sdf(size, cx, cy, 0.3 * size / n)) * on[:, None, None]
            draw.blend(c, a, col)


def _sliding_doors(c, t, rng, size):
    col = _color(rng)
    period = rng.uniform(24, 40)
    gap = (0.5 - 0.5 * np.cos(2 * math.pi * (t / period + rng.uniform(0, 1)))) * 0.4 * size
    half_w = size / 4
    top, bottom = 0.15 * size, 0.9 * size
    for side in (-1, 1):
        cx = size / 2 + side * (half_w + gap / 2)
        draw.blend(c, draw.coverage(draw.box_sdf(size, cx, (top + bottom) / 2, half_w - 1, (bottom - top) / 2)), col)


def _drifting_clouds(c, t, rng, size):
    y, x = draw.pixel_grid(size)
    for _ in range(int(rng.integers(2, 5))):
        cx0, cy = rng.uniform(0, size), rng.uniform(0.15, 0.85) * size
        sx, sy = rng.uniform(0.1, 0.2) * size, rng.uniform(0.05, 0.1) * size
        v = rng.uniform(0.8, 1.6) * rng.choice([-1, 1]) * size / 64
        cx = ((cx0 + v * t + sx * 2) % (size + 4 * sx) - sx * 2)[:, None, None]
        a = np.exp(-((x - cx) ** 2 / (2 * sx ** 2) + (y - cy) ** 2 / (2 * sy ** 2))).astype(np.float32)
        draw.blend(c, np.clip(a * 1.3, 0, 1), np.clip(_color(rng) * 0.3 + 0.7, 0, 1))


_RENDERERS = {
    "bouncing ball": _bouncing_ball, "spinning wheel": _spinning_wheel, "waving flag": _waving_flag,
    "falling blocks": _falling_blocks, "zooming in": _zooming_in, "swinging pendulum": _swinging_pendulum,
    "orbiting moon": _orbiting_moon, "rising bubbles": _rising_bubbles, "expanding ripples": _expanding_ripples,
    "blinking lights": _blinking_lights, "sliding doors": _sliding_doors, "drifting clouds": _drifting_clouds,
}


def render_action_clip(action: str, num_frames: int = 32, size: int = 64,
                       rng: np.random.Generator | int | None = None) -> np.ndarray:
    """One clip of `action` as uint8 (T, size, size, 3)."""
    if action not in _RENDERERS:
        raise ValueError(f"unknown action {action!r}: choose from {ACTION_CLASSES}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    canvas = _background(rng, num_frames, size)
    _RENDERERS[action](canvas, np.arange(num_frames, dtype=np.float32), rng, size)
    return (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)


def action_classes(classes: int | list[str] = 10) -> list[str]:
    """The first `classes` action names (or validate a given list)."""
    if isinstance(classes, int):
        if not 1 <= classes <= len(ACTION_CLASSES):
            raise ValueError(f"classes must be between 1 and {len(ACTION_CLASSES)}, got {classes}")
        return ACTION_CLASSES[:classes]
    unknown = [c for c in classes if c not in _RENDERERS]
    if unknown:
        raise ValueError(f"unknown action classes {unknown}: choose from {ACTION_CLASSES}")
    return list(classes)


class ActionsWorld(Dataset):
    """In-memory actions clips: {"video": float (3, T, size, size) in [-1, 1], "label": int, "label_name": str}.

    Labels index `self.classes`, which is sorted (the order `KineticsDataset` gives the same classes on disk).
    """

    def __init__(self, num_samples: int = 2000, num_frames: int = 16, size: int = 64, split: str = "train",
                 seed: int = 0, classes: int | list[str] = 10):
        if split not in _SPLIT_CODE:
            raise ValueError(f"split must be one of {sorted(_SPLIT_CODE)}, got {split!r}")
        self.classes = sorted(action_classes(classes))
        self.num_samples, self.num_frames, self.size, self.split, self.seed = num_samples, num_frames, size, split, seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng((self.seed, _SPLIT_CODE[self.split], 13, index))
        label = index % len(self.classes)
        frames = render_action_clip(self.classes[label], self.num_frames, self.size, rng)
        video = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0)
        return {"video": video.contiguous(), "label": label, "label_name": self.classes[label]}


_ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


def make_actions(out_dir: str | Path, classes: int | list[str] = 10, per_class: int = 200, num_frames: int = 32,
                 size: int = 64, seed: int = 0, splits: tuple[str, ...] = ("train", "val"),
                 eval_per_class: int | None = None, fps: float = 8.0, progress: bool = True) -> dict[str, int]:
    """Write the actions world to disk in the Kinetics-700 layout; returns {split: clips written}.

    `per_class` clips per class for "train"; other splits get `eval_per_class` (default per_class // 4, at
    least 1). Files: `out_dir/{split}/{label}/{youtube_id}_{start:06d}_{end:06d}.mp4` (H.264, `fps`), with
    Kinetics-style random 11-character ids; `out_dir/annotations/{split}.csv` has the columns
    label, youtube_id, time_start, time_end, split. Existing files with the same name are overwritten.
    """
    from tqdm import tqdm

    from .video import write_mp4

    names = action_classes(classes)
    out = Path(out_dir)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    eval_n = eval_per_class if eval_per_class is not None else max(1, per_class // 4)
    jobs = []
    for split in splits:
        n = per_class if split == "train" else eval_n
        for ci, name in enumerate(names):
            for k in range(n):
                jobs.append((split, ci, name, k))
    counts: dict[str, int] = {s: 0 for s in splits}
    rows: dict[str, list[list]] = {s: [] for s in splits}
    for split, ci, name, k in tqdm(jobs, desc=f"writing actions to {out}", disable=not progress):
        rng = np.random.default_rng((seed, _SPLIT_CODE.get(split, 3), 17, ci, k))
        youtube_id = "".join(rng.choice(_ID_ALPHABET, 11))
        start = int(rng.integers(0, 300))
        end = start + 10
        frames = render_action_clip(name, num_frames, size, rng)
        write_mp4(out / split / name / f"{youtube_id}_{start:06d}_{end:06d}.mp4", frames, fps=fps)
        rows[split].append([name, youtube_id, start, end, split])
        counts[split] += 1
    for split in splits:
        with (out / "annotations" / f"{split}.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            w.writerows(rows[split])
    log.info("wrote %s clips of %d classes to %s", counts, len(names), out)
    return counts


def add_data_cli(subparsers) -> None:
    """Register `data make-actions` on an argparse subparsers object (`python -m eflow_core data make-actions`)."""
    data = subparsers.add_parser("data", help="generate or inspect datasets")
    sub = data.add_subparsers(dest="data_command", required=True)
    p = sub.add_parser("make-actions", help="write the synthetic actions world in the Kinetics-700 layout")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--classes", type=int, default=10, help=f"number of classes (1..{len(ACTION_CLASSES)})")
    p.add_argument("--per-class", type=int, default=200, help="train clips per class (val gets a quarter)")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--splits", default="train,val", help="comma-separated split names")
    p.set_defaults(func=_run_make_actions)


def _run_make_actions(args) -> None:
    counts = make_actions(args.out, args.classes, args.per_class, args.frames, args.size, args.seed,
                          tuple(s for s in args.splits.split(",") if s))
    print(f"wrote {sum(counts.values())} clips ({', '.join(f'{k}: {v}' for k, v in counts.items())}) to {args.out}")
