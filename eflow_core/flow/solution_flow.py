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

Shapes and passes (issue 24): every count is fixed by the batch size and the config, so a step has
the same shapes every time and no host sync (a CUDA graph records it, `eflow_core/captured_step.py`):
- drops and unguided rows are exact counts, `row_count(p, n)` = round(p n) but at least one where
  p > 0 and the share has two rows or more (so every path, and every parameter, trains at every step
  even in a small batch), taken as the first rows of their share (the rows of a share are an i.i.d.
  shuffle of the data, so this is a random choice of rows; at batch 512 the count is Algorithm 1's
  expected one, without the binomial spread);
- the guidance scale w is a 0-d tensor; logs are tensors (`loss` reads them back once).
The network is evaluated in three stages, each one call per path (full, weak) on the concatenated
rows of its passes: (1) no grad: v_uncond of the guided FM and SCM rows, the SCM rows' own guided
velocity (the velocity mix), MVA's first jump f(x_t, t, l); (2) no grad: the targets f(x_l, l, s) of
SCM and MVA; (3) with grad: the full-path FM rows, SCM's and MVA's f(x_t, t, s), and the weak-path FM
rows. That is 5 calls with PDG (4 with CFG) where pass-per-term makes up to 10.

Token dropping: when the network has a `keep_pattern(x0, generator)` (VideoDiT in training mode),
each row draws its kept tokens once and every pass of that row uses them (`keep_indices`), so the
SCM target pass drops the same tokens as the gradient pass (otherwise the difference quotient
(f_t - f_l)/(t - l) would divide the drop-pattern noise by t - l ~ 1e-3).
"""
from __future__ import annotations

from typing import Callable

import torch

from eflow_core.conditioning import Condition, cat_conditions, null_condition
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
from eflow_core.flow.rows import Pass, Rows, logs_to_floats, row_count, split_batch
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

__all__ = ["SolutionFlow"]

GUIDANCE_MODES = ("pdg", "cfg", "none")


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
                 guidance: torch.Tensor, weak: bool = False, dtype: torch.dtype | None = None,
                 keep: torch.Tensor | None = None) -> torch.Tensor:
        """F = net(x, t, s, cond, guidance, weak) with x cast to `dtype` (the caller's data dtype)
        and t, s, guidance as float32 (B,); `keep` (B, n_keep), when given, goes to the network as
        `keep_indices` (the tokens its dropping middle keeps)."""
        x_in = x if dtype is None else x.to(dtype)
        extra = {} if keep is None else {"keep_indices": keep}
        return self.net(x_in, t.float(), s.float(), cond, guidance.float(), weak=weak, **extra)

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

    def _uncond(self, rows: Rows) -> Pass:
        """The pass that gives v_uncond(x_t, t) of the guided target for `rows`: PDG -> weak path, CFG ->
        full path, both on the null condition at (t, t)."""
        n = rows.x.shape[0]
        null = null_condition(rows.cond, torch.ones(n, dtype=torch.bool, device=rows.x.device))
        g = torch.full((n,), self._null_guidance(), device=rows.x.device)
        return Pass(rows.x, rows.t, rows.t, null, g, rows.keep, weak=self._mode() == "pdg")

    # ------------------------------------------------------------------------------------------
    # training objective (Algorithm 1)
    # ------------------------------------------------------------------------------------------
    def loss(self, x0: torch.Tensor, cond: Condition, step: int,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """One training loss (Algorithm 1): FM + SCM (+ MVA) with PDG / CFG / no guidance by config.

        x0: (B, ...) clean data (latents); cond: Condition for B rows; step: training step (drives
        the SCM r schedule); generator: optional torch.Generator for every random draw here.
        Returns (loss: scalar tensor with grad, logs: dict of floats), `loss_tensors`'s logs read
        back with one device sync."""
        loss, logs = self.loss_tensors(x0, cond, self.scm_ratio(step), generator)
        return loss, logs_to_floats(logs)

    def scm_ratio(self, step: int) -> float:
        """r(step) of the SCM intermediate time (`intermediate_ratio` with the config's schedule)."""
        cfg = self.config
        return intermediate_ratio(step, cfg.r_start, cfg.r_end, cfg.r_steps)

    def loss_tensors(self, x0: torch.Tensor, cond: Condition, ratio: float | torch.Tensor,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor | int]]:
        """Algorithm 1 with static shapes and no host sync, so a CUDA graph can record it.

        x0: (B, ...) latents; cond: Condition for B rows; ratio: the SCM intermediate ratio r(step)
        (`intermediate_ratio`), a float or a 0-d tensor. Returns (loss, logs): logs hold 0-d tensors
        (fm: raw MSE of the full-path FM rows; weak_fm: of the weak-path rows, if any; scm: squared
        difference quotient, SoFlow's "Con_MSE"; mva: squared semigroup defect, if active; fm_w / scm_w:
        mean adaptive weights; t_fm, t_scm, s_scm, tl_gap, t_mva, r, guidance) and ints (n_fm, n_scm,
        n_mva, n_weak, n_dropped, n_unguided).

        Stages (module docstring): (1) the no-grad passes the targets start from, (2) the no-grad target
        passes, (3) the gradient passes; each stage is one network call per path (full, weak)."""
        cfg, mode = self.config, self._mode()
        b, dev, dtype = x0.shape[0], x0.device, x0.dtype
        n_fm, n_scm, n_mva = split_batch(b, cfg.fm_ratio, cfg.scm_ratio, cfg.mva_ratio)

        # All randomness first, in a fixed order, from `generator` (deterministic resume / tests).
        x1 = randn(x0.shape, generator, dev)
        if mode == "none":
            w = torch.ones((), device=dev)
        else:
            w = uniform((), generator, dev) * (cfg.guidance_max - cfg.guidance_min) + cfg.guidance_min
        keep = self._keep_pattern(x0, generator)
        rows = Rows(x0.float(), x1, cond, keep)
        fm = rows.take(0, n_fm)
        scm = rows.take(n_fm, n_fm + n_scm)
        mva = rows.take(n_fm + n_scm, b)
        fm.t = sample_logit_normal(n_fm, cfg.t_mu, cfg.t_sigma, cfg.t_shift, generator, dev)
        scm.t, scm.l, scm.s = sample_scm_times(n_scm, cfg, ratio, generator, dev)
        mva.t, mva.l, mva.s = sample_mva_times(n_mva, self._grid(dev), generator, dev)
        for share in (fm, scm, mva):
            share.noise_to(share.t)

        # Which rows drop their condition or train unguided: exact counts (row_count), the first rows
        # of a share (its rows are an i.i.d. shuffle of the data), so every step has the same shapes.
        pdg_or_cfg_drop = mode == "pdg" or (mode == "cfg" and cond is not None)
        n_drop = row_count(cfg.p_drop, n_fm) if pdg_or_cfg_drop else 0
        n_ung = row_count(cfg.p_unguided, n_fm - n_drop) if mode != "none" else 0
        n_scm_drop = row_count(cfg.p_drop, n_scm) if (mode == "cfg" and cond is not None) else 0
        guided = mode != "none"
        fm.guidance = self._guidance_column([(n_drop, self._null_guidance()), (n_ung, 1.0)], n_fm, w, guided, dev)
        scm.guidance = self._guidance_column([(n_scm_drop, 1.0)], n_scm, w, guided, dev)
        mva.guidance = self._guidance_column([], n_mva, w, guided, dev)
        if mode == "cfg":                   # CFG drops stay on the full path with the null condition
            fm.null_first(n_drop)
            scm.null_first(n_scm_drop)
        fm_full = fm.take(n_drop if mode == "pdg" else 0, n_fm)   # PDG drops train the weak path instead
        fm_weak = fm.take(0, n_drop if mode == "pdg" else 0)
        fm_weak.null_first(fm_weak.size)
        fm_guided = fm.take(n_drop + n_ung, n_fm) if guided else fm.take(0, 0)
        scm_guided = scm.take(n_scm_drop, n_scm) if guided else scm.take(0, 0)

        with torch.no_grad():
            # (1) v_uncond of the guided rows (FM, SCM); the SCM rows' own guided velocity (SoFlow's mix);
            # MVA's first jump x_l = f(x_t, t, l)
            mix_pred = cfg.velocity_mix != 1.0 and scm_guided.size > 0
            mva_first = mva.pass_at(mva.t, mva.l)
            fm_u, scm_u, scm_pred, mva_tl = self._run([
                self._uncond(fm_guided) if guided else None, self._uncond(scm_guided) if guided else None,
                scm_guided.pass_at(scm_guided.t, scm_guided.t) if mix_pred else None, mva_first], dtype)
            v_tgt = scm.v
            if scm_guided.size:
                v_g = guided_velocity(scm_guided.v, scm_u, w)
                if mix_pred:
                    v_g = mix_velocity(v_g, scm_pred, cfg.velocity_mix)
                v_tgt = torch.cat([scm.v[:n_scm_drop], v_g])
            scm_l = scm.moved(scm.x + v_tgt * expand_like(scm.l - scm.t, scm.x))     # first-order step to l (Eq. 4)
            mva_l = mva.moved(mva_first.solution(mva_tl))
            # (2) the targets: f(x_l, l, s) for SCM, sg f(sg f(x_t, t, l), l, s) for MVA (Eq. 12)
            scm_target, mva_target = scm_l.pass_at(scm.l, scm.s), mva_l.pass_at(mva.l, mva.s)
            scm_fl, mva_fls = self._run([scm_target, mva_target], dtype)
            f_l, f_ls = scm_target.solution(scm_fl), mva_target.solution(mva_fls)
        # (3) the gradient passes: the full-path FM rows, SCM's f(x_t, t, s), MVA's f(x_t, t, s); the
        # weak-path FM rows. Each row keeps the token pattern of its target passes.
        scm_grad, mva_grad = scm.pass_at(scm.t, scm.s), mva.pass_at(mva.t, mva.s)
        F_fm, F_scm, F_mva, F_weak = self._run([
            fm_full.pass_at(fm_full.t, fm_full.t), scm_grad, mva_grad,
            fm_weak.pass_at(fm_weak.t, fm_weak.t, weak=True)], dtype)

        logs: dict[str, torch.Tensor | int] = {"guidance": w, "n_fm": n_fm, "n_scm": n_scm, "n_mva": n_mva}
        total = x0.new_zeros((), dtype=torch.float32)
        if n_fm:
            first_guided = n_ung + (0 if mode == "pdg" else n_drop)      # in fm_full's rows
            total = total + self._fm_loss(fm_full, F_fm, fm_weak, F_weak, fm_u, first_guided, w, logs)
            logs.update(n_weak=fm_weak.size, n_dropped=n_drop, n_unguided=n_ung, t_fm=fm.t.mean())
        if n_scm:
            f_t = scm_grad.solution(F_scm)
            p = cfg.adaptive_p if cfg.scm_adaptive_p is None else cfg.scm_adaptive_p
            loss, mse_q = solution_consistency_loss(f_t, f_l, scm.t, scm.l, scm.s, p, cfg.adaptive_eps,
                                                    cfg.scm_weight_scale)
            total = total + loss.sum()
            logs.update(scm=mse_q.mean(), scm_w=adaptive_weight(mse_q, p, cfg.adaptive_eps).mean(),
                        t_scm=scm.t.mean(), s_scm=scm.s.mean(), tl_gap=(scm.t - scm.l).mean(),
                        r=ratio.float() if isinstance(ratio, torch.Tensor) else torch.full((), ratio, device=dev))
        if n_mva:
            loss = mva_loss(mva_grad.solution(F_mva), f_ls)
            logs.update(mva=loss.detach().mean(), t_mva=mva.t.mean())
            if cfg.mva_weighting == "adaptive":
                loss = adaptive_weight(loss, cfg.adaptive_p, cfg.adaptive_eps) * loss
            elif cfg.mva_weighting != "none":
                raise ValueError(f"FlowConfig.mva_weighting must be 'none' or 'adaptive', got {cfg.mva_weighting!r}")
            total = total + loss.sum()
        loss = total / b
        logs["loss"] = loss.detach()
        return loss, logs

    def _fm_loss(self, fm_full: Rows, F_full: torch.Tensor, fm_weak: Rows, F_weak: torch.Tensor,
                 v_uncond: torch.Tensor | None, first_guided: int, w: torch.Tensor, logs: dict) -> torch.Tensor:
        """FM share (Eq. 3 with the PDG / CFG target): the SUM of per-sample weighted losses. The
        guided rows (fm_full's rows from `first_guided` on, given v_uncond) get the target of Eq. 11 /
        Eq. 9 blended with the network's own prediction (SoFlow's velocity mix); the rest plain v."""
        cfg = self.config
        total = F_full.new_zeros(())
        if fm_full.size:
            target = fm_full.v
            if v_uncond is not None:
                with torch.no_grad():
                    v_g = mix_velocity(guided_velocity(target[first_guided:], v_uncond, w), F_full[first_guided:],
                                       cfg.velocity_mix)
                    target = torch.cat([target[:first_guided], v_g])
            loss, mse = flow_matching_loss(F_full, target, cfg.adaptive_p, cfg.adaptive_eps)
            total = total + loss.sum()
            logs["fm"] = mse.mean()
            logs["fm_w"] = adaptive_weight(mse, cfg.adaptive_p, cfg.adaptive_eps).mean()
        if fm_weak.size:     # PDG drop: weak path, null condition, w = 0, plain FM (App. B.2)
            loss, mse = flow_matching_loss(F_weak, fm_weak.v, cfg.adaptive_p, cfg.adaptive_eps)
            total = total + loss.sum()
            logs["weak_fm"] = mse.mean()
        return total

    @staticmethod
    def _guidance_column(leading: list[tuple[int, float]], n: int, w: torch.Tensor, guided: bool,
                         device: torch.device) -> torch.Tensor:
        """(n,) guidance inputs: `leading` runs of (count, value), then w (or 1 without guidance)."""
        parts = [torch.full((count,), value, device=device) for count, value in leading]
        rest = n - sum(count for count, _ in leading)
        parts.append(w.expand(rest).float() if guided else torch.ones(rest, device=device))
        return torch.cat(parts)

    def _keep_pattern(self, x0: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor | None:
        """(B, n_keep) kept tokens of every row, from the network's `keep_pattern` when it drops tokens
        (VideoDiT in training mode), else None. Every pass of a row reuses its pattern: the SCM
        quotient (f_t - f_l) / (t - l) would otherwise divide drop-pattern noise by t - l ~ 1e-3."""
        draw = getattr(self.net, "keep_pattern", None)
        return draw(x0, generator) if draw is not None else None

    def _run(self, passes: list[Pass | None], dtype: torch.dtype) -> list[torch.Tensor | None]:
        """Evaluate F for every pass with one network call per path (full, weak): the rows of the
        passes on a path are concatenated, evaluated, and split back. Returns F (n_i, ...) float32 per
        pass (None for a None pass, an empty tensor for an empty one)."""
        out: list[torch.Tensor | None] = [None] * len(passes)
        for i, p in enumerate(passes):         # an empty pass: an empty F, so the arithmetic after it holds
            if p is not None and p.x.shape[0] == 0:
                out[i] = p.x.new_zeros(p.x.shape, dtype=torch.float32)
        for weak in (False, True):
            idx = [i for i, p in enumerate(passes) if p is not None and p.weak == weak and p.x.shape[0] > 0]
            if not idx:
                continue
            group = [passes[i] for i in idx]
            keep = torch.cat([p.keep for p in group]) if group[0].keep is not None else None
            F = self._forward(*(torch.cat([getattr(p, name) for p in group]) for name in ("x", "t", "s")),
                              cat_conditions([p.cond for p in group]),
                              torch.cat([p.guidance for p in group]), weak=weak, dtype=dtype, keep=keep).float()
            for i, part in zip(idx, F.split([p.x.shape[0] for p in group])):
                out[i] = part
        return out

    def _grid(self, device: torch.device) -> torch.Tensor:
        key = (self.config.mva_grid_points, self.config.mva_shift, str(device))
        if key not in self._grid_cache:
            self._grid_cache[key] = mva_grid(self.config.mva_grid_points, self.config.mva_shift, device)
        return self._grid_cache[key]

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
