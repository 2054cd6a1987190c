"""Video I/O and transforms: mp4 / GIF round trips, frame sampling, resize + crop, tensor conversions."""
import numpy as np
import pytest
import torch

from eflow_core.data import (VideoReadError, frames_to_tensor, probe_video, read_video, resize_center_crop,
                             sample_frame_indices, tensor_to_frames, write_gif, write_mp4)


def _ramp(t=12, h=48, w=64):
    """Smooth, codec-friendly frames whose brightness encodes the frame index."""
    y = np.linspace(0, 1, h)[None, :, None, None]
    x = np.linspace(0, 1, w)[None, None, :, None]
    k = np.arange(t)[:, None, None, None] / max(1, t - 1)
    img = np.concatenate([np.broadcast_to(v, (t, h, w, 1)) for v in (x, y, k)], axis=-1)
    return (img * 200 + 20).astype(np.uint8)


def test_mp4_round_trip(tmp_path):
    frames = _ramp()
    path = write_mp4(tmp_path / "clip.mp4", frames, fps=8)
    back = read_video(path)
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 4  # lossy but close
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"


def test_mp4_odd_size_is_padded_and_resized_on_read(tmp_path):
    path = write_mp4(tmp_path / "odd.mp4", _ramp(5, 33, 45))
    assert read_video(path).shape == (5, 34, 46, 3)
    small = read_video(path, short_side=17)
    assert small.shape[1] == 17 and small.shape[2] == 23


def test_gif_round_trip(tmp_path):
    frames = _ramp(6, 32, 32)
    path = write_gif(tmp_path / "clip.gif", frames, fps=5)
    back = read_video(path)
    assert back.shape == frames.shape


def test_write_rejects_float_frames(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.float32))


def test_bad_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_video(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 50)
    with pytest.raises(VideoReadError, match="cannot decode"):
        read_video(bad)
    assert probe_video(tmp_path / "missing.mp4") == "missing"
    assert probe_video(bad).startswith("cannot open")


def test_sample_frame_indices():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        idx = sample_frame_indices(100, 16, 2, "random", g)
        assert len(idx) == 16 and idx[0] >= 0 and idx[-1] < 100 and np.all(np.diff(idx) == 2)
    assert list(sample_frame_indices(41, 16, 2, "center")) == list(range(5, 36, 2))
    # too short for stride 2: the stride shrinks
    assert np.all(np.diff(sample_frame_indices(20, 16, 2, "center")) == 1)
    # shorter than num_frames: pad (hold last frame) or loop
    assert list(sample_frame_indices(5, 8, 2, "center")) == [0, 1, 2, 3, 4, 4, 4, 4]
    assert list(sample_frame_indices(5, 8, 2, "center", short="loop")) == [0, 1, 2, 3, 4, 0, 1, 2]


def test_resize_center_crop_and_tensor_conversions():
    frames = _ramp(4, 48, 80)
    out = resize_center_crop(frames, 32)
    assert out.shape == (4, 32, 32, 3) and out.dtype == torch.uint8
    video = frames_to_tensor(out)
    assert video.shape == (3, 4, 32, 32) and video.min() >= -1 and video.max() <= 1
    assert np.array_equal(tensor_to_frames(video), out.numpy())  # exact round trip
    batch = tensor_to_frames(video[None].repeat(2, 1, 1, 1, 1))
    assert batch.shape == (2, 4, 32, 32, 3)


def test_mp4_encoding_is_deterministic(tmp_path):
    """The same frames give the same H.264 stream, also after other clips were encoded in between (the app's
    same-seed-same-video promise). With x264's macroblock-tree on, 8 such encodes gave 6 different streams."""
    import hashlib

    import av

    from eflow_core.data.shapes import render_shape_clip
    from eflow_core.data.video import write_mp4
    from eflow_core.metrics.video import to_uint8

    def noisy_clip(seed):
        video, _ = render_shape_clip("square", "red", "gray", "moving left", num_frames=17, size=64, rng=seed)
        frames = to_uint8(video[None])[0].numpy().astype(int)
        return np.clip(frames + np.random.default_rng(seed).integers(-20, 21, frames.shape), 0, 255).astype(np.uint8)

    def stream_digest(path):
        with av.open(str(path)) as container:
            return hashlib.md5(b"".join(bytes(p) for p in container.demux(video=0))).hexdigest()

    a, b = noisy_clip(0), noisy_clip(1)
    digests = set()
    for i in range(6):
        digests.add(stream_digest(write_mp4(tmp_path / f"a{i}.mp4", a)))
        write_mp4(tmp_path / f"b{i}.mp4", b)
    assert len(digests) == 1
