"""FVD plumbing with random I3D weights (no download): shapes, key names, loading, errors."""
import pytest
import torch

from eflow_core.metrics.fvd import (InceptionI3d, fvd, i3d_features, load_i3d, preprocess_for_i3d)


@pytest.fixture(scope="module")
def i3d():
    torch.manual_seed(0)
    return InceptionI3d().eval()


def test_canonical_state_dict_names(i3d):
    keys = set(i3d.state_dict())
    for k in ["Conv3d_1a_7x7.conv3d.weight", "Conv3d_1a_7x7.bn.running_var", "Conv3d_2c_3x3.conv3d.weight",
              "Mixed_3b.b0.conv3d.weight", "Mixed_4f.b1b.bn.bias", "Mixed_5c.b3b.conv3d.weight",
              "logits.conv3d.weight", "logits.conv3d.bias"]:
        assert k in keys, k
    assert i3d.state_dict()["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert i3d.state_dict()["logits.conv3d.weight"].shape == (400, 1024, 1, 1, 1)
    assert 12.0e6 < sum(p.numel() for p in i3d.parameters()) < 13.0e6  # I3D RGB: ~12.7M with 400 logits


def test_preprocess_layouts_and_resize():
    u8 = torch.randint(0, 256, (2, 16, 64, 64, 3), dtype=torch.uint8)
    x = preprocess_for_i3d(u8, 224)
    assert x.shape == (2, 3, 16, 224, 224) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    f = u8.permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    torch.testing.assert_close(preprocess_for_i3d(f, None), f)
    torch.testing.assert_close(preprocess_for_i3d(u8, None), f)
    with pytest.raises(ValueError, match="5 dims"):
        preprocess_for_i3d(torch.zeros(3, 16, 64, 64), 224)


def test_features_shape_and_fvd_plumbing(i3d):
    # Reduced resolution (96) keeps this fast on a CPU; the network and the FD code are the same.
    g = torch.Generator().manual_seed(0)
    real = torch.rand(3, 3, 16, 64, 64, generator=g) * 2 - 1
    feats = i3d_features(i3d, real, batch_size=2, resolution=96)
    assert feats.shape == (3, 400) and torch.isfinite(feats).all()
    assert fvd(i3d, real, real, batch_size=3, resolution=96) == pytest.approx(0.0, abs=1e-3)
    other = torch.zeros(3, 3, 16, 64, 64)
    other[:, 0] = 1.0  # three identical red clips: a different distribution
    assert fvd(i3d, other, real, batch_size=3, resolution=96) > 0


def test_batch_independence(i3d):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 8, 48, 48, generator=g) * 2 - 1
    torch.testing.assert_close(i3d_features(i3d, x, 1, None), i3d_features(i3d, x, 2, None), atol=1e-4, rtol=1e-4)


def test_load_i3d_roundtrip_and_errors(i3d, tmp_path):
    path = tmp_path / "i3d.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in i3d.state_dict().items()}}, path)
    loaded = load_i3d(path)
    x = torch.rand(1, 3, 8, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), i3d(x))
    from safetensors.torch import save_file

    save_file(i3d.state_dict(), str(tmp_path / "i3d.safetensors"))
    assert isinstance(load_i3d(tmp_path / "i3d.safetensors"), InceptionI3d)

    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_i3d(tmp_path / "missing.pt")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="canonical key names"):
        load_i3d(tmp_path / "bad.pt")


@pytest.mark.slow
def test_full_resolution_forward(i3d):
    x = torch.randint(0, 256, (2, 16, 64, 64, 3), dtype=torch.uint8)
    assert i3d_features(i3d, x, batch_size=2).shape == (2, 400)  # resized to 224x224: the FVD protocol
