"""A training set kept on the training device (`data.resident=true`, issue 24).

With the captured step a small model trains at about 12 steps of 512 clips a second on an H100
(docs/BENCHMARKS.md §1i). A DataLoader cannot feed that: each float32 batch of `shapes-t2v` is 428 MB
that a worker renders, copies into shared memory, the pin-memory thread copies again and the GPU
fetches. In the 2026-12-07 time-to-quality run the trainer waited for data 50-80% of the time and
trained at 4-5 steps/s (§1j).

The synthetic worlds are finite and deterministic: item i is the same clip every epoch. So the
training split is rendered once, by the DataLoader's workers, and kept on the device as 8-bit video
(uint8 (N, 3, T, H, W), the precision of decoded video): 20,000 clips of 17 x 64 x 64 take 4.2 GB.
A step's batch is then an index into that tensor on the device; captions and labels stay on the host
and take the usual text-encoder path. 8-bit storage changes a pixel by at most 1/255 of the [-1, 1]
range (`quantize` / `dequantize`).
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from eflow_core.transfer import to_device

from . import collate_fields, one_thread_worker

__all__ = ["ResidentSet", "quantize", "dequantize"]

MAX_SHARE_OF_FREE_MEMORY = 0.5      # of the device's free memory at build time: the model needs the rest
# Seconds to wait for the workers' next chunk before the build stops with an error. A chunk of 64 clips takes
# a worker well under a second to render (`shapes`) or decode (`actions`); on an H100 on 2026-12-07 an `actions`
# build got no chunk back in 9 minutes, silently, for a reason not found (docs/BENCHMARKS.md §1l).
CHUNK_TIMEOUT_S = 300.0


def quantize(video: torch.Tensor) -> torch.Tensor:
    """video float in [-1, 1] (any shape) -> uint8 in [0, 255], rounded to the nearest level."""
    return video.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)     # one float temporary


def dequantize(video: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> float32 in [-1, 1] (the inverse of `quantize` up to 1/255)."""
    return video.float() / 127.5 - 1.0


def _quantized_chunk(items: list[dict]) -> tuple[torch.Tensor, list[dict]]:
    """In a worker: the items' videos quantized, then stacked (uint8 (n, 3, T, H, W): a quarter of the
    bytes to stack and to move), and each item's other fields."""
    video = torch.stack([quantize(item["video"]) for item in items])
    return video, [{k: v for k, v in item.items() if k != "video"} for item in items]


class ResidentSet:
    """`ResidentSet(dataset, device)`: every item of a map-style `dataset`, its video uint8
    (N, 3, T, H, W) on `device`, its other fields (caption, label, attributes, ...) on the host.
    `batch(indices)` gives what `collate` would give for those items, the video float (B, 3, T, H, W)
    in [-1, 1] already on the device.

    num_workers: DataLoader workers that render the items (one thread each), `chunk` items at a time.
    Raises ValueError where the clips would take more than half of the device's free memory, and
    RuntimeError where the workers send no chunk for `timeout` seconds.
    """

    def __init__(self, dataset: Dataset, device: torch.device | str, num_workers: int = 0,
                 progress: bool = True, chunk: int = 64, timeout: float = CHUNK_TIMEOUT_S):
        self.device = torch.device(device)
        count = len(dataset)
        first = dataset[0]["video"]
        nbytes = count * first.numel()
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if nbytes > MAX_SHARE_OF_FREE_MEMORY * free:
                raise ValueError(f"data.resident=true: {count} clips of {tuple(first.shape)} take "
                                 f"{nbytes / 2**30:.1f} GiB as uint8, more than half of the "
                                 f"{free / 2**30:.1f} GiB free on {self.device}; use fewer samples "
                                 f"(data.num_samples) or train with data.resident=false")
        self.video = torch.empty((count, *first.shape), dtype=torch.uint8, device=self.device)
        self.items: list[dict] = []             # each item without its video
        loader = DataLoader(dataset, batch_size=chunk, num_workers=num_workers, collate_fn=_quantized_chunk,
                            worker_init_fn=one_thread_worker, timeout=timeout if num_workers > 0 else 0)
        with tqdm(total=count, disable=not progress, desc="resident set", unit="clip") as bar:
            try:
                for video, items in loader:
                    self.video[len(self.items):len(self.items) + len(items)].copy_(video)
                    self.items += items
                    bar.update(len(items))
            except RuntimeError as err:
                if "timed out" not in str(err):
                    raise
                raise RuntimeError(f"data.resident=true: the {num_workers} workers sent no chunk of {chunk} clips "
                                   f"in {timeout:.0f} s ({len(self.items)} of {count} clips built); train with "
                                   f"data.resident=false, or fewer data.num_workers") from err

    def __len__(self) -> int:
        return self.video.shape[0]

    def batch(self, indices: list[int]) -> dict:
        """The items at `indices` as `collate` batches them: {"video": float (B, 3, T, H, W) in [-1, 1]
        on the device, "label": LongTensor (B,) where the items have labels, other keys: lists}."""
        video = dequantize(self.video[to_device(torch.as_tensor(indices), self.device)])     # no host wait
        return {"video": video, **collate_fields([self.items[i] for i in indices])}
