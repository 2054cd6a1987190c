"""Where the Triton window backward spends its time, kernel by kernel (issue 5).

`benchmarks/attention.py` times forward + backward as a whole; this script runs only the backward op
(`eflow::triton_window_bwd`) of each backward mode ("split", "atomic") on one shape and
reads each kernel's GPU time from the CUDA profiler (torch.profiler), so a change to one kernel can
be judged on that kernel. Each row also keeps every configuration's time from that shape's
autotuning (forward, dk/dv, dq: Triton's own benchmark). Then forward + backward through
`kernels.window_attention` is timed as attention.py times it and set against the GPU time of every
kernel it launches; the difference is time the GPU waits for the host. Inputs as in attention.py:
batch 1, 12 heads x 128, bf16, radius 3,120, dense positions or a sorted random quarter of them.
Every mode's gradients are checked against the "split" mode's on the same inputs first (relative
error < 2e-2).

    python -m benchmarks.attention_backward_kernels --n 32760 --out $OUT     # GPU only
"""
from __future__ import annotations

import sys

import torch


from eflow_core import kernels
from benchmarks.attention import (bench_ms, dense_positions, grad_runner, keep_quarter_positions,
                                  kernel_script_parser, rel_err, write_result)
from benchmarks.timing import kernel_times
from eflow_core.kernels import triton_window


def backward_once(inputs: tuple, radius: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of one call of the backward op; inputs = (do, q, k, v, o, lse, *position tables)."""
    return triton_window._window_bwd_op(*inputs, radius)


def backward_kernel_times(inputs: tuple, radius: int, calls: int) -> dict[str, float]:
    """{kernel name: GPU ms per backward call} over `calls` profiled calls (after autotuning)."""
    for _ in range(3):                                  # autotune and warm up outside the profile
        backward_once(inputs, radius)
    torch.cuda.synchronize()
    times = kernel_times(lambda: backward_once(inputs, radius), torch.device("cuda"), calls)
    return {name: row["ms"] for name, row in times.items() if row["ms"] > 0}


def whole_call_times(q, k, v, do, pos, radius: int, calls: int) -> dict:
    """Forward + backward through kernels.window_attention(backend="triton"), timed as attention.py
    times it (do_bench median), against the sum of the GPU kernels it launches (profiler): the rest
    is time the GPU waits for the host (dispatch, position tables, autograd)."""
    run = grad_runner(lambda *t: kernels.window_attention(*t, pos, pos, radius, backend="triton"), q, k, v, do)
    measured = bench_ms(run, q.device)
    times = kernel_times(run, q.device, calls)
    gpu = sum(row["ms"] for row in times.values())
    return {"measured_ms": measured, "gpu_kernels_ms": gpu, "host_gap_ms": measured - gpu,
            "kernels": {name: row for name, row in sorted(times.items(), key=lambda kv: -kv[1]["ms"])
                        if row["ms"] > 0}}


def main(argv=None) -> int:
    p = kernel_script_parser(__doc__, "backward_kernels.json")
    p.add_argument("--calls", type=int, default=20, help="profiled backward calls per mode")
    p.add_argument("--modes", default=",".join(triton_window.BACKWARD_MODES))
    p.add_argument("--show-configs", type=int, default=4, help="fastest autotune configs printed per kernel")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: this script needs a CUDA GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    gen = torch.Generator(device="cpu").manual_seed(0)
    result = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__,
              "tma": triton_window.tma_status(), "gluon": triton_window.gluon_status(), "rows": []}
    failed = False
    for mode in ("dense", "dropped"):
        pos = dense_positions(args.n, 1, device) if mode == "dense" else keep_quarter_positions(args.n, 1, gen, device)
        n = pos.shape[1]
        q, k, v, do = (torch.randn(1, args.heads, n, args.head_dim, device=device, dtype=torch.bfloat16)
                       for _ in range(4))
        tables = triton_window.position_tables(pos, pos, args.radius)
        o, lse = triton_window._window_fwd_op(q, k, v, *tables, args.radius)
        inputs = (do, q, k, v, o, lse, *tables)
        before = triton_window.backward_mode()
        reference = None
        for backward in args.modes.split(","):
            triton_window.set_backward_mode(backward)
            try:
                grads = backward_once(inputs, args.radius)
                reference = reference or grads
                errors = {name: rel_err(g, r) for name, g, r in zip(("dq", "dk", "dv"), grads, reference)}
                times = backward_kernel_times(inputs, args.radius, args.calls)
            finally:
                triton_window.set_backward_mode(before)
            ok = all(e < 2e-2 for e in errors.values())
            failed |= not ok
            row = {"mode": mode, "tokens": n, "backward": backward, "errors_vs_first": errors, "ok": ok,
                   "kernels_ms": times, "total_ms": sum(times.values()),
                   "autotune_ms": triton_window.autotune_timings()}     # this shape's tuning, every config
            result["rows"].append(row)
            print(f"N={args.n} {mode:7} {backward:9} total {row['total_ms']:7.3f} ms  "
                  + ", ".join(f"{name} {ms:.3f}" for name, ms in sorted(times.items(), key=lambda kv: -kv[1]))
                  + f"  | vs {args.modes.split(',')[0]}: " + ", ".join(f"{k} {e:.1e}" for k, e in errors.items()),
                  flush=True)
            for kernel, configs in row["autotune_ms"].items():
                print(f"  autotune {kernel}: " + "; ".join(f"{ms:.3f} ms {config}"
                                                           for config, ms in list(configs.items())[:args.show_configs]))
        whole = whole_call_times(q, k, v, do, pos, args.radius, args.calls)
        result.setdefault("whole_call", {})[mode] = whole
        print(f"N={args.n} {mode:7} forward + backward through window_attention: {whole['measured_ms']:.3f} ms "
              f"measured; GPU kernels {whole['gpu_kernels_ms']:.3f} ms summed ({len(whole['kernels'])} kernels); "
              f"host gap {whole['host_gap_ms']:.3f} ms", flush=True)
        for name, row in list(whole["kernels"].items())[:4]:
            print(f"  {row['ms']:7.3f} ms  x{row['launches']:.0f}  {name[:90]}")
    result["autotune"] = triton_window.autotune_choices()
    for name, picks in result["autotune"].items():
        for key, config in picks.items():
            print(f"autotune {name}: {config}")
    write_result(result, args.out, "backward_kernels.json")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
