"""Kinetics-700 on disk: `root/annotations/{split}.csv` + `root/{split}/{label}/{id}_{start:06d}_{end:06d}.mp4`.

Validity is checked in two places, and `dataset.skipped` counts both:

1. Up front (construction): every listed file is probed (`probe="open"`: exists and its container opens
   with a video stream; `"decode"` also decodes one frame; `"exists"` only checks the path; `"none"` skips
   the check). Failing files are left out of the dataset, logged, and listed in `dataset.skipped_files`.
2. Lazily (`__getitem__`): a file that passed the probe but fails to decode is marked bad in a small
   shared-memory table (visible across DataLoader worker processes), logged, and another valid clip is
   returned in its place (the next index that is not marked bad).

So `skipped` = files left out at construction + distinct files found bad while loading (in any process).
`len(dataset)` is the number of files that passed the probe.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from eflow_core.checkpoint import atomic_write_bytes

from .transforms import frames_to_tensor, resize_center_crop, sample_frame_indices
from .video import VideoReadError, probe_video, read_video

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clip:
    path: Path
    label_name: str


def clip_filename(youtube_id: str, time_start: int, time_end: int, ext: str = ".mp4") -> str:
    """Kinetics file name: `{youtube_id}_{time_start:06d}_{time_end:06d}.mp4`."""
    return f"{youtube_id}_{int(time_start):06d}_{int(time_end):06d}{ext}"


def save_classes(classes: list[str], path: str | Path) -> None:
    """Write a class list (index order) as JSON, for checkpoints."""
    Path(path).write_text(json.dumps({"classes": list(classes)}, indent=1))


def load_classes(path: str | Path) -> list[str]:
    """Read a class list written by `save_classes` (or a plain JSON list)."""
    data = json.loads(Path(path).read_text())
    return list(data["classes"] if isinstance(data, dict) else data)


def _read_annotations(csv_path: Path, split_dir: Path) -> list[Clip]:
    clips = []
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = set(reader.fieldnames or [])
        missing = {"youtube_id", "time_start", "time_end"} - fields
        if missing:
            raise ValueError(f"annotation file {csv_path} lacks the column(s) {sorted(missing)}")
        label_dirs: dict[str, Path] = {}
        for row in reader:
            label = (row.get("label") or "").strip()
            if label not in label_dirs:
                d = split_dir / label if label else split_dir
                if label and not d.is_dir() and (split_dir / label.replace(" ", "_")).is_dir():
                    d = split_dir / label.replace(" ", "_")  # some downloaders write underscores
                label_dirs[label] = d
            name = clip_filename(row["youtube_id"].strip(), int(float(row["time_start"])), int(float(row["time_end"])))
            clips.append(Clip(label_dirs[label] / name, label))
    return clips


_OTHER_EXTENSIONS = (".webm", ".mkv", ".avi")


def _scan_folders(split_dir: Path) -> list[Clip]:
    clips = []
    for label_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        for path in sorted(label_dir.iterdir()):
            if path.suffix.lower() in (".mp4",) + _OTHER_EXTENSIONS:
                clips.append(Clip(path, label_dir.name))
    return clips


def kinetics_classes(root: str | Path, split: str = "train") -> list[str]:
    """Sorted label names of a split (from its CSV, else its folders) without touching any video: the class
    mapping an evaluation split should share with the training split."""
    root = Path(root)
    csv_path = root / "annotations" / f"{split}.csv"
    if csv_path.is_file():
        with csv_path.open(newline="", encoding="utf-8") as f:
            return sorted({(row.get("label") or "").strip() for row in csv.DictReader(f)} - {""})
    split_dir = root / split
    if split_dir.is_dir():
        return sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    raise FileNotFoundError(f"no {csv_path} and no folder {split_dir}: not a Kinetics-layout dataset")


class KineticsDataset(Dataset):
    """Kinetics-layout video clips -> {"video": (3, T, H, W) float in [-1, 1], "label": int, "label_name": str}.

    Args:
        root: folder with `annotations/{split}.csv` and `{split}/{label}/*.mp4`; without the CSV the
            `{split}/{label}/*.mp4` folders are scanned.
        split: "train" samples a random window of each clip; other splits take the center window
            (override with `sampling="random"|"center"`).
        num_frames, size, frame_stride: T frames `frame_stride` apart, resized and center-cropped to size x size.
        classes: a fixed class list (e.g. from a checkpoint); rows with other labels are ignored.
            Default: the sorted label names found in the annotations (or folders).
        probe: "open" | "decode" | "exists" | "none" — the up-front check (see module docstring). A listed
            `.mp4` that is absent but present as `.webm` / `.mkv` / `.avi` is used in that form.
        short: how clips with fewer than `num_frames` frames are filled: "pad" (hold the last frame) or "loop".
    """

    def __init__(self, root: str | Path, split: str = "train", num_frames: int = 16, size: int = 64,
                 frame_stride: int = 2, classes: list[str] | None = None, probe: str = "open",
                 sampling: str | None = None, short: str = "pad", probe_workers: int = 8, progress: bool = True,
                 decoded_cache: str | Path | None = None):
        self.root = Path(root)
        self.decoded_cache = Path(decoded_cache) if decoded_cache else None
        self._cache_warned = False
        self.split = split
        self.num_frames, self.size, self.frame_stride = num_frames, size, frame_stride
        self.sampling = sampling or ("random" if split == "train" else "center")
        self.short = short
        if probe not in ("open", "decode", "exists", "none"):
            raise ValueError(f"probe must be one of open, decode, exists, none; got {probe!r}")
        if not self.root.is_dir():
            raise FileNotFoundError(f"Kinetics root {self.root} is not a folder")
        split_dir = self.root / split
        csv_path = self.root / "annotations" / f"{split}.csv"
        if csv_path.is_file():
            clips = _read_annotations(csv_path, split_dir)
            self.source = "csv"
        elif split_dir.is_dir():
            clips = _scan_folders(split_dir)  # *.mp4 (and .webm / .mkv / .avi) in every label folder
            self.source = "folders"
        else:
            raise FileNotFoundError(f"no {csv_path} and no folder {split_dir}: not a Kinetics-layout dataset")

        self.classes = sorted({c.label_name for c in clips if c.label_name}) if classes is None else list(classes)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.ignored = 0
        if classes is not None:
            known = [c for c in clips if c.label_name in self.class_to_idx or not c.label_name]
            self.ignored = len(clips) - len(known)
            if self.ignored:
                log.warning("%s: %d clips have labels outside the given class list and are ignored", csv_path, self.ignored)
            clips = known

        self.skipped_files: dict[str, str] = {}
        self.clips = self._probe(clips, probe, probe_workers, progress)
        if not self.clips:
            log.warning("Kinetics dataset %s split %r has no usable clips", self.root, split)
        self._bad = torch.zeros(max(1, len(self.clips)), dtype=torch.bool).share_memory_()

    # -- validity -------------------------------------------------------------------------------
    def _probe(self, clips: list[Clip], probe: str, workers: int, progress: bool) -> list[Clip]:
        if probe == "none":
            return clips

        def check(clip: Clip) -> tuple[Clip, str | None]:
            if not clip.path.is_file():  # some downloaders keep YouTube's container: .webm / .mkv
                for ext in _OTHER_EXTENSIONS:
                    if clip.path.with_suffix(ext).is_file():
                        clip = Clip(clip.path.with_suffix(ext), clip.label_name)
                        break
                else:
                    return clip, "missing"
            return clip, (None if probe == "exists" else probe_video(clip.path, decode=probe == "decode"))

        from tqdm import tqdm

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(tqdm(pool.map(check, clips), total=len(clips), desc=f"probing {self.split} clips",
                                disable=not progress or len(clips) < 200, leave=False))
        good = []
        for clip, reason in results:
            if reason is None:
                good.append(clip)
            else:
                self.skipped_files[str(clip.path)] = reason
        if self.skipped_files:
            log.warning("Kinetics %s/%s: skipped %d of %d clips (%s)", self.root, self.split, len(self.skipped_files),
                        len(clips), ", ".join(sorted(set(self.skipped_files.values())))[:200])
        return good

    @property
    def skipped(self) -> int:
        """Files left out at construction plus distinct files that failed to decode while loading (any worker)."""
        return len(self.skipped_files) + int(self._bad[: len(self.clips)].sum())

    # -- classes --------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def save_classes(self, path: str | Path) -> None:
        """Write `classes` (index order) as JSON."""
        save_classes(self.classes, path)

    def label_counts(self) -> dict[str, int]:
        counts = {name: 0 for name in self.classes}
        for c in self.clips:
            if c.label_name in counts:
                counts[c.label_name] += 1
        return counts

    # -- items ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.clips)

    def load(self, index: int) -> dict:
        """Decode clip `index` (raises VideoReadError / FileNotFoundError on a bad file)."""
        clip = self.clips[index]
        frames = self.read_frames(clip.path)
        idx = sample_frame_indices(len(frames), self.num_frames, self.frame_stride, self.sampling, short=self.short)
        video = frames_to_tensor(resize_center_crop(frames[idx], self.size))
        return {"video": video, "label": self.class_to_idx.get(clip.label_name, -1), "label_name": clip.label_name}

    def read_frames(self, path: Path) -> np.ndarray:
        """Decoded uint8 frames (T, H, W, 3) of a clip, short side `size`. With `decoded_cache` the first
        read stores them as .npy (atomically, so data workers can share the folder) and later reads load
        that instead of decoding: for small sets decoded every epoch (e.g. `actions`: 200 KB a clip).
        The cache key holds the file's path, size, mtime and `size`, so an edited clip is decoded again."""
        if self.decoded_cache is None:
            return read_video(path, short_side=self.size)
        stat = Path(path).stat()
        key = hashlib.sha1(f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.size}".encode()).hexdigest()
        cached = self.decoded_cache / f"{key}.npy"
        if cached.is_file():
            try:
                return np.load(cached)
            except (ValueError, EOFError, OSError):      # a damaged entry: decode again and replace it
                cached.unlink(missing_ok=True)
        frames = read_video(path, short_side=self.size)
        buffer = io.BytesIO()
        np.save(buffer, frames)
        try:            # a cache that cannot be written costs speed only; a damaged entry is decoded again (above)
            atomic_write_bytes(cached, buffer.getvalue(), durable=False)
        except OSError as err:
            if not self._cache_warned:
                log.warning("decoded-clip cache %s is not writable (%s); decoding every time", self.decoded_cache, err)
                self._cache_warned = True
        return frames

    def __getitem__(self, index: int) -> dict:
        n = len(self.clips)
        if not 0 <= index < n:
            if -n <= index < 0:
                index += n
            else:
                raise IndexError(f"index {index} out of range for {n} clips")
        for k in range(n):
            i = (index + k) % n
            if self._bad[i]:
                continue
            try:
                return self.load(i)
            except (VideoReadError, FileNotFoundError, ValueError, OSError) as e:
                self._bad[i] = True
                log.warning("skipping unreadable clip %s: %s", self.clips[i].path, e)
        raise RuntimeError(f"no readable clip left in {self.root}/{self.split} (all {n} failed to decode)")

    def __repr__(self) -> str:
        return (f"KineticsDataset(root={str(self.root)!r}, split={self.split!r}, clips={len(self)}, "
                f"classes={len(self.classes)}, skipped={self.skipped}, source={self.source})")
