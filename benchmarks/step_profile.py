"""Where a sampling step's time goes (issue 26): the model FLOPs of one network evaluation, computed from
the config, and a kernel profile grouped into matmul / attention / norm+modulation (elementwise) / other,
with the GPU's busy time (the union of kernel intervals) and its idle time, the host gaps.

Used by benchmarks/end_to_end.py (`profile_sample` last); nothing here runs on import.
"""
from __future__ import annotations

import itertools
import re
import time

import torch

from eflow_core.config import ModelConfig

# Dense bf16 tensor-core peaks from NVIDIA's data sheets (TFLOP/s, without sparsity). Issue 26 measured a
# 766-798 TFLOP/s bf16 matmul ceiling on the H100 (798 on an 8192^3 product of random data).
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4),
                    ("H800", 989.4), ("A100", 312.0), ("L40S", 362.0), ("RTX 5090", 209.5), ("B200", 2250.0))


def peak_bf16_tflops(device_name: str) -> float | None:
    """The data-sheet dense bf16 peak for a `torch.cuda.get_device_name()`, None if unknown."""
    for key, peak in PEAK_BF16_TFLOPS:
        if key in device_name:
            return peak
    return None


def window_pairs(n: int, radius: int) -> int:
    """Query-key pairs of window attention over n tokens at raster positions 0..n-1, key visible iff
    |i - j| <= radius: n (2r + 1) minus the r (r + 1) pairs that fall off the two ends, r = min(radius, n - 1)."""
    r = min(int(radius), n - 1)
    return n * (2 * r + 1) - r * (r + 1)


def network_flops(config: ModelConfig, grid: tuple[int, int, int], text_tokens: int, batch: int = 1) -> dict[str, float]:
    """Model FLOPs of one VideoDiT forward (no token dropping, as at inference), 2 per multiply-add.

    grid: the token grid (T', H', W') after patching; text_tokens: L (the model adds its null token).
    Returns {"linear", "window_attention", "softmax_attention", "linear_attention", "cross_attention",
    "total"}. Attention counts QK^T and PV over the visible pairs only (4 * pairs * head_dim per head);
    the linear branch of GLGA, q (k^T v), 4 * N * head_dim^2 per head. Conditioning MLPs run on one
    row per sample and are counted too (negligible)."""
    n = grid[0] * grid[1] * grid[2]
    d, f, heads = config.dim, config.ffn_dim, config.num_heads
    head_dim = d // heads
    context = text_tokens + 1 if config.text_dim else 0
    radius = config.window_frames * grid[1] * grid[2] // 2
    gate_heads = heads if config.gate_per_head else 1
    token_values = config.token_values

    macs = {"linear": 0.0, "window_attention": 0.0, "softmax_attention": 0.0, "linear_attention": 0.0,
            "cross_attention": 0.0}
    per_token_block = 3 * d * d + d * d + 2 * d * f                  # QKV, output projection, FFN
    per_token_glga = d * 2 * gate_heads                               # GLGA's gate projection
    per_token_cross = 2 * d * d if config.text_dim else 0             # cross q and output projection
    for index in range(config.depth):
        kind = config.block_attention(index)
        macs["linear"] += n * (per_token_block + per_token_cross + (per_token_glga if kind != "softmax" else 0))
        macs["linear"] += context * 2 * d * d + 6 * d * d            # cross k, v over the text; adaLN (one row)
        if kind == "softmax":
            macs["softmax_attention"] += 2 * n * n * d
        if kind in ("glga", "window"):
            macs["window_attention"] += 2 * window_pairs(n, radius) * d
        if kind in ("glga", "linear"):
            macs["linear_attention"] += 2 * n * head_dim * d
        if config.text_dim:
            macs["cross_attention"] += 2 * n * context * d
    macs["linear"] += n * (token_values * d + 2 * d * d + d * token_values)     # patch embed, fusion, final
    macs["linear"] += 2 * d * d + 3 * (256 * d + d * d)              # final adaLN, time / gap / guidance MLPs
    if config.text_dim:
        macs["linear"] += text_tokens * (config.text_dim * d + d * d) + d * d  # text projection, pooled
    flops = {key: 2.0 * batch * value for key, value in macs.items()}
    flops["total"] = sum(flops.values())
    return flops


# Kernel (CUDA) or operator (CPU) names to a category; attention first (fmha kernels are CUTLASS too).
CATEGORIES = (
    ("attention", re.compile(r"flash|fmha|sdpa|attention|window|_at_b|_x_m|softmax", re.IGNORECASE)),
    ("matmul", re.compile(r"gemm|cutlass|xmma|nvjet|cublas|scaled_mm|triton_tem|aten::(mm|addmm|bmm|baddbmm)\b"
                          r"|aten::linear|matmul", re.IGNORECASE)),
    ("norm+modulation (elementwise)", re.compile(r"triton_(poi|red|per)|elementwise|reduce|norm|gelu|silu|"
                                                 r"CatArray|aten::(mul|add|sub|div|cat|copy_|clone|sigmoid|"
                                                 r"exp|rsqrt|pow|where|neg|sum|mean|amax|abs|clamp|to|_to_copy)", re.IGNORECASE)),
)


def category(name: str) -> str:
    for label, pattern in CATEGORIES:
        if pattern.search(name):
            return label
    return "other"


def _union_us(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for lo, hi in sorted(intervals):
        if hi <= end:
            continue
        total += hi - max(lo, end)
        end = hi
    return total


def profile_kernels(fn, device: torch.device, top: int = 15) -> dict:
    """torch.profiler over one call of `fn()` (warm it up first).

    CUDA: each kernel's device time by category, GPU busy = the union of kernel intervals, wall = CUDA
    events around the call, idle = wall - busy (host gaps: launches, syncs, Python between kernels;
    the profiler's own overhead inflates it a little). CPU: operators' self time by category; busy and
    idle are None. Returns {"categories_ms", "busy_ms", "wall_ms", "idle_ms", "kernels", "top"}."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        if cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        fn()
        if cuda:
            end.record()
            torch.cuda.synchronize()
    by_category: dict[str, float] = {}
    by_name: dict[str, list[float]] = {}
    intervals = []
    for event in prof.events():
        if cuda:
            if event.device_type.name != "CUDA":
                continue
            ms = event.device_time / 1e3
            intervals.append((event.time_range.start, event.time_range.end))
        else:
            ms = event.self_cpu_time_total / 1e3
        label = category(event.name)
        by_category[label] = by_category.get(label, 0.0) + ms
        row = by_name.setdefault(event.name, [0.0, 0])
        row[0] += ms
        row[1] += 1
    busy = _union_us(intervals) / 1e3 if cuda else None
    wall = start.elapsed_time(end) if cuda else None
    ranked = sorted(by_name.items(), key=lambda item: -item[1][0])
    return {"categories_ms": dict(sorted(by_category.items(), key=lambda item: -item[1])),
            "busy_ms": busy, "wall_ms": wall, "idle_ms": (wall - busy) if cuda else None,
            "kernels": sum(count for _, count in by_name.values()),
            "top": [{"name": name[:160], "ms": ms, "calls": calls, "category": category(name)}
                    for name, (ms, calls) in ranked[:top]]}


def profile_sample(flow, noise: torch.Tensor, cond, steps: int, guidance: float, device: torch.device,
                   flops_per_step: float, peak_tflops: float | None) -> dict:
    """One `flow.sample` (a SolutionFlow's Algorithm 2) with an event at each step's end (its callback):
    seconds, TFLOP/s and MFU per step (`flops_per_step`: `network_flops(...)["total"]`); then
    `profile_kernels` of one more sample. Warm the sampler up first."""
    cuda = device.type == "cuda"
    marks: list = []

    def mark(*_) -> None:
        if cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            marks.append(event)
        else:
            marks.append(time.perf_counter())

    def sample(callback=None) -> torch.Tensor:
        return flow.sample(noise, cond, steps, guidance, generator=torch.Generator(device).manual_seed(0),
                           callback=callback)

    mark()
    sample(mark)
    if cuda:
        torch.cuda.synchronize()
        step_s = [a.elapsed_time(b) / 1e3 for a, b in itertools.pairwise(marks)]
    else:
        step_s = [b - a for a, b in itertools.pairwise(marks)]
    profile = profile_kernels(sample, device)
    profile["step_s"] = step_s
    profile["step_tflops"] = [flops_per_step / s / 1e12 for s in step_s]
    profile["step_mfu"] = [x / peak_tflops for x in profile["step_tflops"]] if peak_tflops else None
    return profile
