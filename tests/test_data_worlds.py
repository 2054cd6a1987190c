"""Synthetic worlds: captions agree with the pixels, determinism, held-out templates, the factory, actions on disk."""
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from eflow_core.config import DataConfig
from eflow_core.data import KineticsDataset, collate, make_dataset, make_world
from eflow_core.data import shapes as S
from eflow_core.data.actions import ACTION_CLASSES, CLASSES, ActionsWorld, make_actions
from eflow_core.data.scenes import CAMERA_MOTIONS, SUBJECTS, ScenesWorld, render_scene_clip

# ---------------------------------------------------------------------------------------------------------
# shapes: recover every attribute named in the caption from the pixels alone


def _words_in_caption(caption: str) -> dict:
    """Parse the caption (not the attributes dict): which vocabulary words does it name?"""
    words = caption.replace(",", " ").replace(":", " ").replace(";", " ").split()
    found = {
        "shape": [s for s in S.SHAPES if s in words],
        "color": [c for c in S.COLORS if c in words],
        "background": [b for b in S.BACKGROUNDS if b in words],
    }
    motions = []
    for m, stems in {"moving left": ("left",), "moving right": ("right",), "moving up": ("up",),
                     "moving down": ("down",), "growing": ("growing", "grows"),
                     "shrinking": ("shrinking", "shrinks")}.items():
        if any(s in words for s in stems):
            motions.append(m)
    found["motion"] = motions
    return found


def _measure(video: torch.Tensor) -> dict:
    """Pixel tests on a (3, T, H, W) clip in [-1, 1]."""
    x = ((video.permute(1, 2, 3, 0).numpy() + 1) / 2)                    # (T, H, W, 3) in [0, 1]
    corners = np.concatenate([x[:, :2, :2], x[:, :2, -2:], x[:, -2:, :2], x[:, -2:, -2:]], axis=1).reshape(-1, 3)
    bg = np.median(corners, axis=0)
    background = min(S.BACKGROUND_RGB, key=lambda b: abs(S.BACKGROUND_RGB[b] - bg.mean()))
    diff = np.abs(x - bg).max(-1)                                          # (T, H, W)
    mask = diff > 0.25
    solid = diff > 0.6 * diff.max()
    color_rgb = np.median(x[solid], axis=0)
    color = min(S.PALETTE, key=lambda c: np.sum((np.array(S.PALETTE[c]) - color_rgb) ** 2))
    area = mask.reshape(len(x), -1).sum(1).astype(float)
    ys, xs = np.mgrid[: x.shape[1], : x.shape[2]]
    cy = (mask * ys).reshape(len(x), -1).sum(1) / area
    cx = (mask * xs).reshape(len(x), -1).sum(1) / area
    dx, dy, grow = cx[-1] - cx[0], cy[-1] - cy[0], area[-1] / area[0]
    if grow > 1.8:
        motion = "growing"
    elif grow < 1 / 1.8:
        motion = "shrinking"
    elif abs(dx) > abs(dy):
        motion = "moving right" if dx > 0 else "moving left"
    else:
        motion = "moving down" if dy > 0 else "moving up"
    # shape by how much of its bounding box the object fills: circle pi/4, square 1, triangle 1/2;
    # with anti-aliased coverage, the widest row sum and tallest column sum measure the box to sub-pixel accuracy
    f = int(np.argmax(area))
    cov = np.clip(diff[f] / np.percentile(diff[f][mask[f]], 90), 0, 1)
    fill = cov.sum() / (cov.sum(1).max() * cov.sum(0).max())
    shape = "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"
    return {"shape": shape, "color": color, "background": background, "motion": motion,
            "displacement": float(np.hypot(dx, dy)), "size": float(np.sqrt(area.max()))}


@pytest.mark.parametrize("split,n", [("train", 240), ("eval", 120)])
def test_shapes_captions_match_pixels(split, n):
    ds = S.ShapesWorld(num_samples=n, split=split, seed=3)
    for i in range(len(ds)):
        item = ds[i]
        named = _words_in_caption(item["caption"])
        for key in ("shape", "color", "background", "motion"):
            assert len(named[key]) == 1, (item["caption"], key, named[key])
        measured = _measure(item["video"])
        for key in ("shape", "color", "background", "motion"):
            assert measured[key] == named[key][0], (i, item["caption"], key, measured)
        assert item["attributes"] == {k: named[k][0] for k in named}
        if item["attributes"]["motion"].startswith("moving"):
            assert 18 <= measured["displacement"] <= 32, measured  # clearly visible over 16 frames
        assert 9 <= measured["size"] <= 26


def test_shapes_determinism_and_shapes_of_items():
    a, b = S.ShapesWorld(50, seed=0), S.ShapesWorld(50, seed=0)
    for i in (0, 7, 49):
        assert torch.equal(a[i]["video"], b[i]["video"]) and a[i]["caption"] == b[i]["caption"]
    c = S.ShapesWorld(50, seed=1)
    assert any(not torch.equal(a[i]["video"], c[i]["video"]) for i in range(5))
    v = a[0]["video"]
    assert v.shape == (3, 16, 64, 64) and v.dtype == torch.float32 and v.min() >= -1 and v.max() <= 1
    small = S.ShapesWorld(4, num_frames=4, size=16)[0]["video"]
    assert small.shape == (3, 4, 16, 16)
    assert a[3]["attribute_ids"]["color"] == S.COLORS.index(a[3]["attributes"]["color"])


def test_held_out_templates_differ():
    assert not set(S.TRAIN_TEMPLATES) & set(S.EVAL_TEMPLATES)
    attrs = {"shape": "circle", "color": "red", "background": "gray", "motion": "growing"}
    train_caps = {S.caption_for(attrs, t) for t in S.TRAIN_TEMPLATES}
    eval_caps = {S.caption_for(attrs, t) for t in S.EVAL_TEMPLATES}
    assert not train_caps & eval_caps
    ev = S.ShapesWorld(500, split="eval")
    described = [ev.describe(i)[:2] for i in range(500)]
    train_all = {S.caption_for(a, t) for a, _ in described for t in S.TRAIN_TEMPLATES}
    assert not {c for _, c in described} & train_all
    assert ev[3]["caption"] == described[3][1]
    assert S.caption_for({**attrs, "color": "orange"}, S.TRAIN_TEMPLATES[0]).startswith("an orange")


def test_shapes_generation_is_fast():
    ds = S.ShapesWorld(200)
    ds[0]
    t = time.perf_counter()
    for i in range(100):
        ds[i]
    per_clip = (time.perf_counter() - t) / 100
    assert per_clip < 0.03, f"{per_clip * 1000:.1f} ms a clip"  # ~1.5 ms on an idle core


def test_render_rejects_unknown_attribute():
    with pytest.raises(ValueError, match="unknown color 'teal'"):
        S.render_shape_clip("circle", "teal", "black", "growing")


# ---------------------------------------------------------------------------------------------------------
# scenes


def _shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Content displacement (dy, dx) from frame a to frame b by phase correlation (grayscale (H, W))."""
    fa, fb = np.fft.fft2(a - a.mean()), np.fft.fft2(b - b.mean())
    r = np.fft.ifft2(fb * np.conj(fa) / (np.abs(fb * np.conj(fa)) + 1e-9)).real
    dy, dx = np.unravel_index(np.argmax(r), r.shape)
    h, w = a.shape
    return (dy - h if dy > h // 2 else dy), (dx - w if dx > w // 2 else dx)


def test_scenes_items_and_pan_direction():
    ds = ScenesWorld(6, num_frames=8, size=64, seed=5)
    for i in range(len(ds)):
        item = ds[i]
        v = item["video"]
        assert v.shape == (3, 8, 64, 64) and v.min() >= -1 and v.max() <= 1
        assert item["caption"] and set(item["attributes"]) == {"subject", "motion", "speed"}
    assert set(ds.vocab["subject"]) == set(SUBJECTS) and ds.vocab["motion"] == CAMERA_MOTIONS
    assert torch.equal(ScenesWorld(5, num_frames=8, seed=5)[2]["video"], ds[2]["video"])
    # the camera pans right -> the content moves left on screen (and so on)
    subjects = ["cat", "astronaut", "rocket", "coffee"]
    for k, motion in enumerate(["pan left", "pan right", "pan up", "pan down"] * 2):
        v = render_scene_clip(subjects[k % 4], motion, "fast", num_frames=4, size=64, rng=k)
        g = v.mean(0).numpy()
        dy, dx = _shift(g[0], g[1])  # ~11 px a frame; frame 0 -> 3 would be half the view, ambiguous
        expected = {"pan right": dx < -3, "pan left": dx > 3, "pan down": dy < -3, "pan up": dy > 3}[motion]
        assert expected, (motion, dy, dx)


# ---------------------------------------------------------------------------------------------------------
# actions, the factory, collate


def test_actions_world_and_disk_layout(tmp_path):
    mem = ActionsWorld(24, num_frames=8, size=32, classes=12)
    item = mem[5]
    assert item["video"].shape == (3, 8, 32, 32) and mem.classes[item["label"]] == item["label_name"]
    assert all(" " in name for name in ACTION_CLASSES)
    assert ActionsWorld(10).classes == CLASSES
    counts = make_actions(tmp_path / "actions", classes=3, per_class=2, num_frames=20, size=32,
                          splits=("train", "val"), progress=False)
    assert counts == {"train": 6, "val": 3}
    header = (tmp_path / "actions" / "annotations" / "train.csv").read_text().splitlines()[0]
    assert header == "label,youtube_id,time_start,time_end,split"
    ds = KineticsDataset(tmp_path / "actions", "train", num_frames=8, size=32, frame_stride=2)
    assert len(ds) == 6 and ds.skipped == 0 and ds.classes == sorted(ACTION_CLASSES[:3])
    assert sorted(ds[i]["label_name"] for i in range(6)) == sorted(ACTION_CLASSES[:3] * 2)
    # through the factory
    cfg = DataConfig(kind="actions", root=str(tmp_path / "actions"), num_frames=8, size=32)
    val = make_dataset(cfg, split="eval")
    assert len(val) == 3 and val.split == "val" and val.classes == ds.classes


@pytest.mark.parametrize("kind", ["shapes", "scenes", "shapes+scenes"])
def test_make_dataset_text_worlds(kind):
    cfg = DataConfig(kind=kind, num_frames=8, size=32, num_samples=6)
    ds = make_dataset(cfg)
    assert len(ds) == 6
    batch = next(iter(DataLoader(ds, batch_size=6, collate_fn=collate)))
    assert batch["video"].shape == (6, 3, 8, 32, 32)
    assert len(batch["caption"]) == 6 and all(isinstance(c, str) and c for c in batch["caption"])
    if kind == "shapes+scenes":
        assert set(batch["world"]) == {"shapes", "scenes"}
    ev = make_dataset(cfg, split="eval")
    assert ev[0]["caption"] != ds[0]["caption"]


def test_make_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="make-actions"):
        make_dataset(DataConfig(kind="actions", root=""))
    with pytest.raises(FileNotFoundError, match="make-actions"):
        make_dataset(DataConfig(kind="actions", root=str(tmp_path / "none")))
    with pytest.raises(ValueError, match="unknown data kind"):
        make_dataset(DataConfig(kind="ucf"))
    with pytest.raises(ValueError, match="unknown world"):
        make_world("nope")
