"""The warp-specialised Gluon kernels (eflow_core/kernels/gluon_window.py, Hopper) against the Triton ones they
replace (eflow_core/kernels/triton_window/): the window forward and the backward's dq kernel (issue 5).

First checks, on small shapes chosen to reach every edge (query counts that are not a multiple of the
128-row CTA tile, every key visible, dropped tokens, head dim 64 through the model's strided q/k/v view,
cross-attention with queries that see no key), for the autotuned kernels and for every configuration
of each: the output and dq against the fp32 reference (relative error < 1e-2 and < 2e-2), lse2 against
the Triton forward's (and the same queries without keys). Then, at the benchmark shape (batch 1, 12
heads x 128, bf16, radius 3,120, dense positions and a sorted random quarter of them, as in
attention.py), times every configuration, both autotuned kernels of each pair, and FlexAttention's
forward with the same band (block mask built once, as attention.py does), and reports useful TFLOP/s
(matmuls over the visible pairs: 2 in the forward, 3 in the dq kernel) against this card's measured
matmul ceiling.

    python -m benchmarks.attention_gluon_kernels --n 32760 --out $OUT     # GPU (Hopper) only
"""
from __future__ import annotations

import contextlib
import math
import sys

import torch


from benchmarks.attention import (bench_ms, dense_positions, keep_quarter_positions,
                                  kernel_script_parser, matmul_tflops, rel_err, window_flops, write_result)
from benchmarks.timing import kernel_times
from eflow_core.kernels import triton_window
from eflow_core.kernels.reference import window_attention_reference

# (name, batch, heads, query positions, key positions or None (self-attention), head dim, dtype, radius,
#  strided: q/k/v as views of one (B, N, 3, H, D) projection, as the model makes them)
CHECKS = [
    ("dense, 1,000 queries", 2, 3, "dense:1000", None, 128, torch.bfloat16, 300, False),
    ("dense, 256 queries, all visible", 1, 2, "dense:256", None, 128, torch.bfloat16, 10 ** 6, False),
    ("dropped quarter of 4,096", 1, 2, "quarter:4096", None, 128, torch.float16, 700, False),
    ("head dim 64, model's strided view", 1, 4, "dense:777", None, 64, torch.bfloat16, 200, True),
    ("cross-attention, queries with no key", 1, 2, "spaced:600:7", "spaced:900:3", 128, torch.bfloat16, 2, False),
]
KERNEL_NAMES = {"forward": "_window_fwd_ws", "dq": "_window_bwd_dq_ws"}


def positions(spec: str, gen: torch.Generator, device) -> torch.Tensor:
    """(1, n) int64 ascending positions from "dense:n", "quarter:n_full" or "spaced:n:step"."""
    kind, *nums = spec.split(":")
    if kind == "dense":
        return dense_positions(int(nums[0]), 1, device)
    if kind == "quarter":
        return keep_quarter_positions(int(nums[0]), 1, gen, device)
    n, step = int(nums[0]), int(nums[1])
    return (torch.arange(n, device=device) * step).unsqueeze(0)


def qkv(batch: int, heads: int, nq: int, nk: int, d: int, dtype, strided: bool, device):
    """q (B, H, Nq, D), k, v (B, H, Nk, D); strided: views of one (B, N, 3, H, D) tensor (Nq == Nk)."""
    if strided:
        x = torch.randn(batch, nq, 3, heads, d, device=device, dtype=dtype)
        return x.permute(2, 0, 3, 1, 4).unbind(0)
    return (torch.randn(batch, heads, nq, d, device=device, dtype=dtype),
            torch.randn(batch, heads, nk, d, device=device, dtype=dtype),
            torch.randn(batch, heads, nk, d, device=device, dtype=dtype))


@contextlib.contextmanager
def gluon(mode: str):
    """Run the ops with the Gluon kernels ("auto") or without ("off"); keeps a recorded failure."""
    before = triton_window.gluon_mode()
    triton_window.set_gluon_mode(mode, keep_failure=True)
    try:
        yield
    finally:
        triton_window.set_gluon_mode(before, keep_failure=True)


class Problem:
    """One attention problem: inputs, position tables, the Triton forward's (o, lse2) and the backward's
    per-query vectors, so that each kernel can be launched alone at any configuration."""

    def __init__(self, q, k, v, q_pos, k_pos, radius: int, do):
        self.q, self.k, self.v, self.do, self.radius = q, k, v, do, radius
        self.tables = triton_window.position_tables(q_pos, k_pos, radius)
        with gluon("off"):
            self.o, self.lse = triton_window._window_fwd_op(q, k, v, *self.tables, radius)
        self.lse_pad, self.delta = triton_window.backward_vectors(self.o, do, self.lse)

    def runner(self, kind: str, block_n: int, stages: int):
        """(run, out): run() launches the Gluon `kind` kernel ("forward" or "dq") at one configuration
        (no autotuning) into out = (o, lse2) or (dq,)."""
        from eflow_core.kernels import gluon_window
        q, k, v, do, tw = self.q, self.k, self.v, self.do, triton_window
        b, h, nq, d = q.shape
        nk = k.shape[2]
        sm_scale = 1.0 / math.sqrt(d)
        if kind == "forward":
            out = (torch.full_like(q, float("nan")), torch.full((b, h, nq), float("nan"), device=q.device))
            args = (q, k, v, out[0], out[1], *self.tables[:4], *tw._strides(q), *tw._strides(k), *tw._strides(v),
                    *tw._strides(out[0]), h, nq, nk, self.radius, sm_scale * tw.LOG2E, tw._size_class(nq, nk))
            kernel = gluon_window._window_fwd_ws
        else:
            out = (torch.full_like(q, float("nan")),)
            args = (q, k, v, do, out[0], self.lse_pad, self.delta, *self.tables[:4], *tw._strides(q),
                    *tw._strides(k), *tw._strides(v), *tw._strides(do), *tw._strides(out[0]), h, nq,
                    self.lse_pad.shape[-1], nk, self.radius, sm_scale * tw.LOG2E, sm_scale, tw._size_class(nq, nk))
            kernel = gluon_window._window_bwd_dq_ws
        tw._ensure_allocator(q.device)
        run = lambda: kernel[gluon_window.grid(nq, b * h)](*args, HEAD_DIM=d, BLOCK_N=block_n, STAGES=stages,
                                                            CONSUMER_REGS=240, num_warps=4)
        return run, out

    def op(self, kind: str, mode: str):
        """(run, out) for the autotuned op with the Gluon kernels on ("auto") or off ("off"): run() returns
        (o, lse2) for "forward" and (dq, dk, dv) for "dq" (the whole backward; dq is its first output)."""
        def run():
            with gluon(mode):
                if kind == "forward":
                    return triton_window._window_fwd_op(self.q, self.k, self.v, *self.tables, self.radius)
                return triton_window._window_bwd_op(self.do, self.q, self.k, self.v, self.o, self.lse, *self.tables,
                                                    self.radius)
        return run

    def launched(self, kind: str) -> bool:
        """Whether the autotuned op launched the Gluon `kind` kernel (profiler kernel names)."""
        return any(KERNEL_NAMES[kind] in name for name in kernel_times(self.op(kind, "auto"), self.q.device, 1))


def config_name(block_n: int, stages: int) -> str:
    return f"BLOCK_N {block_n}, {stages} stages"


def configs(kind: str):
    from eflow_core.kernels import gluon_window
    return gluon_window.FWD_CONFIGS if kind == "forward" else gluon_window.DQ_CONFIGS


def reference(q, k, v, q_pos, k_pos, radius: int, do):
    """fp32 reference output and dq."""
    q32 = q.detach().float().requires_grad_(True)
    out = window_attention_reference(q32, k.float(), v.float(), q_pos, k_pos, radius)
    (dq,) = torch.autograd.grad(out, q32, do.float())
    return out.detach(), dq


def check(case, gen, device) -> dict:
    """Every Gluon configuration and the autotuned ops against the fp32 reference (o, dq) and the Triton
    forward (lse2, queries without keys)."""
    name, batch, heads, qspec, kspec, d, dtype, radius, strided = case
    q_pos = positions(qspec, gen, device).expand(batch, -1).contiguous()
    k_pos = q_pos if kspec is None else positions(kspec, gen, device).expand(batch, -1).contiguous()
    q, k, v = qkv(batch, heads, q_pos.shape[1], k_pos.shape[1], d, dtype, strided, device)
    do = torch.randn_like(q)
    problem = Problem(q, k, v, q_pos, k_pos, radius, do)
    ref_o, ref_dq = reference(q, k, v, q_pos, k_pos, radius, do)
    finite = torch.isfinite(problem.lse)
    row = {"case": name, "queries_without_keys": int((~finite).sum()),
           "launched": {kind: problem.launched(kind) for kind in KERNEL_NAMES},
           "triton": {"o_vs_reference": rel_err(problem.o, ref_o),
                      "dq_vs_reference": rel_err(problem.op("dq", "off")()[0], ref_dq)},
           "forward": {}, "dq": {}}
    forward = {"autotuned": problem.op("forward", "auto")()}
    dq = {"autotuned": problem.op("dq", "auto")()[0]}
    for kind, outputs in (("forward", forward), ("dq", dq)):
        for block_n, stages in configs(kind):
            run, out = problem.runner(kind, block_n, stages)
            run()
            outputs[config_name(block_n, stages)] = out if kind == "forward" else out[0]
    for config, (o, lse) in forward.items():
        row["forward"][config] = {
            "o_vs_reference": rel_err(o, ref_o),
            "lse2_max_abs_diff": float((lse[finite] - problem.lse[finite]).abs().max()) if finite.any() else 0.0,
            "same_queries_without_keys": bool(torch.equal(torch.isfinite(lse), finite))}
    for config, g in dq.items():
        row["dq"][config] = {"dq_vs_reference": rel_err(g, ref_dq)}
    row["ok"] = (all(row["launched"].values()) and row["triton"]["o_vs_reference"] < 1e-2
                 and all(f["o_vs_reference"] < 1e-2 and f["lse2_max_abs_diff"] < 1e-2 and f["same_queries_without_keys"]
                         for f in row["forward"].values())
                 and all(g["dq_vs_reference"] < 2e-2 for g in row["dq"].values()))
    return row


def flex_forward_ms(q, k, v, pos, radius: int) -> float | None:
    """FlexAttention's forward with the same band, its block mask built once outside the timing (as
    attention.py times it)."""
    try:
        from eflow_core.kernels.flex import build_block_mask, flex_window_attention
        block_mask = build_block_mask(pos, pos, radius)
        with torch.no_grad():
            return bench_ms(lambda: flex_window_attention(q, k, v, pos, pos, radius, block_mask=block_mask), q.device)
    except Exception as exc:                           # noqa: BLE001 - report, keep the other rows
        print(f"  flex: {type(exc).__name__}: {str(exc)[:200]}")
        return None


def dq_kernel_ms(problem: Problem, mode: str) -> float:
    """GPU ms of the dq kernel alone inside the autotuned backward op (profiler), Gluon on or off."""
    run = problem.op("dq", mode)
    for _ in range(3):
        run()
    times = kernel_times(run, problem.q.device, 20)
    return sum(row["ms"] for name, row in times.items() if "_dq" in name)


def time_shape(mode: str, args, gen, device) -> dict:
    pos = dense_positions(args.n, 1, device) if mode == "dense" else keep_quarter_positions(args.n, 1, gen, device)
    n = pos.shape[1]
    q, k, v, do = (torch.randn(1, args.heads, n, args.head_dim, device=device, dtype=torch.bfloat16)
                   for _ in range(4))
    problem = Problem(q, k, v, pos, pos, args.radius, do)
    flops = window_flops(pos, pos, args.radius, args.heads, args.head_dim)
    ms = {"forward": {"gluon, autotuned": bench_ms(problem.op("forward", "auto"), device),
                      "triton, autotuned": bench_ms(problem.op("forward", "off"), device),
                      "flex": flex_forward_ms(q, k, v, pos, args.radius)},
          "dq": {"gluon, autotuned (profiler)": dq_kernel_ms(problem, "auto"),
                 "triton, autotuned (profiler)": dq_kernel_ms(problem, "off")}}
    for kind in ("forward", "dq"):
        for block_n, stages in configs(kind):
            ms[kind][f"gluon, {config_name(block_n, stages)}"] = bench_ms(problem.runner(kind, block_n, stages)[0], device)
    matmuls = {"forward": 1.0, "dq": 1.5}               # window_flops counts the forward's 2 matmuls
    return {"mode": mode, "tokens": n, "forward_flops": flops, "ms": ms,
            "tflops": {kind: {name: flops * matmuls[kind] / (t * 1e-3) / 1e12 for name, t in times.items() if t}
                       for kind, times in ms.items()},
            "autotune_ms": triton_window.autotune_timings()}


def main(argv=None) -> int:
    args = kernel_script_parser(__doc__, "gluon_kernels.json").parse_args(argv)
    if not torch.cuda.is_available():
        print("error: this script needs a CUDA GPU", file=sys.stderr)
        return 2
    import triton
    device = torch.device("cuda")
    gen = torch.Generator(device="cpu").manual_seed(0)
    result = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__, "triton": triton.__version__,
              "gluon": triton_window.gluon_status(), "checks": [], "rows": []}
    for case in CHECKS:
        row = check(case, gen, device)
        result["checks"].append(row)
        worst_o = max(f["o_vs_reference"] for f in row["forward"].values())
        worst_lse = max(f["lse2_max_abs_diff"] for f in row["forward"].values())
        worst_dq = max(g["dq_vs_reference"] for g in row["dq"].values())
        print(f"check {row['case']:37} launched {row['launched']}  vs fp32: triton o {row['triton']['o_vs_reference']:.1e} "
              f"dq {row['triton']['dq_vs_reference']:.1e}; gluon (worst config) o {worst_o:.1e} dq {worst_dq:.1e}, "
              f"lse2 vs triton {worst_lse:.1e}; no-key queries {row['queries_without_keys']}  "
              f"{'ok' if row['ok'] else 'FAILED'}", flush=True)
        if not row["ok"]:
            for kind in ("forward", "dq"):
                for config, errors in row[kind].items():
                    print(f"    {kind} {config:24} {errors}")
    failed = not all(row["ok"] for row in result["checks"])
    result["matmul_tflops"] = ceiling = matmul_tflops(device)
    for mode in ("dense", "dropped"):
        row = time_shape(mode, args, gen, device)
        result["rows"].append(row)
        print(f"N={args.n} {mode} ({row['tokens']} tokens); matmul ceiling {ceiling:.0f} TFLOP/s", flush=True)
        for kind, times in row["ms"].items():
            for name, t in times.items():
                if t:
                    print(f"  {kind:8} {name:32} {t:7.3f} ms  {row['tflops'][kind][name]:5.0f} TFLOP/s")
    result["autotune"] = triton_window.autotune_choices()
    result["gluon_at_end"] = triton_window.gluon_status()
    print("gluon:", result["gluon_at_end"])
    write_result(result, args.out, "gluon_kernels.json")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
