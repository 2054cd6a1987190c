"""scripts/train_shipped.sh: how it names runs and picks each run's starting weights (MODEL:TAG
candidates, INIT and INIT_<RUN>), checked before anything trains; and, `slow`, one candidate end to
end on the CPU (train, resume, export, split weights, eval into the run's tgz)."""
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "train_shipped.sh"


def run_script(tmp_path, timeout=60, **env):
    """Run the script from the repository root (it reads checkpoints/ and writes runs/) with `env` added
    and OUT under tmp_path. Returns the CompletedProcess."""
    full = dict(os.environ, OUT=str(tmp_path / "out"), **env)
    return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=timeout)


def test_shipped_init_needs_the_models_weights_for_every_run(tmp_path):
    result = run_script(tmp_path, MODEL="shapes-t2v nosuch:tag", INIT="shipped")
    assert result.returncode == 2
    assert "INIT=shipped: no checkpoints/nosuch/model.safetensors" in result.stdout   # a candidate: its MODEL's


def test_init_per_run_overrides_init_and_is_checked(tmp_path):
    missing = tmp_path / "nowhere"
    result = run_script(tmp_path, MODEL="shapes-t2v shapes-t2v:p1", INIT="shipped",
                        INIT_shapes_t2v_p1=str(missing))
    assert result.returncode == 2 and f"INIT={missing} has no model.safetensors" in result.stdout


@pytest.mark.parametrize("flag", ["COMPILE", "CAPTURE", "RESIDENT"])
def test_a_fast_step_flag_is_true_false_or_auto(tmp_path, flag):
    result = run_script(tmp_path, MODEL="shapes-t2v", **{flag: "maybe"})
    assert result.returncode == 2 and f"{flag} must be true, false or auto" in result.stdout


@pytest.mark.parametrize("guidance", ["high", "1.5,,3", "2;3"])
def test_guidance_must_be_a_list_of_scales(tmp_path, guidance):
    result = run_script(tmp_path, MODEL="shapes-t2v", GUIDANCE=guidance)
    assert result.returncode == 2 and "GUIDANCE must be guidance scales" in result.stdout
    assert not (tmp_path / "out").exists()


def test_one_init_folder_for_several_runs_is_refused(tmp_path):
    result = run_script(tmp_path, MODEL="shapes-t2v shapes-t2v:p1", INIT="checkpoints/shapes-t2v")
    assert result.returncode == 2 and "names one folder" in result.stdout
    assert not (tmp_path / "out").exists()   # refused before anything was made


@pytest.mark.slow
def test_a_candidate_of_the_shipped_model_trains_resumes_exports_and_evaluates_on_the_cpu(tmp_path):
    """MODEL=shapes-t2v:TAG with INIT=shipped starts from checkpoints/shapes-t2v, takes EXTRA_shapes_t2v_TAG
    and trains in runs/shapes-t2v-TAG; a second call resumes it; the weights come back split, and the
    tgz holds the card (lineage through the shipped model) and the eval."""
    name = f"shapes-t2v-smoke{os.getpid()}"
    tag = name.removeprefix("shapes-t2v-")
    env = {"MODEL": f"shapes-t2v:{tag}", "INIT": "shipped", "BUDGET": "16", "CALL": "500", "BATCH": "2",
           "EVAL": "1", "EVAL_PROMPTS": "8", "SELECT_PROMPTS": "8", "GUIDANCE": "1.5,3", "EXTRA": "log_every=2 checkpoint_every=1000 warmup_steps=1",
           f"EXTRA_shapes_t2v_{tag}": "ema_decay=0.99"}
    shipped = json.loads((ROOT / "checkpoints" / "shapes-t2v" / "model_card.json").read_text())
    try:
        first = run_script(tmp_path, timeout=900, **env)
        assert first.returncode == 0, first.stdout + first.stderr
        second = run_script(tmp_path, timeout=900, **env)
        assert second.returncode == 0, second.stdout + second.stderr
        out = tmp_path / "out"
        parts = sorted(out.glob(f"{name}.part.*"))
        assert parts and sum(p.stat().st_size for p in parts) > 1e6
        with tarfile.open(out / f"{name}-run.tgz") as tar:
            names = tar.getnames()
            assert f"runs/{name}-eval.json" in names and f"runs/export/{name}/model_card.json" in names
            card = json.load(tar.extractfile(f"runs/export/{name}/model_card.json"))
            evaluation = json.load(tar.extractfile(f"runs/{name}-eval.json"))
        assert card["init_from"] == "checkpoints/shapes-t2v" and card["config"]["ema_decay"] == 0.99
        assert card["config"]["compile"] is False and card["config"]["capture"] is False   # auto: off without a GPU
        assert card["config"]["data"]["resident"] is False
        assert card["steps"] > shipped["steps"] and len(card["runs"]) == len(shipped["runs"]) + 1
        assert card["calls"] == 2                           # the second call resumed the same run folder
        assert {row["guidance"] for row in card["defaults"]["chosen_by"]["grid"]} == {1.5, 3.0}   # GUIDANCE
        assert set(evaluation) == {"heldout-frames", "heldout-vocabulary"}     # a text model: one report per set
        assert all([row["steps"] for row in result["rows"]] == [1] for result in evaluation.values())
    finally:
        for path in [ROOT / "runs" / name, ROOT / "runs" / "export" / name]:
            shutil.rmtree(path, ignore_errors=True)
        for suffix in (".log", "-eval.json", "-defaults.json"):
            (ROOT / "runs" / f"{name}{suffix}").unlink(missing_ok=True)
