"""`SolutionFlow`: the EFlow objective (Algorithm 1) and its samplers (Algorithm 2, Euler/CFG baseline)
around any network that follows the project's protocol

    net(x_t, t, s, cond, guidance, weak=False) -> F          x_t (B, ...), t/s/guidance (B,) float32

with the Euler-parameterised solution map f(x_t, t, s) = x_t + (s - t) F (Eq. 2). The flow never
looks inside a condition: it slices, nulls and concatenates through `eflow_core.conditioning`.

Batch split (Algorithm 1, Sec. 4.2): the batch is cut into contiguous FM / SCM / MVA shares by
(fm_ratio, scm_ratio, mva_ratio) read from `self.config` at every call (a trainer swaps the config per
phase). Ratios are normalised to sum 1; counts use largest-remainder rounding, and each share whose
ratio is > 0 gets at least one sample when the batch has at least as many samples as such shares
(taken from the largest share). Each extra forward pass runs only on its share.

Total loss: SoFlow's train.py weights each share's MEAN by its realised fraction n_k / B, i.e. the
total is (sum of all per-sample weighted losses) / B = a L_FM + b L_SCM + (1 - a - b) L_MVA with a, b
the realised fractions. We do the same: L_k are per-share means of per-sample weighted losses.

Guidance (`config.guidance`):
- "pdg" (EFlow, Eq. 11): w ~ U(w_min, w_max) per batch, fed as `guidance`; v_uncond = the SAME network's
  weak path (weak=True) on the null condition at (t, t) with guidance input 0, under no_grad. In the FM
  share a sample is dropped with probability p_drop (Algorithm 1 lines 7-8 drop only in the FM
  share): its condition is nulled and it trains the weak path on plain FM (target v, guidance 0,
  weak=True; App. B.2 "setting the guidance scale to w = 0"). Unconditional models (cond None) are
  dropped the same way: the weak path then learns the plain velocity and PDG acts as autoguidance.
- "cfg" (SoFlow baseline): v_uncond = full-path no_grad pass with the null condition (guidance input 1).
  As in SoFlow's code the label drop applies in the FM and SCM shares; dropped rows train the full
  path on the null condition with target v (guidance input 1).
- "none": target v everywhere, guidance input 1.

Our addition: with probability p_unguided a non-dropped FM sample gets guidance input 1.0 and the
plain conditional velocity as target (no mix), so the network also knows its unguided conditional
velocity for the 2-NFE CFG baseline `sample_ode(cfg=True)`. With PDG this is just Eq. 11 at w = 1.

Token dropping and other randomness inside the network: the SCM target pass f(x_l, l, s) and the MVA
passes replay the global RNG state (CPU and the current CUDA device) of the gradient pass, as SoFlow
does for dropout, so a model that draws its keep pattern from the global RNG uses the same pattern
in the prediction and in its target (otherwise the SCM difference quotient (f_t - f_l)/(t - l) would
divide the drop-pattern noise by t - l ~ 1e-3).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from eflow_core.conditioning import Condition, index_condition, null_condition
from eflow_core.config import FlowConfig
from eflow_core.flow.losses import (
    adaptive_weight,
    expand_like,
    flow_matching_loss,
    guided_velocity,
    mix_velocity,
    mva_loss,
    solution_consistency_loss,
)
from eflow_core.flow.times import (
    inference_schedule,
    intermediate_ratio,
    mva_grid,
    randn,
    sample_logit_normal,
    sample_mva_times,
    sample_scm_times,
    uniform,
)

__all__ = ["SolutionFlow", "split_batch"]

GUIDANCE_MODES = ("pdg", "cfg", "none")


def split_batch(batch: int, fm_ratio: float, scm_ratio: float, mva_ratio: float) -> tuple[int, int, int]:
    """Counts (n_fm, n_scm, n_mva) summing to `batch` for the ratios (normalised to sum 1).

    Largest-remainder rounding (ties go to FM, then SCM, then MVA); every share with ratio > 0 gets
    at least one sample when batch >= the number of such shares (taken from the largest share).
    """
    ratios = [max(float(r), 0.0) for r in (fm_ratio, scm_ratio, mva_ratio)]
    total = sum(ratios)
    if total <= 0:
        raise ValueError(f"batch ratios must have a positive sum, got {(fm_ratio, scm_ratio, mva_ratio)}")
    exact = [r / total * batch for r in ratios]
    counts = [math.floor(e + 1e-9) for e in exact]
    left = batch - sum(counts)
    order = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:left]:
        counts[i] += 1
    positive = [i for i in range(3) if ratios[i] > 0]
    if batch >= len(positive):
        for i in positive:
            if counts[i] == 0:
                donor = max(range(3), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[i] += 1
    return counts[0], counts[1], counts[2]


def _rng_snapshot(device: torch.device):
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _rng_restore(snapshot, device: torch.device) -> None:
    cpu, cuda = snapshot
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


class SolutionFlow:
    """Solution-flow training objective and samplers around `net` (see the module docstring).

    `net`: callable net(x_t, t, s, cond, guidance, weak=False) -> F, F of x_t's shape.
    `config`: FlowConfig; read at every call (swap `flow.config` to change phase).
    """

    def __init__(self, net: Callable[..., torch.Tensor], config: FlowConfig | None = None):
        self.net = net
        self.config = config if config is not None else FlowConfig()
        self._grid_cache: dict = {}

    # ------------------------------------------------------------------------------------------
    # the solution map
    # ------------------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, cond: Condition,
                 guidance: torch.Tensor, weak: bool = False, dtype: torch.dtype | None = None) -> torch.Tensor:
        """F = net(x, t, s, cond, guidance, weak) with x cast to `dtype` (the caller's data dtype)
        and t, s, guidance as float32 (B,)."""
        x_in = x if dtype is None else x.to(dtype)
        return self.net(x_in, t.float(), s.float(), cond, guidance.float(), weak=weak)

    def _solution(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, cond: Condition,
                  guidance: torch.Tensor, weak: bool = False, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Eq. 2 in fp32: x + (s - t) F. x: (B, ...) float32; returns (B, ...) float32."""
        F = self._forward(x, t, s, cond, guidance, weak, dtype)
        return x.float() + expand_like((s - t).float(), x) * F.float()

    def solution(self, x_t: torch.Tensor, t: torch.Tensor, s: torch.Tensor, cond: Condition,
                 guidance: torch.Tensor, weak: bool = False) -> torch.Tensor:
        """f(x_t, t, s, c, w) = x_t + (s - t) F(x_t, t, s, c, w) (Eq. 2).

        x_t: (B, ...); t, s, guidance: (B,) (floats broadcast); cond: Condition for B rows.
        Returns (B, ...) in x_t's dtype (computed in fp32)."""
        b, dev = x_t.shape[0], x_t.device
        t, s, guidance = (self._vec(v, b, dev) for v in (t, s, guidance))
        return self._solution(x_t, t, s, cond, guidance, weak, x_t.dtype).to(x_t.dtype)

    @staticmethod
    def _vec(v: torch.Tensor | float, b: int, device: torch.device) -> torch.Tensor:
        if isinstance(v, torch.Tensor) and v.ndim > 0:
            return v.to(device=device, dtype=torch.float32).reshape(b)
        return torch.full((b,), float(v), device=device, dtype=torch.float32)

    # ------------------------------------------------------------------------------------------
    # guidance helpers
    # ------------------------------------------------------------------------------------------
    def _mode(self) -> str:
        mode = self.config.guidance
        if mode not in GUIDANCE_MODES:
            raise ValueError(f"FlowConfig.guidance must be one of {GUIDANCE_MODES}, got {mode!r}")
        return mode

    def _null_guidance(self) -> float:
        """Guidance input of the unconditional branch: 0 for the PDG weak path (App. B.2, w = 0),
        1 for the CFG null-condition full path."""
        return 0.0 if self._mode() == "pdg" else 1.0

    @torch.no_grad()
    def _uncond_velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition,
                         dtype: torch.dtype) -> torch.Tensor:
        """v_uncond(x_t, t) for the guided target, under no_grad: PDG -> weak path, CFG -> full path,
        both on the null condition at (t, t). Returns (n, ...) float32."""
        n = x_t.shape[0]
        null = null_condition(cond, torch.ones(n, dtype=torch.bool, device=x_t.device))
        g = torch.full((n,), self._null_guidance(), device=x_t.device)
        return self._forward(x_t, t, t, null, g, weak=self._mode() == "pdg", dtype=dtype).float()

    # ------------------------------------------------------------------------------------------
    # training objective (Algorithm 1)
    # ------------------------------------------------------------------------------------------
    def loss(self, x0: torch.Tensor, cond: Condition, step: int,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """One training loss (Algorithm 1): FM + SCM (+ MVA) with PDG / CFG / no guidance by config.

        x0: (B, ...) clean data (latents); cond: Condition for B rows; step: training step (drives
        the SCM r schedule); generator: optional torch.Generator for every random draw here.
        Returns (loss: scalar tensor with grad, logs: dict of floats). Logs: loss, fm (raw MSE of the
        full-path FM rows), weak_fm (raw MSE of the dropped weak-path rows, if any), scm (squared
        difference quotient, SoFlow's "Con_MSE"), mva (squared semigroup defect, if active), fm_w /
        scm_w (mean adaptive weights), t_fm, t_scm, s_scm, t_mva, r, guidance, n_fm, n_scm, n_mva,
        n_weak, n_unguided.
        """
        cfg = self.config
        mode = self._mode()
        b, dev, dtype = x0.shape[0], x0.device, x0.dtype
        n_fm, n_scm, n_mva = split_batch(b, cfg.fm_ratio, cfg.scm_ratio, cfg.mva_ratio)

        # All randomness first, in a fixed order, from `generator` (deterministic resume / tests).
        x1 = randn(x0.shape, generator, dev)
        if mode == "none":
            w = 1.0
        else:
            w = float(uniform((), generator, dev).item() * (cfg.guidance_max - cfg.guidance_min) + cfg.guidance_min)
        x0f = x0.float()
        sl_fm, sl_scm, sl_mva = slice(0, n_fm), slice(n_fm, n_fm + n_scm), slice(n_fm + n_scm, b)

        total = x0f.new_zeros(())
        logs: dict[str, torch.Tensor | float] = {"guidance": w, "n_fm": n_fm, "n_scm": n_scm, "n_mva": n_mva}
        if n_fm:
            total = total + self._fm_share(x0f[sl_fm], x1[sl_fm], index_condition(cond, sl_fm), w, dtype,
                                           generator, logs)
        if n_scm:
            total = total + self._scm_share(x0f[sl_scm], x1[sl_scm], index_condition(cond, sl_scm), w, step,
                                            dtype, generator, logs)
        if n_mva:
            total = total + self._mva_share(x0f[sl_mva], x1[sl_mva], index_condition(cond, sl_mva), w, dtype,
                                            generator, logs)
        loss = total / b
        logs["loss"] = loss.detach()
        keys = list(logs)
        values = torch.stack([torch.as_tensor(logs[k], dtype=torch.float32, device=dev).detach() for k in keys])
        return loss, dict(zip(keys, (float(v) for v in values.cpu().tolist())))

    def _fm_share(self, x0, x1, cond, w, dtype, generator, logs) -> torch.Tensor:
        """FM share (Eq. 3 with the PDG / CFG target): returns the SUM of per-sample weighted losses."""
        cfg, mode, dev = self.config, self._mode(), x0.device
        n = x0.shape[0]
        t = sample_logit_normal(n, cfg.t_mu, cfg.t_sigma, cfg.t_shift, generator, dev)
        u_drop, u_ung = uniform((n,), generator, dev), uniform((n,), generator, dev)
        te = expand_like(t, x0)
        x_t, v = (1 - te) * x0 + te * x1, x1 - x0

        can_drop = mode == "pdg" or (mode == "cfg" and cond is not None)
        drop = (u_drop < cfg.p_drop) if can_drop else torch.zeros(n, dtype=torch.bool, device=dev)
        unguided = (~drop & (u_ung < cfg.p_unguided)) if mode != "none" else torch.zeros_like(drop)
        guided = ~drop & ~unguided if mode != "none" else torch.zeros_like(drop)
        g_in = torch.where(drop, torch.full_like(t, self._null_guidance()),
                           torch.where(guided, torch.full_like(t, w), torch.ones_like(t)))

        total = x0.new_zeros(())
        # full-path rows: everything except the PDG weak rows (CFG drops stay on the full path, null cond)
        full = ~drop if mode == "pdg" else torch.ones_like(drop)
        cond_f = null_condition(cond, drop) if (mode == "cfg" and bool(drop.any())) else cond
        idx = full.nonzero().squeeze(1)
        if idx.numel():
            c = index_condition(cond_f, idx)
            F = self._forward(x_t[idx], t[idx], t[idx], c, g_in[idx], dtype=dtype).float()
            target = v[idx]
            gi = guided[idx].nonzero().squeeze(1)
            if gi.numel():  # Eq. 11 / Eq. 9 target, then SoFlow's velocity mix with the own prediction
                with torch.no_grad():
                    v_u = self._uncond_velocity(x_t[idx][gi], t[idx][gi], index_condition(c, gi), dtype)
                    v_g = mix_velocity(guided_velocity(v[idx][gi], v_u, w), F[gi], cfg.velocity_mix)
                target = target.clone()
                target[gi] = v_g
            loss, mse = flow_matching_loss(F, target, cfg.adaptive_p, cfg.adaptive_eps)
            total = total + loss.sum()
            logs["fm"] = mse.mean()
            logs["fm_w"] = adaptive_weight(mse, cfg.adaptive_p, cfg.adaptive_eps).mean()
        widx = (drop & ~full).nonzero().squeeze(1)
        if widx.numel():  # PDG drop: weak path, null condition, w = 0, plain FM (App. B.2)
            c = null_condition(index_condition(cond, widx), torch.ones(widx.numel(), dtype=torch.bool, device=dev))
            F = self._forward(x_t[widx], t[widx], t[widx], c, g_in[widx], weak=True, dtype=dtype).float()
            loss, mse = flow_matching_loss(F, v[widx], cfg.adaptive_p, cfg.adaptive_eps)
            total = total + loss.sum()
            logs["weak_fm"] = mse.mean()
        logs["n_weak"] = int(drop.sum()) if mode == "pdg" else 0
        logs["n_dropped"] = int(drop.sum())
        logs["n_unguided"] = int(unguided.sum())
        logs["t_fm"] = t.mean()
        return total

    def _scm_share(self, x0, x1, cond, w, step, dtype, generator, logs) -> torch.Tensor:
        """SCM share (Eq. 4 with the guided target): returns the SUM of per-sample weighted losses."""
        cfg, mode, dev = self.config, self._mode(), x0.device
        n = x0.shape[0]
        t, l, s = sample_scm_times(n, cfg, step, generator, dev)
        u_drop = uniform((n,), generator, dev)
        te = expand_like(t, x0)
        x_t, v = (1 - te) * x0 + te * x1, x1 - x0

        drop = (u_drop < cfg.p_drop) if (mode == "cfg" and cond is not None) else torch.zeros(n, dtype=torch.bool, device=dev)
        guided = ~drop if mode != "none" else torch.zeros_like(drop)
        g_in = torch.where(guided, torch.full_like(t, w), torch.ones_like(t))
        c = null_condition(cond, drop) if bool(drop.any()) else cond

        with torch.no_grad():
            v_tgt = v
            gi = guided.nonzero().squeeze(1)
            if gi.numel():
                cg = index_condition(c, gi)
                v_g = guided_velocity(v[gi], self._uncond_velocity(x_t[gi], t[gi], cg, dtype), w)
                if cfg.velocity_mix != 1.0:  # the model's own guided prediction (one extra no_grad pass)
                    v_pred = self._forward(x_t[gi], t[gi], t[gi], cg, g_in[gi], dtype=dtype).float()
                    v_g = mix_velocity(v_g, v_pred, cfg.velocity_mix)
                v_tgt = v.clone()
                v_tgt[gi] = v_g
            x_l = x_t + v_tgt * expand_like(l - t, x_t)  # first-order step to l (Eq. 4)

        snap = _rng_snapshot(dev)
        f_t = self._solution(x_t, t, s, c, g_in, dtype=dtype)
        _rng_restore(snap, dev)  # same token-drop / dropout pattern for the target pass
        with torch.no_grad():
            f_l = self._solution(x_l, l, s, c, g_in, dtype=dtype)
        p = cfg.adaptive_p if cfg.scm_adaptive_p is None else cfg.scm_adaptive_p
        loss, mse_q = solution_consistency_loss(f_t, f_l, t, l, s, p, cfg.adaptive_eps, cfg.scm_weight_scale)
        logs["scm"] = mse_q.mean()
        logs["scm_w"] = adaptive_weight(mse_q, p, cfg.adaptive_eps).mean()
        logs["t_scm"], logs["s_scm"], logs["tl_gap"] = t.mean(), s.mean(), (t - l).mean()
        logs["r"] = intermediate_ratio(step, cfg.r_start, cfg.r_end, cfg.r_steps)
        return loss.sum()

    def _grid(self, device: torch.device) -> torch.Tensor:
        key = (self.config.mva_grid_points, self.config.mva_shift, str(device))
        if key not in self._grid_cache:
            self._grid_cache[key] = mva_grid(self.config.mva_grid_points, self.config.mva_shift, device)
        return self._grid_cache[key]

    def _mva_share(self, x0, x1, cond, w, dtype, generator, logs) -> torch.Tensor:
        """MVA share (Eq. 12) on the fixed grid: returns the SUM of per-sample losses."""
        cfg, mode, dev = self.config, self._mode(), x0.device
        n = x0.shape[0]
        t, l, s = sample_mva_times(n, self._grid(dev), generator, dev)
        te = expand_like(t, x0)
        x_t = (1 - te) * x0 + te * x1
        g_in = torch.full_like(t, w if mode != "none" else 1.0)

        snap = _rng_snapshot(dev)
        f_ts = self._solution(x_t, t, s, cond, g_in, dtype=dtype)
        after = _rng_snapshot(dev)
        with torch.no_grad():  # sg f(sg f(x_t, t, l), l, s): two stop-gradient passes of the same network
            _rng_restore(snap, dev)
            x_l = self._solution(x_t, t, l, cond, g_in, dtype=dtype)
            _rng_restore(snap, dev)
            f_ls = self._solution(x_l, l, s, cond, g_in, dtype=dtype)
        _rng_restore(after, dev)
        loss = mva_loss(f_ts, f_ls)
        logs["mva"] = loss.detach().mean()
        logs["t_mva"] = t.mean()
        if cfg.mva_weighting == "adaptive":
            loss = adaptive_weight(loss, cfg.adaptive_p, cfg.adaptive_eps) * loss
        elif cfg.mva_weighting != "none":
            raise ValueError(f"FlowConfig.mva_weighting must be 'none' or 'adaptive', got {cfg.mva_weighting!r}")
        return loss.sum()

    # ------------------------------------------------------------------------------------------
    # samplers
    # ------------------------------------------------------------------------------------------
    def _inference_guidance(self, guidance: float | None) -> float:
        if self._mode() == "none":
            return 1.0  # a model trained without guidance only knows the guidance input 1
        return float(self.config.guidance_inference if guidance is None else guidance)

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, cond: Condition, steps: int = 4, guidance: float | None = None,
               generator: torch.Generator | None = None,
               callback: Callable[[int, int, torch.Tensor], None] | None = None,
               guidance_t_min: float | None = None) -> torch.Tensor:
        """Few-step sampling, Algorithm 2: for t_n on the shifted schedule (1 = t_N > ... > t_0 = 0)
        predict x0 = f(x, t_n, 0, c, w_n) (one network evaluation); if t_{n-1} > 0 re-noise
        x = t_{n-1} z + (1 - t_{n-1}) x0 with fresh z ~ N(0, I) from `generator`.

        Guidance across steps: w_n = w for the steps that start at t_n >= guidance_t_min (default
        `config.guidance_t_min`, 0.8) and w_n = 1, the plain conditional map, for the steps below it.
        The first step (t_N = 1) is always guided, so 1-step samples are those of Algorithm 2 as printed;
        guidance_t_min=0 gives w at every step, Algorithm 2 / App. B.3 as printed ("a fixed guidance
        scale w_inf").

        Why (issue 23): with PDG (Sec. 4.2 (a), Eq. 11; distilled into the network, App. B.2) the
        unconditional term is the weak path, a worse denoiser than the full path at every noise level,
        so at low noise w (v - v_weak) mostly extrapolates away from the weak path's missing detail, not
        towards the class. Every re-noised step of Algorithm 2 starts at such a level (shift 3: 0.75 and
        0.5 for 4 steps) and runs the whole guided map down to 0 again, so a guided model drew
        high-frequency texture that got worse with steps. Measured on the shipped `actions-b` (300
        prompts, seed 0, fp32 on an H200; probe-FD at 1 / 2 / 4 / 8 steps, guidance 4): w at every step
        40.8 / 118.1 / 127.1 / 94.1; w only at t_n >= 0.8 40.8 / 9.4 / 10.4 / 8.3 (0.85: 8 steps 6.1;
        0.7 and 0.6 keep the t = 0.75 step guided: 118.1 at 2 steps). It is the guided map at low t,
        not the fresh noise: the deterministic composition f(f(x, t_n, t_{n-1}), ...) at w = 4 also
        degrades (114.1 at 4 steps), and so does the 2-NFE Euler + CFG ODE with the weak path at w = 4
        (`sample_ode`, 8 steps: 82.8 against 55.4 for 1 step on 60 prompts, with the same misread class).
        w = 2 or 0 at the low steps instead of 1 is worse (66.0 / 125.7 at 4 steps). The state after the
        guided steps still carries the class (action top-1 0.89-0.91 at every step count) and the
        low-noise steps redraw detail. tests/test_flow_toy.py pins the mechanism with exact flow maps and
        a weak-path guidance.

        noise: (B, ...) x1 ~ N(0, I); cond: Condition for B rows; steps: N (= NFE); guidance: w fed
        to the network (default config.guidance_inference; ignored for guidance="none" models).
        callback(step_index, steps, x) after each step, x the state after it (the final x0 last).
        Returns (B, ...) in noise's dtype (time and state arithmetic in fp32)."""
        b, dev, dtype = noise.shape[0], noise.device, noise.dtype
        times = inference_schedule(steps, self.config.inference_shift).tolist()
        t_min = float(self.config.guidance_t_min if guidance_t_min is None else guidance_t_min)
        guided = torch.full((b,), self._inference_guidance(guidance), device=dev)
        plain = torch.ones(b, device=dev)
        zero = torch.zeros(b, device=dev)
        x = noise.float()
        for i in range(steps):
            t_now, t_next = times[i], times[i + 1]
            g = guided if (i == 0 or t_now >= t_min) else plain
            x0 = self._solution(x, torch.full((b,), t_now, device=dev), zero, cond, g, dtype=dtype)
            if t_next > 0:
                x = t_next * randn(noise.shape, generator, dev) + (1.0 - t_next) * x0
            else:
                x = x0
            if callback is not None:
                callback(i, steps, x.to(dtype))
        return x.to(dtype)

    @torch.no_grad()
    def sample_ode(self, noise: torch.Tensor, cond: Condition, steps: int = 50, guidance: float | None = None,
                   generator: torch.Generator | None = None,
                   callback: Callable[[int, int, torch.Tensor], None] | None = None,
                   cfg: bool = True) -> torch.Tensor:
        """Multi-step baseline on the same network: Euler on the s = t velocity over the shifted
        schedule, x <- x + (t_{n-1} - t_n) v.

        cfg=True (classical CFG, 2 NFE per step): v = v_u + w (v_c - v_u) with
        v_c = F(x, t, t, c, guidance=1) (trained by the p_unguided share) and v_u = F(x, t, t, null,
        guidance=g_u, weak=(config.guidance == "pdg")), g_u = 0 for the PDG weak path (the guidance
        input it is trained with, App. B.2) and 1 for CFG-trained models. cfg=False (1 NFE per step):
        v = F(x, t, t, c, guidance=w), the network's own guidance-distilled velocity. Models trained
        with guidance="none" have no unconditional branch: cfg is ignored (1 NFE per step).
        noise: (B, ...); returns (B, ...) in noise's dtype. `generator` is unused (the ODE is
        deterministic) and accepted for a uniform sampler signature."""
        del generator
        b, dev, dtype = noise.shape[0], noise.device, noise.dtype
        w = self._inference_guidance(guidance)
        use_cfg = cfg and self._mode() != "none"
        times = inference_schedule(steps, self.config.inference_shift).tolist()
        ones = torch.ones(b, device=dev)
        null = null_condition(cond, torch.ones(b, dtype=torch.bool, device=dev)) if use_cfg else None
        g_u = torch.full((b,), self._null_guidance(), device=dev) if use_cfg else None
        g_w = torch.full((b,), w, device=dev)
        x = noise.float()
        for i in range(steps):
            t_now, t_next = times[i], times[i + 1]
            tt = torch.full((b,), t_now, device=dev)
            if use_cfg:
                v_c = self._forward(x, tt, tt, cond, ones, dtype=dtype).float()
                v_u = self._forward(x, tt, tt, null, g_u, weak=self._mode() == "pdg", dtype=dtype).float()
                v = v_u + w * (v_c - v_u)
            else:
                v = self._forward(x, tt, tt, cond, g_w, dtype=dtype).float()
            x = x + (t_next - t_now) * v
            if callback is not None:
                callback(i, steps, x.to(dtype))
        return x.to(dtype)
