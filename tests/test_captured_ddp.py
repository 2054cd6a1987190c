"""The captured training step under DDP (issue 25) on two GPUs: replaying the CUDA graph, which holds
DDP's gradient all-reduces, trains like the eager DDP step, across App. C's phase change.

One torchrun job of two processes (NCCL; this file run as a script) trains the tiny preset twice, eager and
captured, in fp32. Process 0 writes the losses and the weights of both runs, and the test compares them.
Skipped where fewer than two GPUs are visible: the rules it checks (PyTorch's for capturing DDP) are in
eflow_core/captured_step.py, and tests/test_captured_step.py pins them on the CPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
# 64 steps: the 75%-drop phase to step 51, then dense + MVA for 13; 11 eager DDP steps in each phase, then replays
STEPS = 64

pytestmark = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP capture needs two GPUs")


def _worker(out: Path) -> None:
    """Under torchrun, 2 processes: the eager and the captured run, each one Trainer from the same seed."""
    from safetensors.torch import save_file

    from eflow_core.config import load_train_config
    from eflow_core.train import Trainer

    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    results, weights = {}, {}
    for capture in ("false", "true"):
        config = load_train_config("tiny", [f"steps={STEPS}", "checkpoint_every=1000", "log_every=4", "batch_size=8",
                                            "data.num_samples=256", "mixed_precision=no", f"capture={capture}"])
        trainer = Trainer(config, out / f"capture-{capture}", progress=False)
        results[capture] = [row["loss"] for row in trainer.fit()]
        results[f"{capture}-graph-phase"] = trainer.captured.key[0] if trainer.captured and trainer.captured.graph else None
        weights.update({f"{capture}.{k}": v.detach().cpu().clone() for k, v in trainer.raw_model.state_dict().items()})
    if torch.distributed.get_rank() == 0:
        save_file(weights, str(out / "weights.safetensors"))
        (out / "results.json").write_text(json.dumps(results))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def test_captured_ddp_step_trains_like_the_eager_ddp_step(tmp_path):
    from safetensors.torch import load_file

    # no NVLink multicast; NCCL's async error handling off before the first run starts the process group
    # (the Trainer sets it only when it builds a captured step, and here the eager run comes first)
    env = {**os.environ, "NCCL_NVLS_ENABLE": "0", "CUDA_VISIBLE_DEVICES": "0,1", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "0"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
           str(tmp_path)]
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0 and (tmp_path / "results.json").exists(), proc.stdout[-3000:] + proc.stderr[-6000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["true-graph-phase"] == 1                 # the dense phase's graph was captured and replayed
    torch.testing.assert_close(torch.tensor(results["true"]), torch.tensor(results["false"]), rtol=2e-3, atol=1e-5)
    weights = load_file(str(tmp_path / "weights.safetensors"))
    for name, value in weights.items():
        if name.startswith("false."):
            other = weights["true." + name[len("false."):]]
            torch.testing.assert_close(other, value, rtol=2e-3, atol=2e-5, msg=name)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
