"""`scenes` world: camera pans, zooms and rotations over real photographs bundled with scikit-image.

The photographs ship inside the installed scikit-image wheel (`skimage.data.astronaut()`, `chelsea()`, ...)
and load offline. A clip is a moving square view into one photograph, rendered at 2x with bilinear
sampling and box-filtered down (anti-aliased); its caption says what the camera does and to what.
Deterministic by (seed, split, index); `split="eval"` uses held-out caption templates.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .captions import fix_articles

# name -> (skimage.data loader, caption noun phrase)
SUBJECTS: dict[str, tuple[str, str]] = {
    "astronaut": ("astronaut", "an astronaut"),
    "coffee": ("coffee", "a cup of coffee"),
    "cat": ("chelsea", "a cat"),
    "rocket": ("rocket", "a rocket on its pad"),
    "cameraman": ("camera", "a man with a camera"),
    "galaxies": ("hubble_deep_field", "distant galaxies"),
    "coins": ("coins", "old coins"),
    "moon": ("moon", "the surface of the moon"),
    "bricks": ("brick", "a brick wall"),
    "grass": ("grass", "a patch of grass"),
    "cells": ("immunohistochemistry", "stained cells under a microscope"),
}
CAMERA_MOTIONS = ["pan left", "pan right", "pan up", "pan down", "zoom in", "zoom out",
                  "rotate clockwise", "rotate counterclockwise"]
SPEEDS = ["slow", "fast"]
ATTRIBUTES: dict[str, list[str]] = {"subject": list(SUBJECTS), "motion": CAMERA_MOTIONS, "speed": SPEEDS}

TRAIN_TEMPLATES: dict[str, list[str]] = {
    "pan": ["panning {dir} across {subject}", "a {speed} pan {dir} across {subject}",
            "the camera pans {dir} over {subject}", "{subject}, {speed} camera pan to the {dir}"],
    "zoom in": ["a {speed} zoom into {subject}", "zooming in on {subject}", "the camera zooms in on {subject}",
                "{subject}, {speed} zoom in"],
    "zoom out": ["a {speed} zoom out from {subject}", "zooming out from {subject}",
                 "the camera pulls back from {subject}", "{subject}, {speed} zoom out"],
    "rotate": ["{subject} rotating {dir}", "a {speed} {dir} rotation of {subject}",
               "the view of {subject} turns {dir}", "{subject}, turning {dir}"],
}
EVAL_TEMPLATES: dict[str, list[str]] = {
    "pan": ["a shot of {subject} while the camera travels {dir}", "{speed} lateral camera move {dir}: {subject}"],
    "zoom in": ["moving closer and closer to {subject}", "{speed} push in toward {subject}"],
    "zoom out": ["moving away from {subject} to show more of it", "{speed} pull out revealing {subject}"],
    "rotate": ["{subject} spins {dir} in the frame", "{speed} spin {dir} over {subject}"],
}

_SPLIT_CODE = {"train": 0, "eval": 1, "val": 1, "test": 1}


@functools.lru_cache(maxsize=64)
def load_photo(subject: str, short_side: int = 256) -> torch.Tensor:
    """A bundled photograph as float (3, H, W) in [0, 1], resized (antialiased) to the given short side."""
    import skimage.data

    if subject not in SUBJECTS:
        raise ValueError(f"unknown subject {subject!r}: choose from {list(SUBJECTS)}")
    img = np.asarray(getattr(skimage.data, SUBJECTS[subject][0])())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    x = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1).float().div(255.0)
    h, w = x.shape[1:]
    scale = short_side / min(h, w)
    if scale != 1:
        x = F.interpolate(x[None], size=(round(h * scale), round(w * scale)), mode="bilinear",
                          antialias=True, align_corners=False)[0].clamp(0, 1)
    return x.contiguous()


def camera_path(motion: str, speed: str, height: int, width: int, num_frames: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """View centre (cx, cy), half-size s (pixels of the photo) and angle (radians) per frame, each (T,).

    "pan right" moves the view right (the content slides left); "zoom in" shrinks the view;
    "rotate clockwise" turns the content clockwise on screen.
    """
    m = min(height, width)
    t = np.linspace(0.0, 1.0, num_frames)
    amount = 0.6 if speed == "slow" else 1.0
    angle = np.zeros(num_frames)
    if motion.startswith("pan"):
        s = np.full(num_frames, 0.3 * m)
        dist = amount * 0.3 * m
        horizontal = motion in ("pan left", "pan right")
        sign = 1.0 if motion in ("pan right", "pan down") else -1.0
        extent = width if horizontal else height
        other = height if horizontal else width
        a0 = rng.uniform(s[0], extent - s[0] - dist)
        a0 = a0 if sign > 0 else extent - a0
        along = a0 + sign * dist * t
        across = np.full(num_frames, rng.uniform(s[0], other - s[0]))
        cx, cy = (along, across) if horizontal else (across, along)
    elif motion.startswith("zoom"):
        big, small = 0.45 * m, 0.45 * m * (1 - 0.45 * amount)
        s = big + (small - big) * t if motion == "zoom in" else small + (big - small) * t
        cx = np.full(num_frames, rng.uniform(big, width - big))
        cy = np.full(num_frames, rng.uniform(big, height - big))
    elif motion.startswith("rotate"):
        s = np.full(num_frames, 0.3 * m)
        reach = s[0] * math.sqrt(2)
        cx = np.full(num_frames, rng.uniform(reach, width - reach))
        cy = np.full(num_frames, rng.uniform(reach, height - reach))
        total = math.radians(35 if speed == "slow" else 70)
        angle = (-total if motion == "rotate clockwise" else total) * t
    else:
        raise ValueError(f"unknown camera motion {motion!r}: choose from {CAMERA_MOTIONS}")
    return cx, cy, s, angle


def render_scene_clip(subject: str, motion: str, speed: str = "slow", num_frames: int = 16, size: int = 64,
                      rng: np.random.Generator | int | None = None, flip: bool | None = None) -> torch.Tensor:
    """One camera move over a photograph: float (3, T, size, size) in [-1, 1]."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    photo = load_photo(subject, 4 * size)
    if flip is None:
        flip = bool(rng.integers(2))
    if flip:
        photo = photo.flip(-1)
    _, h, w = photo.shape
    cx, cy, s, ang = camera_path(motion, speed, h, w, num_frames, rng)
    cos, sin = np.cos(ang), np.sin(ang)
    theta = np.zeros((num_frames, 2, 3), np.float32)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = s * cos / (w / 2), -s * sin / (w / 2), cx / (w / 2) - 1
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = s * sin / (h / 2), s * cos / (h / 2), cy / (h / 2) - 1
    grid = F.affine_grid(torch.from_numpy(theta), (num_frames, 3, 2 * size, 2 * size), align_corners=False)
    frames = F.grid_sample(photo[None].expand(num_frames, -1, -1, -1), grid, mode="bilinear",
                           padding_mode="border", align_corners=False)
    frames = F.avg_pool2d(frames, 2)                                   # (T, 3, size, size)
    return (frames.permute(1, 0, 2, 3) * 2 - 1).clamp(-1, 1).contiguous()


def caption_for(attributes: dict[str, str], template: str) -> str:
    motion = attributes["motion"]
    direction = motion.split(" ", 1)[1] if motion.startswith(("pan", "rotate")) else ""
    text = template.format(subject=SUBJECTS[attributes["subject"]][1], speed=attributes["speed"], dir=direction)
    return fix_articles(text)


def _template_key(motion: str) -> str:
    return "pan" if motion.startswith("pan") else "rotate" if motion.startswith("rotate") else motion


class ScenesWorld(Dataset):
    """Map-style dataset of captioned camera moves over bundled photographs.

    Item: {"video": float (3, num_frames, size, size) in [-1, 1], "caption": str,
    "attributes": {"subject", "motion", "speed"} -> str, "attribute_ids": same keys -> int}.
    """

    def __init__(self, num_samples: int = 20_000, num_frames: int = 16, size: int = 64, split: str = "train",
                 seed: int = 0):
        if split not in _SPLIT_CODE:
            raise ValueError(f"split must be one of {sorted(_SPLIT_CODE)}, got {split!r}")
        self.num_samples, self.num_frames, self.size = num_samples, num_frames, size
        self.split, self.seed = split, seed
        self.templates = TRAIN_TEMPLATES if split == "train" else EVAL_TEMPLATES
        self.vocab = ATTRIBUTES

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng((self.seed, _SPLIT_CODE[self.split], 11, index))
        attrs = {key: values[int(rng.integers(len(values)))] for key, values in ATTRIBUTES.items()}
        options = self.templates[_template_key(attrs["motion"])]
        template = options[int(rng.integers(len(options)))]
        video = render_scene_clip(attrs["subject"], attrs["motion"], attrs["speed"], self.num_frames, self.size, rng)
        return {"video": video, "caption": caption_for(attrs, template), "attributes": attrs,
                "attribute_ids": {k: ATTRIBUTES[k].index(v) for k, v in attrs.items()}}
