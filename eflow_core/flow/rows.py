"""The batch rows of one training loss (Algorithm 1): how a batch splits into FM / SCM / MVA shares,
how many rows of a share a probability selects, the rows with their times and noisy points (`Rows`),
the network evaluations they make (`Pass`), and the loss logs read back as floats. Every count here is
fixed by the batch size and the config, so a step has the same shapes every time (issue 24)."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from eflow_core.conditioning import Condition, index_condition, null_condition
from eflow_core.flow.losses import expand_like

__all__ = ["Pass", "Rows", "logs_to_floats", "row_count", "split_batch"]


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


def row_count(p: float, n: int) -> int:
    """How many of a share's n rows a probability p selects (drops, unguided rows): round(p n), but at
    least one where p > 0 and n >= 2, so a small batch still trains every path at every step."""
    if p <= 0 or n == 0:
        return 0
    return max(1, round(p * n)) if n >= 2 else 0


def logs_to_floats(logs: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """`SolutionFlow.loss_tensors` logs (0-d tensors and numbers) as floats, read back with one sync."""
    keys = list(logs)
    device = next((v.device for v in logs.values() if isinstance(v, torch.Tensor)), torch.device("cpu"))
    values = torch.stack([torch.as_tensor(logs[k], dtype=torch.float32, device=device).detach().reshape(())
                          for k in keys])
    return dict(zip(keys, values.cpu().tolist()))


@dataclass
class Pass:
    """The rows of one network evaluation F(x, t, s, cond, guidance) on the full or the weak path;
    x (n, ...) float32, t / s / guidance (n,), keep (n, n_keep) or None."""
    x: torch.Tensor
    t: torch.Tensor
    s: torch.Tensor
    cond: Condition
    guidance: torch.Tensor
    keep: torch.Tensor | None
    weak: bool = False

    def solution(self, F: torch.Tensor) -> torch.Tensor:
        """Eq. 2 for these rows: f(x, t, s) = x + (s - t) F, F (n, ...) the network's output for them."""
        return self.x + expand_like(self.s - self.t, self.x) * F


@dataclass
class Rows:
    """Rows of the batch with what the objective knows of them: clean x0 and noise x1 (n, ...) float32,
    the condition, the kept tokens (n, n_keep) or None; then per row (n,) times t / l / s and guidance
    input, and x = x_t, v = x1 - x0 once `noise_to` ran."""
    x0: torch.Tensor
    x1: torch.Tensor
    cond: Condition
    keep: torch.Tensor | None
    t: torch.Tensor | None = None
    l: torch.Tensor | None = None          # the paper's name for the intermediate time
    s: torch.Tensor | None = None
    guidance: torch.Tensor | None = None
    x: torch.Tensor | None = None
    v: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return self.x0.shape[0]

    def take(self, start: int, stop: int) -> Rows:
        """Rows [start, stop) (a static slice: no copy, no sync)."""
        def cut(value):
            return None if value is None else value[start:stop]
        return Rows(cut(self.x0), cut(self.x1), index_condition(self.cond, slice(start, stop)), cut(self.keep),
                     *(cut(getattr(self, k)) for k in ("t", "l", "s", "guidance", "x", "v")))

    def noise_to(self, t: torch.Tensor) -> None:
        """x_t = (1 - t) x0 + t x1 and v = x1 - x0 (Sec. 3.1)."""
        te = expand_like(t, self.x0)
        self.t, self.x, self.v = t, (1 - te) * self.x0 + te * self.x1, self.x1 - self.x0

    def null_first(self, count: int) -> None:
        """The null condition for the first `count` rows."""
        drop = torch.arange(self.size, device=self.x0.device) < count
        self.cond = null_condition(self.cond, drop)

    def moved(self, x: torch.Tensor) -> Rows:
        """The same rows at another state x (n, ...)."""
        return replace(self, x=x)

    def pass_at(self, t: torch.Tensor, s: torch.Tensor, weak: bool = False) -> Pass:
        return Pass(self.x, t, s, self.cond, self.guidance, self.keep, weak)
