"""Per-sample objectives of solution-flow training: FM (Eq. 3), SCM (Eq. 4), MVA (Eq. 12), and the
guided velocity targets (CFG Eq. 9, PDG Eq. 11, SoFlow's velocity mix).

Every loss here returns PER-SAMPLE values of shape (B,) in float32; `SolutionFlow.loss` decides how
shares are averaged and combined. "MSE" always means the mean over all non-batch dims, so the
numbers do not depend on the latent's size. Adaptive weights are detached (they scale the gradient,
they are not differentiated).

Where the EFlow paper is implicit we follow SoFlow's public code (zlab-princeton/SoFlow; we read its
`models.py`, `Soflow.get_velocity_loss` / `get_consistency_loss`, and `train.py` through the code
search index). What we found there, in words:
- FM weight: 1 / (|d b/d s| (MSE + eps)^p) with b(t, s) = s - t for the Euler parameterisation, so
  |d b / d s| = 1 and the weight is 1 / (MSE + eps)^p, detached; p and eps come from the config
  (EFlow's "loss weight coefficient" 1.0 is p; eps = 0.01).
- SCM: the target f(x_t + v (l - t), l, s) is computed by the SAME network under no_grad (no EMA
  teacher), with the RNG state replayed so that dropout (for us: token dropping) matches the
  gradient pass. The weight 1/(MSE_q + eps)^p uses the difference quotient
  MSE_q = mean(((f_t - f_l) / (t - l))^2), detached. Their code does not form
  w * ||f_t - f_l||^2 / ((t - l)(t - s)); it backpropagates a surrogate, mean(sign(s - t) F_t * q * w)
  with q = (f_t - f_l)/(t - l), whose gradient is HALF the gradient of the paper's Eq. 4 weight
  1/((t - l)(t - s)) x 1/(MSE/(t - l)^2 + eps)^p times ||f_t - f_l||^2. We implement Eq. 4's value
  as the paper writes it (so the logged loss is a real weighted MSE). The factor 1/2 changes the
  FM : SCM gradient balance by 2x; `FlowConfig.scm_weight_scale = 0.5` (passed here as `scale`)
  reproduces SoFlow's balance exactly, the default 1.0 is the paper's Eq. 4.
- Guided target: v_g = v + (w - 1)(v - v_uncond) (= w v + (1 - w) v_uncond, Eq. 9), then blended with
  the model's own (detached) conditional prediction: v_tgt = m v_g + (1 - m) sg(F(x_t, t, t, c)),
  m = "velocity mix ratio" = 0.25 in EFlow (Tab. 5). Rows whose label was dropped (CFG mask) get the
  plain v, unmixed. With no guidance the target is plain v, unmixed.
"""
from __future__ import annotations

import torch

__all__ = [
    "expand_like",
    "per_sample_mse",
    "adaptive_weight",
    "flow_matching_loss",
    "solution_consistency_loss",
    "mean_velocity",
    "mva_residual",
    "mva_loss",
    "guided_velocity",
    "mix_velocity",
]


def expand_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) with like.ndim dims, for broadcasting per-sample scalars."""
    return x.reshape(x.shape[0], *([1] * (like.ndim - 1)))


def per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean((a - b)^2) over all non-batch dims, in fp32 (fp64 stays fp64). a, b: (B, ...) -> (B,)."""
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    d = a.to(dtype) - b.to(dtype)
    return d.pow(2).reshape(d.shape[0], -1).mean(dim=1)


def adaptive_weight(mse: torch.Tensor, p: float = 1.0, eps: float = 0.01) -> torch.Tensor:
    """Eq. 3's w = 1 / (MSE + eps)^p, detached. mse: (B,) -> (B,)."""
    return (mse.detach().float() + eps).pow(-p)


def flow_matching_loss(pred: torch.Tensor, target: torch.Tensor, p: float = 1.0,
                       eps: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptively weighted flow-matching loss (Eq. 3), per sample.

    pred: (B, ...) the network's velocity F(x_t, t, t, ...) (with grad); target: (B, ...) the
    velocity target (no grad). Returns (loss (B,), mse (B,)), loss = sg(w) * mse, w = 1/(mse+eps)^p.
    """
    mse = per_sample_mse(pred, target.detach())
    return adaptive_weight(mse, p, eps) * mse, mse.detach()


def solution_consistency_loss(f_t: torch.Tensor, f_l: torch.Tensor, t: torch.Tensor, l: torch.Tensor,
                              s: torch.Tensor, p: float = 1.0, eps: float = 0.01,
                              scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Solution-consistency matching loss (Eq. 4), per sample.

    f_t: (B, ...) f(x_t, t, s) with grad; f_l: (B, ...) the target f(x_t + v (l - t), l, s) (no grad);
    t, l, s: (B,) with t > l > s. mse = mean ||f_t - f_l||^2;
    weight = scale / ((t - l)(t - s)) / (mse / (t - l)^2 + eps)^p  (detached; paper Sec. 3.1).
    Returns (loss (B,), mse_q (B,)) where mse_q = mse / (t - l)^2 is the squared difference
    quotient that SoFlow logs ("Con_MSE") and that sets the adaptive weight.
    """
    t, l, s = t.float(), l.float(), s.float()
    mse = per_sample_mse(f_t, f_l.detach())
    dtl = t - l
    mse_q = mse.detach() / dtl.pow(2)
    weight = scale / (dtl * (t - s)) * adaptive_weight(mse_q, p, eps)
    return weight.detach() * mse, mse_q


def mean_velocity(x_a: torch.Tensor, x_b: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean velocity over [b, a] (Sec. 4.2 (b)): v(a, b) = (x_a - x_b) / (a - b), where x_b is the
    solution map's value g(x_a, a, b). x_a, x_b: (B, ...); a, b: (B,) with a != b."""
    return (x_a - x_b) / expand_like(a - b, x_a).to(x_a.dtype)


def mva_residual(x_t: torch.Tensor, g_ts: torch.Tensor, g_tl: torch.Tensor, g_ls: torch.Tensor,
                 t: torch.Tensor, l: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The mean-velocity additivity residual (paper Eq. 15), in its velocity form:
    r = (t - s) v(t, s) - (t - l) v(t, l) - (l - s) v(l, s), with v from `mean_velocity` and
    g_ts = g(x_t, t, s), g_tl = x_l = g(x_t, t, l), g_ls = g(x_l, l, s). All (B, ...), t, l, s: (B,).
    Lemma 1 (App. A.2): r = g(g(x_t, t, l), l, s) - g(x_t, t, s) for any g with g(x, t, t) = x."""
    e = lambda z: expand_like(z, x_t).to(x_t.dtype)  # noqa: E731
    return (e(t - s) * mean_velocity(x_t, g_ts, t, s) - e(t - l) * mean_velocity(x_t, g_tl, t, l)
            - e(l - s) * mean_velocity(g_tl, g_ls, l, s))


def mva_loss(f_ts: torch.Tensor, f_ls: torch.Tensor) -> torch.Tensor:
    """MVA loss (Eq. 12), per sample: mean ||f(x_t, t, s) - sg f(sg f(x_t, t, l), l, s)||^2.
    f_ts: (B, ...) with grad; f_ls: (B, ...) the composed two-leg target (detached here).
    By Lemma 1 this is mean(mva_residual^2), the squared semigroup defect. Returns (B,)."""
    return per_sample_mse(f_ts, f_ls.detach())


def guided_velocity(v: torch.Tensor, v_uncond: torch.Tensor, w: torch.Tensor | float) -> torch.Tensor:
    """CFG / PDG target (Eq. 9, Eq. 11): w v + (1 - w) v_uncond = v + (w - 1)(v - v_uncond).
    v, v_uncond: (B, ...); w: float, 0-d tensor or (B,). For PDG, v_uncond is the weak path's null prediction."""
    if isinstance(w, torch.Tensor):
        w = expand_like(w.float(), v) if w.ndim else w.float()
    return v + (w - 1.0) * (v - v_uncond)


def mix_velocity(v_guided: torch.Tensor, v_pred: torch.Tensor, ratio: float) -> torch.Tensor:
    """SoFlow's velocity mix: ratio * v_guided + (1 - ratio) * sg(v_pred), v_pred the model's own
    prediction of the guided velocity at (x_t, t, t, c, w). (B, ...) -> (B, ...)."""
    if ratio == 1.0:
        return v_guided
    return ratio * v_guided + (1.0 - ratio) * v_pred.detach()
