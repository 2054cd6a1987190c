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


def test_rms_norm_dtype_script_tiny_cpu_run(tmp_path, benchmark_env):
    """benchmarks/rms_norm_dtype.py: both variants timed, each within bf16 rounding of the fp32 reference."""
    out = tmp_path / "rms.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.rms_norm_dtype", "--device", "cpu", "--shape",
                           "2,2,64,16", "--repeats", "2", "--out", str(out)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=benchmark_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2
    assert all(r["forward_ms"] > 0 and r["forward_backward_ms"] > 0 for r in rows), rows
    assert all(r["max_abs_error_vs_fp32"] < 0.1 for r in rows), rows


def test_ladder_refuses_a_batch_that_starves_a_term():
    """At batch 2 the 0.5 / 0.25 / 0.25 split gives MVA no sample: the row is an error, not a copy."""
    import types

    import torch
    from benchmarks.train_ladder import LADDER, measure

    args = types.SimpleNamespace(preset="tiny", latent=(4, 8, 8), batch=2, warmup=1, iters=1)
    name, model_changes, flow_changes, drop = next(row for row in LADDER if row[0] == "+ MVA")
    assert "no sample to MVA" in measure(name, model_changes, flow_changes, drop, args, torch.device("cpu"))["error"]


def test_data_path_compares_loader_and_resident_batches(tmp_path, benchmark_env):
    """benchmarks/data_path.py: checks resident batches against the loader's, then times both paths."""
    out = tmp_path / "data_path.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.data_path", "--config", "shapes-t2v", "--batch", "16",
                           "--workers", "0", "--batches", "3", "--device", "cpu", "data.num_samples=100",
                           "data.num_frames=5", "--out", str(out)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=benchmark_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["clips"] == 100 and 0 < result["max_error"] <= 1 / 255 + 1e-6
    assert all(row["batches_per_s"] > 0 and row["timed_batches"] == 3 for row in result["rows"].values())
    assert "--batches 3" in result["command"]


def test_time_to_quality_trains_the_shipped_recipe_from_scratch():
    """--recipe shipped: the config on the shipped card (what the shipped weights trained with), not the
    preset's defaults; never its weights; overrides on top."""
    from benchmarks.time_to_quality import training_config
    from eflow_core.checkpoint import SHIPPED_DIR

    card = json.loads((SHIPPED_DIR / "shapes-t2v" / "model_card.json").read_text())["config"]
    shipped = training_config("shapes-t2v", "shipped", ["data.num_workers=3"])
    preset = training_config("shapes-t2v", "preset", [])
    assert (shipped.lr, shipped.warmup_steps, shipped.batch_size) == (card["lr"], card["warmup_steps"], card["batch_size"])
    assert (shipped.lr, shipped.warmup_steps) != (preset.lr, preset.warmup_steps)     # they differ, so this tells
    assert shipped.init_from == "" and card["init_from"] and shipped.data.num_workers == 3
    assert shipped.steps >= 100_000 and shipped.model.replace(backend="auto") == preset.model   # the card trained on sdpa
    with pytest.raises(SystemExit, match="no shipped model card"):
        training_config("tiny", "shipped", [])


def test_time_to_quality_plot_only_draws_the_curve_of_a_json(tmp_path):
    """--plot-only: the page from a run's JSON (a GPU image without plotly writes none)."""
    from benchmarks.time_to_quality import main

    rows = [{"train_seconds": s, "step": 10 * s, "adherence": {"color": a, "shape": a, "motion": a, "background": a,
                                                                "all": a}} for s, a in ((60, 0.2), (120, 0.7))]
    (tmp_path / "time_to_quality.json").write_text(json.dumps({"target": 0.95, "rows": rows}))
    main(["--plot-only", "--out", str(tmp_path)])
    page = (tmp_path / "time_to_quality.html").read_text()
    assert "plotly" in page.lower() and "target 95%" in page


@pytest.mark.slow
def test_time_to_quality_evaluates_at_intervals_of_training_time(tmp_path):
    """A small shapes-t2v from scratch on the CPU: two evaluations, 8 and 16 s of training, a JSON row each
    (training seconds increase, adherence per attribute) and the plotly page (about 30 s)."""
    from benchmarks.time_to_quality import main

    main(["--config", "shapes-t2v", "--recipe", "preset", "model.dim=64", "model.num_heads=2", "model.ffn_dim=128", "batch_size=4",
          "data.num_workers=0", "--budget", "16", "--every", "8", "--prompts", "4", "--device", "cpu",
          "--out", str(tmp_path)])
    result = json.loads((tmp_path / "time_to_quality.json").read_text())
    seconds = [row["train_seconds"] for row in result["rows"]]
    assert len(seconds) == 2 and 8 <= seconds[0] < seconds[1] and result["rows"][1]["step"] > result["rows"][0]["step"]
    assert set(result["rows"][0]["adherence"]) == {"color", "shape", "motion", "background", "all"}
    assert result["reached"] is None            # 16 s of a 64-wide model is far from 95%
    assert result["finished"] and "plotly" in (tmp_path / "time_to_quality.html").read_text().lower()


@pytest.mark.slow
def test_time_to_quality_resumes_across_calls(tmp_path):
    """--call-seconds ends a call after an evaluation when another interval would not fit; the same command
    resumes the run (trainer checkpoint and the rows so far) and finishes it (about 40 s)."""
    from benchmarks.time_to_quality import main

    argv = ["--config", "shapes-t2v", "--recipe", "preset", "model.dim=64", "model.num_heads=2", "model.ffn_dim=128", "batch_size=4",
            "data.num_workers=0", "--budget", "12", "--every", "6", "--prompts", "4", "--device", "cpu",
            "--call-seconds", "1", "--out", str(tmp_path)]
    main(argv)
    first = json.loads((tmp_path / "time_to_quality.json").read_text())
    assert len(first["rows"]) == 1 and not first["finished"]
    main(argv)
    second = json.loads((tmp_path / "time_to_quality.json").read_text())
    assert second["rows"][0] == first["rows"][0] and len(second["rows"]) == 2 and second["finished"]
    assert second["rows"][1]["train_seconds"] > first["rows"][0]["train_seconds"]
    assert second["rows"][1]["step"] > first["rows"][0]["step"]


def test_end_to_end_script_tiny_cpu_run(tmp_path, benchmark_env):
    """benchmarks/end_to_end.py (issue 26): text encoder, diffusion, VAE decode in both layouts and with several
    latent frames a call, end to end, the FP8 row with its error against the unquantised latent, the per-step
    profile and the softmax peer, on tiny models."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    out = tmp_path / "end_to_end.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.end_to_end", "--tiny", "--device", "cpu",
                           "--out", str(out)], check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=benchmark_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    layout = "channels_last_3d" if "channels_last" in result["rows"][4]["part"] else "contiguous"
    assert [row["part"].split(" (")[0] for row in result["rows"]] == [
        "text encoder", "diffusion, 4 steps", "VAE decode, eager, contiguous", "VAE decode, eager, channels_last_3d",
        f"VAE decode, eager, {layout}, 4 latent frames a call", f"VAE decode, eager, {layout}, 10 latent frames a call",
        "end-to-end", "diffusion, 4 steps, FP8 linears", "peer: softmax attention, flow matching, 3 Euler steps + CFG"]
    assert all(row["median_s"] > 0 and len(row["all_s"]) >= 1 for row in result["rows"]), result["rows"]
    fp8, peer = result["rows"][-2:]
    assert peer["nfe"] == 6
    for row in (result["rows"][1], fp8):        # each diffusion row against the peer timed in the same run
        assert row["speedup_vs_peer"] == pytest.approx(peer["median_s"] / row["median_s"])
    assert fp8["fp8_backend"] == "emulated" and 1e-4 < fp8["rel_l2_vs_bf16"] < 0.1, fp8
    info = result["info"]
    assert info["fp8"]["swapped_layers"] == 24 and info["video_shape"] == [1, 3, 13, 64, 64]
    text, diffusion, vae = result["rows"][0], result["rows"][1], result["rows"][2:6]
    for row in vae[2:]:         # the same video as one latent frame a call, in float32 on the CPU
        assert row["rel_l2_vs_one_frame_per_call"] < 1e-5, row
    assert info["sum_of_parts_s"] == pytest.approx(text["median_s"] + diffusion["median_s"]
                                                   + min(r["median_s"] for r in vae))
    assert result["references"]["paper_end_to_end_s"] == 10.09 and result["references"]["turbodiffusion_end_to_end_s"] == 1.9
    profile = result["profile"]
    assert len(profile["step_s"]) == 4 and profile["categories_ms"]["matmul"] > 0
    assert profile["categories_ms"]["attention"] > 0


def test_end_to_end_network_flops_match_the_flop_counter():
    """benchmarks/step_profile.network_flops counts what torch's FlopCounterMode counts for a model whose
    attention all decomposes into matmuls (softmax blocks, the math SDPA backend), exactly; the window
    pairs match a brute-force count; and the 1.5B preset at 480p comes to 137 TFLOP per evaluation
    (issue 26's 123 took a 4-frame window: the preset's is 6 frames)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.step_profile import network_flops, window_pairs
    from eflow_core.conditioning import TextCondition
    from eflow_core.config import MODEL_PRESETS
    from eflow_core.model.dit import VideoDiT

    config = MODEL_PRESETS["tiny"].replace(text_dim=16, attention="softmax")
    model = VideoDiT(config).eval()
    cond = TextCondition(torch.randn(1, 6, 16), torch.ones(1, 6, dtype=torch.bool))
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 4, 4, 8, 8), torch.rand(1), torch.zeros(1), cond, torch.ones(1))
    flops = network_flops(config, model.token_grid((4, 8, 8)), text_tokens=6)
    assert flops["total"] == counter.get_total_flops()
    assert flops["window_attention"] == 0 and flops["softmax_attention"] > 0

    for n, radius in ((37, 5), (10, 0), (5, 100)):
        assert window_pairs(n, radius) == sum(abs(i - j) <= radius for i in range(n) for j in range(n))

    preset = MODEL_PRESETS["1.5B"]
    full = network_flops(preset, (21, 30, 52), text_tokens=512)
    assert full["total"] / 1e12 == pytest.approx(136.8, abs=0.1)
    assert full["linear"] / 1e12 == pytest.approx(69.8, abs=0.1)
    assert full["softmax_attention"] / 1e12 == pytest.approx(19.8, abs=0.1)     # issue 26: 20
    assert network_flops(preset.replace(window_frames=4), (21, 30, 52), 512)["total"] / 1e12 == pytest.approx(123.0, abs=0.1)
