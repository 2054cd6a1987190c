"""Fréchet distance: closed form, symmetry, FD(x, x) ~ 0, both square-root methods."""
import numpy as np
import pytest
import scipy.linalg
import torch

from eflow_core.metrics.frechet import (GaussianStats, frechet_distance, frechet_distance_from_features,
                                        gaussian_stats)


def _random_spd(rng, n, scale=1.0):
    a = rng.normal(size=(n, n))
    return scale * (a @ a.T) / n + 0.1 * np.eye(n)


def _closed_form(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.mark.parametrize("method", ["auto", "eigh"])
def test_closed_form_known_gaussians(method):
    rng = np.random.default_rng(0)
    n = 8
    mu1, mu2 = rng.normal(size=n), rng.normal(size=n)
    s1, s2 = _random_spd(rng, n), _random_spd(rng, n, 3.0)
    fd = frechet_distance(GaussianStats(mu1, s1, 100), GaussianStats(mu2, s2, 100), method=method)
    assert fd == pytest.approx(_closed_form(mu1, s1, mu2, s2), rel=1e-8)


def test_commuting_covariances_exact():
    # Diagonal covariances: tr((S1 S2)^1/2) = sum sqrt(a_i b_i), so FD = |dmu|^2 + sum (sqrt a - sqrt b)^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
    fd = frechet_distance(GaussianStats(mu1, np.diag(a), 10), GaussianStats(mu2, np.diag(b), 10))
    assert fd == pytest.approx(5.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum(), abs=1e-10)


def test_fd_of_a_set_with_itself_is_zero_and_symmetric():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 16, generator=g) @ torch.randn(16, 16, generator=g)
    y = torch.randn(400, 16, generator=g) + 0.5
    assert frechet_distance_from_features(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance_from_features(x, y) == pytest.approx(frechet_distance_from_features(y, x), rel=1e-6)


def test_sample_estimate_approaches_population_value():
    rng = np.random.default_rng(1)
    n = 4
    mu1, mu2 = np.zeros(n), np.full(n, 0.5)
    s1, s2 = _random_spd(rng, n), _random_spd(rng, n, 2.0)
    x = rng.multivariate_normal(mu1, s1, size=200_000)
    y = rng.multivariate_normal(mu2, s2, size=200_000)
    est = frechet_distance_from_features(x, y)
    assert est == pytest.approx(_closed_form(mu1, s1, mu2, s2), rel=0.02)


def test_rank_deficient_features_are_finite():
    # Fewer samples than dimensions: singular covariances must still give a finite, non-negative number.
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 64, generator=g), torch.randn(12, 64, generator=g) + 1
    fd = frechet_distance_from_features(x, y)
    assert np.isfinite(fd) and fd > 0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="2-D"):
        gaussian_stats(np.zeros(5))
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_stats(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance_from_features(np.random.rand(5, 3), np.random.rand(5, 4))
    with pytest.raises(ValueError, match="NaN"):
        gaussian_stats(np.full((3, 2), np.nan))


def test_methods_agree_on_rank_deficient_sets():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(20, 48, generator=g), torch.randn(30, 48, generator=g) * 2
    assert frechet_distance_from_features(x, y) == pytest.approx(
        frechet_distance_from_features(x, y, method="eigh"), rel=1e-4)
