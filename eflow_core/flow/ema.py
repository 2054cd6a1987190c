"""Exponential moving average of a model's parameters (the weights the app ships and samples with).

shadow <- decay * shadow + (1 - decay) * param after every optimiser step. The shadow is kept in
float32 whatever the parameters' dtype (a bf16 shadow cannot move by (1 - decay) = 1e-3 steps).
Buffers are not averaged: they stay the model's own (as in SoFlow's and DiT's training code,
which copy buffers).

A sharded model (FSDP2, `eflow_core.parallel`) has DTensor parameters: the shadow then holds DTensors
of the same placement, and `update` works on each process's own shard (no gather).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """EMA of `model`'s floating-point parameters, keyed by their `named_parameters()` names.

    model: the trained nn.Module (unwrap DDP / accelerate wrappers first so names match);
    decay: in [0, 1); 0 copies the weights at every update.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = False):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.model = model
        self.decay = float(decay)
        self.warmup = warmup
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone().float() for name, p in model.named_parameters() if p.dtype.is_floating_point
        }

    def _params(self, model: nn.Module | None) -> Iterator[tuple[str, torch.Tensor]]:
        for name, p in (model if model is not None else self.model).named_parameters():
            if name in self.shadow:
                yield name, p

    def current_decay(self) -> float:
        """The d of the next update: `decay`, or with `warmup` min(decay, (1 + n) / (10 + n)) after n
        updates, so a short run's average is not dominated by the initial weights (0.999^1000 still
        leaves 37% of them)."""
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module | None = None, decay: float | torch.Tensor | None = None) -> None:
        """shadow <- d * shadow + (1 - d) * param for every tracked parameter, d = `current_decay()`
        unless `decay` is given: a float, or a 0-d tensor on the parameters' device (a captured training
        step reads it there; d = 1 keeps the shadow, for a skipped step), in which case the caller owns
        the schedule and counts `num_updates` (a replayed graph runs no Python). One foreach call for all."""
        d = self.current_decay() if decay is None else decay
        shadows, params = [], []
        for name, p in self._params(model):
            sh = self.shadow[name]
            if sh.device != p.device:
                sh = self.shadow[name] = sh.to(p.device)
            shadows.append(_local(sh))
            params.append(_local(p.detach()).float())
        if shadows and isinstance(d, torch.Tensor):
            torch._foreach_mul_(shadows, d)
            torch._foreach_add_(shadows, torch._foreach_mul(params, 1.0 - d))
        elif shadows:
            torch._foreach_lerp_(shadows, params, 1.0 - d)
        if decay is None:
            self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module | None = None) -> None:
        """Write the EMA weights into `model` (default: the tracked model), in its dtype."""
        for name, p in self._params(model):
            p.copy_(self.shadow[name].to(device=p.device, dtype=p.dtype))

    def state_dict(self) -> dict:
        """{"decay", "num_updates", "shadow": {name: float32 tensor}} (CPU copies are not made)."""
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        """Restore from `state_dict()`; missing or unexpected parameter names raise KeyError."""
        shadow = state["shadow"]
        missing = set(self.shadow) - set(shadow)
        unexpected = set(shadow) - set(self.shadow)
        if missing or unexpected:
            raise KeyError(f"EMA state does not match the model: missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")
        for name, value in shadow.items():
            self.shadow[name] = value.detach().clone().float().to(self.shadow[name].device)
        self.decay = float(state.get("decay", self.decay))
        self.num_updates = int(state.get("num_updates", 0))

    @contextlib.contextmanager
    def swapped(self, model: nn.Module | None = None) -> Iterator[nn.Module]:
        """`with ema.swapped(): ...` runs with the EMA weights in `model` and restores the trained
        weights afterwards (also on an exception). Yields the model."""
        model = model if model is not None else self.model
        backup = {name: p.detach().clone() for name, p in self._params(model)}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in self._params(model):
                    p.copy_(backup[name])


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of a sharded (DTensor) tensor, sharing its storage; any other tensor itself.
    (Duck-typed: importing torch.distributed.tensor would add half a second to every pipeline start.)"""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def bias_corrected(shadow: dict[str, torch.Tensor], initial: dict[str, torch.Tensor], decay: float,
                   updates: int) -> dict[str, torch.Tensor]:
    """Remove the initial weights from a plain (no warm-up) EMA, as Adam corrects its moments.

    After n updates with constant decay d, shadow = d^n theta_0 + (1 - d) sum_k d^(n-k) theta_k, so
    (shadow - d^n theta_0) / (1 - d^n) is the same exponential average over the trained weights alone.
    shadow, initial: {name: tensor}; returns {name: float32 tensor}.
    """
    remaining = decay ** updates
    if remaining >= 1.0:
        raise ValueError("no updates: nothing to correct")
    return {name: (value.float() - remaining * initial[name].float()) / (1.0 - remaining)
            for name, value in shadow.items()}
