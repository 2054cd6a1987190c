"""FSDP2 for the trainer (`TrainConfig.fsdp`): the VideoDiT sharded per DiT block over the processes.

Sharding unit: every DiTBlock is one FSDP group (`torch.distributed.fsdp.fully_shard`), the root VideoDiT
holds the rest (patch and condition embeddings, SPRINT fusion, final layer, [MASK] token). Every
parameter is a DTensor sharded along dim 0 (1/N of it on each of N processes); the AdamW state and the
EMA shadow (`EMA` built from the sharded model) are DTensors of the same placement, so the state at rest
takes 1/N of its unsharded size on every process. Checkpoints go through torch.distributed.checkpoint
(`eflow_core.checkpoint.save_sharded_state`).

One all-gather and one reduce-scatter per block and step. FSDP issues its collectives per module call.
Until 2026-12-07 the SolutionFlow loss called the network a data-dependent number of times per process
(the PDG weak path only when the process drew a dropped sample), so one process could run a pass that
another skipped; the loss now makes the same calls on every process with a batch of the same size
(static counts, `SolutionFlow.loss_tensors`), which would allow per-pass resharding, not yet done here. With FSDP's default (re-gather a block for every pass,
reduce its gradient after every backward through it) the processes would then pair different
all-gathers (two gloo processes on the tiny preset stop at once: "Received data size doesn't match
expected size. Is there a distributed collective mismatch"), as DDP paired different parameters before
`FlowObjective` made the step one forward.
Here the step is likewise one collective unit: `gather_for_step` all-gathers every block once, in module
order, and the blocks stay gathered through all passes and the backward (no resharding, no gradient
sync, gradients accumulate on the gathered parameters); `reduce_gradients` then runs one pass over a
single token through every block, with zero weight in the loss, whose backward reduce-scatters each
block's accumulated gradient once and reshards. The price: during a step every process holds the
gathered fp32 parameters and gradients (8 bytes per parameter, plus autocast's bf16 copies of the weights),
beside its 1/N share of the fp32 weights, Adam moments, EMA and gradients (20 / N bytes).

Precision is the trainer's autocast, as with DDP: the gathered weights are fp32 and gradients are reduced
in fp32. (An FSDP MixedPrecisionPolicy with bf16 weights and fp32 reduction fails here: a parameter that
the step's passes left without a gradient gets its bf16 one from `reduce_gradients` beside the others'
fp32 accumulated ones, and FSDP reduces one dtype per group.)

accelerate runs the launch, the precision and the optimizer (`Accelerator.prepare(optimizer, scheduler)`)
but not the sharding: its FSDP2 path (`FullyShardedDataParallelPlugin(fsdp_version=2)`) shards with the
per-call collectives above, and it only switches on for GPU process groups, not the CPU (gloo) runs that
test this module.
"""
from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, fully_shard

from eflow_core.conditioning import Condition, index_condition
from eflow_core.model.dit import VideoDiT

__all__ = ["gather_for_step", "reduce_gradients", "shard_model"]


def shard_model(model: VideoDiT, device: torch.device, mixed_precision: str = "no") -> VideoDiT:
    """Shard `model` in place over the default process group: one FSDP group per DiT block, then the root.

    Every parameter becomes a DTensor, Shard(0) over a 1-D mesh of all processes, moved to `device`'s
    kind (a model on the meta device stays there: its shards have shapes, no storage). Blocks keep
    their gathered weights after a forward (`gather_for_step` decides when to gather). `mixed_precision`:
    the accelerator's, "no" or "bf16" (autocast); fp16 is refused (its gradient scaler is untried with
    sharded gradients; the trainer uses bf16 on GPUs). Returns `model`.
    """
    if mixed_precision not in ("no", "bf16"):
        raise ValueError(f"fsdp=true trains in fp32 or bf16 autocast, not mixed_precision={mixed_precision!r}")
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        raise ValueError("fsdp=true shards the model over several processes: start the trainer with "
                         "`accelerate launch --multi_gpu --num_processes N ...` (N >= 2)")
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for block in model.blocks:
        fully_shard(block, mesh=mesh, reshard_after_forward=False)
    fully_shard(model, mesh=mesh, reshard_after_forward=False)
    # FSDP warns that the network returns a view (unpatchify's reshape), where an in-place write would skip its
    # backward hook; the loss never writes into the network's output (tests/test_fsdp.py matches DDP's losses)
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPVideoDiT\) returned a view tensor")
    return model


def _groups(model: VideoDiT) -> list[FSDPModule]:
    """The FSDP groups of a sharded model in module order: the root, then the blocks."""
    return [model, *model.blocks]


def gather_for_step(model: VideoDiT) -> None:
    """Before a training step: all-gather every block once (same order on every process) and keep the
    gathered weights and their gradients until `reduce_gradients`, whatever passes the loss makes."""
    model.set_requires_gradient_sync(False)
    model.set_reshard_after_backward(False)
    for group in _groups(model):
        group.unshard()


def reduce_gradients(model: VideoDiT, x0: torch.Tensor, cond: Condition) -> None:
    """After the step's backward: reduce-scatter every group's accumulated gradient once and reshard.

    Runs the network once on one token (the first patch of x0's first row, its condition) through every
    block and the [MASK] scatter, with zero weight: the backward adds exact zeros to the gradients, gives
    every parameter one (so every process reduces the same tensors), and FSDP's post-backward of each
    group, now with gradient sync, reduces and reshards it. Call under the step's autocast.
    x0: (B, C, T', H', W') latents of the step; cond: their Condition.
    """
    model.set_requires_gradient_sync(True)
    model.set_reshard_after_backward(True)
    pt, ph, pw = model.config.patch_size
    one_patch = x0[:1, :, :pt, :ph, :pw].detach()
    t = x0.new_full((1,), 0.5, dtype=torch.float32)
    keep_the_token = torch.zeros(1, 1, dtype=torch.long, device=x0.device)    # middle stack + [MASK] scatter
    out = model(one_patch, t, t, index_condition(cond, slice(0, 1)), keep_indices=keep_the_token)
    (out.float() * 0.0).sum().backward()
