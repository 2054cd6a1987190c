"""Trainer: exact resume, refusal of damaged checkpoints, phases, multi-process launch (issue 3)."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eflow_core.checkpoint import CheckpointError, atomic_write_bytes
from eflow_core.config import load_train_config
from eflow_core.train import Trainer, phase_at

ROOT = Path(__file__).resolve().parent.parent


def tiny_config(**overrides):
    items = [f"{k}={v}" for k, v in overrides.items()]
    return load_train_config("tiny", ["steps=6", "checkpoint_every=3", "data.num_samples=64"] + items)


def losses(history):
    return [row["loss"] for row in history]


def test_resume_matches_uninterrupted_run(tmp_path):
    config = tiny_config()
    full = Trainer(config, tmp_path / "full", progress=False).fit()
    first = Trainer(config, tmp_path / "split", progress=False).fit(stop_at=4)     # "killed" after 4 steps
    second = Trainer(config, tmp_path / "split", progress=False).fit()             # fresh process state, resumes
    assert len(first) == 4 and len(second) == 2
    resumed = losses(first) + losses(second)
    assert all(abs(a - b) <= 1e-6 * max(1.0, abs(a)) for a, b in zip(losses(full), resumed)), (losses(full), resumed)
    rows = (tmp_path / "split" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 6, "the metrics log continues across the resume without duplicate rows"


def test_step_budget_fits_the_rest_of_the_budget_at_each_measured_rate():
    """The proposed total is the current step plus (measured rate) x (budget left), with the budget
    left counting earlier calls; a slower phase gets its own window and a lower total."""
    import random

    from eflow_core.train import StepBudget

    rate, spent, budget = random.uniform(2, 10), random.uniform(0, 50), random.uniform(200, 400)
    fit, t, proposals = StepBudget(budget, spent, start_step=0), 0.0, []
    for step in range(1, 200):
        phase = 0 if step <= 100 else 1
        t += 1 / rate if phase == 0 else 2 / rate          # the second phase runs at half the rate
        proposal = fit.observe(step, phase, t)
        if proposal is not None:
            proposals.append((step, proposal, t))
    assert [p[0] for p in proposals] == [StepBudget.CALL_WINDOW[1], 100 + StepBudget.PHASE_WINDOW[1]]
    (s1, first, t1), (s2, second, t2) = proposals
    assert abs(first - (s1 + rate * (budget - spent - t1))) <= 1.0
    assert abs(second - (s2 + rate / 2 * (budget - spent - t2))) <= 1.0 and second < first


def test_time_budget_spans_resumed_calls(tmp_path, monkeypatch):
    """--time-budget is for the whole run: a call cut by --stop-after saves, the next call keeps the
    step total the first one fitted and adds its seconds to the ones already spent."""
    from eflow_core.train import StepBudget

    monkeypatch.setattr(StepBudget, "CALL_WINDOW", (2, 6))
    config = tiny_config(steps=100_000, checkpoint_every=100_000)
    first = Trainer(config, tmp_path, progress=False)
    first.fit(time_budget=6.0, stop_after=2.0)
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["fitted_steps"] and state["step"] < state["fitted_steps"] < 100_000
    assert state["train_seconds"] >= 2.0
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == state["fitted_steps"]

    second = Trainer(tiny_config(steps=100_000, checkpoint_every=100_000), tmp_path, progress=False)
    second.fit(time_budget=6.0)
    final = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert final["step"] == second.config.steps <= state["fitted_steps"], "the resumed call kept the plan"
    assert final["train_seconds"] > state["train_seconds"]


def test_truncated_checkpoint_is_refused(tmp_path):
    config = tiny_config(steps=3)
    Trainer(config, tmp_path, progress=False).fit()
    weights = tmp_path / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        Trainer(config, tmp_path, progress=False).fit()


def test_phases_follow_the_schedule():
    config = load_train_config("tiny", ["steps=100"])
    assert phase_at(config, 0)[1].drop_ratio == 0.75 and phase_at(config, 0)[1].mva_ratio == 0
    assert phase_at(config, 79)[0] == 0 and phase_at(config, 80)[0] == 1
    assert phase_at(config, 99)[1].drop_ratio == 0 and phase_at(config, 99)[1].mva_ratio > 0


def test_training_runs_every_phase_and_logs_terms(tmp_path):
    config = tiny_config(steps=10, checkpoint_every=5)
    history = Trainer(config, tmp_path, progress=False).fit()
    assert {row["phase"] for row in history} == {0, 1}
    assert all(row["mva"] > 0 for row in history if row["phase"] == 1)
    assert all(row["drop_ratio"] == 0.75 for row in history if row["phase"] == 0)
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"loss", "fm", "scm", "mva", "it_per_s", "tokens_per_s", "data_wait"} <= set(header)
    with open(tmp_path / "metrics.csv", newline="") as f:
        waits = [float(row["data_wait"]) for row in csv.DictReader(f)]
    assert len(waits) == 10 and all(0 <= w <= 1 for w in waits)     # log_every=1: one share per step


def test_bad_override_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown config key"):
        load_train_config("tiny", ["model.nonsense=3"])


@pytest.mark.slow
def test_accelerate_launch_two_processes_on_cpu(tmp_path):
    """The multi-GPU path through `accelerate launch` (torchrun, DDP), run as two CPU processes over
    gloo (`--cpu` would start one process), through both phases: the dense + MVA steps are the ones
    whose passes use different parameters (FlowObjective), and the time-budget collectives run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", "0", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "eflow_core", "train", "--config", "tiny", "steps=10", "checkpoint_every=10", "batch_size=4",
           "data.num_samples=32", "--time-budget", "600", "--stop-after", "600", "--output", str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "trained to step 10/10" in proc.stdout and "on 2 processes" in proc.stdout
    phases = {row.split(",")[1] for row in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]}
    assert phases == {"0", "1"}, "both phases ran"
    run = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["run"]
    assert run["command"].startswith("eflow train --config tiny") and run["device"] == "cpu"


def test_non_finite_steps_are_skipped_then_training_stops(tmp_path, monkeypatch):
    """A step whose loss is not finite leaves the weights alone; max_bad_steps in a row stop the run."""
    import torch

    config = tiny_config(steps=6, max_bad_steps=3)
    trainer = Trainer(config, tmp_path, progress=False)
    before = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    real_loss = trainer.flow.loss_tensors

    def poisoned(*args, **kwargs):
        loss, logs = real_loss(*args, **kwargs)
        return loss * float("nan"), logs

    monkeypatch.setattr(trainer.flow, "loss_tensors", poisoned)
    with pytest.raises(FloatingPointError, match="3 non-finite steps in a row"):
        trainer.fit()
    after = trainer.raw_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a skipped step must not change the weights"


def test_init_from_continues_an_exported_model_and_keeps_its_lineage(tmp_path):
    """init_from: a second run starts from the first run's exported EMA weights (not a fresh init),
    and its card counts both runs' steps and lists both runs."""
    import torch

    from eflow_core.checkpoint import load_tensors
    from eflow_core.checkpoint import export_for_inference

    Trainer(tiny_config(steps=3), tmp_path / "first", progress=False).fit()
    export_for_inference(tmp_path / "first", tmp_path / "shipped", extra_card={"command": "first", "device": "cpu"})
    shipped = load_tensors(tmp_path / "shipped" / "model.safetensors")

    second = Trainer(tiny_config(steps=2, init_from=str(tmp_path / "shipped"), seed=5), tmp_path / "second",
                     progress=False)
    start = second.raw_model.state_dict()
    assert all(torch.equal(start[k], shipped[k].float()) for k in shipped)
    fresh = Trainer(tiny_config(steps=2, seed=5), tmp_path / "fresh", progress=False).raw_model.state_dict()
    assert not all(torch.equal(start[k], fresh[k]) for k in fresh), "init_from must replace the fresh init"

    second.fit()
    card = json.loads(export_for_inference(tmp_path / "second", tmp_path / "shipped2",
                                           extra_card={"command": "second", "device": "cpu"})
                      .joinpath("model_card.json").read_text())
    assert card["steps"] == 3 + 2
    assert [run["command"] for run in card["runs"]] == ["first", "second"]
    assert [run["steps"] for run in card["runs"]] == [3, 2]


def test_init_from_a_different_model_is_a_clear_error(tmp_path):
    Trainer(tiny_config(steps=1), tmp_path / "first", progress=False).fit()
    with pytest.raises(ValueError, match="do not fit this model"):
        Trainer(tiny_config(steps=1, **{"model.ffn_dim": 96, "init_from": str(tmp_path / "first")}), tmp_path / "b",
                progress=False)


def test_bf16_autocast_training_runs(tmp_path):
    """The GPU's precision path (bf16 autocast around the whole loss) on the CPU: finite losses, and
    the network really ran in bf16 (its first linear layer's output dtype under the trainer's autocast)."""
    trainer = Trainer(tiny_config(steps=2, mixed_precision="bf16"), tmp_path, progress=False)
    _check_bf16_run(trainer)      # conftest's fresh_accelerator_state leaves no bf16 state for the next test


def _check_bf16_run(trainer):
    import math

    import torch

    seen = []
    handle = trainer.raw_model.patch_embed.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    history = trainer.fit()
    handle.remove()
    assert all(math.isfinite(row["loss"]) for row in history)
    assert seen and all(dtype == torch.bfloat16 for dtype in seen)


@pytest.mark.slow
def test_compiled_blocks_trace_the_whole_training_step(tmp_path):
    """What `compile=true` does on a GPU, traced on the CPU (torch.compile's aot_eager backend: no code
    generation; about 55 s, so `-m slow`): both phases (token drop; dense + MVA), every pass of the loss (PDG weak path, SCM and
    MVA targets without grad), no graph break, and the same losses as eager."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    config = tiny_config(steps=5, checkpoint_every=100, **{"model.backend": "sdpa"})
    eager = losses(Trainer(config, tmp_path / "eager", progress=False).fit())
    torch._dynamo.reset()
    counters.clear()
    trainer = Trainer(config, tmp_path / "compiled", progress=False)
    trainer.raw_model.compile_blocks(dynamic=True, backend="aot_eager")
    compiled = losses(trainer.fit())
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert 0 < counters["stats"]["unique_graphs"] <= 16, dict(counters["stats"])
    assert all(abs(a - b) <= 1e-5 * max(1.0, abs(a)) for a, b in zip(eager, compiled)), (eager, compiled)


def test_init_lineage_through_training_folders_and_restarts(tmp_path):
    """init_from a training folder keeps that folder's own ancestry; a fresh restart without init_from
    drops a stale init.json; a resumed run keeps its lineage and is not re-initialised."""
    from eflow_core.checkpoint import export_for_inference

    for name, steps, init in (("a", 3, ""), ("b", 2, "a"), ("c", 1, "b")):
        trainer = Trainer(tiny_config(steps=steps, init_from=str(tmp_path / init) if init else ""), tmp_path / name,
                          progress=False)
        trainer.run_record["command"] = f"train {name}"        # what train_main records from the command line
        trainer.fit()
    card = json.loads(export_for_inference(tmp_path / "c", tmp_path / "c_out").joinpath("model_card.json").read_text())
    assert card["steps"] == 3 + 2 + 1 and [run["steps"] for run in card["runs"]] == [3, 2, 1]
    # every run of the lineage names its command, device and date, also those trained in earlier folders
    assert [run["command"] for run in card["runs"]] == ["train a", "train b", "train c"]
    assert all(run["device"] == "cpu" and run["date"] for run in card["runs"])

    resumed = Trainer(tiny_config(steps=2, init_from=str(tmp_path / "a")), tmp_path / "b", progress=False)
    assert resumed.init_card is None and (tmp_path / "b" / "init.json").exists()

    import shutil
    shutil.rmtree(tmp_path / "b" / "checkpoint")                     # start b again from scratch
    Trainer(tiny_config(steps=2), tmp_path / "b", progress=False).fit()
    assert not (tmp_path / "b" / "init.json").exists()
    card = json.loads(export_for_inference(tmp_path / "b", tmp_path / "b_out").joinpath("model_card.json").read_text())
    assert card["steps"] == 2 and "runs" not in card


def test_atomic_write_syncs_unless_told_the_file_is_a_cache(tmp_path, monkeypatch):
    """Checkpoint files reach the disk before the rename; cache entries (durable=False) skip the fsync."""
    syncs = []
    monkeypatch.setattr(os, "fsync", lambda fd: syncs.append(fd))
    atomic_write_bytes(tmp_path / "state.json", b"{}")
    assert len(syncs) == 1 and (tmp_path / "state.json").read_bytes() == b"{}"
    atomic_write_bytes(tmp_path / "cache" / "entry.npy", b"abc", durable=False)
    assert len(syncs) == 1 and (tmp_path / "cache" / "entry.npy").read_bytes() == b"abc"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cache", "entry.npy", "state.json"]   # no temp files
