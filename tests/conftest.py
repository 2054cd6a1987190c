"""Shared test set-up: offline, one thread per process (the CI machine has 2 cores, and the app tests run
a server subprocess beside the test process)."""
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")    # inherited by subprocesses (app server, notebook kernels)

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def benchmark_env():
    """Environment for `python -m benchmarks.NAME` run from a folder other than the repository root (so its
    files stay out of the repository): the root on PYTHONPATH, as `cd` to it would give. `eflow_core` itself
    comes from `pip install -e .`."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """accelerate keeps one device choice and one precision per process (`AcceleratorState`): after each
    test, forget them, so a test's `Trainer(cpu=True)` or `mixed_precision="bf16"` does not depend on
    which test ran before it."""
    yield
    if "accelerate.state" in sys.modules:
        sys.modules["accelerate.state"].AcceleratorState._reset_state(True)
