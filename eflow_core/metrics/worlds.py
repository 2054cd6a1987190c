"""What the metrics need to know about each data world: probe heads, real clips, evaluation prompts.

A `MetricWorld` wraps one of the project's worlds (`eflow_core.data`) behind four things:
- `heads`: {attribute or class head: vocabulary}, the probe's outputs;
- `dataset(split, num_samples, seed, num_frames, size, frame_stride=1)`: a map-style dataset of real
  clips (items carry `video` float (3, T, H, W) in [-1, 1]); `frame_stride` s renders T * s frames and
  keeps every s-th, which is what `KineticsDataset(frame_stride=s)` reads off a clip written by
  `make_actions` (a faster-looking motion); worlds generated at their own frame rate ignore it;
- `train_strides`: the frame strides the probe is trained on (so it reads clips at either speed);
- `targets(item)`: {head: class index} for training / scoring the probe;
- `conditioning`: "text" (prompts + requested attributes) or "class" (labels).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch.utils.data import Dataset

# Head order of the shapes probe (what the tables print first).
SHAPES_HEADS = ("color", "shape", "motion", "background")


@dataclass
class MetricWorld:
    name: str
    heads: dict[str, list[str]]
    dataset: Callable[..., Dataset]
    targets: Callable[[dict], dict[str, int]]
    conditioning: str  # "text" | "class"
    train_strides: tuple[int, ...] = (1,)


def _shapes() -> MetricWorld:
    from eflow_core.data.shapes import ATTRIBUTES, ShapesWorld

    def dataset(split: str = "train", num_samples: int = 20_000, seed: int = 0, num_frames: int = 16,
                size: int = 64, frame_stride: int = 1) -> Dataset:
        return ShapesWorld(num_samples=num_samples, num_frames=num_frames, size=size, split=split, seed=seed)

    def targets(item: dict) -> dict[str, int]:
        return {k: int(item["attribute_ids"][k]) for k in SHAPES_HEADS}

    return MetricWorld("shapes", {k: list(ATTRIBUTES[k]) for k in SHAPES_HEADS}, dataset, targets, "text")


def _actions() -> MetricWorld:
    from eflow_core.data.actions import CLASSES, ActionsWorld

    def dataset(split: str = "train", num_samples: int = 20_000, seed: int = 0, num_frames: int = 16,
                size: int = 64, frame_stride: int = 1) -> Dataset:
        world = ActionsWorld(num_samples=num_samples, num_frames=num_frames * frame_stride, size=size, split=split,
                             seed=seed, classes=list(CLASSES))
        return world if frame_stride == 1 else _Strided(world, frame_stride)

    def targets(item: dict) -> dict[str, int]:
        return {"action": int(item["label"])}

    return MetricWorld("actions", {"action": list(CLASSES)}, dataset, targets, "class", train_strides=(1, 2))


class _Strided(Dataset):
    """Every `stride`-th frame of another dataset's clips: video (3, T * stride, H, W) -> (3, T, H, W)."""

    def __init__(self, base: Dataset, stride: int):
        self.base, self.stride = base, stride

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.base[index])
        item["video"] = item["video"][:, ::self.stride].contiguous()
        return item


_WORLDS: dict[str, Callable[[], MetricWorld]] = {"shapes": _shapes, "actions": _actions}


def get_world(name: str) -> MetricWorld:
    """The metrics' view of world `name` (shapes | actions). ValueError for an unknown world.

    "shapes+scenes" models are scored on their shapes prompts (the probe knows only shapes).
    """
    if name == "shapes+scenes":
        name = "shapes"
    if name not in _WORLDS:
        raise ValueError(f"no probe metrics for world {name!r}: choose from {sorted(_WORLDS)}")
    return _WORLDS[name]()
