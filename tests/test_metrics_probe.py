"""VideoProbe: shapes, save/load, a tiny training run, adherence scoring; the shipped probe's accuracy."""
import json

import pytest
import torch

from eflow_core.metrics.adherence import attribute_adherence, class_adherence, confusion_counts, score_attributes
from eflow_core.metrics.frechet import probe_fd
from eflow_core.metrics.probe import VideoProbe, default_probe_dir, load_probe, save_probe, train_probe
from eflow_core.metrics.video import to_model_input, to_uint8

HEADS = {"color": ["red", "green", "blue"], "shape": ["circle", "square"]}


def test_shapes_sizes_and_layouts():
    torch.manual_seed(0)
    probe = VideoProbe(HEADS).eval()
    x = torch.rand(2, 3, 16, 64, 64) * 2 - 1
    assert probe.features(x).shape == (2, 128)
    out = probe(x)
    assert out["color"].shape == (2, 3) and out["shape"].shape == (2, 2)
    for shape in [(2, 3, 4, 64, 64), (2, 3, 1, 32, 32), (2, 3, 9, 80, 80)]:  # other T and sizes
        assert probe.features(torch.zeros(shape)).shape == (2, 128)
    u8 = to_uint8(x)  # pipeline layout (B, T, H, W, 3)
    assert u8.shape == (2, 16, 64, 64, 3)
    torch.testing.assert_close(probe.features(u8), probe.features(x), atol=2e-2, rtol=0)
    torch.testing.assert_close(probe.features(x[:1]), probe.features(x)[:1])  # no batch statistics
    assert probe.num_parameters() * 4 < 2_000_000


def test_to_model_input_errors():
    with pytest.raises(ValueError, match="5 dims"):
        to_model_input(torch.zeros(3, 4, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        to_model_input(torch.zeros(1, 4, 4, 8, 8))


def test_save_load_roundtrip(tmp_path):
    probe = VideoProbe(HEADS).eval()
    save_probe(probe, tmp_path / "p", {"world": "test", "heldout_accuracy": {"color": 1.0}})
    card = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert card["config"]["heads"] == HEADS and card["parameters"] == probe.num_parameters()
    loaded = load_probe(tmp_path / "p")
    x = torch.rand(1, 3, 8, 64, 64) * 2 - 1
    torch.testing.assert_close(loaded.features(x), probe.features(x))
    with pytest.raises(FileNotFoundError, match="no probe at"):
        load_probe(tmp_path / "nothing")


def test_score_attributes_counts():
    vocab = {"color": ["red", "green"], "shape": ["circle", "square"]}
    predicted = {"color": torch.tensor([0, 1, 1]), "shape": torch.tensor([0, 0, 1])}
    requested = [{"color": "red", "shape": "circle"}, {"color": "red", "shape": "circle"},
                 {"color": "green", "extra": "ignored"}]
    r = score_attributes(vocab, predicted, requested)
    assert r["color"] == pytest.approx(2 / 3) and r["shape"] == pytest.approx(1.0)  # shape asked twice
    assert r["all"] == pytest.approx(2 / 3) and r["count"] == 3
    with pytest.raises(ValueError, match="vocabulary"):
        score_attributes(vocab, predicted, [{"color": "pink"}] * 3)
    confusion = confusion_counts(vocab, predicted, requested)
    assert confusion == {"color": {"red": {"red": 1, "green": 1}, "green": {"green": 1}},
                         "shape": {"circle": {"circle": 2}}}
    for name, rows in confusion.items():      # its diagonal is what adherence counts
        hits = sum(row.get(value, 0) for value, row in rows.items())
        assert hits / sum(sum(row.values()) for row in rows.values()) == pytest.approx(r[name])


def test_class_adherence_with_stub():
    probe = VideoProbe({"action": ["a", "b", "c"]}).eval()
    x = torch.zeros(4, 3, 4, 32, 32)
    pred = probe.predict(x)["action"]
    assert class_adherence(probe, x, pred.tolist())["top1"] == 1.0
    assert class_adherence(probe, x, ((pred + 1) % 3).tolist())["top1"] == 0.0
    with pytest.raises(ValueError, match="labels must lie"):
        class_adherence(probe, x, [0, 1, 2, 3])


def test_train_probe_runs_and_saves(tmp_path):
    torch.set_num_threads(1)
    probe, card = train_probe("shapes", steps=2, batch_size=4, num_frames=4, size=32, eval_clips=8,
                              progress=False, out_dir=tmp_path / "probe")
    assert set(card["heldout_accuracy"]) == {"color", "shape", "motion", "background", "all"}
    assert card["vocabularies"]["color"][0] == "red" and len(card["vocabularies"]["motion"]) == 6
    assert load_probe(tmp_path / "probe").card["train"]["steps"] == 2


def test_unknown_world_is_one_sentence():
    with pytest.raises(ValueError, match="no probe metrics for world"):
        train_probe("mars", steps=1, progress=False)


_SHIPPED = (default_probe_dir("shapes") / "probe.json").is_file()


@pytest.mark.skipif(not _SHIPPED, reason="no shipped shapes probe")
def test_shipped_shapes_probe_reads_real_clips():
    from eflow_core.data.shapes import ShapesWorld

    torch.set_num_threads(1)
    probe = load_probe("shapes")
    card = probe.card
    assert all(card["heldout_accuracy"][h] >= 0.95 for h in ("color", "shape", "motion", "background"))
    assert (default_probe_dir("shapes") / "probe.safetensors").stat().st_size < 2_000_000
    # 64 fresh held-out clips (another seed than the card's): the probe reads them, and adherence agrees.
    ds = ShapesWorld(64, split="eval", seed=7)
    items = [ds[i] for i in range(64)]
    videos = torch.stack([it["video"] for it in items])
    r = attribute_adherence(probe, to_uint8(videos), [it["attributes"] for it in items])
    assert r["all"] >= 0.9 and min(r[h] for h in ("color", "shape", "motion", "background")) >= 0.9
    # probe-FD: two real sets are close; real vs noise far apart.
    other = torch.stack([ShapesWorld(64, split="eval", seed=8)[i]["video"] for i in range(64)])
    noise = torch.rand(64, 3, 16, 64, 64) * 2 - 1
    assert probe_fd(probe, videos, other) * 5 < probe_fd(probe, noise, other)


def test_actions_world_frame_stride():
    from eflow_core.metrics.worlds import get_world

    spec = get_world("actions")
    assert spec.conditioning == "class" and spec.train_strides == (1, 2)
    fast = spec.dataset(split="eval", num_samples=3, num_frames=4, size=32, frame_stride=2)[1]
    full = spec.dataset(split="eval", num_samples=3, num_frames=8, size=32)[1]
    assert fast["video"].shape == (3, 4, 32, 32) and fast["label"] == full["label"]
    torch.testing.assert_close(fast["video"], full["video"][:, ::2])
    assert get_world("shapes+scenes").name == "shapes"


@pytest.mark.skipif(not _SHIPPED, reason="no shipped shapes probe")
def test_shipped_probe_features_are_standardised():
    from eflow_core.data.shapes import ShapesWorld

    torch.set_num_threads(1)
    probe = load_probe("shapes")
    videos = torch.stack([ShapesWorld(96, split="eval", seed=11)[i]["video"] for i in range(96)])
    f = probe.features(videos)
    assert f.mean(dim=0).norm() < 0.5 * f.shape[1] ** 0.5       # centred on real clips
    assert 0.7 < f.var(dim=0).mean().sqrt() < 1.3               # unit RMS spread
