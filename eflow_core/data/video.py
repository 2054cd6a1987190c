"""Video file I/O with PyAV: read mp4 / webm / avi / gif into uint8 arrays, write browser-playable mp4 and GIF.

Arrays on this side of the library are always uint8 numpy (T, H, W, 3) RGB; `transforms.py` turns them
into the model's float tensors (C, T, H, W) in [-1, 1] and back.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".gif")


class VideoReadError(RuntimeError):
    """A video file exists but cannot be opened or decoded."""


def _scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    if not short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def read_video(path: str | Path, short_side: int | None = None, max_frames: int | None = None) -> np.ndarray:
    """Decode a video file into uint8 RGB frames (T, H, W, 3).

    `short_side` resizes every frame while decoding (area filter, aspect kept) so its shorter side is
    `short_side` pixels — cheap, and memory stays small for long, large clips. `max_frames` stops
    decoding after that many frames. A decode error after at least one good frame ends the clip there
    (truncated files keep their readable part); no readable frame raises `VideoReadError`, a missing file
    `FileNotFoundError`.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path} has no video stream")
            stream = container.streams.video[0]
            try:
                for frame in container.decode(stream):
                    w, h = _scaled_size(frame.width, frame.height, short_side)
                    # threads=1: one thread per DataLoader worker. PyAV >= 18.1.1 keeps a multithreaded
                    # swscale context per thread; one made in a parent is inherited by a forked worker
                    # without its pool threads, and the worker's first conversion then hangs
                    # (tests/test_data_kinetics.py::test_dataloader_epoch[2] did, under 18.1.1)
                    size = {} if (w, h) == (frame.width, frame.height) else \
                        {"width": w, "height": h, "interpolation": "AREA"}
                    frames.append(frame.to_ndarray(format="rgb24", threads=1, **size))
                    if max_frames is not None and len(frames) >= max_frames:
                        break
            except (av.FFmpegError, ValueError) as e:  # corrupt data mid-stream
                if not frames:
                    raise
                log.debug("decoding %s stopped after %d frames: %s", path, len(frames), e)
    except VideoReadError:
        raise
    except (av.FFmpegError, ValueError, OSError, IndexError) as e:
        raise VideoReadError(f"cannot decode video {path}: {e}") from e
    if not frames:
        raise VideoReadError(f"video {path} has no decodable frames")
    return np.stack(frames)


def probe_video(path: str | Path, decode: bool = False) -> str | None:
    """Check a video file cheaply: None if usable, else a one-line reason.

    Default: the file exists and its container opens with a video stream (a few ms). With
    `decode=True` the first frame is decoded as well.
    """
    import av

    path = Path(path)
    if not path.is_file():
        return "missing"
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return "no video stream"
            if decode:
                next(container.decode(container.streams.video[0]))
    except StopIteration:
        return "no decodable frames"
    except (av.FFmpegError, ValueError, OSError) as e:
        return f"cannot open: {e}"
    return None


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad (T, H, W, 3) by edge replication to even H and W (yuv420p needs them)."""
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return frames


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames of shape (T, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {frames.dtype} (use transforms.tensor_to_frames)")
    if frames.shape[0] == 0:
        raise ValueError("cannot write a video with no frames")
    return frames


# x264 without macroblock-tree rate control. With it, the x264 in PyAV's wheels encoded the same frames
# differently from call to call in one process (4 distinct outputs in 12 encodes of one model clip,
# even with one thread), so the app's "same seed, same video" failed now and then. With mbtree=0,
# 12 of 12 were identical (2026-11-30). mbtree is a quality aid for long clips; these are 16-frame ones.
X264_PARAMS = "mbtree=0"


def write_mp4(path: str | Path, frames: np.ndarray, fps: float = 8.0, crf: int = 18) -> Path:
    """Write uint8 (T, H, W, 3) frames as H.264 yuv420p mp4 (plays in browsers); odd sizes are padded to even.

    `crf` is x264's constant quality (0 lossless .. 51 worst; 18 is visually lossless). The moov atom is
    placed first (faststart) so browsers can start playing before the download ends.
    """
    import av
    from fractions import Fraction

    frames = _even(_check_frames(frames))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium", "x264-params": X264_PARAMS}
        stream.thread_count = 1
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 8.0) -> Path:
    """Write uint8 (T, H, W, 3) frames as a looping GIF."""
    from PIL import Image

    frames = _check_frames(frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(20, round(1000 / fps)), loop=0, optimize=False, disposal=1)
    return path


def write_video(path: str | Path, frames: np.ndarray, fps: float = 8.0) -> Path:
    """Write by extension: `.gif` -> GIF, anything else -> H.264 mp4."""
    if Path(path).suffix.lower() == ".gif":
        return write_gif(path, frames, fps)
    return write_mp4(path, frames, fps)
