"""benchmarks/multi_gpu.py: its pure helpers (throughput, loss agreement, launch environment), and the
script end to end with 2 CPU processes (gloo) on the tiny preset: the plumbing the 2-GPU run relies on."""
import importlib.util
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

from benchmarks.multi_gpu import NO_MULTICAST, launch_command, loss_agreement, run_env, throughput

ROOT = Path(__file__).resolve().parent.parent


def test_throughput_is_the_median_rate_after_the_skipped_steps():
    rates = [random.uniform(5, 50) for _ in range(9)]
    rows = [{"step": 10.0 * (i + 1), "loss": 1.0, "it_per_s": r} for i, r in enumerate(rates)]
    rows.append({"step": 100.0, "loss": 1.0})                   # a row without a rate is ignored
    assert throughput(rows, skip=40) == sorted(rates[4:])[2]    # steps 50..90: the median of five
    assert throughput(rows, skip=1000) is None


def test_loss_agreement_accepts_noise_and_rejects_an_offset():
    steps = range(10, 130, 10)
    base = [2.0 * math.exp(-s / 60) + 0.3 + random.gauss(0, 0.02) for s in steps]
    reference = [[s, v] for s, v in zip(steps, base)]
    same = [[s, v + random.gauss(0, 1e-3)] for s, v in zip(steps, base)]
    offset = [[s, 1.3 * v] for s, v in zip(steps, base)]

    agree = loss_agreement(same, reference, skip=40)
    assert agree["agree"] and agree["n"] == 8                   # steps 50..120 paired
    assert all(math.isfinite(agree[k]) for k in ("mean_loss", "mean_loss_reference", "mean_diff", "stderr",
                                                 "rel_diff"))
    apart = loss_agreement(offset, reference, skip=40)
    assert not apart["agree"] and abs(apart["rel_diff"] - 0.3) < 1e-9
    assert loss_agreement(same[:5], reference, skip=40)["n"] == 1       # only shared steps > skip pair up
    assert loss_agreement([], reference, skip=40)["mean_diff"] is None


def test_runs_get_multicast_off_and_several_processes_go_through_torchrun(monkeypatch):
    """The lent machine's hard rule holds whatever the caller's environment says; `--cpu --num_processes 2`
    would start one process, so a multi-process run is always `--multi_gpu` (torchrun)."""
    import argparse

    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")
    for cpu in (False, True):
        env = run_env(cpu)
        assert {k: env[k] for k in NO_MULTICAST} == NO_MULTICAST
        assert str(ROOT) in env["PYTHONPATH"].split(os.pathsep)
        args = argparse.Namespace(cpu=cpu, config="tiny", overrides=["seed=1"], steps=6, log_every=2)
        multi, one = launch_command(args, 2, 4, Path("out")), launch_command(args, 1, 8, Path("out"))
        assert "--multi_gpu" in multi and multi[multi.index("--num_processes") + 1] == "2"
        assert "--multi_gpu" not in one and one[one.index("--num_processes") + 1] == "1"
        assert ("--cpu" in one) == cpu and multi[multi.index("--mixed_precision") + 1] == ("no" if cpu else "bf16")
        assert one[-7:] == ["seed=1", "batch_size=8", "steps=6", "log_every=2", "checkpoint_every=7",
                            "--output", "out"]       # the script's settings come after the caller's overrides
    assert run_env(True)["CUDA_VISIBLE_DEVICES"] == ""


def test_script_end_to_end_with_two_cpu_processes(tmp_path, benchmark_env):
    out = tmp_path / "out" / "multi_gpu.json"
    cmd = [sys.executable, "-m", "benchmarks.multi_gpu", "--config", "tiny", "--cpu", "--gpus", "2",
           "--batch", "4", "--steps", "6", "--skip", "2", "--log-every", "1", "data.num_samples=32",
           "--workdir", str(tmp_path / "work"), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=540, cwd=tmp_path, env=benchmark_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())

    runs = {r["run"]: r for r in data["runs"]}
    assert sorted(runs) == ["multi", "one", "one_global"]
    failed = {name: r["error_lines"] or r["error"][-1500:] for name, r in runs.items() if "error" in r}
    assert not failed, failed
    assert [(runs[n]["processes"], runs[n]["global_batch"]) for n in ("one", "multi", "one_global")] == \
        [(1, 4), (2, 8), (1, 8)]
    assert all(r["it_per_s"] > 0 and r["samples_per_s"] > 0 and r["steps"] == 6 for r in runs.values())
    assert data["process_check"]["ok"], data["process_check"]        # really two processes
    assert isinstance(data["scaling"], float) and data["scaling"] > 0 and data["efficiency"] > 0
    assert data["meets_1_8x"] in (True, False) and "GPU" in data["acceptance"]

    agree = data["loss_agreement"]
    assert agree["n"] == 4 and agree["rule"] and isinstance(agree["agree"], bool)
    assert all(math.isfinite(agree[k]) for k in ("mean_loss", "mean_loss_reference", "mean_diff", "stderr",
                                                 "rel_diff"))
    for name in ("multi", "one_global"):
        assert [s for s, _ in runs[name]["curve"]] == [1, 2, 3, 4, 5, 6]
        assert all(math.isfinite(v) for _, v in runs[name]["curve"])
    assert data["info"]["split_warning"] is None and data["info"]["device"] == "cpu"
    assert (out.parent / "multi_gpu_loss.html").exists() or importlib.util.find_spec("plotly") is None
    assert "scaling" in proc.stdout and "agree" in proc.stdout
