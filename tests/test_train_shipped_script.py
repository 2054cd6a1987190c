"""checkpoints/train_shipped.sh: how it names runs and picks each run's starting weights (MODEL:TAG
candidates, INIT and INIT_<RUN>), checked before anything trains; and, `slow`, one candidate end to
end on the CPU (train, resume, export, split weights, eval into the run's tgz)."""
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "checkpoints" / "train_shipped.sh"


def run_script(tmp_path, timeout=60, **env):
    """Run the script in a scratch copy of nothing but its inputs' names: cwd is the repository (it
    reads checkpoints/), OUT is under tmp_path. Returns the CompletedProcess."""
    full = dict(os.environ, OUT=str(tmp_path / "out"), **env)
    return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=timeout)


def test_a_candidate_run_starting_from_shipped_weights_needs_its_own_folder(tmp_path):
    tag = f"t{os.getpid()}"                  # no checkpoints/shapes-t2v-<tag> exists
    result = run_script(tmp_path, MODEL=f"shapes-t2v shapes-t2v:{tag}", INIT="shipped")
    assert result.returncode == 2
    assert f"INIT=shipped: no checkpoints/shapes-t2v-{tag}/model.safetensors" in result.stdout


def test_init_per_run_overrides_init_and_is_checked(tmp_path):
    missing = tmp_path / "nowhere"
    result = run_script(tmp_path, MODEL="shapes-t2v shapes-t2v:p1", INIT="shipped",
                        INIT_shapes_t2v_p1=str(missing))
    assert result.returncode == 2 and f"INIT={missing} has no model.safetensors" in result.stdout


def test_one_init_folder_for_several_runs_is_refused(tmp_path):
    result = run_script(tmp_path, MODEL="shapes-t2v shapes-t2v:p1", INIT="checkpoints/shapes-t2v")
    assert result.returncode == 2 and "names one folder" in result.stdout
    assert not (tmp_path / "out").exists()   # refused before anything was made


@pytest.mark.slow
def test_a_candidate_trains_resumes_exports_and_evaluates_on_the_cpu(tmp_path):
    """MODEL=shapes-t2v:smoke trains in runs/shapes-t2v-smoke with EXTRA_shapes_t2v_smoke; a second call
    resumes it; the weights come back split, and the tgz holds the card and the eval."""
    name = f"shapes-t2v-smoke{os.getpid()}"
    tag = name.removeprefix("shapes-t2v-")
    env = {"MODEL": f"shapes-t2v:{tag}", "BUDGET": "12", "CALL": "400", "BATCH": "2", "EVAL": "1",
           "EXTRA": "log_every=2 checkpoint_every=1000 warmup_steps=1 model.dim=64 model.ffn_dim=128",
           f"EXTRA_shapes_t2v_{tag}": "model.middle_depth=1"}
    try:
        first = run_script(tmp_path, timeout=600, **env)
        assert first.returncode == 0, first.stdout + first.stderr
        second = run_script(tmp_path, timeout=600, **env)
        assert second.returncode == 0, second.stdout + second.stderr
        out = tmp_path / "out"
        parts = sorted(out.glob(f"{name}.part.*"))
        assert parts and sum(p.stat().st_size for p in parts) > 0
        with tarfile.open(out / f"{name}-run.tgz") as tar:
            names = tar.getnames()
            assert f"runs/{name}-eval.json" in names and f"runs/export/{name}/model_card.json" in names
            card = json.load(tar.extractfile(f"runs/export/{name}/model_card.json"))
            evaluation = json.load(tar.extractfile(f"runs/{name}-eval.json"))
        assert card["config"]["model"]["middle_depth"] == 1 and card["config"]["model"]["dim"] == 64
        assert card["calls"] == 2                           # the second call resumed the same run folder
        assert [row["steps"] for row in evaluation["rows"]] == [1]
    finally:
        for path in [ROOT / "runs" / name, ROOT / "runs" / "export" / name]:
            subprocess.run(["rm", "-rf", str(path)])
        for suffix in (".log", "-eval.json"):
            (ROOT / "runs" / f"{name}{suffix}").unlink(missing_ok=True)
