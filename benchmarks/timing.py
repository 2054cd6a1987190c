"""Timing shared by the benchmark scripts: device-synchronised repeats (CUDA events on a GPU, the wall
clock on the CPU). Warm up before calling: the first call of a compiled or autotuned function is not
a measurement."""
from __future__ import annotations

import time

import torch


def device_times(fn, device: torch.device, repeats: int) -> list[float]:
    """Seconds of `fn()` for each of `repeats` calls; fn itself must not synchronise."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times
