"""Shared test set-up: offline, one thread per process (the CI machine has 2 cores, and the app tests run
a server subprocess beside the test process)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")    # inherited by subprocesses (app server, notebook kernels)

import torch  # noqa: E402

torch.set_num_threads(1)
