"""Data: video I/O, the Kinetics-700 layout, the synthetic worlds (shapes, scenes, actions), and the factory.

Every dataset item is a dict with `video`: float (C=3, T, H, W) in [-1, 1] and either `caption` (str, text
worlds) or `label` (int, class-conditional data), plus world-specific extras. Use `collate` as the
DataLoader's `collate_fn`: it stacks `video`, turns `label` into a LongTensor, and keeps everything else
as lists (the shapes+scenes mix has different extras per item, which `default_collate` cannot batch).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from .kinetics import KineticsDataset, kinetics_classes, load_classes, save_classes
from .transforms import frames_to_tensor, load_clip, resize_center_crop, sample_frame_indices, tensor_to_frames
from .video import VideoReadError, probe_video, read_video, write_gif, write_mp4, write_video

DATA_KINDS = ("shapes", "scenes", "shapes+scenes", "actions", "kinetics")

__all__ = [
    "KineticsDataset", "MixedWorld", "kinetics_classes", "VideoReadError", "collate", "collate_fields", "one_thread_worker", "training_loader", "frames_to_tensor", "load_classes", "load_clip",
    "make_dataset", "make_world", "probe_video", "read_video", "resize_center_crop", "sample_frame_indices",
    "save_classes", "tensor_to_frames", "write_gif", "write_mp4", "write_video", "DATA_KINDS",
]


class MixedWorld(Dataset):
    """Interleave text worlds deterministically: item i comes from world i % k, index i // k there.

    Items carry `world` (the source world's name) besides `video`, `caption` and `attributes`.
    """

    def __init__(self, worlds: dict[str, Dataset], num_samples: int):
        self.names, self.worlds = list(worlds), list(worlds.values())
        self.num_samples = num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        k = len(self.worlds)
        item = dict(self.worlds[index % k][index // k])
        item["world"] = self.names[index % k]
        return item


def make_world(kind: str, split: str = "train", num_frames: int = 16, size: int = 64, seed: int = 0,
               num_samples: int = 20_000) -> Dataset:
    """A synthetic world by name: shapes | scenes | shapes+scenes | actions (the in-memory actions world)."""
    from .shapes import ShapesWorld

    world_split = "train" if split == "train" else "eval"
    if kind == "shapes":
        return ShapesWorld(num_samples, num_frames, size, world_split, seed)
    if kind == "scenes":
        from .scenes import ScenesWorld

        return ScenesWorld(num_samples, num_frames, size, world_split, seed)
    if kind == "shapes+scenes":
        from .scenes import ScenesWorld

        worlds = {"shapes": ShapesWorld(num_samples, num_frames, size, world_split, seed),
                  "scenes": ScenesWorld(num_samples, num_frames, size, world_split, seed)}
        return MixedWorld(worlds, num_samples)
    if kind == "actions":
        from .actions import ActionsWorld

        return ActionsWorld(num_samples, num_frames, size, world_split, seed)
    raise ValueError(f"unknown world {kind!r}: choose from shapes, scenes, shapes+scenes, actions")


def make_dataset(data_config: Any, split: str = "train") -> Dataset:
    """The training / evaluation dataset a `DataConfig` describes.

    kind shapes | scenes | shapes+scenes: generated on the fly, `num_samples` items (eval splits: held-out
    caption templates — for shapes the `heldout-frames` caption set of `eflow_core.data.captions` — and a
    separate random stream, min(num_samples, 1000) items).
    kind actions | kinetics: `KineticsDataset(root, split, num_frames, size, frame_stride)`; for actions,
    an empty or missing `root` raises a FileNotFoundError that says how to generate it
    (`python -m eflow_core data make-actions --out DIR`) — nothing is generated behind the user's back.
    Evaluation splits ("eval" finds Kinetics' "val") use the training split's class list, so labels agree.
    Every item has `video` (3, num_frames, size, size) in [-1, 1] and `caption` (text worlds) or `label`.
    """
    kind = data_config.kind
    if kind not in DATA_KINDS:
        raise ValueError(f"unknown data kind {kind!r}: choose from {', '.join(DATA_KINDS)}")
    if kind in ("actions", "kinetics"):
        root = data_config.root
        split_name = split if split == "train" else _eval_split(root, split)
        if not root:
            hint = (" Generate one with `python -m eflow_core data make-actions --out DIR` and set data.root=DIR."
                    if kind == "actions" else "")
            raise FileNotFoundError(f"data.root is empty: {kind} data needs a Kinetics-layout folder.{hint}")
        try:
            classes = None
            has_train = Path(root, "annotations", "train.csv").is_file() or Path(root, "train").is_dir()
            if split_name != "train" and has_train:
                classes = kinetics_classes(root, "train")  # evaluation labels index the training classes
            return KineticsDataset(root, split_name, data_config.num_frames, data_config.size, data_config.frame_stride,
                                   classes=classes, decoded_cache=getattr(data_config, "decoded_cache", "") or None)
        except FileNotFoundError as e:
            if kind == "actions":
                raise FileNotFoundError(f"{e}. Generate it with `python -m eflow_core data make-actions --out {root}`.") from e
            raise
    num = data_config.num_samples if split == "train" else min(data_config.num_samples, 1000)
    return make_world(kind, split, data_config.num_frames, data_config.size, seed=0, num_samples=num)


def _eval_split(root: str, split: str) -> str:
    """Kinetics calls its held-out split `val`; accept eval/val/validate/test for it when that folder exists."""
    if not root:
        return split
    for name in (split, "val", "validate", "test"):
        if (Path(root) / "annotations" / f"{name}.csv").is_file() or (Path(root) / name).is_dir():
            return name
    return split


def one_thread_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: workers decode or render one clip at a time, one thread each, so N
    workers use N cores."""
    torch.set_num_threads(1)


def training_loader(dataset, batch_sampler, num_workers: int, device: torch.device) -> torch.utils.data.DataLoader:
    """The trainer's DataLoader: `batch_sampler`'s index lists -> `collate`d batches, rendered or decoded by
    `num_workers` one-thread workers (kept across epochs), pinned for a CUDA `device`."""
    return torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate,
                                       num_workers=num_workers, worker_init_fn=one_thread_worker,
                                       persistent_workers=num_workers > 0, pin_memory=device.type == "cuda")


def collate(batch: list[dict]) -> dict:
    """List of items -> {"video": (B, 3, T, H, W), "label": LongTensor (B,) if present, other keys: lists}."""
    return {"video": torch.stack([b["video"] for b in batch]), **collate_fields(batch)}


def collate_fields(batch: list[dict]) -> dict:
    """`collate` without the video: the first item's keys, "label" as a LongTensor (B,), the others as
    lists (None where an item lacks the key)."""
    out: dict[str, Any] = {}
    for k in (k for k in batch[0] if k != "video"):
        values = [b.get(k) for b in batch]
        out[k] = torch.as_tensor(values, dtype=torch.long) if k == "label" else values
    return out
