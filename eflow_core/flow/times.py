"""Time sampling for the solution-flow objectives and the inference schedule.

Conventions (docs/DESIGN.md, paper Sec. 3.1): t = 1 is noise, t = 0 is data, x_t = (1 - t) x0 + t x1.
Every function returns float32 tensors whatever the model's dtype ("time arithmetic in fp32").
Random draws take an optional `torch.Generator`; with one, results are reproducible (tests, resume);
without one, the global RNG is used. Draws happen on the generator's device and are then moved to
`device`, so a CPU generator also drives CUDA training deterministically.
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "shift_time",
    "sample_logit_normal",
    "intermediate_ratio",
    "sample_scm_times",
    "mva_grid",
    "sample_mva_times",
    "inference_schedule",
    "uniform",
    "randn",
]


# --------------------------------------------------------------------------------------------------
# random helpers (explicit generator, fp32)
# --------------------------------------------------------------------------------------------------
def _gen_device(generator: torch.Generator | None, device: torch.device | str | None) -> torch.device:
    if generator is not None:
        return torch.device(generator.device)
    return torch.device(device) if device is not None else torch.device("cpu")


def randn(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
          device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal tensor of `shape` drawn from `generator` (or the global RNG), on `device`."""
    x = torch.randn(tuple(shape), generator=generator, device=_gen_device(generator, device), dtype=torch.float32)
    return x.to(device=device if device is not None else x.device, dtype=dtype)


def uniform(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
            device: torch.device | str | None = None) -> torch.Tensor:
    """U[0, 1) float32 tensor of `shape` drawn from `generator` (or the global RNG), on `device`."""
    x = torch.rand(tuple(shape), generator=generator, device=_gen_device(generator, device), dtype=torch.float32)
    return x.to(device) if device is not None else x


# --------------------------------------------------------------------------------------------------
# shift and logit-normal sampling (paper App. B.2, Eq. 26)
# --------------------------------------------------------------------------------------------------
def shift_time(t: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """Eq. 26: t' = shift * t / (1 + (shift - 1) * t). Monotone, fixes 0 and 1; shift > 1 pushes
    times towards 1 (noise). Works on floats and on tensors (any shape, computed in fp32)."""
    if isinstance(t, torch.Tensor):
        t = t.float()
    return shift * t / (1.0 + (shift - 1.0) * t)


def sample_logit_normal(n: int, mu: float, sigma: float, shift: float = 1.0,
                        generator: torch.Generator | None = None,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """t = shift_time(sigmoid(u), shift), u ~ N(mu, sigma^2) (App. B.2; the paper's (mu, sigma, shift)
    are (0, 1, 3) for t and (-1, 0.8, 1) for s). Returns (n,) float32 in (0, 1)."""
    u = randn((n,), generator, device) * sigma + mu
    return shift_time(torch.sigmoid(u), shift)


# --------------------------------------------------------------------------------------------------
# SCM intermediate time (SoFlow's "exponential" l - t schedule)
# --------------------------------------------------------------------------------------------------
def intermediate_ratio(step: int, r_start: float = 0.1, r_end: float = 0.002, r_steps: int = 100_000) -> float:
    """r(step) = r_start * (r_end / r_start) ** min(step / r_steps, 1): log-linear decay from r_start
    (step 0) to r_end (step >= r_steps). SoFlow (arXiv 2512.15657) calls this the "exponential" l-t
    schedule; its public code (models.py, `get_middle_time`, method "Exponent", init 0.1 / end 0.002)
    evaluates r at finished_steps / total_steps. We clamp the progress to [0, 1] so that training past
    r_steps keeps r = r_end instead of extrapolating below it."""
    if r_steps <= 0:
        return float(r_end)
    progress = min(max(step / r_steps, 0.0), 1.0)
    return float(r_start * math.exp(progress * math.log(r_end / r_start)))


def sample_scm_times(n: int, config, ratio: float | torch.Tensor, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(t, l, s), each (n,) float32, with 1 >= t > l > s >= 0, for the SCM loss (Eq. 4).

    t ~ logit-normal(t_mu, t_sigma, t_shift), s ~ logit-normal(s_mu, s_sigma, s_shift), each from its
    own distribution (App. B.2); where a draw has s > t the two are swapped (sorted), then they are
    clamped at least 2 * min_gap apart. l = t + (s - t) r(step) (SoFlow's exponential schedule) is
    clamped into [s + min_gap, t - min_gap], so t - l >= min_gap and l - s >= min_gap. `ratio` is r(step)
    of `intermediate_ratio`, a float or a 0-d tensor (a captured training step feeds it as a tensor).

    SoFlow's code instead keeps t and sets s = min(s, t - 1e-4), l = min(l, t - 1e-4) (train.py);
    we sort as the project's design asks, so a draw with s > t gives a useful long pair rather than
    a degenerate one. `config` is a FlowConfig.
    """
    gap = float(config.min_gap)
    a = sample_logit_normal(n, config.t_mu, config.t_sigma, config.t_shift, generator, device)
    b = sample_logit_normal(n, config.s_mu, config.s_sigma, config.s_shift, generator, device)
    t = torch.maximum(a, b).clamp(min=2 * gap, max=1.0)
    s = torch.minimum(torch.minimum(a, b), t - 2 * gap).clamp(min=0.0)
    l = t + (s - t) * ratio
    l = torch.minimum(torch.maximum(l, s + gap), t - gap)
    return t, l, s


# --------------------------------------------------------------------------------------------------
# MVA grid (Sec. 4.2 (b), App. B.2) and inference schedule (App. B.3, Algorithm 2)
# --------------------------------------------------------------------------------------------------
def mva_grid(points: int = 64, shift: float = 3.0, device: torch.device | str | None = None) -> torch.Tensor:
    """The fixed MVA grid: `points` (K = 64) times uniform in [0, 1] (both ends included), shifted
    with Eq. 26 (shift 3). Returns (K,) float32, ascending, grid[0] = 0, grid[-1] = 1."""
    if points < 3:
        raise ValueError(f"the MVA grid needs at least 3 points for t > l > s, got {points}")
    return shift_time(torch.linspace(0.0, 1.0, points, dtype=torch.float32, device=device), shift)


def sample_mva_times(n: int, grid: torch.Tensor, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(t, l, s), each (n,) float32: three distinct points of `grid` (K,), uniform over the
    K-choose-3 triples, ordered t > l > s (Eq. 12 on the discrete schedule)."""
    k = grid.shape[0]
    keys = uniform((n, k), generator, device)
    idx = keys.argsort(dim=1)[:, :3].sort(dim=1, descending=True).values  # (n, 3) distinct, descending
    g = grid.to(device=idx.device, dtype=torch.float32)
    return g[idx[:, 0]], g[idx[:, 1]], g[idx[:, 2]]


def inference_schedule(steps: int, shift: float = 3.0, device: torch.device | str | None = None) -> torch.Tensor:
    """Algorithm 2 / App. B.3: `steps` + 1 times 1 = t_N > t_{N-1} > ... > t_0 = 0, uniform in [0, 1]
    then shifted with Eq. 26. Returns (steps + 1,) float32, descending; step n jumps t_n -> 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    times = shift_time(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float32, device=device), shift)
    times[0], times[-1] = 1.0, 0.0  # exact endpoints
    return times
