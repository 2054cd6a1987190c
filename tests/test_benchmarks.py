"""The GPU benchmark scripts of issue 9 run end to end on the CPU at tiny sizes (plumbing, not numbers)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("script,expected_rows", [("inference", 4), ("train_ladder", 6)])
def test_benchmark_script_tiny_cpu_run(tmp_path, benchmark_env, script, expected_rows):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{script}", "--tiny", "--device", "cpu",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=benchmark_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == expected_rows
    assert all(("median_s" in r and r["median_s"] > 0) for r in rows), rows


def test_train_step_profile_tiny_cpu_run(tmp_path, benchmark_env):
    """benchmarks/train_step.py (issue 6): the trainer's step in both phases, with its profile."""
    out = tmp_path / "train_step.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.train_step", "--config", "tiny",
                           "--device", "cpu", "--batch", "4", "--warmup", "1", "--iters", "1", "--modes", "eager",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=benchmark_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert [r["phase"] for r in results] == ["drop 0.75, no MVA", "dense + MVA"]
    assert all(r["it_per_s"] > 0 and r["launches_per_step"] > 0 and r["top"] for r in results), results


def test_ladder_refuses_a_batch_that_starves_a_term():
    """At batch 2 the 0.5 / 0.25 / 0.25 split gives MVA no sample: the row is an error, not a copy."""
    import types

    import torch
    from benchmarks.train_ladder import LADDER, measure

    args = types.SimpleNamespace(preset="tiny", latent=(4, 8, 8), batch=2, warmup=1, iters=1)
    name, model_changes, flow_changes, drop = next(row for row in LADDER if row[0] == "+ MVA")
    assert "no sample to MVA" in measure(name, model_changes, flow_changes, drop, args, torch.device("cpu"))["error"]


@pytest.mark.slow
def test_time_to_quality_evaluates_at_intervals_of_training_time(tmp_path):
    """A small shapes-t2v from scratch on the CPU: two evaluations, 8 and 16 s of training, a JSON row each
    (training seconds increase, adherence per attribute) and the plotly page (about 30 s)."""
    from benchmarks.time_to_quality import main

    main(["--config", "shapes-t2v", "model.dim=64", "model.num_heads=2", "model.ffn_dim=128", "batch_size=4",
          "data.num_workers=0", "--budget", "16", "--every", "8", "--prompts", "4", "--device", "cpu",
          "--out", str(tmp_path)])
    result = json.loads((tmp_path / "time_to_quality.json").read_text())
    seconds = [row["train_seconds"] for row in result["rows"]]
    assert len(seconds) == 2 and 8 <= seconds[0] < seconds[1] and result["rows"][1]["step"] > result["rows"][0]["step"]
    assert set(result["rows"][0]["adherence"]) == {"color", "shape", "motion", "background", "all"}
    assert result["reached"] is None            # 16 s of a 64-wide model is far from 95%
    assert "plotly" in (tmp_path / "time_to_quality.html").read_text().lower()
