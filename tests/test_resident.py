"""data.resident=true (eflow_core/data/resident.py): the training set rendered once and kept on the device
as 8-bit video. Its batches are the DataLoader's batches, quantized; the trainer trains on them alike."""
import time

import pytest
import torch
from torch.utils.data import Dataset

from eflow_core.config import load_train_config
from eflow_core.data import collate
from eflow_core.data.resident import ResidentSet, dequantize, quantize
from eflow_core.data.shapes import ShapesWorld
from eflow_core.train import Trainer


def test_quantize_round_trip_is_within_half_a_level():
    video = torch.rand(2, 3, 5, 8, 8) * 2 - 1
    video[0, 0, 0, 0, :2] = torch.tensor([-1.0, 1.0])          # the ends are exact
    back = dequantize(quantize(video))
    assert back.dtype == torch.float32 and (back - video).abs().max() <= 1 / 255 + 1e-6
    assert back[0, 0, 0, 0, 0] == -1.0 and back[0, 0, 0, 0, 1] == 1.0
    assert torch.equal(quantize(back), quantize(video))          # levels map to themselves


@pytest.mark.parametrize("workers", [0, 2])
def test_resident_batches_are_the_loaders_batches_quantized(workers):
    world = ShapesWorld(num_samples=23, num_frames=5, size=16, seed=3)
    resident = ResidentSet(world, "cpu", num_workers=workers, progress=False, chunk=8)
    assert len(resident) == 23 and resident.video.dtype == torch.uint8
    indices = torch.randperm(23)[:7].tolist()
    expected = collate([world[i] for i in indices])
    got = resident.batch(indices)
    assert torch.equal(got["video"], dequantize(quantize(expected["video"])))
    assert got["caption"] == expected["caption"] and got["attributes"] == expected["attributes"]


class _UnevenFields(Dataset):
    """Items whose extra keys differ (as in the shapes+scenes mix): odd items carry "world"."""

    def __len__(self):
        return 9

    def __getitem__(self, i):
        item = {"video": torch.full((3, 2, 4, 4), i / 9 - 0.5), "caption": f"clip {i}"}
        return {**item, "world": "scenes"} if i % 2 else item


def test_resident_keeps_each_items_fields_when_items_differ():
    """Chunks start on items with and without "world": the fields stay aligned with their clips, and a
    batch gets collate's keys (its first item's; None where an item lacks one)."""
    resident = ResidentSet(_UnevenFields(), "cpu", progress=False, chunk=3)
    for indices in ([1, 2, 5], [4, 7, 8]):
        expected = collate([_UnevenFields()[i] for i in indices])
        got = resident.batch(indices)
        assert got.keys() == expected.keys() and got["caption"] == expected["caption"]
        assert got.get("world") == expected.get("world")
        assert torch.equal(got["video"], dequantize(quantize(expected["video"])))


class _StallsInWorkers(Dataset):
    """Renders at once in the main process, and never in time in a DataLoader worker."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        if torch.utils.data.get_worker_info() is not None:
            time.sleep(30)
        return {"video": torch.zeros(3, 2, 4, 4), "caption": f"clip {i}"}


def test_a_build_whose_workers_stall_stops_with_a_clear_error():
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"sent no chunk of 2 clips in 1 s \(0 of 4 clips built\).*resident=false"):
        ResidentSet(_StallsInWorkers(), "cpu", num_workers=1, progress=False, chunk=2, timeout=1.0)
    assert time.perf_counter() - started < 20


class _Labelled(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return {"video": torch.full((3, 2, 4, 4), i / 10 - 0.5), "label": i % 3, "label_name": f"c{i % 3}"}


def test_resident_labels_come_back_as_collate_gives_them():
    got = ResidentSet(_Labelled(), "cpu", progress=False, chunk=4).batch([9, 1, 4])
    expected = collate([_Labelled()[i] for i in (9, 1, 4)])
    assert torch.equal(got["label"], expected["label"]) and got["label"].dtype == torch.long
    assert got["label_name"] == expected["label_name"]


def test_a_set_larger_than_half_the_free_device_memory_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1_000, 2_000))
    with pytest.raises(ValueError, match="data.resident=true: 10 clips .* more than half"):
        ResidentSet(_Labelled(), "cuda", progress=False)


def test_trainer_on_the_resident_set_trains_like_the_loader(tmp_path):
    """Same steps, same indices: the losses differ only by the 8-bit rounding of the clips."""
    def losses(resident):
        config = load_train_config("tiny", ["steps=6", "log_every=1", "checkpoint_every=100", "data.num_samples=32",
                                            f"data.resident={str(resident).lower()}"])
        trainer = Trainer(config, tmp_path / str(resident), cpu=True, progress=False)
        history = trainer.fit(stop_at=3) + trainer.fit()         # resumed: the set is built once
        return trainer, torch.tensor([row["loss"] for row in history])

    resident, resident_losses = losses(True)
    _, loader_losses = losses(False)
    assert resident.resident is not None and len(resident.resident) == 32
    torch.testing.assert_close(resident_losses, loader_losses, rtol=2e-3, atol=1e-4)
