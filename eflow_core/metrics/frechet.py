"""Fréchet distance between Gaussian fits of feature sets (the FID/FVD statistic).

    FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})

All statistics are computed in float64. The matrix square root goes through
`scipy.linalg.sqrtm` when scipy is present, else through an eigen-decomposition of the
symmetric product S1^{1/2} S2 S1^{1/2} (same trace); tiny imaginary parts from round-off
are dropped, large ones raise.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class GaussianStats:
    """Mean (F,) and covariance (F, F) of a feature set, float64, plus the sample count."""

    mean: np.ndarray
    cov: np.ndarray
    count: int


def _as_numpy(features: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().to("cpu", torch.float64).numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D array (N, F); got shape {tuple(features.shape)}")
    if features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors to fit a covariance; got {features.shape[0]}")
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or Inf")
    return features


def gaussian_stats(features: torch.Tensor | np.ndarray) -> GaussianStats:
    """Fit a Gaussian to features (N, F): mean (F,), unbiased covariance (F, F), float64."""
    x = _as_numpy(features)
    return GaussianStats(mean=x.mean(axis=0), cov=np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]),
                         count=x.shape[0])


def _trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """tr((S1 S2)^{1/2}) for symmetric PSD S1, S2 (F, F), float64, via scipy.linalg.sqrtm.

    Falls back to the eigen-decomposition when scipy is missing or when sqrtm returns non-finite
    values or an imaginary part beyond round-off (near-singular products).
    """
    try:
        from scipy import linalg
    except ImportError:
        return _trace_sqrt_product_eigh(cov1, cov2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LinAlgWarning on singular products: checked below instead
        covmean = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        return _trace_sqrt_product_eigh(cov1, cov2)
    if np.iscomplexobj(covmean):
        diag = np.diagonal(covmean)
        if np.abs(diag.imag).max() > 1e-3 * max(1.0, np.abs(diag.real).max()):
            return _trace_sqrt_product_eigh(cov1, cov2)
        covmean = covmean.real
    return float(np.trace(covmean))


def _trace_sqrt_product_eigh(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """tr((S1 S2)^{1/2}) = tr((S1^{1/2} S2 S1^{1/2})^{1/2}), the latter symmetric PSD (eigh)."""
    w1, v1 = np.linalg.eigh(cov1)
    sqrt1 = (v1 * np.sqrt(np.clip(w1, 0.0, None))) @ v1.T
    middle = sqrt1 @ cov2 @ sqrt1
    w = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(stats1: GaussianStats, stats2: GaussianStats, method: str = "auto") -> float:
    """Fréchet distance between two Gaussian fits. `method`: auto (scipy sqrtm) | eigh."""
    if stats1.mean.shape != stats2.mean.shape:
        raise ValueError(f"feature sizes differ: {stats1.mean.shape[0]} vs {stats2.mean.shape[0]}")
    diff = stats1.mean - stats2.mean
    if method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(stats1.cov, stats2.cov)
    elif method == "auto":
        tr_covmean = _trace_sqrt_product(stats1.cov, stats2.cov)
    else:
        raise ValueError(f"unknown method {method!r}: use 'auto' or 'eigh'")
    fd = float(diff @ diff + np.trace(stats1.cov) + np.trace(stats2.cov) - 2.0 * tr_covmean)
    return max(fd, 0.0)  # round-off can make FD(x, x) a tiny negative number


def frechet_distance_from_features(features1: torch.Tensor | np.ndarray, features2: torch.Tensor | np.ndarray,
                                   method: str = "auto") -> float:
    """FD between the Gaussian fits of two feature sets (N1, F) and (N2, F)."""
    return frechet_distance(gaussian_stats(features1), gaussian_stats(features2), method=method)


@torch.no_grad()
def extract_features(feature_fn, videos: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Run `feature_fn` ((B, 3, T, H, W) float in [-1, 1] -> (B, F)) over videos in batches.

    `videos`: (N, 3, T, H, W) float in [-1, 1], or uint8 (N, T, H, W, 3) as pipelines return them.
    Returns (N, F) float32 on the CPU.
    """
    from eflow_core.metrics.video import to_model_input

    out = []
    for start in range(0, videos.shape[0], batch_size):
        chunk = to_model_input(videos[start:start + batch_size])
        out.append(feature_fn(chunk).float().cpu())
    return torch.cat(out)


def probe_fd(probe, generated_videos: torch.Tensor, real_videos: torch.Tensor, batch_size: int = 32) -> float:
    """Probe-based Fréchet distance between generated and real clips.

    probe: a `VideoProbe` (its `features` gives (B, F) embeddings).
    generated_videos, real_videos: (N, 3, T, H, W) float in [-1, 1] or uint8 (N, T, H, W, 3);
    the two sets may differ in N (each needs N >= 2; use hundreds for a stable estimate).
    """
    probe.eval()
    gen = extract_features(probe.features, generated_videos, batch_size)
    real = extract_features(probe.features, real_videos, batch_size)
    return frechet_distance_from_features(gen, real)
