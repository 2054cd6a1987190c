"""End-to-end 2-D checks of the solution-flow objective (CPU, seeded, small MLP).

Data: a mixture of 4 Gaussians on a circle of radius 4, std 0.2, unequal weights (1/3 ... 1/6);
neighbouring modes are 5.66 = 28 std apart. "Near a mode" means within 5 std of its mean: a sample
of the mode itself is further with probability exp(-25/2) ~ 4e-6 (chi^2 with 2 dof), while the
midpoint between two neighbours is 14 std away and the centre 20 std, so "near" and "between modes"
cannot be confused.

What the tests show:
- EFlow's objective (FM + SCM, then + MVA, Algorithm 1) gives 1-step samples with the right mode
  masses (within 5 points) that land on modes (> 90% within 5 std after 4000 steps, > 93% after 12000
  [slow]), and 4-step samples (Algorithm 2) > 95% (> 97% [slow]) on modes; plain flow matching on the
  same network, sampled with ONE Euler step, lands between the modes (at the posterior mean, the
  centre: 0% near). The samples that miss are those whose noise lies near the boundaries of the
  modes' basins (rays from the origin), where the exact map jumps between modes and a smooth network
  has a transition band (a direct regression of the same MLP onto ODE pairs reaches ~96% in 4000
  steps).
- With MVA on, the measured semigroup defect on held-out grid triples is lower than with it off
  after the same training (same seed, same first phase).
- PDG end to end: a class-conditional model trained with the weak-path guided target puts
  1-step samples of class c on mode c, and the weak path alone (trained on null-condition FM)
  learned the unconditional flow.
- Algorithm 2 across steps (issue 23), on exact flow maps of a weak-path-guided ODE: guidance at every
  re-noised step makes 2 and 4 steps worse than 1 (the class spread collapses further); with the default
  guidance only at t_n >= FlowConfig.guidance_t_min more steps do not hurt.

Toy settings (not the video defaults, and why):
- FM adaptive_p = 0. In 2-D the per-sample MSE does not concentrate (it is chi^2 with 2 dof), so the
  p = 1 weight 1/(MSE + eps) turns the L2 regression into a robust, mode-seeking loss that collapses mass
  onto the heavy modes (measured: mode mass errors of 15-35 points with p = 1, 1-2 points with p = 0). In
  video latents the per-sample MSE averages over ~1e5 dims and the weight is nearly constant per sample,
  which is the regime p = 1 is meant for.
- SCM scm_adaptive_p = 0.5 (not 0). The SCM difference quotient (f_t - f_l)/(t - l) contains
  grad f . (v - E[v | x_t]) with the conditional velocity v = x1 - x0: noise that grows with the map's
  Jacobian, i.e. exactly where the 1-step map must be sharp (basin boundaries). With p = 0 that noise
  keeps the boundaries blurred; p = 0.5 makes the gradient that of ||f_t - f_l|| (unit-norm per-sample
  steps, as in iCT's pseudo-Huber loss) and masses stay right. This was the largest single gain:
  1-step near 0.667 -> 0.827 (p = 0.5) / 0.793 (p = 1), median distance 2.9 -> 1.0 std (3000 steps).
- t_shift = 1 (the paper's shift 3 biases t to the noise end for high-resolution latents; a 2-D toy has
  no such need), lr 2e-3, batch split FM 0.5 / SCM 0.5 then FM 0.25 / SCM 0.25 / MVA 0.5: each gave
  +0.02-0.04 on the 1-step fraction; together (with SCM p = 0.5) 0.905 at 3000 steps, 0.923 at 4000
  (seeds 1, 2: 0.923, 0.928), mass errors 0.8-2.7 points.
- Measured and not kept (3000 steps, otherwise the old settings, seed 0, baseline 0.667): constant
  r = 0.1 0.461, r_end 0.02 0.581, r_steps 2x 0.601 (larger r biases the first-order target),
  r_end 5e-4 0.698, r_start 0.02 0.725, s_mu -2 0.720, scm_weight_scale 0.5 0.706 / 2.0 0.678,
  EMA 0.999 0.590, batch 512 0.714, 4500 steps 0.863 (with SCM p = 0.5).
"""
from __future__ import annotations

import contextlib
import functools
import math

import pytest
import torch
from torch import nn

from eflow_core.config import FlowConfig
from eflow_core.flow import EMA, SolutionFlow, mva_grid, sample_mva_times

RADIUS, STD, MODES = 4.0, 0.2, 4
ANGLES = torch.arange(MODES) * (2 * math.pi / MODES)
MEANS = RADIUS * torch.stack([ANGLES.cos(), ANGLES.sin()], 1)
WEIGHTS = torch.linspace(2, 1, MODES) / torch.linspace(2, 1, MODES).sum()
NEAR = 5 * STD


def sample_data(n: int, generator: torch.Generator) -> torch.Tensor:
    k = torch.multinomial(WEIGHTS, n, replacement=True, generator=generator)
    return MEANS[k] + STD * torch.randn(n, 2, generator=generator)


def _time_features(v: torch.Tensor, n: int = 4) -> torch.Tensor:
    a = v[:, None] * torch.arange(1, n + 1, dtype=torch.float32)[None] * math.pi
    return torch.cat([v[:, None], a.sin(), a.cos()], 1)


class ToyNet(nn.Module):
    """MLP F(x, t, t - s, guidance) following the flow's network protocol; weak=True skips the
    middle layers (a PDG weak path, Eq. 10)."""

    def __init__(self, hidden: int = 256, depth: int = 4):
        super().__init__()
        self.inp = nn.Linear(2 + 2 * 9 + 1, hidden)
        self.mid = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(depth - 2)])
        self.pre = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 2)

    def forward(self, x, t, s, cond, guidance, weak=False):
        h = torch.cat([x, _time_features(t), _time_features(t - s), guidance[:, None] / 4], 1)
        h = nn.functional.silu(self.inp(h))
        if not weak:
            for layer in self.mid:
                h = h + nn.functional.silu(layer(h))
        return self.out(nn.functional.silu(self.pre(h)))


@contextlib.contextmanager
def one_thread():
    """Train on one thread (the calibrated numbers do not depend on the machine's core count);
    the session's thread count is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _config(steps: int, **changes) -> FlowConfig:
    return FlowConfig(guidance="none", adaptive_p=0.0, scm_adaptive_p=0.5, t_shift=1.0, r_steps=steps, **changes)


def _train(flow: SolutionFlow, ema: EMA, opt, sched, generator, start: int, stop: int) -> None:
    for step in range(start, stop):
        loss, _ = flow.loss(sample_data(256, generator), None, step, generator=generator)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        ema.update()


def _setup(seed: int, steps: int, config: FlowConfig):
    torch.manual_seed(seed)
    net = ToyNet()
    flow = SolutionFlow(net, config)
    ema = EMA(net, 0.995)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k / steps, 1.0))))
    return net, flow, ema, opt, sched


@functools.lru_cache(maxsize=None)
@one_thread()
def train_eflow_pair(steps: int, mva_from: int, seed: int = 0):
    """Phase 1 (FM 0.5 / SCM 0.5) for `mva_from` steps, then two branches from the same state and
    RNG: MVA off (0.5 / 0.5 / 0) and MVA on (0.25 / 0.25 / 0.5). Returns {"off": (flow, ema),
    "on": (flow, ema)}; cached across tests."""
    phase1 = _config(steps, fm_ratio=0.5, scm_ratio=0.5, mva_ratio=0.0)
    net, flow, ema, opt, sched = _setup(seed, steps, phase1)
    gen = torch.Generator().manual_seed(seed + 1)
    _train(flow, ema, opt, sched, gen, 0, mva_from)
    snapshot = ({k: v.clone() for k, v in net.state_dict().items()}, ema.state_dict(),
                opt.state_dict(), sched.state_dict(), gen.get_state())
    out = {}
    for name, cfg in (("off", phase1), ("on", phase1.replace(fm_ratio=0.25, scm_ratio=0.25, mva_ratio=0.5))):
        net_b, flow_b, ema_b, opt_b, sched_b = _setup(seed, steps, cfg)
        net_b.load_state_dict(snapshot[0])
        ema_b.load_state_dict({**snapshot[1], "shadow": {k: v.clone() for k, v in snapshot[1]["shadow"].items()}})
        opt_b.load_state_dict(snapshot[2])
        sched_b.load_state_dict(snapshot[3])
        gen_b = torch.Generator()
        gen_b.set_state(snapshot[4])
        _train(flow_b, ema_b, opt_b, sched_b, gen_b, mva_from, steps)
        out[name] = (flow_b, ema_b)
    return out


@functools.lru_cache(maxsize=None)
@one_thread()
def train_flow_matching(steps: int, seed: int = 0):
    """Plain flow matching (s = t only) on the same network and data."""
    cfg = _config(steps, fm_ratio=1.0, scm_ratio=0.0)
    net, flow, ema, opt, sched = _setup(seed, steps, cfg)
    _train(flow, ema, opt, sched, torch.Generator().manual_seed(seed + 1), 0, steps)
    return flow, ema


def mode_stats(x: torch.Tensor) -> tuple[float, float, float]:
    """(fraction within NEAR of some mode, max |mode mass - weight| with nearest-mode assignment,
    median distance to the nearest mode in std)."""
    d, k = torch.cdist(x, MEANS).min(1)
    mass = torch.bincount(k, minlength=MODES).float() / len(x)
    return (d < NEAR).float().mean().item(), (mass - WEIGHTS).abs().max().item(), d.median().item() / STD


def semigroup_defect(flow: SolutionFlow, ema: EMA, n: int = 4000, seed: int = 77) -> tuple[float, float]:
    """(median, mean) over held-out data, noise and grid triples of the per-sample squared semigroup
    defect ||f(x_t, t, s) - f(f(x_t, t, l), l, s)||^2 (EMA weights)."""
    g = torch.Generator().manual_seed(seed)
    x0, x1 = sample_data(n, g), torch.randn(n, 2, generator=g)
    t, l, s = sample_mva_times(n, mva_grid(64, 3.0), generator=g)
    x_t = (1 - t)[:, None] * x0 + t[:, None] * x1
    w = torch.ones(n)
    with ema.swapped(), torch.no_grad():
        direct = flow.solution(x_t, t, s, None, w)
        two_leg = flow.solution(flow.solution(x_t, t, l, None, w), l, s, None, w)
    d = (direct - two_leg).pow(2).sum(1)
    return d.median().item(), d.mean().item()


NOISE = torch.randn(4000, 2, generator=torch.Generator().manual_seed(123))


def _check_one_step_vs_flow_matching(steps: int, mva_from: int, fm_steps: int, min_near: float, min_near_4: float):
    flow, ema = train_eflow_pair(steps, mva_from)["on"]
    with ema.swapped():
        one = flow.sample(NOISE, None, steps=1)
        four = flow.sample(NOISE, None, steps=4, generator=torch.Generator().manual_seed(5))
    near1, mass1, med1 = mode_stats(one)
    near4, mass4, _ = mode_stats(four)
    fm_flow, fm_ema = train_flow_matching(fm_steps)
    with fm_ema.swapped():
        fm_one = fm_flow.sample_ode(NOISE, None, steps=1, cfg=False)  # ONE Euler step of plain FM
        fm_many = fm_flow.sample_ode(NOISE, None, steps=50, cfg=False)
    fm_near, fm_mass, fm_med = mode_stats(fm_one)
    fm_many_near, _, _ = mode_stats(fm_many)
    report = (f"EFlow 1-step near={near1:.3f} mass_err={mass1:.3f} median={med1:.1f}std | 4-step near={near4:.3f} "
              f"mass_err={mass4:.3f} | FM 1-Euler near={fm_near:.3f} median={fm_med:.1f}std | FM 50-Euler near="
              f"{fm_many_near:.3f}")
    print(report)
    # EFlow: right mode masses, mostly on the modes, in ONE network evaluation
    assert mass1 < 0.05, report
    assert near1 > min_near, report
    assert mass4 < 0.05 and near4 > min_near_4, report
    # plain FM with one Euler step lands between the modes (its 50-step ODE is fine: the net learned)
    assert fm_near < 0.05 and fm_med > 10, report
    assert fm_many_near > 0.9, report


def test_one_step_samples_hit_modes_flow_matching_does_not():
    # measured (4000 steps, ~85 s on one busy core, incl. the MVA-off branch and the FM baseline): 1-step
    # near 0.932, mass error 0.024, median 0.6 std, 4-step near 0.990 (mass error 0.028); FM 1 Euler step
    # near 0.001 (median 15.9 std from every mode), FM 50 Euler steps 0.994. Same recipe, seeds 1, 2: 1-step
    # near 0.923, 0.928, mass errors 0.020, 0.008.
    _check_one_step_vs_flow_matching(steps=4000, mva_from=1000, fm_steps=2000, min_near=0.9, min_near_4=0.95)


@pytest.mark.slow
def test_one_step_samples_hit_modes_long():
    # measured (12000 steps, ~3 min on one busy core): 1-step near 0.959, mass error 0.018, median 0.5 std,
    # 4-step near 0.996 (mass error 0.023); FM 1 Euler step near 0.001, FM 50 Euler steps 0.997
    _check_one_step_vs_flow_matching(steps=12000, mva_from=6000, fm_steps=4000, min_near=0.93, min_near_4=0.97)


def test_mva_lowers_semigroup_defect():
    """The per-sample squared defect is heavy-tailed: its mean is dominated by the few x_t whose
    trajectories start near the boundaries between the modes' basins, where the exact map is
    discontinuous and any smooth network keeps a large defect whatever the loss (measured over seeds
    0-3 the mean moves by +-20% either way, MVA or not). The median measures the typical sample and
    is what MVA lowers: with the earlier recipe (SCM p = 0, FM 0.75 / SCM 0.25, 3000 steps) measured
    ratios on/off 0.74, 0.79, 0.81 for seeds 0, 1, 2 (0.50-0.59 with a 0.5 MVA share). With the
    current recipe (SCM p = 0.5, MVA share 0.5, 4000 steps, seed 0) measured median 0.00198 off vs
    0.00060 on (ratio 0.30; means 0.219 vs 0.025)."""
    pair = train_eflow_pair(4000, 1000)
    (off, off_mean), (on, on_mean) = semigroup_defect(*pair["off"]), semigroup_defect(*pair["on"])
    print(f"semigroup defect median (mean): MVA off {off:.5f} ({off_mean:.4f}), on {on:.5f} ({on_mean:.4f})")
    assert on < 0.6 * off, (off, on)


class ToyClassNet(ToyNet):
    """ToyNet plus a class embedding (label -1 = null -> a learned null embedding)."""

    def __init__(self, classes: int = MODES, hidden: int = 256):
        super().__init__(hidden)
        self.classes = classes
        self.embed = nn.Embedding(classes + 1, hidden)

    def forward(self, x, t, s, cond, guidance, weak=False):
        h = torch.cat([x, _time_features(t), _time_features(t - s), guidance[:, None] / 4], 1)
        h = nn.functional.silu(self.inp(h) + self.embed(torch.where(cond < 0, self.classes, cond)))
        if not weak:
            for layer in self.mid:
                h = h + nn.functional.silu(layer(h))
        return self.out(nn.functional.silu(self.pre(h)))


@one_thread()
def test_pdg_class_conditional_end_to_end():
    """PDG (Eq. 11) end to end on a class-conditional toy: label = mode. Measured (2000 steps,
    ~18 s): w=4 1-step right mode 1.000 with samples pushed outward (median radius 4.78 vs 3.86 at
    w=1: guidance extrapolates away from the weak path's blurry null prediction); w=1 1-step right
    1.000, near 0.959; 2-NFE CFG ODE baseline (w=2) right 1.000; weak path alone mode masses within
    5 points (it is a 2-layer MLP, so its samples are blurry: near 0.17)."""
    steps = 2000
    cfg = FlowConfig(guidance="pdg", adaptive_p=0.0, r_steps=steps)  # w ~ U(2.5, 4.5), p_drop 0.2
    torch.manual_seed(0)
    net = ToyClassNet()
    flow, ema = SolutionFlow(net, cfg), EMA(net, 0.995)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k / steps, 1.0))))
    gen = torch.Generator().manual_seed(1)
    weak_seen = 0
    for step in range(steps):
        k = torch.multinomial(WEIGHTS, 256, replacement=True, generator=gen)
        x0 = MEANS[k] + STD * torch.randn(256, 2, generator=gen)
        loss, logs = flow.loss(x0, k, step, generator=gen)
        weak_seen += logs["n_weak"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        ema.update()
    assert weak_seen == pytest.approx(0.2 * 0.75 * 256 * steps, rel=0.05)  # p_drop on the FM share
    labels = torch.arange(4000) % MODES

    def right_mode(x):
        return (torch.cdist(x, MEANS).argmin(1) == labels).float().mean().item()

    with ema.swapped():
        guided = flow.sample(NOISE, labels, steps=1, guidance=4.0)
        plain = flow.sample(NOISE, labels, steps=1, guidance=1.0)
        ode = flow.sample_ode(NOISE, labels, steps=50, guidance=2.0, cfg=True)  # 2-NFE CFG baseline

        # the weak path alone on the null condition (guidance input 0, as trained), Euler 50 steps
        def weak_net(x, t, s, c, g, weak=False):
            return net(x, t, s, c, torch.zeros_like(g), weak=True)

        weak = SolutionFlow(weak_net, cfg.replace(guidance="none")).sample_ode(
            NOISE, torch.full((4000,), -1), steps=50, cfg=False)
    r_guided, r_plain = guided.norm(dim=1).median().item(), plain.norm(dim=1).median().item()
    w_near, w_mass, _ = mode_stats(weak)
    report = (f"PDG 1-step w=4: right {right_mode(guided):.3f}, median radius {r_guided:.2f} | w=1: right "
              f"{right_mode(plain):.3f}, near {mode_stats(plain)[0]:.3f}, radius {r_plain:.2f} | CFG ODE right "
              f"{right_mode(ode):.3f} | weak path near {w_near:.3f}, mass_err {w_mass:.3f}")
    print(report)
    assert right_mode(guided) > 0.95 and right_mode(plain) > 0.95 and right_mode(ode) > 0.95, report
    assert mode_stats(plain)[0] > 0.9, report
    assert r_guided > r_plain + 0.3, report  # guidance does something, away from the weak prediction
    assert w_mass < 0.1, report


# --------------------------------------------------------------------------------------------------
# Algorithm 2 across steps with a weak-path guidance (issue 23), on EXACT flow maps
# --------------------------------------------------------------------------------------------------
def _posterior_mean(x, t, means, weights, std):
    """E[x0 | x_t] for x0 ~ sum_k weights_k N(means_k, std^2 I) and x_t = (1 - t) x0 + t x1.
    x (n, 2), t (n,), means (K, 2) or per row (n, K, 2), weights (K,). Returns (n, 2)."""
    means = means if means.ndim == 3 else means[None]
    t = t[:, None]
    var = (1 - t) ** 2 * std**2 + t**2
    d = x[:, None, :] - (1 - t[:, None]) * means
    resp = torch.softmax(-d.pow(2).sum(-1) / (2 * var) + weights.log()[None], dim=1)
    return (resp[..., None] * (means + ((1 - t) * std**2 / var)[:, None] * d)).sum(1)


class ExactWeakGuidedMap(nn.Module):
    """The exact solution map of the PDG-guided ODE of the toy data, following the network protocol:
    v_g = w v(x_t, t, c) + (1 - w) v_weak(x_t, t) (Eq. 11) with the exact class-conditional velocity and,
    as the weak path, the exact velocity of a BLURRED unconditional mixture (mode std `weak_std` > STD):
    like the video models' weak path, a worse denoiser than the full path at every noise level.
    f(x, t, s) integrates v_g from t to s (`substeps` Euler steps, fp64); returns F = (f - x) / (s - t)."""

    def __init__(self, weak_std: float = 0.5, substeps: int = 100):
        super().__init__()
        self.weak_std, self.substeps = weak_std, substeps

    def velocity(self, x, t, cond, w):
        means = MEANS.double()
        e_c = _posterior_mean(x, t, means[cond][:, None], torch.ones(1, dtype=x.dtype), STD)
        e_weak = _posterior_mean(x, t, means, WEIGHTS.double(), self.weak_std)
        return (x - (w[:, None] * e_c + (1 - w[:, None]) * e_weak)) / t[:, None]  # v = (x_t - E[x0|x_t]) / t

    def forward(self, x, t, s, cond, guidance, weak=False):
        x, t, s, w = x.double(), t.double(), s.double(), guidance.double()
        h = (s - t) / self.substeps
        y, a = x, t
        for _ in range(self.substeps):
            y = y + h[:, None] * self.velocity(y, a, cond, w)
            a = a + h
        return ((y - x) / (s - t)[:, None]).float()


def test_algorithm2_more_steps_do_not_hurt_at_the_default_guidance():
    """Issue 23: with a weak-path guidance, w (v - v_weak) at low noise extrapolates away from the weak
    path's missing detail; every re-noised step of Algorithm 2 starts at low noise (shift 3: t = 0.75,
    0.5 for 4 steps) and runs the whole guided map to 0 again. Quality: |log(median distance to the
    class's mode / the data's)|, 0 for the data. Measured (exact maps, weak std 0.5, guidance 4, 2000
    points, noise seeds 0-1, 1 / 2 / 4 / 8 steps; 4000 points and seeds 0-2 agree to 0.03): w at every
    step (guidance_t_min=0, Algorithm 2 as App. B.3 prints it) 2.35 / 3.32 / 2.57 / 1.87, the spread
    collapses more at 2 and 4 steps than at 1; the default (guidance only at t_n >= 0.8) 2.35 / 0.02-0.05
    / 0.00-0.01 / 0.01-0.02; right mode 1.000 everywhere. ~4 s on one thread. The shipped actions-b:
    probe-FD 40.8 / 118.1 / 127.1 / 94.1 against 40.8 / 9.4 / 10.4 / 8.3.
    The trained 2-D PDG toy above does not show the failure, hence exact maps here: there the 1-step map at
    w = 4 is the worst sample (near 0.60-0.73 over seeds 0-2, more steps reach 1.00), and its conditional
    map (guidance input 1) from t = 0.75 is poorly learned (2 steps at w = 1: near 0.48-1.00), since only
    the FM share's p_unguided rows see guidance 1."""
    n = 2000
    labels = torch.arange(n) % MODES
    data_spread = STD * math.sqrt(2 * math.log(2))  # median of a 2-D Gaussian's radius
    flow = SolutionFlow(ExactWeakGuidedMap(), FlowConfig(guidance="pdg"))

    def quality(t_min, steps, seed):
        noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(100 + seed))
        x = flow.sample(noise, labels, steps, 4.0, generator=torch.Generator().manual_seed(seed), guidance_t_min=t_min)
        d = (x - MEANS[labels]).norm(dim=1)
        right = (torch.cdist(x, MEANS).argmin(1) == labels).float().mean().item()
        return abs(math.log(d.median().item() / data_spread)), right

    with one_thread():
        for seed in (0, 1):
            new = {k: quality(None, k, seed) for k in (1, 2, 4, 8)}      # the default: config.guidance_t_min
            old = {k: quality(0.0, k, seed) for k in (1, 2, 4)}
            report = f"seed {seed}: default {new} | guidance at every step {old}"
            print(report)
            for k in (2, 4, 8):  # more steps never hurt: detail and class no worse than 1 step
                assert new[k][0] <= new[1][0] + 0.1 and new[k][1] >= new[1][1] - 0.01, report
            assert old[2][0] > old[1][0] + 0.5 and old[4][0] > old[1][0] + 0.1, report  # the failure it fixes
