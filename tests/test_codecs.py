"""Latent codecs: pixel (exact), the shipped small autoencoder (PSNR on held-out shapes), Wan through diffusers."""
import json

import pytest
import torch

from eflow_core.codecs import (AutoencoderConfig, PixelCodec, VideoAutoencoder, WanCodec, load_codec,
                               shipped_autoencoder_path)
from eflow_core.codecs.train_ae import psnr, train_autoencoder
from eflow_core.data.shapes import ShapesWorld


def _shapes(n, frames=17, size=64, split="eval", seed=123):
    ds = ShapesWorld(n, num_frames=frames, size=size, split=split, seed=seed)
    return torch.stack([ds[i]["video"] for i in range(n)])


@pytest.mark.parametrize("factor,channels", [((1, 4, 4), 48), ((2, 2, 2), 24), ((1, 1, 1), 3)])
def test_pixel_codec_exact_round_trip(factor, channels):
    codec = load_codec("pixel", factor=factor)
    x = torch.rand(2, 3, 8, 16, 32) * 2 - 1
    z = codec.encode(x)
    ft, fh, fw = factor
    assert z.shape == (2, channels, 8 // ft, 16 // fh, 32 // fw) == (2, *codec.latent_shape(8, 16, 32))
    assert codec.channels == channels and codec.factor == factor and not codec.causal
    assert torch.equal(codec.decode(z), x)  # bit exact
    # channel layout: channel (c, i, j) of latent pixel (t, y, x) is pixel (t*ft, y*fh + i, x*fw + j)
    if factor == (1, 4, 4):
        assert z[0, 1 * 16 + 2 * 4 + 3, 5, 1, 2] == x[0, 1, 5, 1 * 4 + 2, 2 * 4 + 3]


def test_pixel_codec_clear_errors():
    codec = PixelCodec((1, 4, 4))
    with pytest.raises(ValueError, match="divisible by 4"):
        codec.encode(torch.zeros(1, 3, 4, 30, 32))
    with pytest.raises(ValueError, match=r"expects video \(B, 3, T, H, W\)"):
        codec.encode(torch.zeros(3, 4, 32, 32))
    with pytest.raises(ValueError, match="unknown codec"):
        load_codec("vqgan")


def test_autoencoder_shapes_and_causality():
    torch.manual_seed(0)
    ae = VideoAutoencoder(AutoencoderConfig(enc_width=16, dec_width=16)).eval()
    for p in ae.parameters():  # make the zero-initialised correction paths active
        torch.nn.init.normal_(p, std=0.05)
    assert ae.latent_shape(17, 64, 64) == (16, 5, 8, 8) and ae.factor == (4, 8, 8) and ae.causal
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        ae.latent_shape(16, 64, 64)
    x = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        z = ae.encode(x)
        assert z.shape == (1, 16, 3, 4, 4)
        y = x.clone()
        y[:, :, 5:] = 0  # change frames 5..8 only
        z2 = ae.encode(y)
        assert torch.equal(z[:, :, :2], z2[:, :, :2]) and not torch.equal(z[:, :, 2], z2[:, :, 2])
        y = x.clone()
        y[:, :, 1:] = 0  # the first latent frame codes the first frame alone
        assert torch.equal(ae.encode(y)[:, :, 0], z[:, :, 0])
        out = ae.decode(z)
        assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
        z3 = z.clone()
        z3[:, :, 2] = 5.0  # a later latent frame does not change earlier decoded frames
        assert torch.equal(ae.decode(z3)[:, :, :5], out[:, :, :5])


def test_shipped_autoencoder_psnr_on_held_out_shapes():
    folder = shipped_autoencoder_path()
    card = json.loads((folder / "card.json").read_text())
    weights = folder / "model.safetensors"
    assert weights.stat().st_size < 5 * 2 ** 20
    assert card["metrics"]["psnr_db_heldout"] >= 28.0
    codec = load_codec("autoencoder")
    assert codec.channels == card["latent_channels"] and codec.factor == (4, 8, 8)
    x = _shapes(12)  # held-out split, a seed the card's measurement did not use
    with torch.no_grad():
        z = codec.encode(x)
        assert z.shape == (12, *codec.latent_shape(17, 64, 64))
        value = float(psnr(x, codec.decode(z)).mean())
    assert value >= 28.0, value
    assert 0.2 < float(z.std()) < 5  # normalised latents


def test_train_autoencoder_smoke(tmp_path):
    card = train_autoencoder(tmp_path / "ae", steps=3, batch_size=2, num_frames=5, size=32, crop=16,
                             source_frames=9, pca_clips=4, eval_clips=2, eval_frames=9,
                             config=AutoencoderConfig(latent_channels=8, enc_width=8, dec_width=8), progress=False)
    assert card["train"]["steps"] == 3 and "psnr_db_heldout" in card["metrics"]
    ae = load_codec(f"autoencoder:{tmp_path / 'ae'}")
    assert ae.channels == 8 and ae.encode(torch.zeros(1, 3, 5, 32, 32)).shape == (1, 8, 2, 4, 4)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_codec(f"autoencoder:{tmp_path / 'missing'}")


def test_wan_adapter_round_trip(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, attn_scales=[],
                                     temperal_downsample=[False, True, True],
                                     latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.0, 2.0, 0.5, 1.0])
    vae.save_pretrained(tmp_path / "wan" / "vae")  # a pipeline-style folder with vae/
    codec = load_codec(f"wan:{tmp_path / 'wan'}")
    assert codec.channels == 4 and codec.factor == (4, 8, 8) and codec.causal
    x = _shapes(2, frames=5, size=32)
    z = codec.encode(x)
    assert z.shape == (2, *codec.latent_shape(5, 32, 32)) == (2, 4, 2, 4, 4)
    raw = vae.encode(x).latent_dist.mode()
    mean = torch.tensor([0.1, -0.2, 0.3, 0.0]).view(1, -1, 1, 1, 1)
    std = torch.tensor([1.0, 2.0, 0.5, 1.0]).view(1, -1, 1, 1, 1)
    assert torch.allclose(z, (raw - mean) / std, atol=1e-5)
    y = codec.decode(z)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    assert torch.allclose(y, vae.decode(raw).sample.clamp(-1, 1), atol=1e-4)
    chunked = WanCodec.from_pretrained(tmp_path / "wan", latent_frames_per_call=4)
    assert chunked.latent_frames_per_call == 4 and torch.allclose(chunked.decode(z), y, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="no Wan VAE at"):
        load_codec(f"wan:{tmp_path / 'nothing'}")


@pytest.mark.parametrize("wan22", [False, True], ids=["wan2.1", "wan2.2"])
def test_wan_decode_in_chunks_matches_one_frame_per_call(wan22):
    """Decoding k latent frames per decoder call gives diffusers' frame-by-frame video (wan.py docstring):
    the first frame alone, then any split; checked on odd splits that leave a short last call."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    common = dict(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, attn_scales=[],
                  temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    if wan22:   # residual up blocks with DupUp3D shortcuts, and 2x2 patches (Wan 2.2's TI2V VAE layout)
        common.update(is_residual=True, in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16)
    vae = diffusers.AutoencoderKLWan(**common).eval()
    latent = torch.randn(2, 4, 8, 4, 6)
    frame_by_frame = WanCodec(vae).decode(latent)
    assert frame_by_frame.shape == (2, 3, 29, 4 * (16 if wan22 else 8), 6 * (16 if wan22 else 8))
    for k in (2, 3, 7, 20):
        chunked = WanCodec(vae, latent_frames_per_call=k).decode(latent)
        assert chunked.shape == frame_by_frame.shape
        torch.testing.assert_close(chunked, frame_by_frame, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="latent_frames_per_call"):
        WanCodec(vae, latent_frames_per_call=0)
