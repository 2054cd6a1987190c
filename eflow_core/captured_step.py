"""The training update recorded as a CUDA graph and replayed (issue 24, `capture=true`).

A small model's step is host-bound: Algorithm 1's passes, the backward, the clip, AdamW and the EMA
launch thousands of small kernels, and Python issues them more slowly than the GPU runs them
(docs/BENCHMARKS.md §1a: the GPU was busy 123 ms of a 650 ms step). `SolutionFlow.loss_tensors` and
`Trainer._update` keep every shape static and never wait on the device, so the whole update can be
recorded once with `torch.cuda.graph` and replayed with one launch per step:

- inputs live in static buffers (latents, the condition with text padded to the encoder's length, the
  SCM ratio r(step), the EMA decay); each step copies its batch in and replays;
- one graph per (phase, shapes): App. C's phases differ in token dropping and MVA share. Phases only
  move forward, so capturing a new graph frees the old one;
- the first `warmup` steps of a graph run eagerly on a side stream (cuBLAS, autograd and AdamW state
  are created there, as torch.cuda.graph requires), then it is captured and replayed from the next;
- random draws (noise, times, guidance scale, kept tokens) use the default CUDA generator, which
  advances its offset on every replay, so each replay draws fresh numbers; the learning rate is a
  device tensor the scheduler fills; the fused AdamW skips a non-finite step on the device.

The update is the same function as the eager one (`Trainer._update`); tests/test_captured_step.py
checks, on a GPU, that a replayed step gives the eager step's weights.

Several processes (DDP): the graph holds DDP's gradient all-reduces too (NCCL collectives can be captured
since NCCL 2.9.6). PyTorch's CUDA-semantics notes ("Usage with DistributedDataParallel") give three rules,
kept here and in the trainer: NCCL's async error handling is off before the process group starts
(`TORCH_NCCL_ASYNC_ERROR_HANDLING=0`, set by the Trainer), DDP is constructed on the capture side stream
(`setup_stream`), and at least 11 DDP steps run eagerly before the capture (`warmup`). Every process
captures and replays the same collectives in the same order: the loss's passes and shapes are the same
on every process (static counts).

The capture is thread-local (`capture_error_mode="thread_local"`): only this thread's CUDA calls must be
capture-safe. Other threads keep working while the step is recorded: the DataLoader's pin-memory thread
allocates page-locked buffers for the next batches (`cudaHostAlloc`, which the default "global" mode
counts as an error in any thread: on an H100 on 2026-12-07 a capture at the start of a second `fit` call
failed this way, while 14 fresh workers' batches were being pinned), and NCCL's watchdog polls its events.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn.functional as F

from eflow_core.conditioning import Condition, TextCondition

__all__ = ["CapturedStep"]


class CapturedStep:
    """`CapturedStep(update)(phase, x0, cond, ratio, decay) -> logs`, replaying one CUDA graph per phase.

    update: update(x0, cond, ratio, decay) -> dict of 0-d tensors (and ints), with no host sync and
        static shapes (`Trainer._update`). Runs eagerly for the first `warmup` calls of a phase.
    text_length: text conditions are right-padded to this many tokens (the encoder's max_length), so
        every batch has the same shape; None for class or unconditional models.
    processes: how many DDP processes run the update (1: plain); more sets PyTorch's DDP warm-up of 11
        eager steps.
    warmup: eager steps per graph before its capture (default 3, or 11 with DDP).
    """

    DDP_WARMUP = 11       # PyTorch's rule: DDP's first iterations rebuild its buckets; capture after 11
    capture_mode = "thread_local"     # other threads (pin memory, NCCL's watchdog) run on meanwhile

    def __init__(self, update: Callable[..., dict], text_length: int | None = None, processes: int = 1,
                 warmup: int | None = None):
        if warmup is None:
            warmup = 3 if processes == 1 else self.DDP_WARMUP
        if processes > 1 and warmup < self.DDP_WARMUP:
            raise ValueError(f"a DDP step is captured after at least {self.DDP_WARMUP} eager steps, not {warmup}")
        self.update, self.text_length, self.warmup = update, text_length, warmup
        self.key = None                     # (phase, shapes) of the graph held now
        self.calls = 0                      # calls with this key so far
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: dict[str, torch.Tensor] = {}
        self.packed: torch.Tensor | None = None      # the graph's logs, stacked (one copy per step)
        self.keys: list[str] = []
        self.counts: dict[str, int] = {}
        self.side = torch.cuda.Stream()

    def __call__(self, phase: int, x0: torch.Tensor, cond: Condition, ratio: float, decay: float) -> dict:
        """x0: (B, C, T', H', W') latents on the GPU; cond: their Condition; ratio: r(step) of the SCM
        schedule; decay: the EMA decay of this step. Returns the step's logs (0-d device tensors and ints)."""
        cond = self._pad(cond)
        key = (phase, _shapes(x0, cond))
        if key != self.key:                 # a new phase (or shape): start over, free the old graph
            self.reset()
            self.key = key
        self.calls += 1
        if self.calls <= self.warmup:       # eager on the side stream, as torch.cuda.graph asks
            with _on_stream(self.side):
                logs = self.update(x0, cond, ratio, decay)
            return logs
        if self.graph is None:
            self._capture(x0, cond, ratio, decay)
        self._fill(x0, cond, ratio, decay)
        self.graph.replay()
        packed = self.packed.clone()          # the next replay overwrites the graph's own output
        return {**self.counts, **{k: packed[i] for i, k in enumerate(self.keys)}}

    def reset(self) -> None:
        """Forget the graph: it reads and writes the tensors it was recorded on, and a resume replaces
        the optimizer's and the EMA's state tensors (and the learning-rate tensor). The next calls warm
        up and capture again, on the new ones."""
        self.key, self.calls, self.graph, self.inputs, self.packed = None, 0, None, {}, None

    def setup_stream(self):
        """Context for building the DDP wrapper on the capture side stream (PyTorch's rule for capturing
        DDP); the current stream waits for it on exit."""
        return _on_stream(self.side)

    # ------------------------------------------------------------------------------------------
    def _pad(self, cond: Condition) -> Condition:
        """Text tokens (B, L, D) and mask (B, L) right-padded to `text_length` (masked padding)."""
        if not isinstance(cond, TextCondition) or self.text_length is None:
            return cond
        extra = self.text_length - cond.tokens.shape[1]
        if extra < 0:
            raise ValueError(f"a caption has {cond.tokens.shape[1]} tokens, more than the text length "
                             f"{self.text_length} the captured step was built for")
        return TextCondition(F.pad(cond.tokens, (0, 0, 0, extra)), F.pad(cond.mask, (0, extra), value=False))

    def _capture(self, x0: torch.Tensor, cond: Condition, ratio: float, decay: float) -> None:
        """Allocate the static inputs and record the update on them."""
        device = x0.device
        self.inputs = {"x0": torch.empty_like(x0), "ratio": torch.zeros((), device=device),
                       "decay": torch.zeros((), device=device)}
        if isinstance(cond, TextCondition):
            self.inputs["tokens"], self.inputs["mask"] = torch.empty_like(cond.tokens), torch.empty_like(cond.mask)
        elif isinstance(cond, torch.Tensor):
            self.inputs["labels"] = torch.empty_like(cond)
        self._fill(x0, cond, ratio, decay)
        self.graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        with torch.cuda.graph(self.graph, capture_error_mode=self.capture_mode):
            self._record()

    def _record(self) -> None:
        """What the graph holds: the update on the static inputs, its logs stacked into `packed`."""
        logs = self.update(self.inputs["x0"], self._static_condition(), self.inputs["ratio"], self.inputs["decay"])
        self.keys = [k for k, v in logs.items() if isinstance(v, torch.Tensor)]
        self.counts = {k: v for k, v in logs.items() if not isinstance(v, torch.Tensor)}
        self.packed = torch.stack([logs[k].float().reshape(()) for k in self.keys])

    def _static_condition(self) -> Condition:
        if "tokens" in self.inputs:
            return TextCondition(self.inputs["tokens"], self.inputs["mask"])
        return self.inputs.get("labels")

    def _fill(self, x0: torch.Tensor, cond: Condition, ratio: float, decay: float) -> None:
        """Copy this step's inputs into the static buffers (stream-ordered: no host wait)."""
        self.inputs["x0"].copy_(x0, non_blocking=True)
        self.inputs["ratio"].fill_(float(ratio))
        self.inputs["decay"].fill_(float(decay))
        if isinstance(cond, TextCondition):
            self.inputs["tokens"].copy_(cond.tokens, non_blocking=True)
            self.inputs["mask"].copy_(cond.mask, non_blocking=True)
        elif isinstance(cond, torch.Tensor):
            self.inputs["labels"].copy_(cond, non_blocking=True)


def _shapes(x0: torch.Tensor, cond: Condition) -> tuple:
    if isinstance(cond, TextCondition):
        return tuple(x0.shape), tuple(cond.tokens.shape), cond.tokens.dtype
    return tuple(x0.shape), None if cond is None else tuple(cond.shape)


@contextmanager
def _on_stream(stream: torch.cuda.Stream):
    """Run the block on `stream` (after the current stream's work); the current stream then waits for it."""
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        yield
    torch.cuda.current_stream().wait_stream(stream)
