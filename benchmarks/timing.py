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


def kernel_times(fn, device: torch.device, calls: int) -> dict[str, dict[str, float]]:
    """torch.profiler over `calls` calls of `fn()`: {name: {"ms": time per call, "launches": launches per
    call}} per GPU kernel on CUDA (its device time), per CPU op on the CPU (its self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for _ in range(calls):
            fn()
        if cuda:
            torch.cuda.synchronize()
    times: dict[str, dict[str, float]] = {}
    for event in prof.events():
        if (event.device_type.name == "CUDA") != cuda:
            continue
        row = times.setdefault(event.name, {"ms": 0.0, "launches": 0.0})
        row["ms"] += (event.device_time if cuda else event.self_cpu_time_total) / 1e3 / calls
        row["launches"] += 1 / calls
    return times
