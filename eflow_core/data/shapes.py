"""`shapes` world: one anti-aliased object on a plain background, moving or changing size, with a caption.

Deterministic by (seed, split, index), generated on the fly (about a millisecond a 16x64x64 clip).
Attribute vocabularies are module-level lists (`SHAPES`, `COLORS`, `BACKGROUNDS`, `MOTIONS`, and
`ATTRIBUTES` mapping name -> list) so probe classifiers and galleries can be built on them.
Captions are surface text over these labels, from `eflow_core.data.captions` (many sentence frames and
words, split into training and held-out parts): `split="train"` draws the `train` caption set,
`split="eval"` a held-out one (`captions=`, default `heldout-frames`) and a separate random stream
(held-out clips).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from . import draw

SHAPES = ["circle", "square", "triangle"]
COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]
BACKGROUNDS = ["black", "gray", "white"]
MOTIONS = ["moving left", "moving right", "moving up", "moving down", "growing", "shrinking"]
ATTRIBUTES: dict[str, list[str]] = {"shape": SHAPES, "color": COLORS, "background": BACKGROUNDS, "motion": MOTIONS}

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.10, 0.10), "green": (0.12, 0.68, 0.18), "blue": (0.15, 0.30, 0.92),
    "yellow": (0.96, 0.86, 0.08), "purple": (0.56, 0.16, 0.76), "orange": (0.98, 0.50, 0.04),
}
BACKGROUND_RGB: dict[str, float] = {"black": 0.0, "gray": 0.5, "white": 1.0}

_SPLIT_CODE = {"train": 0, "eval": 1, "val": 1, "test": 1}


def render_shape_clip(shape: str, color: str, background: str, motion: str, num_frames: int = 16,
                      size: int = 64, rng: np.random.Generator | int | None = None) -> tuple[torch.Tensor, dict]:
    """Draw one clip: video float (3, T, size, size) in [-1, 1], and the trajectory (centres, diameters (T,)).

    Object diameter 14-24 px at size 64 (scaled with size); translations cover 20-30 px over the clip;
    growing / shrinking goes between ~11 and ~26 px diameter. Colours get a small random jitter.
    """
    for key, value in (("shape", shape), ("color", color), ("background", background), ("motion", motion)):
        if value not in ATTRIBUTES[key]:
            raise ValueError(f"unknown {key} {value!r}: choose from {ATTRIBUTES[key]}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    k = size / 64.0
    margin = 2.0 * k
    t = np.linspace(0.0, 1.0, num_frames, dtype=np.float32)
    if motion in ("growing", "shrinking"):
        d_small, d_big = rng.uniform(10, 13) * k, rng.uniform(24, 28) * k
        d0, d1 = (d_small, d_big) if motion == "growing" else (d_big, d_small)
        diam = d0 + (d1 - d0) * t
        half = d_big / 2 + margin
        cx = np.full(num_frames, rng.uniform(half, size - half), np.float32)
        cy = np.full(num_frames, rng.uniform(half, size - half), np.float32)
    else:
        d = rng.uniform(14, 24) * k
        diam = np.full(num_frames, d, np.float32)
        dist = rng.uniform(20, 30) * k
        half = d / 2 + margin
        along0 = rng.uniform(half, size - half - dist)
        across = rng.uniform(half, size - half)
        sign = 1.0 if motion in ("moving right", "moving down") else -1.0
        start = along0 if sign > 0 else size - along0
        along = (start + sign * dist * t).astype(np.float32)
        if motion in ("moving left", "moving right"):
            cx, cy = along, np.full(num_frames, across, np.float32)
        else:
            cx, cy = np.full(num_frames, across, np.float32), along
    radius = diam / 2
    if shape == "circle":
        sdf = draw.circle_sdf(size, cx, cy, radius)
    elif shape == "square":
        sdf = draw.box_sdf(size, cx, cy, 0.9 * radius)
    else:
        sdf = draw.triangle_sdf(size, cx, cy + 0.15 * radius, 1.3 * radius)  # optical centring
    alpha = draw.coverage(sdf)
    canvas = np.full((num_frames, size, size, 3), BACKGROUND_RGB[background], np.float32)
    rgb = np.clip(np.asarray(PALETTE[color], np.float32) + rng.uniform(-0.04, 0.04, 3).astype(np.float32), 0, 1)
    draw.blend(canvas, alpha, rgb)
    return draw.to_video_tensor(canvas), {"cx": cx, "cy": cy, "diameter": diam}


class ShapesWorld(Dataset):
    """Map-style dataset of captioned shape clips.

    Item: {"video": float (3, num_frames, size, size) in [-1, 1], "caption": str,
    "attributes": {"shape", "color", "background", "motion"} -> str, "attribute_ids": same keys -> int
    (index into the vocabulary lists)}. Deterministic in (seed, split, index).
    `captions` names the caption set (`eflow_core.data.captions.CAPTION_SETS`; default `train` for the
    training split, `heldout-frames` for the others): item i's caption is one of the set's variants of
    its attributes. The attributes and the clip depend on (seed, split, index) only, so worlds that differ
    in `captions` alone show the same clips under other wording.
    """

    def __init__(self, num_samples: int = 20_000, num_frames: int = 16, size: int = 64, split: str = "train",
                 seed: int = 0, captions: str | None = None):
        from .captions import EVAL_CAPTIONS, caption_table

        if split not in _SPLIT_CODE:
            raise ValueError(f"split must be one of {sorted(_SPLIT_CODE)}, got {split!r}")
        self.num_samples, self.num_frames, self.size = num_samples, num_frames, size
        self.split, self.seed = split, seed
        self.captions = captions or ("train" if split == "train" else EVAL_CAPTIONS)
        caption_table(self.captions)       # checks the name; built once per process, before any worker forks
        self.vocab = ATTRIBUTES

    def with_captions(self, captions: str) -> "ShapesWorld":
        """The same world (clips, attributes) captioned from another caption set."""
        return ShapesWorld(self.num_samples, self.num_frames, self.size, self.split, self.seed, captions)

    def __len__(self) -> int:
        return self.num_samples

    def describe(self, index: int) -> tuple[dict[str, str], str, np.random.Generator]:
        """(attributes, caption, the generator that then draws the clip) of item `index`, without rendering."""
        from .captions import caption_variants

        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng((self.seed, _SPLIT_CODE[self.split], 7, index))
        attrs = {key: values[int(rng.integers(len(values)))] for key, values in ATTRIBUTES.items()}
        variants = caption_variants(attrs, self.captions)
        pick = rng.random()                # one draw whatever the set's size: the clip is the same for every set
        return attrs, variants[min(int(pick * len(variants)), len(variants) - 1)], rng

    def __getitem__(self, index: int) -> dict:
        attrs, caption, rng = self.describe(index)
        video, _ = render_shape_clip(num_frames=self.num_frames, size=self.size, rng=rng, **attrs)
        return {"video": video, "caption": caption, "attributes": attrs,
                "attribute_ids": {k: ATTRIBUTES[k].index(v) for k, v in attrs.items()}}
