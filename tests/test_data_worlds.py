"""Synthetic worlds: captions agree with the pixels, determinism, held-out templates, the factory, actions on disk."""
import itertools
import re
import string
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from eflow_core.config import DataConfig
from eflow_core.data import KineticsDataset, collate, make_dataset, make_world
from eflow_core.data import captions as C
from eflow_core.data import shapes as S
from eflow_core.data.actions import ACTION_CLASSES, CLASSES, ActionsWorld, make_actions
from eflow_core.data.scenes import CAMERA_MOTIONS, SUBJECTS, ScenesWorld, render_scene_clip

# ---------------------------------------------------------------------------------------------------------
# shapes: recover every attribute named in the caption from the pixels alone


def _words_in_caption(caption: str) -> dict:
    """Parse the caption (not the attributes dict): which values does it name, in any word form?"""
    return C.named_attributes(caption)


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


@pytest.mark.parametrize("split,n,captions", [("train", 240, None), ("eval", 120, None),
                                              ("eval", 60, "heldout-vocabulary")])
def test_shapes_captions_match_pixels(split, n, captions):
    ds = S.ShapesWorld(num_samples=n, split=split, seed=3, captions=captions)
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


def test_eval_split_draws_held_out_captions_of_the_same_clips():
    ev = S.ShapesWorld(300, split="eval")
    assert ev.captions == "heldout-frames" and S.ShapesWorld(5).captions == "train"
    train = set(C.all_captions("train"))
    described = [ev.describe(i)[:2] for i in range(300)]
    assert not {c for _, c in described} & train
    assert ev[3]["caption"] == described[3][1]
    vocab = ev.with_captions("heldout-vocabulary")
    for i in (0, 5, 17):                                    # same clip and attributes, other wording
        a, b = ev[i], vocab[i]
        assert torch.equal(a["video"], b["video"]) and a["attributes"] == b["attributes"]
        assert a["caption"] != b["caption"] and b["caption"] in C.caption_variants(a["attributes"],
                                                                                   "heldout-vocabulary")
    with pytest.raises(ValueError, match="unknown caption set"):
        S.ShapesWorld(5, captions="heldout")


# ---------------------------------------------------------------------------------------------------------
# shapes captions: frames x words, training and held-out parts (issue 23)

_COMBOS = [dict(zip(S.ATTRIBUTES, values)) for values in itertools.product(*S.ATTRIBUTES.values())]


def _all_forms(part: int | None = None) -> dict[str, list[str]]:
    """slot -> every word form (part 0 training, 1-3 the held-out lists, None all) of every value."""
    parts = range(len(C.BACKGROUND_NOUNS)) if part is None else (part,)      # every part: training, each list
    slots = {key: [f for value in C.VOCABULARY[key].values() for p in parts for w in value[p] for f in C.forms(w)]
             for key in ("shape", "color", "background")}
    slots["ing"] = [w[0] for value in C.MOTION_WORDS.values() for p in parts for w in value[p]]
    slots["verb"] = [w[1] for value in C.MOTION_WORDS.values() for p in parts for w in value[p]]
    slots["noun"] = [w for p in parts for w in C.BACKGROUND_NOUNS[p]]
    slots["adverb"] = [w for p in parts for w in C.ADVERBS[p]]
    return slots


def _frame_pattern(frame: str) -> re.Pattern:
    """A frame as a regex over the words of both parts (so a caption matches the frames that could make it)."""
    slots = _all_forms()
    alt = {k: "(?:" + "|".join(re.escape(f) for f in sorted(v, key=len, reverse=True)) + ")" for k, v in slots.items()}
    adverb = f"(?:{alt['adverb']} )?"
    out = []
    for literal, slot, _, _ in string.Formatter().parse(frame):
        out.append(re.sub(r"(?<![\w\\])([Aa]) ", r"\1n? ", re.escape(literal).replace("\\ ", " ")))
        if slot:
            out.append(adverb + alt[slot] if slot in ("ing", "verb") else alt[slot])
    return re.compile("".join(out))


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def test_caption_frames_are_split_and_keep_the_old_templates():
    assert not set(C.TRAIN_FRAMES) & set(C.HELDOUT_FRAMES)
    assert set(C.TRAIN_TEMPLATES) <= set(C.TRAIN_FRAMES)              # what the shipped model was trained on
    assert set(C.EVAL_TEMPLATES) <= set(C.HELDOUT_FRAMES) and not set(C.EVAL_TEMPLATES) & set(C.TRAIN_FRAMES)
    train_re = [_frame_pattern(f) for f in C.TRAIN_FRAMES]
    held_re = [_frame_pattern(f) for f in C.HELDOUT_FRAMES]
    # on the generated strings: a caption fits a frame of its own part and none of the other part
    for name, own, other in (("train", train_re, held_re), ("heldout-frames", held_re, train_re),
                             ("heldout-vocabulary", train_re, held_re), ("heldout-both", held_re, train_re),
                             ("heldout-vocabulary-2", train_re, held_re), ("heldout-vocabulary-3", train_re, held_re)):
        for text in C.all_captions(name):
            assert any(p.fullmatch(text) for p in own), (name, text)
            assert not any(p.fullmatch(text) for p in other), (name, text)


def test_caption_words_are_split_at_the_word_level():
    for key, table in C.VOCABULARY.items():
        assert list(table) == S.ATTRIBUTES[key]                      # the labels stay the canonical values
        for value, (train, *heldout_lists) in table.items():
            assert len(train) >= 2 and len(heldout_lists) == 3 and all(heldout_lists), (key, value)
            earlier = set(train)
            for heldout in heldout_lists:                            # each list new against all before it
                assert not set(heldout) & earlier, (key, value, heldout)
                earlier |= set(heldout)
    train_tokens = [_tokens(t) for t in C.all_captions("train") + C.all_captions("heldout-frames")]
    seen = {w for tokens in train_tokens for w in tokens}
    heldout_forms = [f for part in (1, 2, 3) for forms in _all_forms(part).values() for f in forms]
    assert len(heldout_forms) > 80
    for form in heldout_forms:
        words = _tokens(form)
        assert set(words) - seen, form                             # brings a word no training caption has
        n = len(words)
        assert not any(tokens[i:i + n] == words for tokens in train_tokens for i in range(len(tokens) - n + 1)), form
    for name in ("heldout-vocabulary", "heldout-vocabulary-2", "heldout-vocabulary-3"):   # the sets use them
        assert {w for t in C.all_captions(name) for w in _tokens(t)} - seen, name
    lists = [{w for forms in _all_forms(part).values() for f in forms for w in _tokens(f)} for part in (1, 2, 3)]
    assert lists[1] - lists[0] - seen and lists[2] - lists[1] - lists[0] - seen   # each list's own new words


def test_captions_always_name_their_attributes_unambiguously():
    for form_list in _all_forms().values():                        # every word names one value of one attribute
        for form in form_list:
            named = [v for values in C.named_attributes(form).values() for v in values]
            assert len(named) <= 1, (form, named)
    rng = np.random.default_rng(0)
    for name in C.CAPTION_SETS:
        table = C.caption_table(name)
        for attrs in _COMBOS:
            texts = list(table[tuple(attrs.values())]) + [C.caption(attrs, rng, name) for _ in range(2)]
            for text in texts:
                assert C.named_attributes(text) == {k: [v] for k, v in attrs.items()}, (name, text)
    assert C.caption_for({"shape": "circle", "color": "red", "background": "black", "motion": "moving left"},
                         C.TRAIN_FRAMES[0]) == "a red circle moving left on a black background"
    assert C.caption_for({**_COMBOS[0], "color": "orange"}, C.TRAIN_TEMPLATES[0]).startswith("an orange")


def test_captions_are_deterministic():
    attrs = _COMBOS[40]
    for name in C.CAPTION_SETS:
        first = [C.caption(attrs, np.random.default_rng(7), name) for _ in range(3)]
        assert len(set(first)) == 1
        assert len({C.caption(attrs, np.random.default_rng(k), name) for k in range(20)}) > 5
    before = {name: C.caption_table(name) for name in C.CAPTION_SETS}
    C.caption_table.cache_clear()
    assert {name: C.caption_table(name) for name in C.CAPTION_SETS} == before
    a, b = S.ShapesWorld(30, seed=4), S.ShapesWorld(30, seed=4)
    assert [a.describe(i)[1] for i in range(30)] == [b.describe(i)[1] for i in range(30)]


def test_train_caption_set_is_finite_and_all_captions_covers_what_the_world_draws():
    train = C.all_captions("train")
    assert len(train) == len(set(train)) == len(_COMBOS) * C.VARIANTS["train"] == 324 * 24
    drawn = [S.ShapesWorld(3000, seed=9).describe(i)[1] for i in range(3000)]
    assert set(drawn) <= set(train) and len(set(drawn)) > 1500
    used = {f for f in C.TRAIN_FRAMES if any(_frame_pattern(f).fullmatch(t) for t in drawn[:600])}
    assert used == set(C.TRAIN_FRAMES)                               # every frame, old and new, is trained on
    evals = {S.ShapesWorld(300, split="eval", captions=name).describe(i)[1] for name in C.HELDOUT_SETS
             for i in range(300)}
    assert evals <= {t for name in C.HELDOUT_SETS for t in C.all_captions(name)}


def test_caption_docstring_lists_the_split():
    doc = " ".join(C.__doc__.split())
    for table in C.VOCABULARY.values():
        for parts in table.values():
            for w in [w for part in parts for w in part]:
                assert C.forms(w)[-1] in doc, w
    for frame in C.TRAIN_FRAMES + C.HELDOUT_FRAMES:
        assert " ".join(frame.split()[:3]) in doc, frame


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
