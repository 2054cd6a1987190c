"""The trainer: solution-flow training of the VideoDiT on `accelerate` (paper Algorithm 1, App. C).

Read top to bottom: build data, text encoder, codec, model, EMA, optimizer; resume if a checkpoint
exists; then for each step pick the phase (token drop ratio, MVA share), draw a batch, encode it,
compute the SolutionFlow loss, step, update EMA, log, checkpoint.

Determinism and exact resume: every step reseeds torch's RNG from (seed, step, rank), and the data
order is a fixed permutation per epoch, so the batch and every random draw of step k are the same
whether the run was interrupted or not. A checkpoint holds model, EMA, optimizer, scheduler and the
step; the RNG and data position follow from the step.

The same command runs on one GPU, many GPUs (`accelerate launch --num_processes N -m eflow_core train
...`) or the CPU (gloo). Across processes the model is replicated (DDP) or, with `fsdp=true`, sharded
per DiT block (eflow_core/parallel.py: FSDP2, sharded EMA, torch.distributed.checkpoint checkpoints).
"""
from __future__ import annotations

import csv
import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from tqdm.auto import tqdm

from eflow_core.checkpoint import (CheckpointError, atomic_save_tensors, atomic_write_json,
                                   flatten_optimizer_state, load_init_weights, load_sharded_state, load_tensors,
                                   remove_stale_sharded, save_sharded_state, tensors_to_floats,
                                   unflatten_optimizer_state)
from eflow_core.codecs import load_codec
from eflow_core.conditioning import encode_condition
from eflow_core.config import Phase, TrainConfig
from eflow_core.data import make_dataset, training_loader
from eflow_core.flow import EMA, SolutionFlow, logs_to_floats
from eflow_core.model.dit import VideoDiT
from eflow_core.transfer import to_device

LOSS_TERMS = ("loss", "fm", "scm", "mva", "weak_fm")
METRIC_FIELDS = ["step", "phase", "loss", "fm", "scm", "mva", "weak_fm", "grad_norm", "lr", "drop_ratio",
                 "it_per_s", "tokens_per_s", "data_wait", "skipped"]


def phase_at(config: TrainConfig, step: int) -> tuple[int, Phase]:
    """The phase in force at `step` (App. C: e.g. 75% drop without MVA for 80%, then dense + MVA)."""
    fraction = step / max(config.steps, 1)
    for i, phase in enumerate(config.phases):
        if fraction < phase.until:
            return i, phase
    return len(config.phases) - 1, config.phases[-1]


class FlowObjective(torch.nn.Module):
    """One step's SolutionFlow loss as one module call: what `accelerate` wraps in DDP.

    Algorithm 1 runs the network several times per step (FM, the SCM target's no-grad pass, the PDG
    weak path, MVA's passes) before one backward. DDP decides which parameters a step left unused
    from the wrapped module's last forward, so wrapping the network alone lets the last pass decide:
    a dense step's MVA pass does not use `mask_token`, the weak path does, and DDP stops with "mark a
    variable ready only once". Wrapped whole, the step is one forward and one backward."""

    def __init__(self, model: VideoDiT, flow: SolutionFlow):
        super().__init__()
        self.model, self.flow = model, flow

    def forward(self, x0: torch.Tensor, cond, ratio: float | torch.Tensor):
        """x0: (B, C, T', H', W') latents; cond: their Condition; ratio: the SCM r of this step -> (scalar
        loss, logs as tensors) of SolutionFlow.loss_tensors."""
        return self.flow.loss_tensors(x0, cond, ratio)


class StepBatches(torch.utils.data.Sampler):
    """Yields this process's index list for steps `start`, `start + 1`, ...: the global batch of step k is
    slice [k B_g, (k + 1) B_g) of a seeded permutation per epoch; process r takes every world-th item."""

    def __init__(self, dataset_len: int, global_batch: int, rank: int, world: int, seed: int, start: int,
                 steps: int):
        self.n, self.global_batch, self.rank, self.world = dataset_len, global_batch, rank, world
        self.seed, self.start, self.steps = seed, start, steps
        self._epoch, self._perm = None, None

    def permutation(self, epoch: int) -> torch.Tensor:
        """The seeded order of `epoch` (built once per epoch, not once per sample)."""
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=generator)
        return self._perm

    def indices_for_step(self, step: int) -> list[int]:
        out = []
        for j in range(step * self.global_batch + self.rank, (step + 1) * self.global_batch, self.world):
            epoch, offset = divmod(j, self.n)
            out.append(int(self.permutation(epoch)[offset]))
        return out

    def __iter__(self):
        for step in range(self.start, self.steps):
            yield self.indices_for_step(step)

    def __len__(self) -> int:
        return max(self.steps - self.start, 0)


def build_conditioning(config: TrainConfig):
    """Text encoder for text models (None for class models)."""
    if config.model.text_dim:
        from eflow_core.text import load_text_encoder
        encoder = load_text_encoder(config.data.text_encoder, cache_dir=config.data.text_cache or None)
        if encoder.dim != config.model.text_dim:
            raise ValueError(f"text encoder {encoder.name} gives {encoder.dim}-d tokens, "
                             f"the model expects text_dim={config.model.text_dim}")
        return encoder
    return None


class Trainer:
    """`Trainer(config, output_dir).fit(stop_at=None)`; `stop_at` ends early (as if killed) for tests."""

    def __init__(self, config: TrainConfig, output_dir: str | Path, cpu: bool | None = None, progress: bool = True):
        self.config, self.output = config, Path(output_dir)
        problem = config.model.head_rank_problem()
        if problem:
            raise ValueError(f"refusing to train a model whose samples keep part of their noise: {problem}")
        use_cpu = cpu if cpu is not None else not torch.cuda.is_available()
        precision = config.mixed_precision
        if precision == "auto":
            precision = "no" if use_cpu else "bf16"
        capture = self._check_capture(config, use_cpu)
        if capture:
            # PyTorch's rule for capturing DDP's all-reduces (CUDA semantics, "Usage with
            # DistributedDataParallel"): NCCL's async error handling off before the process group starts
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "0")
        self.accelerator = Accelerator(cpu=use_cpu, mixed_precision=precision,
                                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        self.device = self.accelerator.device
        self.progress = progress and self.accelerator.is_main_process

        self.dataset = make_dataset(config.data, split="train")
        self.codec = load_codec(config.data.codec, config.data.codec_factor, device=self.device)
        self.text_encoder = build_conditioning(config)
        latent_channels = self.codec.latent_shape(config.data.num_frames, config.data.size, config.data.size)[0]
        if latent_channels != config.model.in_channels:
            raise ValueError(f"codec {config.data.codec} gives {latent_channels} latent channels, the model "
                             f"expects in_channels={config.model.in_channels}")
        torch.manual_seed(config.seed)
        model = VideoDiT(config.model)
        # init_from only for a fresh start: a run with a checkpoint resumes from that instead
        fresh = not (self.output / "checkpoint" / "state.json").exists()
        self.init_card = load_init_weights(model, config.init_from) if config.init_from and fresh else None
        if config.compile and not use_cpu:
            model.compile_blocks(dynamic=True)   # a step's passes run different row counts (one graph for all)
        if config.fsdp:                          # parameters become DTensor shards; so do EMA and Adam state
            from eflow_core.parallel import shard_model
            shard_model(model, self.device, self.accelerator.mixed_precision)
        self.ema = EMA(model, config.ema_decay, warmup=True)
        # fused AdamW skips a non-finite step on the device (`found_inf`), so no step waits on the host;
        # a captured step reads the learning rate from a device tensor, which the scheduler fills
        optimizer = torch.optim.AdamW(model.parameters(), lr=torch.tensor(config.lr, device=self.device)
                                      if capture else config.lr, betas=(0.9, 0.99),
                                      weight_decay=config.weight_decay, fused=True, capturable=capture)
        warmup = max(config.warmup_steps, 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        self.flow = SolutionFlow(model, config.flow)      # its passes run the bare network ...
        self.captured, self.phase_index = None, 0
        self.resident = None             # data.resident=true: the training set on the device (built by fit)
        if capture:
            from eflow_core.captured_step import CapturedStep
            self.captured = CapturedStep(self._update, text_length=getattr(self.text_encoder, "max_length", None),
                                         processes=self.accelerator.num_processes)
        if config.fsdp:                                   # ... sharded: parallel.py runs its collectives
            self.objective = FlowObjective(model, self.flow)
            self.optimizer, self.scheduler = self.accelerator.prepare(optimizer, scheduler)
        else:                                             # ... DDP wraps the step; a captured DDP step
            with self.captured.setup_stream() if capture else nullcontext():   # is built on the capture side stream
                self.objective, self.optimizer, self.scheduler = self.accelerator.prepare(
                    FlowObjective(model, self.flow), optimizer, scheduler)
        self.step = 0
        self.saved_step = None           # the step at which memory and the checkpoint last agreed
        self.bad_steps = 0
        self.train_seconds = 0.0         # seconds of training in earlier calls of this run (time budgets)
        self.fitted_steps = None         # the step total a time budget fitted, kept across resumes
        self.call_start = time.perf_counter()
        # what a model card's lineage says of this run (train_main adds the command); saved in state.json
        # so that a later run starting from this folder (init_from) or `export` can name it
        self.run_record = {"device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
                           else "cpu", "date": time.strftime("%Y-%m-%d")}

    # ---------------------------------------------------------------- state
    @property
    def raw_model(self) -> VideoDiT:
        return self.accelerator.unwrap_model(self.objective).model

    def save(self) -> None:
        """Write the checkpoint atomically (every file temp + rename; state.json last, with the manifest).
        fsdp=true: every process first writes its shards to a new sharded-<step> folder, which state.json
        then names; the folder it named before is removed after."""
        self.accelerator.wait_for_everyone()
        self.saved_step = self.step           # every process: resume() need not reload this step
        folder = self.output / "checkpoint"
        state = {"step": self.step, "bad_steps": self.bad_steps,
                 "train_seconds": self.train_seconds + time.perf_counter() - self.call_start,
                 "fitted_steps": self.fitted_steps, "ema_updates": self.ema.num_updates, "run": self.run_record,
                 "scheduler": tensors_to_floats(self.scheduler.state_dict())}
        if self.config.fsdp:
            state["sharded"] = save_sharded_state(folder, self.step, self.raw_model, self.optimizer.optimizer,
                                                  self.ema.shadow)
        if not self.accelerator.is_main_process:
            return
        if not self.config.fsdp:
            manifest = {"model.safetensors": atomic_save_tensors(folder / "model.safetensors",
                                                                 self.raw_model.state_dict()),
                        "ema.safetensors": atomic_save_tensors(folder / "ema.safetensors", self.ema.shadow)}
            tensors, state["optimizer"] = flatten_optimizer_state(self.optimizer.state_dict())
            manifest["optimizer.safetensors"] = atomic_save_tensors(folder / "optimizer.safetensors", tensors)
            state["manifest"] = manifest
        atomic_write_json(folder / "state.json", state)
        if self.config.fsdp:
            remove_stale_sharded(folder, keep=state["sharded"])

    def resume(self) -> bool:
        """Load the checkpoint in the output directory if there is one; refuse a damaged one clearly.
        A checkpoint this trainer wrote at its current step (a `fit` that stopped, then another) holds
        the tensors it already has: only its counters are read, and a captured graph stays valid."""
        folder = self.output / "checkpoint"
        state_path = folder / "state.json"
        if not state_path.exists():
            return False
        try:
            state = json.loads(state_path.read_text())
        except json.JSONDecodeError:
            raise CheckpointError(f"checkpoint {state_path} is truncated or corrupt (not valid JSON)") from None
        if ("sharded" in state) != self.config.fsdp:
            raise CheckpointError(f"checkpoint {folder} was written with fsdp={str('sharded' in state).lower()}: "
                                  f"resume with the same setting, or start a new run from it with init_from")
        if self.saved_step == self.step == state["step"]:
            pass                                          # in memory already
        elif self.config.fsdp:
            load_sharded_state(folder / state["sharded"], self.raw_model, self.optimizer.optimizer, self.ema.shadow)
            self.ema.num_updates = state["ema_updates"]
        else:
            manifest = state["manifest"]
            model_sd = load_tensors(folder / "model.safetensors", manifest["model.safetensors"])
            ema_sd = load_tensors(folder / "ema.safetensors", manifest["ema.safetensors"])
            opt_tensors = load_tensors(folder / "optimizer.safetensors", manifest["optimizer.safetensors"])
            self.raw_model.load_state_dict(model_sd)
            self.ema.load_state_dict({"shadow": ema_sd, "num_updates": state["ema_updates"]})
            self.optimizer.load_state_dict(unflatten_optimizer_state(opt_tensors, state["optimizer"]))
            if self.captured is not None:                 # the graph reads the learning rate on the device
                for group in self.optimizer.param_groups:
                    group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
                self.captured.reset()                     # a graph recorded earlier holds the old state tensors
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.bad_steps = state["step"], state["bad_steps"]
        self.saved_step = self.step                       # memory and checkpoint agree
        self.train_seconds, self.fitted_steps = state.get("train_seconds", 0.0), state.get("fitted_steps")
        return True

    # ----------------------------------------------------------------- step
    def apply_phase(self, step: int) -> tuple[int, Phase]:
        """Set the token drop ratio and the batch shares of the phase in force at `step` (App. C)."""
        cfg = self.config
        phase_index, phase = phase_at(cfg, step)
        self.phase_index = phase_index                # the captured step keeps one graph per phase
        self.raw_model.drop_ratio = phase.drop_ratio
        self.flow.config = cfg.flow.replace(fm_ratio=phase.fm_ratio, scm_ratio=phase.scm_ratio,
                                            mva_ratio=phase.mva_ratio, r_steps=cfg.steps)
        return phase_index, phase

    def encode_batch(self, batch: dict) -> tuple[torch.Tensor, object]:
        """A collated batch -> (latents x0 (B, C, T', H', W') on the device, the model's condition)."""
        with torch.no_grad():
            x0 = self.codec.encode(to_device(batch["video"], self.device))   # pinned by the loader, or resident
        return x0, encode_condition(self.text_encoder, batch.get("caption"), batch.get("label"), self.device)

    def train_step(self, x0: torch.Tensor, cond) -> dict[str, torch.Tensor | int]:
        """One update (Algorithm 1) at `self.step`: the update of `_update`, eager or replayed from the
        phase's CUDA graph (capture=true), then the learning-rate schedule. Nothing here waits for
        the device. x0: (B, C, T', H', W') latents; cond: their Condition. Returns the step's logs: loss
        terms, grad_norm and skipped (1 where the loss or gradient was not finite and the update was
        skipped) as 0-d device tensors, counts as ints; `logs_to_floats` reads them back."""
        ratio = self.flow.scm_ratio(self.step)
        decay = self.ema.current_decay()
        if self.captured is not None:
            logs = self.captured(self.phase_index, x0, cond, ratio, decay)
        else:
            logs = self._update(x0, cond, ratio, decay)
        self.ema.num_updates += 1          # the EMA's warm-up schedule, kept here (decay given explicitly)
        self.scheduler.step()
        return logs

    def _update(self, x0: torch.Tensor, cond, ratio: float | torch.Tensor,
                decay: float | torch.Tensor) -> dict[str, torch.Tensor | int]:
        """The update without a host sync: SolutionFlow loss, backward, clip, fused AdamW (which skips
        the step on the device when the loss or the gradient norm is not finite) and the EMA (decay
        `decay`, or 1 on a skipped step). ratio, decay: floats, or 0-d device tensors (captured)."""
        cfg = self.config
        if cfg.fsdp:       # sharded: every block gathered once for all of the step's passes (parallel.py)
            from eflow_core.parallel import gather_for_step, reduce_gradients
            gather_for_step(self.raw_model)
        # One autocast region around the whole loss (accelerate also wraps each forward): the weight
        # casts to bf16 are cached for all of the step's network passes instead of redone per pass.
        with self.accelerator.autocast():
            loss, logs = self.objective(x0, cond, ratio)
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        if cfg.fsdp:       # ... and each block's gradient reduce-scattered once
            with self.accelerator.autocast():
                reduce_gradients(self.raw_model, x0, cond)
        grad_norm = self.accelerator.clip_grad_norm_(self.objective.parameters(), cfg.grad_clip)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        bad = ~(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm))
        adamw = self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer
        adamw.found_inf = bad.float()
        self.optimizer.step()
        if not isinstance(decay, torch.Tensor):          # a fill, not a host-to-device copy (no sync)
            decay = torch.full((), decay, device=bad.device)
        self.ema.update(self.raw_model, decay=torch.where(bad, torch.ones_like(decay), decay))
        logs.update(grad_norm=grad_norm.detach().float(), skipped=bad.float())
        return logs

    @staticmethod
    def _check_capture(config: TrainConfig, cpu: bool) -> bool:
        """capture=true: CUDA, one process or DDP over several, no FSDP (a clear error otherwise)."""
        if not config.capture:
            return False
        if cpu or not torch.cuda.is_available():
            raise ValueError("capture=true records CUDA graphs: it needs a GPU (train without it on the CPU)")
        if config.fsdp:
            raise ValueError("capture=true records DDP's step, not fsdp=true's per-block collectives: "
                             "leave one of them off")
        return True

    def _read_back(self, pending: list[dict]) -> list[dict]:
        """The rows of the steps in `pending` (emptied), their logs read from the device as floats;
        counts the non-finite steps in a row and stops the run at `max_bad_steps` (so a run stops at
        most `log_every` steps after that)."""
        rows = []
        for entry in pending:
            values = logs_to_floats(entry.pop("logs"))
            self.bad_steps = self.bad_steps + 1 if values["skipped"] else 0
            rows.append({**entry, **values, "lr": float(entry["lr"]), "skipped": int(values["skipped"])})
            if self.bad_steps >= self.config.max_bad_steps:
                raise FloatingPointError(f"{self.bad_steps} non-finite steps in a row at step {entry['step'] - 1}; "
                                         f"stopping (lower the learning rate or check the data)")
        pending.clear()
        return rows

    # ----------------------------------------------------------------- loop
    def fit(self, stop_at: int | None = None, time_budget: float | None = None,
            stop_after: float | None = None) -> list[dict]:
        """Train to `config.steps` (or `stop_at`).

        time_budget: seconds of training for the whole run, summed over resumed calls (the checkpoint
            keeps the seconds spent). `StepBudget` lowers `config.steps` so the run ends within it; the
            phase schedule scales along and config.json records the step total. A resumed run keeps the
            total its checkpoint was fitted to.
        stop_after: seconds: this call stops (and saves, to resume) once it has trained this long,
            whatever the step total; for a run spread over several bounded calls."""
        cfg, acc = self.config, self.accelerator
        self.output.mkdir(parents=True, exist_ok=True)
        resumed = self.resume()
        if resumed and time_budget is not None and self.fitted_steps:
            cfg.steps = min(cfg.steps, self.fitted_steps)      # keep the plan the earlier calls trained to
        if acc.is_main_process:
            atomic_write_json(self.output / "config.json", cfg.to_dict())
            if hasattr(self.dataset, "classes"):
                atomic_write_json(self.output / "classes.json", list(self.dataset.classes))
        metrics_path = self.output / "metrics.csv"
        if acc.is_main_process:
            _truncate_metrics(metrics_path, self.step if resumed else 0)
            if not resumed:      # the lineage of these weights (a resumed run keeps the one it has)
                if self.init_card is not None:
                    atomic_write_json(self.output / "init.json", self.init_card)
                else:
                    (self.output / "init.json").unlink(missing_ok=True)

        global_batch = cfg.batch_size * acc.num_processes
        sampler = StepBatches(len(self.dataset), global_batch, acc.process_index, acc.num_processes,
                              cfg.seed, self.step, cfg.steps)
        self.call_start = time.perf_counter()
        if cfg.data.resident:        # the set on the device (built once per trainer, on the clock): no loader
            if self.resident is None:
                from eflow_core.data.resident import ResidentSet
                self.resident = ResidentSet(self.dataset, self.device, cfg.data.num_workers, progress=self.progress)
            loader = map(self.resident.batch, sampler)
        else:
            loader = training_loader(self.dataset, sampler, cfg.data.num_workers, self.device)
        end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
        bar = tqdm(total=end, initial=self.step, disable=not self.progress, desc="train", unit="it")
        budget = StepBudget(time_budget, self.train_seconds, self.step) if time_budget is not None else None
        history: list[dict] = []
        pending: list[dict] = []        # steps whose logs are still on the device
        tick, ticks = time.perf_counter(), 0
        waited, ready = 0.0, time.perf_counter()    # seconds spent waiting for the data loader
        saved_at = self.step
        self.objective.train()
        for batch in loader:
            waited += time.perf_counter() - ready
            if self.step >= end:
                break
            if stop_after is not None and _largest(time.perf_counter() - self.call_start) >= stop_after:
                break
            torch.manual_seed(cfg.seed * 1_000_003 + self.step * acc.num_processes + acc.process_index)
            phase_index, phase = self.apply_phase(self.step)
            x0, cond = self.encode_batch(batch)
            logs = self.train_step(x0, cond)
            self.step += 1
            ticks += 1
            bar.update(1)
            fitted = budget.observe(self.step, phase_index, time.perf_counter() - self.call_start) if budget else None
            if fitted is not None and fitted < cfg.steps:
                cfg.steps = self.fitted_steps = max(fitted, self.step + 1)
                end = min(end, cfg.steps)
                bar.total = end
                if acc.is_main_process:
                    atomic_write_json(self.output / "config.json", cfg.to_dict())
            # the step's logs stay on the device until a log or checkpoint step reads them all back
            pending.append({"step": self.step, "phase": phase_index, "lr": self.scheduler.get_last_lr()[0],
                            "drop_ratio": phase.drop_ratio, "logs": logs})
            log_now = self.step % cfg.log_every == 0 or self.step == end
            save_now = self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps
            if log_now or save_now:
                history += self._read_back(pending)
            if log_now:
                row = history[-1]
                elapsed = time.perf_counter() - tick
                row.update(_mean_over_processes(row))
                row["it_per_s"] = ticks / elapsed
                row["tokens_per_s"] = row["it_per_s"] * global_batch * _tokens_per_sample(self.raw_model, x0)
                # share of the interval this process sat waiting for its next batch: near 1 = data-bound
                row["data_wait"] = min(waited / elapsed, 1.0)
                tick, ticks, waited = time.perf_counter(), 0, 0.0
                if acc.is_main_process:
                    _append_metrics(metrics_path, row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", phase=phase_index)
            if save_now:
                self.save()
                saved_at = self.step
            ready = time.perf_counter()
        bar.close()
        history += self._read_back(pending)
        if self.step != saved_at:
            self.save()   # stopped early: keep the state so a resume continues from here
        return history


class StepBudget:
    """Fits a run's step total to a budget of training seconds (`Trainer.fit(time_budget=...)`).

    It times a window of steps at the start of every call (past the data workers' start-up) and of
    every phase (App. C's dense + MVA phase is slower than the 75%-drop phase), then proposes the step
    total that, at the rate just measured, ends when the budget does. The trainer only ever lowers
    the total: raising it would move the phase boundaries back over steps already trained, so a
    pessimistic early window costs steps, never the schedule.
    """

    CALL_WINDOW = (30, 80)       # steps after a call's first step: past the data workers' start-up
    PHASE_WINDOW = (10, 40)      # steps after a phase's first step

    def __init__(self, budget_s: float, spent_s: float, start_step: int):
        self.budget_s, self.spent_s = budget_s, spent_s        # spent_s: by earlier calls of the run
        self.window = (start_step + self.CALL_WINDOW[0], start_step + self.CALL_WINDOW[1])
        self.phase, self.window_start_s = None, None

    def observe(self, step: int, phase_index: int, call_s: float) -> int | None:
        """After step `step` (in phase `phase_index`), `call_s` seconds into this call: the proposed
        step total when a timing window closes, else None. Every process proposes the same total."""
        if self.phase is not None and phase_index != self.phase:
            self.window = (step - 1 + self.PHASE_WINDOW[0], step - 1 + self.PHASE_WINDOW[1])
        self.phase = phase_index
        call_s = _largest(call_s) if step in self.window else call_s    # same clocks on every process
        if step == self.window[0]:
            self.window_start_s = call_s
        if step != self.window[1] or self.window_start_s is None:
            return None
        rate = (self.window[1] - self.window[0]) / max(call_s - self.window_start_s, 1e-9)
        self.window_start_s = None
        return step + int(rate * (self.budget_s - self.spent_s - call_s))


def _reduce_over_processes(values: list, op: str = "sum") -> torch.Tensor | None:
    """`values` (nested lists of floats) as a float64 tensor all-reduced with `op` ("sum" | "max") over
    the processes; None in a single process. Every process must call it at the same point."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    t = torch.tensor(values, dtype=torch.float64,
                     device="cuda" if torch.distributed.get_backend() == "nccl" else "cpu")
    reduce_op = torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM
    torch.distributed.all_reduce(t, op=reduce_op)
    return t


def _largest(value: float) -> float:
    """The largest of `value` over all processes (itself in a single process): decisions taken on
    clocks must be the same on every process, or one would wait for the others forever."""
    t = _reduce_over_processes([value], "max")
    return value if t is None else float(t.item())


def _mean_over_processes(row: dict) -> dict[str, float]:
    """Each loss term of LOSS_TERMS in `row` averaged over the processes that logged it (a multi-GPU
    run logs its global batch's loss; a process whose batch share held no weak-path sample has no
    `weak_fm`). Every process must call it at the same step."""
    own = {k: float(row[k]) for k in LOSS_TERMS if k in row}
    sums_counts = _reduce_over_processes([[own.get(k, 0.0), float(k in own)] for k in LOSS_TERMS])
    if sums_counts is None:
        return own
    return {k: s / n for k, (s, n) in zip(LOSS_TERMS, sums_counts.tolist()) if n > 0}


def _tokens_per_sample(model: VideoDiT, x0: torch.Tensor) -> int:
    grid = model.token_grid(tuple(x0.shape[2:]))
    return grid[0] * grid[1] * grid[2]


def _append_metrics(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in METRIC_FIELDS})


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume keep the rows up to the resumed step; on a fresh start begin a new log."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
    path.unlink()
    for r in rows:
        _append_metrics(path, r)


def train_main(config: TrainConfig, output_dir: str, stop_at: int | None = None,
               time_budget: float | None = None, stop_after: float | None = None, command: str | None = None) -> None:
    """CLI entry: train (resuming if the output holds a checkpoint), print where things are. `command`: the
    command line, for the run record in the checkpoint (model cards name it)."""
    trainer = Trainer(config, output_dir)
    if command:
        trainer.run_record["command"] = command
    start = time.time()
    history = trainer.fit(stop_at=stop_at, time_budget=time_budget, stop_after=stop_after)
    if trainer.accelerator.is_main_process:
        last = history[-1] if history else {}
        processes = trainer.accelerator.num_processes
        print(f"trained to step {trainer.step}/{config.steps} in {time.time() - start:.0f}s on {processes} "
              f"process{'es' if processes > 1 else ''}; "
              f"last loss {last.get('loss', float('nan')):.4f}; checkpoint in {Path(output_dir) / 'checkpoint'}")

