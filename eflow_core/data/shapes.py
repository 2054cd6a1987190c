"""`shapes` world: one anti-aliased object on a plain background, moving or changing size, with a caption.

Deterministic by (seed, split, index), generated on the fly (about a millisecond a 16x64x64 clip).
Attribute vocabularies are module-level lists (`SHAPES`, `COLORS`, `BACKGROUNDS`, `MOTIONS`, and
`ATTRIBUTES` mapping name -> list) so probe classifiers and galleries can be built on them.
Training captions come from `TRAIN_TEMPLATES`; `split="eval"` uses the disjoint `EVAL_TEMPLATES`
and a separate random stream (held-out clips).
"""
from __future__ import annotations

import re

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

# motion -> (-ing form, 3rd person verb); the captions use both
_MOTION_FORMS = {
    "moving left": ("moving left", "moves left"), "moving right": ("moving right", "moves right"),
    "moving up": ("moving up", "moves up"), "moving down": ("moving down", "moves down"),
    "growing": ("growing", "grows"), "shrinking": ("shrinking", "shrinks"),
}

TRAIN_TEMPLATES = [
    "a {color} {shape} {ing} on a {background} background",
    "on a {background} background, a {color} {shape} {verb}",
    "a {color} {shape} {verb} against a {background} background",
    "{color} {shape} {ing}, {background} background",
    "a {shape}, {color}, {ing} over a {background} background",
    "the {color} {shape} {verb} on {background}",
]
EVAL_TEMPLATES = [
    "a {background} background with a {color} {shape} that {verb}",
    "we see a {color} {shape} {ing} in front of a {background} background",
    "{background} backdrop: one {color} {shape} {ing}",
]

_SPLIT_CODE = {"train": 0, "eval": 1, "val": 1, "test": 1}


def caption_for(attributes: dict[str, str], template: str) -> str:
    """Fill a caption template with attributes {shape, color, background, motion}."""
    ing, verb = _MOTION_FORMS[attributes["motion"]]
    text = template.format(shape=attributes["shape"], color=attributes["color"],
                           background=attributes["background"], ing=ing, verb=verb)
    return fix_articles(text)


def all_captions(templates: list[str]) -> list[str]:
    """Every caption the templates can produce over the attribute vocabularies (for embedding caches)."""
    import itertools

    combos = itertools.product(*ATTRIBUTES.values())
    return [caption_for(dict(zip(ATTRIBUTES, values)), template) for values in combos for template in templates]


def fix_articles(text: str) -> str:
    """'a orange' -> 'an orange' (and 'A orange' -> 'An orange')."""
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)


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
    """

    def __init__(self, num_samples: int = 20_000, num_frames: int = 16, size: int = 64, split: str = "train",
                 seed: int = 0, templates: list[str] | None = None):
        if split not in _SPLIT_CODE:
            raise ValueError(f"split must be one of {sorted(_SPLIT_CODE)}, got {split!r}")
        self.num_samples, self.num_frames, self.size = num_samples, num_frames, size
        self.split, self.seed = split, seed
        self.templates = templates or (TRAIN_TEMPLATES if split == "train" else EVAL_TEMPLATES)
        self.vocab = ATTRIBUTES

    def __len__(self) -> int:
        return self.num_samples

    def describe(self, index: int) -> tuple[dict[str, str], str, np.random.Generator]:
        """(attributes, caption, the generator that then draws the clip) of item `index`, without rendering."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng((self.seed, _SPLIT_CODE[self.split], 7, index))
        attrs = {key: values[int(rng.integers(len(values)))] for key, values in ATTRIBUTES.items()}
        template = self.templates[int(rng.integers(len(self.templates)))]
        return attrs, caption_for(attrs, template), rng

    def __getitem__(self, index: int) -> dict:
        attrs, caption, rng = self.describe(index)
        video, _ = render_shape_clip(num_frames=self.num_frames, size=self.size, rng=rng, **attrs)
        return {"video": video, "caption": caption, "attributes": attrs,
                "attribute_ids": {k: ATTRIBUTES[k].index(v) for k, v in attrs.items()}}
