"""Solution-flow objectives and samplers (eflow_core/flow): Lemma 1, time sampling, batch plumbing,
samplers' NFE and schedules, EMA, determinism. The 2-D training tests are in test_flow_toy.py."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from eflow_core.conditioning import NULL_LABEL, TextCondition
from eflow_core.config import FlowConfig
from eflow_core.flow import (
    EMA,
    SolutionFlow,
    adaptive_weight,
    flow_matching_loss,
    guided_velocity,
    inference_schedule,
    intermediate_ratio,
    mix_velocity,
    mva_grid,
    mva_loss,
    mva_residual,
    sample_logit_normal,
    sample_mva_times,
    sample_scm_times,
    shift_time,
    solution_consistency_loss,
    row_count,
    split_batch,
)


# ------------------------------------------------------------------------------------------------
# Lemma 1 (App. A.2): the MVA residual equals the semigroup defect, for any solution map g
# ------------------------------------------------------------------------------------------------
class _TinyF(nn.Module):
    """A random small MLP F(x, t, s) on flattened x; g = x + (s - t) F is an Euler-parameterised map."""

    def __init__(self, dim: int, dtype: torch.dtype):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(dim + 2, 32), nn.Tanh(), nn.Linear(32, dim)).to(dtype)

    def forward(self, x, t, s):
        h = torch.cat([x.flatten(1), t[:, None].to(x.dtype), s[:, None].to(x.dtype)], 1)
        return self.net(h).reshape(x.shape)


def _g_mlp(F):
    def g(x, a, b):
        return x + (b - a).reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype) * F(x, a, b)
    return g


def _g_nonlinear(x, a, b):
    """Hand-written nonlinear map with g(x, a, a) = x but no semigroup property."""
    e = lambda z: z.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)  # noqa: E731
    d = e(b - a)
    return x + d * torch.tanh(x * e(a) + 0.3) + d.pow(2) * torch.sin(3 * x) * e(1 + b)


def _triples(n, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 3, generator=g).sort(dim=1, descending=True).values
    u[:, 0] += 0.05  # t > l > s with margins
    u[:, 2] -= 0.05
    return u[:, 0].to(dtype), u[:, 1].to(dtype), u[:, 2].to(dtype)


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shape", [(16, 3), (8, 2, 4, 5)])
@pytest.mark.parametrize("kind", ["mlp_euler", "nonlinear"])
def test_lemma1_mva_residual_is_semigroup_defect(dtype, rtol, shape, kind):
    torch.manual_seed(1)
    x_t = torch.randn(shape, dtype=dtype)
    t, l, s = _triples(shape[0], dtype)
    dim = math.prod(shape[1:])
    g = _g_mlp(_TinyF(dim, dtype)) if kind == "mlp_euler" else _g_nonlinear
    with torch.no_grad():
        # boundary condition holds, so Lemma 1's hypothesis is met
        torch.testing.assert_close(g(x_t, t, t), x_t, rtol=0, atol=0)
        g_ts, g_tl = g(x_t, t, s), g(x_t, t, l)
        g_ls = g(g_tl, l, s)
        residual = mva_residual(x_t, g_ts, g_tl, g_ls, t, l, s)
        defect = g_ls - g_ts
    scale = max(x_t.abs().max().item(), g_ts.abs().max().item())
    assert defect.abs().max().item() > 1e-3 * scale, "a map with a real semigroup defect is needed"
    assert (residual - defect).abs().max().item() <= rtol * 10 * scale
    # the MVA loss (Eq. 12) is the per-sample squared defect
    expected = defect.pow(2).flatten(1).mean(1)
    torch.testing.assert_close(mva_loss(g_ts, g_ls), expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(mva_loss(g_ts, g_ls), residual.pow(2).flatten(1).mean(1), rtol=1e-4, atol=0)


def test_mva_residual_zero_for_exact_flow():
    """For an exact flow (here x -> x * exp(s - t), the solution map of dx/dt = x) the defect is zero."""
    x_t = torch.randn(10, 4, dtype=torch.float64)
    t, l, s = _triples(10, torch.float64)

    def g(x, a, b):
        return x * torch.exp(b - a)[:, None]

    g_tl = g(x_t, t, l)
    r = mva_residual(x_t, g(x_t, t, s), g_tl, g(g_tl, l, s), t, l, s)
    assert r.abs().max().item() < 1e-12


# ------------------------------------------------------------------------------------------------
# per-sample losses
# ------------------------------------------------------------------------------------------------
def test_flow_matching_loss_adaptive_weight_is_detached():
    pred = torch.randn(5, 3, 4, requires_grad=True)
    target = torch.randn(5, 3, 4)
    loss, mse = flow_matching_loss(pred, target, p=1.0, eps=0.01)
    ref_mse = (pred - target).pow(2).mean(dim=(1, 2))
    torch.testing.assert_close(mse, ref_mse.detach())
    torch.testing.assert_close(loss, ref_mse / (ref_mse.detach() + 0.01))
    loss.sum().backward()
    # gradient of sg(w) * mse: 2 (pred - target) / D * w (w not differentiated)
    w = 1.0 / (ref_mse.detach() + 0.01)
    grad = 2 * (pred - target).detach() / 12 * w[:, None, None]
    torch.testing.assert_close(pred.grad, grad)
    torch.testing.assert_close(adaptive_weight(torch.tensor([0.99]), p=2.0, eps=0.01), torch.tensor([1.0]))


def test_solution_consistency_weight_matches_eq4():
    f_t = torch.randn(4, 6, requires_grad=True)
    f_l = torch.randn(4, 6)
    t = torch.tensor([0.9, 0.8, 0.5, 0.3])
    l = torch.tensor([0.89, 0.7, 0.45, 0.299])
    s = torch.tensor([0.1, 0.0, 0.2, 0.05])
    loss, mse_q = solution_consistency_loss(f_t, f_l, t, l, s, p=1.0, eps=0.01)
    mse = (f_t - f_l).pow(2).mean(1).detach()
    w = 1.0 / ((t - l) * (t - s)) / (mse / (t - l) ** 2 + 0.01)
    torch.testing.assert_close(loss, w * (f_t - f_l).pow(2).mean(1))
    torch.testing.assert_close(mse_q, mse / (t - l) ** 2)
    half, _ = solution_consistency_loss(f_t, f_l, t, l, s, p=1.0, eps=0.01, scale=0.5)
    torch.testing.assert_close(half, 0.5 * loss)


def test_guided_velocity_and_mix():
    v, vu, vp = torch.randn(3, 2), torch.randn(3, 2), torch.randn(3, 2)
    w = torch.tensor([1.0, 2.5, 4.0])
    g = guided_velocity(v, vu, w)
    torch.testing.assert_close(g, w[:, None] * v + (1 - w[:, None]) * vu)  # Eq. 11
    torch.testing.assert_close(g[0], v[0])  # w = 1: the plain velocity
    torch.testing.assert_close(mix_velocity(g, vp, 0.25), 0.25 * g + 0.75 * vp)
    torch.testing.assert_close(mix_velocity(g, vp, 1.0), g)


# ------------------------------------------------------------------------------------------------
# times
# ------------------------------------------------------------------------------------------------
def test_shift_formula():
    t = torch.linspace(0, 1, 11)
    torch.testing.assert_close(shift_time(t, 3.0), 3 * t / (1 + 2 * t))
    assert shift_time(0.5, 3.0) == pytest.approx(0.75)
    assert shift_time(0.0, 3.0) == 0.0 and shift_time(1.0, 3.0) == 1.0
    torch.testing.assert_close(shift_time(t, 1.0), t)
    assert (shift_time(t, 3.0).diff() > 0).all()


def test_logit_normal_distribution_and_generator():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = sample_logit_normal(20000, 0.0, 1.0, 3.0, generator=g1)
    b = sample_logit_normal(20000, 0.0, 1.0, 3.0, generator=g2)
    assert torch.equal(a, b) and a.dtype == torch.float32
    assert (a > 0).all() and (a < 1).all()
    # median of sigmoid(u) is sigmoid(mu) = 0.5; the shift maps the median to 0.75
    assert a.median().item() == pytest.approx(0.75, abs=0.01)
    s = sample_logit_normal(20000, -1.0, 0.8, 1.0, generator=g1)
    assert s.median().item() == pytest.approx(1 / (1 + math.e), abs=0.01)
    # quartiles of u map through sigmoid (std of u is sigma)
    q = torch.quantile(torch.logit(s.double()), torch.tensor([0.25, 0.75], dtype=torch.float64))
    assert (q[1] - q[0]).item() == pytest.approx(2 * 0.6745 * 0.8, rel=0.05)


def test_r_schedule_endpoints_and_log_linear():
    assert intermediate_ratio(0, 0.1, 0.002, 1000) == pytest.approx(0.1)
    assert intermediate_ratio(1000, 0.1, 0.002, 1000) == pytest.approx(0.002)
    assert intermediate_ratio(5000, 0.1, 0.002, 1000) == pytest.approx(0.002)  # held after r_steps
    assert intermediate_ratio(500, 0.1, 0.002, 1000) == pytest.approx(math.sqrt(0.1 * 0.002))
    r = [intermediate_ratio(k, 0.1, 0.002, 1000) for k in range(0, 1001, 100)]
    logs = [math.log(x) for x in r]
    steps = [b - a for a, b in zip(logs, logs[1:])]
    assert max(steps) == pytest.approx(min(steps), rel=1e-9) and steps[0] < 0


def test_scm_times_ordering_and_schedule():
    cfg = FlowConfig(r_steps=100)
    g = torch.Generator().manual_seed(0)
    for step in (0, 50, 100):
        r = intermediate_ratio(step, cfg.r_start, cfg.r_end, cfg.r_steps)
        t, l, s = sample_scm_times(50000, cfg, r, generator=g)
        assert (t <= 1).all() and (s >= 0).all()
        assert (t - l >= cfg.min_gap * (1 - 1e-4)).all() and (l - s >= cfg.min_gap * (1 - 1e-4)).all()
        assert (t > l).all() and (l > s).all()
        free = (t - s) * r > 2 * cfg.min_gap  # where no clamp applies, l = t + (s - t) r exactly
        assert free.float().mean() > 0.5 or step == 100
        torch.testing.assert_close(l[free], (t + (s - t) * r)[free])
    # t from its own (shifted) distribution: most t are large, most s small
    assert t.median() > 0.6 and s.median() < 0.35


def test_mva_grid_and_triples():
    grid = mva_grid(64, 3.0)
    assert grid.shape == (64,) and grid[0] == 0 and grid[-1] == 1
    torch.testing.assert_close(grid, shift_time(torch.linspace(0, 1, 64), 3.0))
    g = torch.Generator().manual_seed(0)
    t, l, s = sample_mva_times(20000, grid, generator=g)
    assert (t > l).all() and (l > s).all()
    for v in (t, l, s):
        assert torch.isin(v, grid).all()
    # all K choose 3 triples are possible: t hits 1 and s hits 0 sometimes
    assert (t == 1).any() and (s == 0).any()


def test_inference_schedule():
    for n in (1, 2, 4, 8):
        ts = inference_schedule(n, 3.0)
        assert ts.shape == (n + 1,) and ts[0].item() == 1.0 and ts[-1].item() == 0.0
        assert (ts.diff() < 0).all()
        torch.testing.assert_close(ts, shift_time(torch.linspace(1, 0, n + 1), 3.0))
    assert inference_schedule(2, 3.0)[1].item() == pytest.approx(0.75)


# ------------------------------------------------------------------------------------------------
# plumbing through a recording fake network
# ------------------------------------------------------------------------------------------------
class RecordingNet(nn.Module):
    """F = a x + b (1 + t - s) + c guidance + 0.3 weak (so losses have gradients and the branches
    differ); records every call."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.5))
        self.b = nn.Parameter(torch.tensor(0.1))
        self.c = nn.Parameter(torch.tensor(0.05))
        self.calls: list[dict] = []

    def forward(self, x_t, t, s, cond, guidance, weak=False):
        assert t.shape == s.shape == guidance.shape == (x_t.shape[0],)
        assert t.dtype == s.dtype == guidance.dtype == torch.float32
        e = lambda z: z.reshape(-1, *([1] * (x_t.ndim - 1)))  # noqa: E731
        out = self.a * x_t + self.b * e(1 + t - s) + self.c * e(guidance) + 0.3 * float(weak)
        self.calls.append(dict(n=x_t.shape[0], weak=weak, grad=torch.is_grad_enabled(), t=t.clone(),
                               s=s.clone(), g=guidance.clone(), cond=cond, x=x_t.detach().clone(),
                               out=out.detach().clone()))
        return out


@pytest.mark.parametrize("batch,ratios,expected", [
    (16, (0.75, 0.25, 0.0), (12, 4, 0)),
    (16, (0.5, 0.25, 0.25), (8, 4, 4)),
    (10, (0.75, 0.25, 0.0), (8, 2, 0)),
    (4, (0.9, 0.1, 0.0), (3, 1, 0)),      # the positive SCM share gets its one sample
    (3, (0.5, 0.25, 0.25), (1, 1, 1)),
    (2, (0.5, 0.25, 0.25), (1, 1, 0)),    # too small for three shares
    (7, (1.0, 0.0, 0.0), (7, 0, 0)),
    (8, (3.0, 1.0, 0.0), (6, 2, 0)),      # ratios are normalised
])
def test_split_batch(batch, ratios, expected):
    assert split_batch(batch, *ratios) == expected
    assert sum(split_batch(batch, *ratios)) == batch


@pytest.mark.parametrize("p, n, expected", [(0.2, 3000, 600), (0.2, 7, 1), (0.2, 2, 1), (0.2, 1, 0), (0.0, 50, 0),
                                          (0.1, 1200, 120), (0.5, 5, 2)])
def test_row_count_rounds_and_keeps_every_path_training(p, n, expected):
    assert row_count(p, n) == expected


def test_pdg_drop_routes_to_weak_path():
    """PDG: round(p_drop n_fm) FM rows train the weak path (null condition, guidance 0, plain FM); of
    the rest round(p_unguided n) train unguided (guidance 1), the others guided (w). Stage by stage the
    network is called once per path: stage 1 (no grad) full path for SCM's own velocity, weak path for
    every guided row's v_uncond; stage 2 the SCM target; stage 3 (grad) full path, then weak path."""
    net = RecordingNet()
    cfg = FlowConfig(guidance="pdg", fm_ratio=0.75, scm_ratio=0.25, p_drop=0.2, p_unguided=0.1)
    flow = SolutionFlow(net, cfg)
    x0 = torch.randn(4000, 3, 2)
    labels = torch.randint(0, 10, (4000,))
    loss, logs = flow.loss(x0, labels, step=0, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and net.a.grad is not None
    n_fm, n_scm, n_weak, n_ung = 3000, 1000, 600, 240
    assert [(c["weak"], c["grad"]) for c in net.calls] == [(False, False), (True, False), (False, False),
                                                            (False, True), (True, True)]
    scm_pred, weak_target, scm_target, full_grad, weak_grad = net.calls
    assert (weak_grad["n"], logs["n_weak"], logs["n_unguided"]) == (n_weak, n_weak, n_ung) and "weak_fm" in logs
    assert (weak_grad["cond"] == NULL_LABEL).all() and (weak_grad["g"] == 0).all()
    assert torch.equal(weak_grad["t"], weak_grad["s"])
    # the full-path grad call: the FM rows left (conditional; 1 for the unguided, w for the rest), then SCM
    w = logs["guidance"]
    assert 2.5 <= w <= 4.5 and full_grad["n"] == n_fm - n_weak + n_scm and (full_grad["cond"] >= 0).all()
    fm_g, scm_g = full_grad["g"][: n_fm - n_weak], full_grad["g"][n_fm - n_weak:]
    assert (fm_g[:n_ung] == 1).all() and torch.allclose(fm_g[n_ung:], torch.tensor(w))
    assert torch.equal(full_grad["t"][: n_fm - n_weak], full_grad["s"][: n_fm - n_weak])
    # SCM: no drops with PDG (Algorithm 1 drops only in the FM share), grad pass at (t, s) with t > s
    assert torch.allclose(scm_g, torch.tensor(w)) and (full_grad["t"][n_fm - n_weak:] > full_grad["s"][n_fm - n_weak:]).all()
    # weak no_grad call (PDG targets): null condition, guidance 0, at (t, t): FM guided rows + SCM rows
    assert weak_target["n"] == n_fm - n_weak - n_ung + n_scm
    assert (weak_target["cond"] == NULL_LABEL).all() and (weak_target["g"] == 0).all()
    assert torch.equal(weak_target["t"], weak_target["s"])
    assert scm_pred["n"] == scm_target["n"] == n_scm


def test_guided_targets_fm_and_scm():
    """FM target = m (w v + (1 - w) v_weak) + (1 - m) sg(F) (Eq. 11 + SoFlow's mix); SCM target point
    x_l = x_t + v_tgt (l - t) with v_tgt built the same way from an extra no_grad (t, t) pass; the FM
    loss is the adaptively weighted MSE and the total is the per-sample sum over B."""
    net = RecordingNet()
    cfg = FlowConfig(guidance="pdg", fm_ratio=0.5, scm_ratio=0.5, p_drop=0.0, p_unguided=0.0, velocity_mix=0.25)
    flow = SolutionFlow(net, cfg)
    x0 = torch.randn(8, 3)
    labels = torch.arange(8)
    loss, logs = flow.loss(x0, labels, step=0, generator=torch.Generator().manual_seed(4))
    w, m = logs["guidance"], 0.25
    scm_pred, weak, scm_target, grad = net.calls
    assert (scm_pred["grad"], weak["weak"], scm_target["grad"], grad["grad"]) == (False, True, False, True)
    rows = lambda call, a, b: {k: (v[a:b] if isinstance(v, torch.Tensor) else v) for k, v in call.items()}  # noqa: E731
    fm, scm_grad = rows(grad, 0, 4), rows(grad, 4, 8)
    fm_weak, scm_weak = rows(weak, 0, 4), rows(weak, 4, 8)

    def velocity(call, x0_rows):  # x_t = (1 - t) x0 + t x1  =>  v = x1 - x0 = (x_t - x0) / t
        return (call["x"] - x0_rows) / call["t"][:, None]

    v = velocity(fm, x0[:4])
    target = m * (w * v + (1 - w) * fm_weak["out"]) + (1 - m) * fm["out"]
    mse = (fm["out"] - target).pow(2).mean(1)
    assert logs["fm"] == pytest.approx(mse.mean().item(), rel=1e-5)
    # SCM: the target pass starts from x_l = x_t + v_tgt (l - t) and jumps to the same s
    v = velocity(scm_grad, x0[4:])
    v_tgt = m * (w * v + (1 - w) * scm_weak["out"]) + (1 - m) * scm_pred["out"]
    t, l = scm_grad["t"], scm_target["t"]
    torch.testing.assert_close(scm_target["x"], scm_grad["x"] + v_tgt * (l - t)[:, None])
    assert torch.equal(scm_target["s"], scm_grad["s"]) and (l < t).all() and (l > scm_grad["s"]).all()
    assert torch.allclose(scm_pred["g"], torch.tensor(w)) and torch.equal(scm_pred["t"], scm_pred["s"])
    # total: sum of per-sample weighted losses / B (SoFlow's share means weighted by n_k / B)
    f_t = scm_grad["x"] + (scm_grad["s"] - t)[:, None] * scm_grad["out"]
    f_l = scm_target["x"] + (scm_target["s"] - l)[:, None] * scm_target["out"]
    scm_loss, _ = solution_consistency_loss(f_t, f_l, t, l, scm_grad["s"])
    fm_loss = mse / (mse + 0.01)
    assert loss.item() == pytest.approx((fm_loss.sum() + scm_loss.sum()).item() / 8, rel=1e-4)


@pytest.mark.parametrize("scm_p", [None, 0.5, 1.0])
def test_scm_adaptive_p_sets_only_the_scm_weight(scm_p):
    """FlowConfig.scm_adaptive_p replaces p in the SCM weight of Eq. 4 only (None: adaptive_p for both);
    the FM weight keeps adaptive_p (here 0, i.e. plain MSE)."""
    net = RecordingNet()
    flow = SolutionFlow(net, FlowConfig(guidance="none", fm_ratio=0.5, scm_ratio=0.5, adaptive_p=0.0,
                                        scm_adaptive_p=scm_p))
    loss, logs = flow.loss(torch.randn(8, 3), None, step=0, generator=torch.Generator().manual_seed(3))
    scm_target, grad = net.calls
    scm_grad = {k: (v[4:] if isinstance(v, torch.Tensor) else v) for k, v in grad.items()}
    t, l, s = scm_grad["t"], scm_target["t"], scm_grad["s"]
    f_t = scm_grad["x"] + (s - t)[:, None] * scm_grad["out"]
    f_l = scm_target["x"] + (s - l)[:, None] * scm_target["out"]
    p = 0.0 if scm_p is None else scm_p
    scm_loss, mse_q = solution_consistency_loss(f_t, f_l, t, l, s, p=p, eps=0.01)
    assert logs["scm_w"] == pytest.approx((mse_q + 0.01).pow(-p).mean().item(), rel=1e-5)
    fm_sum = logs["fm"] * logs["n_fm"]  # p = 0: the FM per-sample loss is the raw MSE
    assert loss.item() == pytest.approx((fm_sum + scm_loss.sum().item()) / 8, rel=1e-4)


def test_cfg_mode_uses_full_path_null_pass():
    net = RecordingNet()
    flow = SolutionFlow(net, FlowConfig(guidance="cfg", p_drop=0.2))
    x0 = torch.randn(2000, 4)
    labels = torch.randint(0, 5, (2000,))
    _, logs = flow.loss(x0, labels, step=0, generator=torch.Generator().manual_seed(1))
    assert not any(c["weak"] for c in net.calls)
    # stage 1: one full-path call; v_uncond of the guided FM rows comes first (null condition, guidance 1)
    stage1 = net.calls[0]
    n_fm, n_drop, n_ung = 1500, 300, round(0.1 * 1200)
    uncond = stage1["cond"][: n_fm - n_drop - n_ung]
    assert not stage1["grad"] and (uncond == NULL_LABEL).all() and (stage1["g"][: uncond.numel()] == 1).all()
    grad = [c for c in net.calls if c["grad"]]
    assert len(grad) == 1
    dropped = grad[0]["cond"] == NULL_LABEL  # CFG drops stay on the full path, guidance input 1
    assert dropped[:n_fm].sum() == n_drop == logs["n_dropped"] and dropped[n_fm:].sum() == round(0.2 * 500)
    assert (grad[0]["g"][dropped] == 1).all()


def test_none_mode_plain_targets():
    net = RecordingNet()
    flow = SolutionFlow(net, FlowConfig(guidance="none"))
    x0 = torch.randn(64, 4)
    loss, logs = flow.loss(x0, None, step=0, generator=torch.Generator().manual_seed(1))
    assert all(not c["weak"] for c in net.calls) and all((c["g"] == 1).all() for c in net.calls)
    # the SCM target, then FM and SCM in one gradient pass: no guidance passes at all
    assert [c["grad"] for c in net.calls] == [False, True] and net.calls[1]["n"] == 64
    assert logs["guidance"] == 1.0 and logs["n_fm"] == 48 and logs["n_scm"] == 16


def test_text_condition_is_nulled_through_helpers():
    net = RecordingNet()
    flow = SolutionFlow(net, FlowConfig(guidance="pdg", p_drop=0.5))
    b = 256
    cond = TextCondition(torch.randn(b, 5, 8), torch.ones(b, 5, dtype=torch.bool))
    flow.loss(torch.randn(b, 3), cond, step=0, generator=torch.Generator().manual_seed(2))
    weak = [c for c in net.calls if c["weak"]]
    assert weak and all(c["cond"].is_null.all() for c in weak)
    full = [c for c in net.calls if not c["weak"]]
    assert all(not c["cond"].is_null.any() for c in full)


def test_mva_share_uses_grid_and_stop_gradient_passes():
    net = RecordingNet()
    cfg = FlowConfig(guidance="none", fm_ratio=0.5, scm_ratio=0.25, mva_ratio=0.25)
    flow = SolutionFlow(net, cfg)
    loss, logs = flow.loss(torch.randn(32, 2), None, step=0, generator=torch.Generator().manual_seed(0))
    assert "mva" in logs and logs["n_mva"] == 8
    first, targets, grad = net.calls               # MVA's rows are the last 8 of each call
    assert [c["grad"] for c in net.calls] == [False, False, True] and [c["n"] for c in net.calls] == [8, 16, 32]
    grid = mva_grid(64, 3.0)
    (ts, ss), (t1, l1), (l2, s2) = [(c["t"][-8:], c["s"][-8:]) for c in (grad, first, targets)]
    assert torch.equal(ts, t1) and torch.equal(l1, l2) and torch.equal(ss, s2)  # f(x,t,s) vs f(f(x,t,l),l,s)
    assert (ts > l1).all() and (l1 > ss).all() and torch.isin(torch.cat([ts, l1, ss]), grid).all()
    # ratios are read from flow.config at every call (a trainer swaps it per phase)
    flow.config = cfg.replace(mva_ratio=0.0, fm_ratio=0.75)
    _, logs = flow.loss(torch.randn(32, 2), None, step=0, generator=torch.Generator().manual_seed(0))
    assert "mva" not in logs and logs["n_fm"] == 24


def test_loss_is_deterministic_with_generator():
    def run(seed):
        torch.manual_seed(123)  # the net's init
        net = RecordingNet()
        flow = SolutionFlow(net, FlowConfig(guidance="pdg", mva_ratio=0.2, fm_ratio=0.55))
        return flow.loss(torch.ones(40, 3), torch.arange(40) % 3, step=7, generator=torch.Generator().manual_seed(seed))

    (l1, logs1), (l2, logs2), (l3, _) = run(0), run(0), run(1)
    assert l1.item() == l2.item() and logs1 == logs2 and l1.item() != l3.item()


@pytest.mark.parametrize("t_min, guided_steps", [(None, 2), (0.0, 4), (0.95, 1), (0.5, 4)])
def test_sample_nfe_and_algorithm2(t_min, guided_steps):
    """Algorithm 2 with the guidance across steps: w for the steps starting at t_n >= guidance_t_min
    (default config.guidance_t_min = 0.8: t_n = 1, 0.9 of the 4-step shift-3 schedule 1, 0.9, 0.75, 0.5)
    and 1 below; guidance_t_min=0 is Algorithm 2 as printed (w at every step). The first step is always
    guided."""
    net = RecordingNet()
    flow = SolutionFlow(net, FlowConfig(guidance="pdg", inference_shift=3.0))
    assert flow.config.guidance_t_min == 0.8
    noise = torch.randn(6, 2, 3)
    seen = []
    out = flow.sample(noise, torch.zeros(6, dtype=torch.long), steps=4, guidance=3.0,
                      generator=torch.Generator().manual_seed(0), callback=lambda i, n, x: seen.append((i, n)),
                      guidance_t_min=t_min)
    assert len(net.calls) == 4 and seen == [(i, 4) for i in range(4)]
    sched = inference_schedule(4, 3.0)
    ws = [3.0 if i < guided_steps else 1.0 for i in range(4)]
    for i, c in enumerate(net.calls):
        assert torch.allclose(c["t"], sched[i].expand(6)) and (c["s"] == 0).all() and (c["g"] == ws[i]).all()
        assert not c["weak"] and not c["grad"]
    # reproduce Algorithm 2 by hand with the same generator
    g = torch.Generator().manual_seed(0)
    x = noise.clone()
    a, b, c = net.a.item(), net.b.item(), net.c.item()
    for i in range(4):
        t, t_next = sched[i].item(), sched[i + 1].item()
        x0 = x + (0 - t) * (a * x + b * (1 + t) + c * ws[i])
        x = t_next * torch.randn(noise.shape, generator=g) + (1 - t_next) * x0 if t_next > 0 else x0
    torch.testing.assert_close(out, x)
    assert out.shape == noise.shape and out.dtype == noise.dtype


def test_sample_guidance_t_min_from_config():
    """The config's guidance_t_min is the default; 0 in the config gives w at every step."""
    net = RecordingNet()
    flow = SolutionFlow(net, FlowConfig(guidance="pdg", inference_shift=3.0, guidance_t_min=0.0))
    flow.sample(torch.randn(3, 2, 3), torch.zeros(3, dtype=torch.long), steps=4, guidance=2.5,
                generator=torch.Generator().manual_seed(0))
    assert [c["g"][0].item() for c in net.calls] == [2.5] * 4


def test_sample_ode_nfe_and_cfg_combination():
    net = RecordingNet()
    flow = SolutionFlow(net, FlowConfig(guidance="pdg"))
    noise = torch.randn(3, 4)
    labels = torch.tensor([1, 2, 3])
    flow.sample_ode(noise, labels, steps=5, guidance=4.0, cfg=True)
    assert len(net.calls) == 10
    cond_calls, uncond_calls = net.calls[0::2], net.calls[1::2]
    assert all(not c["weak"] and (c["g"] == 1).all() and torch.equal(c["cond"], labels) for c in cond_calls)
    assert all(c["weak"] and (c["g"] == 0).all() and (c["cond"] == NULL_LABEL).all() for c in uncond_calls)
    net.calls.clear()
    flow.sample_ode(noise, labels, steps=5, guidance=4.0, cfg=False)
    assert len(net.calls) == 5 and all((c["g"] == 4.0).all() for c in net.calls)
    # Euler on v = v_u + w (v_c - v_u) with one step from 1 to 0, by hand
    net.calls.clear()
    out = flow.sample_ode(noise, labels, steps=1, guidance=4.0, cfg=True)
    with torch.no_grad():
        v_c = net.a * noise + net.b + net.c * 1.0        # full path, guidance input 1
        v_u = net.a * noise + net.b + net.c * 0.0 + 0.3  # weak path, guidance input 0
        torch.testing.assert_close(out, noise - (v_u + 4.0 * (v_c - v_u)))
    # CFG-trained models take the unconditional velocity from the full path (guidance input 1)
    net.calls.clear()
    SolutionFlow(net, FlowConfig(guidance="cfg")).sample_ode(noise, labels, steps=2, cfg=True)
    assert [c["weak"] for c in net.calls] == [False] * 4 and (net.calls[1]["g"] == 1).all()


def test_sample_determinism():
    torch.manual_seed(0)
    net = nn.Linear(2, 2)
    flow = SolutionFlow(lambda x, t, s, c, g, weak=False: net(x) * t[:, None], FlowConfig())
    noise = torch.randn(5, 2)
    a = flow.sample(noise, None, 3, generator=torch.Generator().manual_seed(9))
    b = flow.sample(noise, None, 3, generator=torch.Generator().manual_seed(9))
    c = flow.sample(noise, None, 3, generator=torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_solution_map_eq2():
    net = RecordingNet()
    flow = SolutionFlow(net, FlowConfig())
    x = torch.randn(4, 3)
    t, s = torch.full((4,), 0.8), torch.full((4,), 0.3)
    out = flow.solution(x, t, s, None, torch.ones(4))
    torch.testing.assert_close(out, x + (s - t)[:, None] * (net.a * x + net.b * 1.5 + net.c))
    torch.testing.assert_close(flow.solution(x, 0.5, 0.5, None, 1.0), x)  # boundary condition


# ------------------------------------------------------------------------------------------------
# EMA
# ------------------------------------------------------------------------------------------------
def test_ema_math_swap_and_state():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(0.0)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.bias.fill_(1.0)
    ema.update()
    torch.testing.assert_close(ema.shadow["weight"], torch.full((2, 3), 1.1))
    ema.update()
    torch.testing.assert_close(ema.shadow["weight"], torch.full((2, 3), 0.9 * 1.1 + 0.1 * 2.0))
    torch.testing.assert_close(ema.shadow["bias"], torch.full((2,), 0.9 * 0.1 + 0.1))
    with ema.swapped() as m:
        assert m is model
        torch.testing.assert_close(model.weight, torch.full((2, 3), 1.19))
    torch.testing.assert_close(model.weight, torch.full((2, 3), 2.0))  # trained weights back
    with pytest.raises(RuntimeError):
        with ema.swapped():
            raise RuntimeError("boom")
    torch.testing.assert_close(model.weight, torch.full((2, 3), 2.0))
    state = ema.state_dict()
    other = EMA(nn.Linear(3, 2), decay=0.5)
    other.load_state_dict(state)
    assert other.decay == 0.9 and other.num_updates == 2
    torch.testing.assert_close(other.shadow["weight"], ema.shadow["weight"])
    target = nn.Linear(3, 2)
    other.copy_to(target)
    torch.testing.assert_close(target.weight, torch.full((2, 3), 1.19))
    with pytest.raises(KeyError):
        other.load_state_dict({"shadow": {"weight": torch.zeros(2, 3)}})


def test_ema_bf16_parameters_keep_fp32_shadow():
    model = nn.Linear(4, 4).to(torch.bfloat16)
    ema = EMA(model, decay=0.999)
    before = ema.shadow["weight"].clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update()
    assert ema.shadow["weight"].dtype == torch.float32
    # a 1e-3 step is kept in fp32 (bf16 would round most of it away)
    torch.testing.assert_close(ema.shadow["weight"] - before, torch.full((4, 4), 1e-3), atol=1e-5, rtol=0)


def test_ema_bias_correction_recovers_the_average_of_trained_weights():
    """A plain EMA that started at theta_0 and then saw a constant theta: correction gives theta exactly."""
    from eflow_core.flow import EMA, bias_corrected

    model = torch.nn.Linear(3, 2)
    initial = {k: v.detach().clone() for k, v in model.named_parameters()}
    ema = EMA(model, decay=0.99)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    trained = {k: v.detach().clone() for k, v in model.named_parameters()}
    for _ in range(50):
        ema.update()
    assert not torch.allclose(ema.shadow["weight"], trained["weight"], atol=1e-3)   # 0.99^50 = 61% init left
    corrected = bias_corrected(ema.shadow, initial, 0.99, 50)
    for k in trained:
        torch.testing.assert_close(corrected[k], trained[k], rtol=1e-4, atol=1e-5)


def test_ema_warmup_follows_short_runs():
    from eflow_core.flow import EMA

    model = torch.nn.Linear(3, 2)
    plain, warm = EMA(model, decay=0.999), EMA(model, decay=0.999, warmup=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    for _ in range(20):
        plain.update()
        warm.update()
    target = dict(model.named_parameters())["weight"]
    gap = lambda e: (e.shadow["weight"] - target).abs().max().item()
    assert gap(warm) < 0.2 < gap(plain)
