"""benchmarks/ablations.py (issue 6) end to end at --tiny: trainer + evaluator per variant, JSON records,
the phase schedule each variant trained with, resume (a rerun skips finished runs; --stop-after leaves a
run to resume), and --extra evaluations (claim 1 at Tab. 4's equal NFE)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ["pdg-sfm", "fm", "no-mva", "no-drop", "fm-no-drop"]


def _run(tmp_path, env, out, *extra, returncode=0):
    cmd = [sys.executable, "-m", "benchmarks.ablations", "--tiny", "--seeds", "0",
           "--runs-dir", str(tmp_path / "runs"), "--out", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == returncode, proc.stderr[-3000:]
    return proc.stdout, (json.loads(out.read_text()) if out.exists() else None)


def test_ablations_tiny_records_phases_and_resume(tmp_path, benchmark_env):
    out = tmp_path / "ablations.json"
    _, first = _run(tmp_path, benchmark_env, out, "--variants", "pdg-sfm,fm")
    assert sorted((r["variant"], r["seed"]) for r in first["runs"]) == [("fm", 0), ("pdg-sfm", 0)]

    # all five (the two finished ones are skipped), then FM again at 2 steps = 4 NFE, the pdg-sfm 4-step NFE
    stdout, data = _run(tmp_path, benchmark_env, out, "--extra", "fm:ode:default:2")
    assert "skip pdg-sfm seed 0" in stdout and "skip fm seed 0" in stdout
    runs = {r["variant"]: r for r in data["runs"]}
    assert sorted(runs) == sorted(VARIANTS) and len(data["runs"]) == len(VARIANTS)
    for old in first["runs"]:                               # finished records are kept as they were
        assert runs[old["variant"]] == old

    for rec in data["runs"]:
        ev = rec["eval"]
        assert [row["steps"] for row in ev["rows"]] == [1, 4]
        assert math.isfinite(ev["real_fd_floor"]) and ev["real_fd_floor"] >= 0
        for row in ev["rows"]:
            assert math.isfinite(row["probe_fd"]) and row["probe_fd"] >= 0
            assert all(0.0 <= row["adherence"][a] <= 1.0 for a in ("color", "shape", "motion", "background"))
        assert rec["train_seconds"] > 0 and rec["trained_steps"] == 10

    # the objective and schedule each variant actually trained with
    for fm in ("fm", "fm-no-drop"):
        assert runs[fm]["sampler"] == "ode" and [r["nfe"] for r in runs[fm]["eval"]["rows"]] == [2, 8]
    assert all(runs[v]["sampler"] == "solution" for v in ("pdg-sfm", "no-mva", "no-drop"))
    phases = {v: [(p["drop_ratio"], p["n_mva"] > 0, p["n_scm"] > 0) for p in r["phases"]] for v, r in runs.items()}
    assert phases["pdg-sfm"] == [(0.75, False, True), (0.0, True, True)]
    assert phases["fm"] == [(0.75, False, False), (0.0, False, False)]
    assert phases["no-mva"] == [(0.75, False, True), (0.0, False, True)]
    assert phases["no-drop"] == [(0.0, False, True), (0.0, True, True)]
    assert phases["fm-no-drop"] == [(0.0, False, False), (0.0, False, False)]
    assert "PDG-SFM 4 steps beats FM 4 steps" in stdout and "real-vs-real probe-FD floor" in stdout

    # --extra: one record per finished fm run, the claim judged at equal NFE against it
    (extra,) = data["extra_evals"]
    assert (extra["variant"], extra["seed"], extra["spec"]) == ("fm", 0, ["ode", None, [2]])
    assert [(r["steps"], r["nfe"]) for r in extra["eval"]["rows"]] == [(2, 4)]
    assert extra["eval"]["num_prompts"] == runs["fm"]["eval"]["num_prompts"]
    assert "at equal NFE (4; fm ode, guidance 4)" in stdout and "at equal steps (fm 8 NFE)" in stdout
    stdout, again = _run(tmp_path, benchmark_env, out, "--extra", "fm:ode:default:2")  # done: not evaluated again
    assert len(again["extra_evals"]) == 1


def test_ablations_stop_after_leaves_a_run_to_resume(tmp_path, benchmark_env):
    out = tmp_path / "ablations.json"
    stdout, data = _run(tmp_path, benchmark_env, out, "--variants", "no-mva", "--stop-after", "0", returncode=3)
    assert "stopped no-mva seed 0 at step 0 of 10" in stdout and not data["runs"]
    (stopped,) = data["commands"]               # the stopped call is on record, though it finished nothing
    assert "--stop-after 0" in stopped
    stdout, data = _run(tmp_path, benchmark_env, out, "--variants", "no-mva")
    (rec,) = data["runs"]
    assert rec["trained_steps"] == 10 and rec["variant"] == "no-mva"
    assert len(data["commands"]) == 2 and "--stop-after" not in data["commands"][1]


def test_ablations_rejects_bad_gpu_and_extra_specs(tmp_path, benchmark_env):
    out = tmp_path / "ablations.json"
    for flags in (["--gpus", "cuda:0"], ["--extra", "fm:ode:2"], ["--extra", "fm:euler:2:4"],
                  ["--extra", "fm:ode:strong:4"]):
        cmd = [sys.executable, "-m", "benchmarks.ablations", "--tiny", "--out", str(out), *flags]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path, env=benchmark_env)
        assert proc.returncode == 2 and "error:" in proc.stderr, (flags, proc.stderr[-500:])
        assert not out.exists()


def test_results_file_of_an_older_variant_list_still_loads(tmp_path):
    """A file written before a variant was added loads (and reports); one whose variant changed does not."""
    from benchmarks import ablations
    setup = ablations.setup_of("tiny")
    older = {**setup, "variants": {k: v for k, v in setup["variants"].items() if k != "fm-no-drop"}}
    path = tmp_path / "older.json"
    path.write_text(json.dumps({"setup": older, "runs": []}))
    assert ablations.load_results(path, setup)["setup"] == setup
    changed = json.loads(json.dumps(older))
    changed["variants"]["fm"]["sampler"] = "solution"
    path.write_text(json.dumps({"setup": changed, "runs": []}))
    with pytest.raises(ValueError, match="different setup"):
        ablations.load_results(path, setup)


def test_share_trunk_arms_equal_independent_runs(tmp_path, benchmark_env):
    """--share-trunk: pdg-sfm and no-mva train their shared 80% once per seed, then branch. A branched arm is
    the run an independent training gives (same seed: same init, data order and draws), on the CPU exactly."""
    from safetensors.torch import load_file

    alone = tmp_path / "alone"
    alone.mkdir()
    _run(alone, benchmark_env, alone / "out.json", "--variants", "no-mva", "--steps", "12")
    shared = tmp_path / "shared"
    shared.mkdir()
    stdout, data = _run(shared, benchmark_env, shared / "out.json", "--variants", "pdg-sfm,no-mva", "--steps", "12",
                        "--share-trunk", "--jobs", "2")     # the process pool: branches start when the trunk ends
    assert data["setup"]["share_trunk"] is True and "steps=12" in data["setup"]["scale_overrides"]
    (trunk,) = data["trunks"]
    assert trunk["trunk"] == ["pdg-sfm", "no-mva"] and trunk["steps"] == 10 and trunk["done"]   # ceil(0.8 * 12)
    assert [p["drop_ratio"] for p in trunk["phases"]] == [0.75]
    runs = {r["variant"]: r for r in data["runs"]}
    for rec in runs.values():
        assert rec["trunk"]["steps"] == 10 and rec["trained_steps"] == 12 and rec["resumed_steps"] == 10
        assert [(p["first_step"], p["drop_ratio"]) for p in rec["phases"]] == [(10, 0.0)]
    assert runs["pdg-sfm"]["phases"][0]["n_mva"] > 0 and runs["no-mva"]["phases"][0]["n_mva"] == 0
    ema = lambda root: load_file(str(root / "runs" / "no-mva-seed0" / "checkpoint" / "ema.safetensors"))
    branched, independent = ema(shared), ema(alone)
    assert branched.keys() == independent.keys()
    for name, value in independent.items():
        torch.testing.assert_close(branched[name], value, rtol=0, atol=1e-6, msg=name)
    pdg = load_file(str(shared / "runs" / "pdg-sfm-seed0" / "checkpoint" / "ema.safetensors"))
    assert any(not torch.equal(pdg[name], value) for name, value in branched.items())   # the arms do differ

    # a rerun with the trunk recorded skips everything (and draws the claims); a file without --share-trunk
    # refuses the option
    stdout, again = _run(shared, benchmark_env, shared / "out.json", "--variants", "pdg-sfm,no-mva", "--steps", "12",
                         "--share-trunk", "--figure", str(shared / "claims.html"), "--plotlyjs", "cdn")
    assert "skip no-mva seed 0" in stdout and len(again["trunks"]) == 1 and len(again["runs"]) == 2
    page = (shared / "claims.html").read_text()
    assert "MVA lowers 4-step probe-FD" in page and "arms branched from one trunk per seed" in page
    _run(alone, benchmark_env, alone / "out.json", "--variants", "no-mva", "--steps", "12", "--share-trunk", returncode=2)
