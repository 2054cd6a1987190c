"""KineticsDataset on a generated tree in the real Kinetics-700 layout (odd label names, a missing and a corrupt file)."""
import csv
import json
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from eflow_core.data import KineticsDataset, collate, load_classes, write_mp4

# label -> RGB fill colour, so a decoded clip tells which folder it came from
LABELS = {"playing (piano)": (220, 40, 40), "tying bow tie": (40, 200, 60), "person's dance": (50, 70, 230)}


def _clip(color, t=20, h=40, w=56):
    frames = np.empty((t, h, w, 3), np.uint8)
    frames[:] = color
    frames[:, :, :4] = (t * 10) % 255  # a moving-free border strip, so frames are not all one colour
    return frames


@pytest.fixture(scope="module")
def kinetics_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("k700")
    rows = []
    for li, (label, color) in enumerate(LABELS.items()):
        for k in range(3):
            yid = f"x{li}_-{k}abcdefg"[:11]  # ids may contain '_' and '-'
            start = 10 * k
            rows.append([label, yid, start, start + 10, "train"])
            path = root / "train" / label / f"{yid}_{start:06d}_{start + 10:06d}.mp4"
            if (li, k) == (0, 1):
                continue  # listed in the CSV, missing on disk
            if (li, k) == (2, 2):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)  # corrupt
                continue
            # one short clip (8 frames < 16 * 2) exercises padding
            write_mp4(path, _clip(color, t=8 if (li, k) == (1, 0) else 40), fps=10)
    (root / "annotations").mkdir()
    with (root / "annotations" / "train.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        w.writerows(rows)
    return root


def _check_item(item, ds):
    v = item["video"]
    assert v.shape == (3, 16, 32, 32) and v.dtype == torch.float32
    assert -1.0 <= float(v.min()) and float(v.max()) <= 1.0
    color = np.array(LABELS[item["label_name"]]) / 127.5 - 1
    center = v[:, :, 8:24, 8:24].mean(dim=(1, 2, 3)).numpy()
    assert np.abs(center - color).max() < 0.12, (item["label_name"], center, color)
    assert ds.classes[item["label"]] == item["label_name"]


def test_csv_layout_skips_missing_and_corrupt(kinetics_root, tmp_path):
    ds = KineticsDataset(kinetics_root, "train", num_frames=16, size=32, frame_stride=2)
    assert ds.source == "csv"
    assert ds.classes == sorted(LABELS)
    assert len(ds) == 7 and ds.skipped == 2
    assert sorted(ds.skipped_files.values())[0].startswith("cannot open") and "missing" in ds.skipped_files.values()
    counts = ds.label_counts()
    assert counts == {"person's dance": 2, "playing (piano)": 2, "tying bow tie": 3}
    for i in range(len(ds)):
        _check_item(ds[i], ds)
    assert ds.skipped == 2  # still well-defined after iterating
    ds.save_classes(tmp_path / "classes.json")
    assert load_classes(tmp_path / "classes.json") == ds.classes
    assert json.loads((tmp_path / "classes.json").read_text())["classes"] == ds.classes


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_epoch(kinetics_root, workers):
    ds = KineticsDataset(kinetics_root, "train", num_frames=16, size=32, frame_stride=2)
    loader = DataLoader(ds, batch_size=3, shuffle=True, num_workers=workers, collate_fn=collate)
    seen = []
    for batch in loader:
        assert batch["video"].shape[1:] == (3, 16, 32, 32) and batch["label"].dtype == torch.long
        seen += batch["label_name"]
    assert sorted(seen) == sorted(c.label_name for c in ds.clips)
    assert ds.skipped == 2


def test_lazy_checking_counts_across_workers(kinetics_root):
    """probe="none": bad files are found while loading (in worker processes) and still counted once each."""
    ds = KineticsDataset(kinetics_root, "train", num_frames=16, size=32, probe="none")
    assert len(ds) == 9 and ds.skipped == 0
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
    n = sum(len(b["label"]) for b in loader)
    assert n == 9  # bad indices were substituted by readable clips
    assert ds.skipped == 2


def test_folder_scan_without_csv(kinetics_root, tmp_path):
    import shutil

    root = tmp_path / "nocsv"
    shutil.copytree(kinetics_root / "train", root / "train")
    ds = KineticsDataset(root, "train", num_frames=16, size=32)
    assert ds.source == "folders"
    assert ds.classes == sorted(LABELS)
    assert len(ds) == 7 and ds.skipped == 1  # the corrupt file; the missing one is simply not there
    for i in range(len(ds)):
        _check_item(ds[i], ds)


def test_given_class_list_and_eval_sampling(kinetics_root):
    classes = ["tying bow tie", "person's dance", "playing (piano)", "unused class"]
    ds = KineticsDataset(kinetics_root, "train", num_frames=4, size=16, classes=classes, sampling="center")
    assert ds.classes == classes
    item = ds[0]
    assert ds.classes[item["label"]] == item["label_name"]
    assert item["video"].shape == (3, 4, 16, 16)
    assert torch.equal(ds[0]["video"], ds[0]["video"])  # center sampling is deterministic


def test_bad_root_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        KineticsDataset(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="not a Kinetics-layout dataset"):
        KineticsDataset(tmp_path)


def test_listed_mp4_found_as_webm(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "val.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n\"playing (piano)\",abc-_DEF123,5,15,val\n")
    write_mp4(tmp_path / "val" / "playing (piano)" / "abc-_DEF123_000005_000015.webm", _clip(LABELS["playing (piano)"]))
    ds = KineticsDataset(tmp_path, "val", num_frames=4, size=16)
    assert len(ds) == 1 and ds.skipped == 0 and ds.clips[0].path.suffix == ".webm"
    assert ds[0]["label_name"] == "playing (piano)"


def test_decoded_cache_gives_the_same_frames_without_decoding_again(kinetics_root, tmp_path, monkeypatch):
    import eflow_core.data.kinetics as kinetics_module

    plain = KineticsDataset(kinetics_root, "train", num_frames=16, size=32, frame_stride=2, sampling="center")
    cached = KineticsDataset(kinetics_root, "train", num_frames=16, size=32, frame_stride=2, sampling="center",
                             decoded_cache=tmp_path / "decoded")
    syncs = []
    monkeypatch.setattr(os, "fsync", lambda fd: syncs.append(fd))
    first = [cached[i]["video"] for i in range(len(cached))]          # decodes and stores
    assert not syncs       # a cache entry is not synced to disk: a damaged one is decoded again (test below)
    monkeypatch.undo()
    assert len(list((tmp_path / "decoded").glob("*.npy"))) == len(cached)
    assert all(p.name.endswith(".npy") and not p.name.startswith(".") for p in (tmp_path / "decoded").iterdir())

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached clip was decoded again")
    monkeypatch.setattr(kinetics_module, "read_video", no_decoding)
    again = [cached[i]["video"] for i in range(len(cached))]
    monkeypatch.undo()
    reference = [plain[i]["video"] for i in range(len(plain))]
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(first, again, reference))


def test_decoded_cache_survives_damaged_entries_and_an_unwritable_folder(kinetics_root, tmp_path):
    cache = tmp_path / "decoded"
    ds = KineticsDataset(kinetics_root, "train", num_frames=16, size=32, frame_stride=2, sampling="center",
                         decoded_cache=cache)
    first, skipped = ds[0]["video"], ds.skipped                       # the fixture's missing and corrupt files
    for entry in cache.glob("*.npy"):
        entry.write_bytes(b"")                                       # a crash left an empty file
    assert torch.equal(ds[0]["video"], first) and ds.skipped == skipped

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")    # mkdir fails with an OSError
    ds = KineticsDataset(kinetics_root, "train", num_frames=16, size=32, frame_stride=2, sampling="center",
                         decoded_cache=blocked / "decoded")
    assert torch.equal(ds[0]["video"], first) and ds.skipped == skipped
