"""Attention kernel benchmark (issue 5; paper Fig. 2a): correctness first, then speed.

For each token count N (3..80 latent frames x 1,560 tokens) and each of dense / 75%-dropped
(a sorted random quarter of the positions per batch row), 12 heads x 128, bf16, radius 3,120:
  (a) correctness of the window kernel: forward against an fp32 reference on 256 random query rows
      (against all keys), rel. error < 1e-2; dq, dk, dv of every Triton backward ("split" and the
      FlashAttention-2 style "atomic") against the exact fp32 "chunked" backend on the same device,
      rel. error < 2e-2 (up to --max-grad-n tokens, default all); FlexAttention's forward and the
      Triton linear attention are checked too;
  (b) median latency (triton.testing.do_bench) of forward and forward+backward: Triton window (and
      forward+backward with each other backward),
      FlexAttention with the same band (compiled, block mask with _compile=True), full softmax SDPA
      with the cuDNN and the flash backend, flash-attn's window when installed (dense only), linear
      attention (Triton vs torch einsum);
  (c) useful TFLOP/s of the window kernels: 4 * sum(visible keys per query) * D * H forward,
      2.5x that backward (visible keys counted exactly from positions), and the fraction of this
      card's bf16 matmul ceiling (a big torch.matmul measured in the same run);
  (d) the whole GLGA attention core (RoPE on q and k, both branches, RMSNorms, gates; projections
      excluded: eflow_core.model.attention.glga_mix) forward vs full softmax SDPA-cuDNN on the same
      q, k, v;
  (e) torch.compile recompiles counted per shape (torch._dynamo counters) and printed.
Prints a compact table, writes $OUT/attention.json and the latency-vs-tokens figure
$OUT/attention_fig2a.html (plotly; skipped when plotly is missing). Exit status 1 when a
correctness check fails.

    python -m benchmarks.attention                        # GPU, all shapes (~6 min on an H100)
    python -m benchmarks.attention --shapes 4680,32760    # a subset
    python -m benchmarks.attention --device cpu --tiny    # plumbing check on the CPU (tests)
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F


from eflow_core import kernels
from benchmarks.timing import device_times
from eflow_core.kernels.reference import linear_attention_reference, window_attention_reference

TOKENS_PER_FRAME = 1560                              # 480p latent 60 x 104, 2 x 2 patches: 30 x 52
FRAME_HW = (30, 52)
DEFAULT_SHAPES = [4680, 9360, 18720, 32760, 65520, 124800]
TINY = dict(tokens_per_frame=16, frame_hw=(4, 4), shapes=[48, 160], heads=2, head_dim=32)
FWD_TOL, GRAD_TOL = 1e-2, 2e-2


# ------------------------------------------------------------------------------ inputs and checks

def keep_quarter_positions(n_full: int, batch: int, gen: torch.Generator, device) -> torch.Tensor:
    """(batch, n_full // 4) int64: a sorted random quarter of 0..n_full-1, different per row."""
    keep = n_full // 4
    rows = [torch.sort(torch.randperm(n_full, generator=gen)[:keep])[0] for _ in range(batch)]
    return torch.stack(rows).to(device)


def dense_positions(n: int, batch: int, device) -> torch.Tensor:
    """(batch, n) int64 arange."""
    return torch.arange(n, device=device).expand(batch, n).contiguous()


def visible_key_counts(q_pos: torch.Tensor, k_pos: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, Nq) int64: exact number of keys within `radius` of each query (positions ascending)."""
    lo = torch.searchsorted(k_pos.contiguous(), (q_pos - radius).contiguous(), right=False)
    hi = torch.searchsorted(k_pos.contiguous(), (q_pos + radius).contiguous(), right=True)
    return hi - lo


def window_flops(q_pos: torch.Tensor, k_pos: torch.Tensor, radius: int, heads: int, head_dim: int) -> float:
    """Useful forward FLOPs of window attention: 2 matmuls x 2 FLOPs x visible pairs x D x H."""
    return 4.0 * float(visible_key_counts(q_pos, k_pos, radius).sum()) * head_dim * heads


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in fp64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def forward_rel_error(out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
                      k_pos: torch.Tensor, radius: int, rows: int = 256, seed: int = 0) -> float:
    """Relative error of `out` (B, H, Nq, D) against the fp32 reference on `rows` random query rows
    (all keys), one head at a time so the reference stays small (rows x Nk scores)."""
    gen = torch.Generator().manual_seed(seed)
    nq = q.shape[2]
    idx = torch.randperm(nq, generator=gen)[: min(rows, nq)].sort()[0].to(q.device)
    num = den = 0.0
    for h in range(q.shape[1]):
        ref = window_attention_reference(q[:, h:h + 1, idx].float(), k[:, h:h + 1].float(), v[:, h:h + 1].float(),
                                         q_pos[:, idx], k_pos, radius)
        diff = out[:, h:h + 1, idx].double() - ref.double()
        num += float((diff ** 2).sum())
        den += float((ref.double() ** 2).sum())
    return math.sqrt(num / max(den, 1e-300))


def gradient_rel_errors(backend: str, q, k, v, q_pos, k_pos, radius: int, do, ref_backend: str = "chunked") -> dict:
    """dq, dk, dv of window_attention(backend) vs the exact fp32 `ref_backend` on the same device."""
    def grads(bk, dtype):
        leaves = [t.detach().to(dtype).requires_grad_(True) for t in (q, k, v)]
        o = kernels.window_attention(*leaves, q_pos, k_pos, radius, backend=bk)
        return torch.autograd.grad(o, leaves, do.to(dtype))

    test = grads(backend, q.dtype)
    ref = grads(ref_backend, torch.float32)
    return {name: rel_err(a, b) for name, a, b in zip(("dq", "dk", "dv"), test, ref)}


def linear_rel_error(backend: str, q, k, v) -> float:
    """Forward of linear_attention(backend) vs the fp32 reference."""
    return rel_err(kernels.linear_attention(q, k, v, backend=backend), linear_attention_reference(q, k, v))


# ---------------------------------------------------------------------------------------- timing

def bench_ms(fn, device: torch.device, slow_ms: float = 60.0) -> float:
    """Median milliseconds of fn(). CUDA: triton.testing.do_bench (warm-up, L2 flush); a call that
    takes longer than slow_ms is timed 3 times with CUDA events instead (keeps big N affordable)."""
    fn()                                                          # compile / autotune / warm-up
    if device.type != "cuda":
        return statistics.median(device_times(fn, device, 3)) * 1e3
    first = device_times(fn, device, 1)[0] * 1e3
    if first > slow_ms:
        return statistics.median(device_times(fn, device, 3)) * 1e3
    import triton.testing
    try:
        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    except TypeError:                                             # older triton: no return_mode
        return float(triton.testing.do_bench(fn, warmup=25, rep=100, quantiles=[0.5])[0])


def matmul_tflops(device: torch.device, n: int = 8192) -> float | None:
    """This card's dense bf16 matmul throughput (TFLOP/s) from an n x n x n torch.matmul."""
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    ms = bench_ms(lambda: a @ b, device)
    return 2 * n ** 3 / (ms * 1e-3) / 1e12


def dynamo_graphs() -> int:
    """Graphs compiled so far by torch.compile in this process."""
    try:
        from torch._dynamo.utils import counters
        return int(counters["stats"]["unique_graphs"])
    except Exception:
        return -1


def dynamo_recompiles() -> int:
    try:
        from torch._dynamo.utils import counters
        return int(sum(counters["recompiles"].values())) if "recompiles" in counters else 0
    except Exception:
        return -1


# ----------------------------------------------------------------------------------- one shape

def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _timed_entry(name: str, fwd, fwd_bwd, device, flops: float | None = None) -> dict:
    """Time one backend; an exception becomes an error entry instead of ending the run."""
    entry = {"name": name}
    for key, fn in (("fwd_ms", fwd), ("fwd_bwd_ms", fwd_bwd)):
        if fn is None:
            continue
        try:
            entry[key] = bench_ms(fn, device)
        except Exception as exc:                                  # noqa: BLE001 - reported, run goes on
            entry[key] = None
            entry.setdefault("error", f"{key}: {'OOM' if _is_oom(exc) else type(exc).__name__}: {str(exc)[:300]}")
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
    if flops:
        if entry.get("fwd_ms"):
            entry["fwd_tflops"] = flops / (entry["fwd_ms"] * 1e-3) / 1e12
        if entry.get("fwd_bwd_ms"):
            entry["fwd_bwd_tflops"] = 3.5 * flops / (entry["fwd_bwd_ms"] * 1e-3) / 1e12
    return entry


def grad_runner(f, q, k, v, do):
    """fn() running forward + backward of f(q, k, v) into fresh gradients (no .grad accumulation)."""
    leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]

    def run():
        o = f(*leaves)
        torch.autograd.grad(o, leaves, do)
    return run


def _no_grad(f, q, k, v):
    def run():
        with torch.no_grad():
            f(q, k, v)
    return run


def _sdpa_full(backend_name: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backend = getattr(SDPBackend, backend_name)

    def f(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v)
    return f


def _glga(positions, grid_thw, radius, heads, head_dim, dtype, device, backend):
    """The whole GLGA attention core as f(q, k, v), or a string saying why it is skipped."""
    try:
        from eflow_core.model.rope import rope_tables
    except Exception as exc:                                       # noqa: BLE001
        return f"eflow_core GLGA not importable ({type(exc).__name__}: {exc})"
    B, n = positions.shape
    cos, sin = rope_tables(positions, grid_thw, head_dim)           # shared by all layers: not timed
    gen = torch.Generator().manual_seed(3)
    gate_logits = torch.randn(B, heads, n, 2, generator=gen).to(device=device, dtype=dtype)
    w_g = torch.ones(head_dim, device=device, dtype=dtype)
    w_l = torch.ones(head_dim, device=device, dtype=dtype)

    def f(q, k, v):
        return glga_core(q, k, v, cos, sin, positions, radius, gate_logits, w_g, w_l, backend)
    f.tensors = (cos, sin, gate_logits, w_g, w_l)
    return f


def glga_core(q, k, v, cos, sin, positions, radius, gate_logits, w_g, w_l, backend):
    """RoPE on q and k, then both GLGA branches, their RMSNorms and the gates (eflow_core's glga_mix)."""
    from eflow_core.model.attention import glga_mix
    from eflow_core.model.rope import apply_rope
    return glga_mix(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, positions, radius, gate_logits,
                    norm_global_weight=w_g, norm_local_weight=w_l, backend=backend)


@functools.lru_cache(maxsize=1)
def compiled_glga_core():
    """glga_core through torch.compile, built once: RoPE, norms and gates fuse around the kernels
    (custom ops); what a compiled model block runs."""
    return torch.compile(glga_core)


def other_backwards(window_backend: str) -> tuple[str, ...]:
    """The Triton backwards other than the one in use ("window_triton"), each checked and timed too."""
    if window_backend != "triton":
        return ()
    from eflow_core.kernels.triton_window import BACKWARD_MODES, backward_mode
    return tuple(mode for mode in BACKWARD_MODES if mode != backward_mode())


@contextlib.contextmanager
def triton_backward_mode(mode: str):
    """Within the block the Triton window kernel uses this backward (one of BACKWARD_MODES)."""
    from eflow_core.kernels.triton_window import backward_mode, set_backward_mode
    before = backward_mode()
    set_backward_mode(mode)
    try:
        yield
    finally:
        set_backward_mode(before)


def run_shape(n_full: int, mode: str, args, device: torch.device, dtype: torch.dtype, gen: torch.Generator) -> dict:
    """Correctness checks and timings for one token count and one of dense / dropped."""
    B, H, D, radius = args.batch, args.heads, args.head_dim, args.radius
    cuda = device.type == "cuda"
    pos = dense_positions(n_full, B, device) if mode == "dense" else keep_quarter_positions(n_full, B, gen, device)
    n = pos.shape[1]
    dev_gen = torch.Generator(device=device).manual_seed(args.seed + n_full + (mode == "dropped"))
    q, k, v, do = (torch.randn(B, H, n, D, generator=dev_gen, device=device, dtype=dtype) for _ in range(4))
    counts = visible_key_counts(pos, pos, radius)
    flops = window_flops(pos, pos, radius, H, D)
    row = {"n_full": n_full, "mode": mode, "tokens": n, "avg_keys": float(counts.float().mean()),
           "fwd_gflop": flops / 1e9, "checks": {}, "timings": [], "notes": []}
    window_backend = "triton" if cuda else "chunked"
    graphs0, recompiles0 = dynamo_graphs(), dynamo_recompiles()

    # (a) correctness first -------------------------------------------------------------------
    checks = row["checks"]
    try:
        with torch.no_grad():
            o = kernels.window_attention(q, k, v, pos, pos, radius, backend=window_backend)
        checks[f"{window_backend}_fwd"] = forward_rel_error(o, q, k, v, pos, pos, radius, rows=args.check_rows)
        del o
    except Exception as exc:                                       # noqa: BLE001
        checks[f"{window_backend}_fwd"] = None
        row["notes"].append(f"{window_backend} forward failed: {type(exc).__name__}: {str(exc)[:300]}")
    if n <= args.max_grad_n:
        try:
            # GPU: exact fp32 chunked backend; CPU (tiny): the dense fp32 reference, since "chunked"
            # is itself the backend under test there.
            ref_backend = "chunked" if cuda else "reference"
            g = gradient_rel_errors(window_backend, q, k, v, pos, pos, radius, do, ref_backend=ref_backend)
            checks.update({f"{window_backend}_{key}": val for key, val in g.items()})
            for other in other_backwards(window_backend):
                with triton_backward_mode(other):
                    g = gradient_rel_errors("triton", q, k, v, pos, pos, radius, do, ref_backend=ref_backend)
                checks.update({f"triton_{other.replace('-', '_')}_{key}": val for key, val in g.items()})
        except Exception as exc:                                   # noqa: BLE001
            checks[f"{window_backend}_grads"] = None
            row["notes"].append(f"gradient check failed: {type(exc).__name__}: {str(exc)[:300]}")
        if cuda:
            torch.cuda.empty_cache()
    else:
        row["notes"].append(f"gradient check skipped: {n} tokens > --max-grad-n {args.max_grad_n}")

    block_mask = None
    if "flex" not in args.skip:
        try:
            from eflow_core.kernels.flex import build_block_mask, flex_window_attention
            block_mask = build_block_mask(pos, pos, radius)           # _compile=True on CUDA
            with torch.no_grad():
                o = flex_window_attention(q, k, v, pos, pos, radius, block_mask=block_mask)
            checks["flex_fwd"] = forward_rel_error(o, q, k, v, pos, pos, radius, rows=args.check_rows)
            del o
        except Exception as exc:                                   # noqa: BLE001
            checks["flex_fwd"] = None
            block_mask = None
            row["notes"].append(f"flex failed: {type(exc).__name__}: {str(exc)[:300]}")
    for linear_backend in (("triton", "einsum") if cuda else ("einsum",)):   # einsum: CUDA's "auto"
        try:
            checks[f"linear_{linear_backend}_fwd"] = linear_rel_error(linear_backend, q, k, v)
        except Exception as exc:                                   # noqa: BLE001
            checks[f"linear_{linear_backend}_fwd"] = None
            row["notes"].append(f"linear {linear_backend} failed: {type(exc).__name__}: {str(exc)[:300]}")
    failed = [key for key, val in checks.items()
              if val is None or val >= (FWD_TOL if key.endswith("fwd") else GRAD_TOL)]
    row["correct"] = not failed
    row["failed_checks"] = failed

    # (b) timings ---------------------------------------------------------------------------------
    entries = []

    def add(name, f, backward=True, flop=None):
        if any(name.startswith(s) for s in args.skip):
            return
        entries.append(_timed_entry(name, _no_grad(f, q, k, v), grad_runner(f, q, k, v, do) if backward else None,
                                    device, flop))

    add(f"window_{window_backend}",
        lambda a, b, c: kernels.window_attention(a, b, c, pos, pos, radius, backend=window_backend), flop=flops)
    for other in other_backwards(window_backend):
        with triton_backward_mode(other):
            add(f"window_triton_{other.replace('-', '_')}_bwd",
                lambda a, b, c: kernels.window_attention(a, b, c, pos, pos, radius, backend="triton"), flop=flops)
    if block_mask is not None:
        from eflow_core.kernels.flex import flex_window_attention
        add("window_flex", lambda a, b, c: flex_window_attention(a, b, c, pos, pos, radius, block_mask=block_mask),
            backward=cuda, flop=flops)
    if cuda:
        if mode == "dense" and kernels.available_backends(device)["flash"][0]:
            add("window_flash_attn", lambda a, b, c: kernels.window_attention(a, b, c, pos, pos, radius, "flash"),
                flop=flops)
        add("sdpa_cudnn_full", _sdpa_full("CUDNN_ATTENTION"))
        add("sdpa_flash_full", _sdpa_full("FLASH_ATTENTION"))
        add("linear_triton", lambda a, b, c: kernels.linear_attention(a, b, c, backend="triton"))
    else:
        add("window_sdpa_band", lambda a, b, c: kernels.window_attention(a, b, c, pos, pos, radius, "sdpa"), flop=flops)
        add("sdpa_math_full", _sdpa_full("MATH"))
        add("linear_reference", lambda a, b, c: kernels.linear_attention(a, b, c, backend="reference"))
    add("linear_einsum", lambda a, b, c: kernels.linear_attention(a, b, c, backend="einsum"))

    # (d) whole GLGA attention core ------------------------------------------------------------------
    if "glga" not in args.skip:
        t = n_full // args.tokens_per_frame
        glga = _glga(pos, (t, *args.frame_hw), radius, H, D, dtype, device, "auto")
        if isinstance(glga, str):
            row["notes"].append(f"GLGA row skipped: {glga}")
        else:
            add("glga_core", glga, backward=False)
            if cuda:
                compiled = compiled_glga_core()
                cos, sin, gates, w_g, w_l = glga.tensors
                add("glga_core_compiled", lambda a, b, c: compiled(a, b, c, cos, sin, pos, radius, gates, w_g, w_l,
                                                                   "auto"), backward=False)
    row["timings"] = entries

    # (e) compiles -------------------------------------------------------------------------------------
    row["dynamo_graphs_added"] = dynamo_graphs() - graphs0
    row["dynamo_recompiles_added"] = dynamo_recompiles() - recompiles0
    del q, k, v, do, block_mask
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    return row


# ---------------------------------------------------------------------------------------- output

def _entry(row: dict, name: str) -> dict:
    return next((e for e in row["timings"] if e["name"] == name), {})


def print_table(result: dict) -> None:
    ceiling = result.get("matmul_bf16_tflops")
    print()
    print(f"device: {result['device']} | torch {result['torch']} | triton {result['triton']} | "
          f"bf16 matmul ceiling: {f'{ceiling:.0f} TFLOP/s' if ceiling else 'n/a'}"
          + (f" | Triton TMA loads: {result['triton_tma']}" if "triton_tma" in result else "")
          + (f" | Gluon kernels: {result['triton_gluon']}" if "triton_gluon" in result else ""))
    print(f"{'N':>7} {'mode':>7} {'tokens':>7} {'keys/q':>7} {'ok':>4}  {'backend':<22} {'fwd ms':>9} {'f+b ms':>9} "
          f"{'fwd TF/s':>9} {'f+b TF/s':>9} {'%peak':>6}")
    dense_softmax: dict[int, float] = {}
    for row in result["rows"]:
        ok = "yes" if row["correct"] else "FAIL"
        head = f"{row['n_full']:>7} {row['mode']:>7} {row['tokens']:>7} {row['avg_keys']:>7.0f} {ok:>4}"
        if not row["timings"]:
            print(f"{head}  (no timings)")
        for e in row["timings"]:
            fmt = lambda x, spec: format(x, spec) if isinstance(x, (int, float)) else "-"
            peak = (f"{100 * e['fwd_tflops'] / ceiling:5.1f}%" if ceiling and e.get("fwd_tflops") else "")
            line = (f"{head}  {e['name']:<22} {fmt(e.get('fwd_ms'), '9.3f'):>9} {fmt(e.get('fwd_bwd_ms'), '9.3f'):>9} "
                    f"{fmt(e.get('fwd_tflops'), '9.1f'):>9} {fmt(e.get('fwd_bwd_tflops'), '9.1f'):>9} {peak:>6}")
            print(line + (f"  ERROR {e['error']}" if "error" in e else ""))
            head = " " * len(head)
        ref = _entry(row, "sdpa_cudnn_full")
        if row["mode"] == "dense" and ref.get("fwd_ms"):
            dense_softmax[row["n_full"]] = ref["fwd_ms"]
        for name in ("glga_core", "glga_core_compiled"):
            glga = _entry(row, name)
            if glga.get("fwd_ms") and ref.get("fwd_ms"):
                line = (f"{'':>37}{name} fwd {glga['fwd_ms']:.3f} ms vs SDPA-cuDNN full softmax on the same "
                        f"q, k, v {ref['fwd_ms']:.3f} ms: {ref['fwd_ms'] / glga['fwd_ms']:.2f}x")
                if row["mode"] != "dense" and row["n_full"] in dense_softmax:
                    full = dense_softmax[row["n_full"]]
                    line += f"; vs dense softmax at N={row['n_full']} ({full:.3f} ms): {full / glga['fwd_ms']:.1f}x"
                print(line)
        checks = ", ".join(f"{key} {val:.1e}" if isinstance(val, float) else f"{key} -"
                           for key, val in row["checks"].items())
        print(f"{'':>37}checks: {checks}; torch.compile graphs added: {row['dynamo_graphs_added']}, "
              f"recompiles: {row['dynamo_recompiles_added']}")
        for note in row["notes"]:
            print(f"{'':>37}note: {note}")


def write_figure(result: dict, path: Path, plotlyjs: str = "inline") -> str:
    """Latency vs tokens (forward), like the paper's Fig. 2a, as a self-contained plotly HTML file."""
    try:
        import plotly.graph_objects as go
    except Exception:                                              # noqa: BLE001
        return "plotly not installed: figure skipped"
    fig = go.Figure()
    names = sorted({e["name"] for row in result["rows"] for e in row["timings"]})
    for mode in ("dense", "dropped"):
        for name in names:
            xs, ys = [], []
            for row in result["rows"]:
                e = _entry(row, name)
                if row["mode"] == mode and e.get("fwd_ms"):
                    xs.append(row["n_full"])
                    ys.append(e["fwd_ms"])
            if xs:
                label = f"{name} ({'75% dropped' if mode == 'dropped' else 'dense'})"
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=label,
                                         line=dict(dash="dash" if mode == "dropped" else "solid")))
    fig.update_layout(title=f"Attention forward latency vs tokens ({result['device']}, "
                            f"{result['config']['heads']} heads x {result['config']['head_dim']}, "
                            f"radius {result['config']['radius']})",
                      xaxis_title="tokens in the full video (N)", yaxis_title="forward latency (ms)",
                      yaxis_type="log", template="plotly_white")
    fig.write_html(str(path), include_plotlyjs=True if plotlyjs == "inline" else "cdn")
    return str(path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (CPU plumbing check)")
    p.add_argument("--shapes", default=None, help="comma-separated token counts (default: all paper shapes)")
    p.add_argument("--modes", default="dense,dropped")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--radius", type=int, default=None, help="default: 4 frames x tokens per frame / 2")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on the CPU")
    p.add_argument("--max-grad-n", type=int, default=124800,
                   help="check gradients only up to this many tokens (fp32 reference cost)")
    p.add_argument("--check-rows", type=int, default=256)
    p.add_argument("--skip", default="", help="comma-separated name prefixes to skip (e.g. flex,sdpa_flash)")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure-from", default=None, metavar="JSON",
                   help="only redraw the figure of a saved attention.json (e.g. one made where plotly is missing)")
    p.add_argument("--plotlyjs", default="inline", choices=["inline", "cdn"],
                   help="embed plotly.js in the HTML (works offline) or link it from the CDN (small file)")
    args = p.parse_args(argv)
    args.tokens_per_frame = TINY["tokens_per_frame"] if args.tiny else TOKENS_PER_FRAME
    args.frame_hw = TINY["frame_hw"] if args.tiny else FRAME_HW
    if args.tiny:
        args.heads, args.head_dim = TINY["heads"], TINY["head_dim"]
    if args.radius is None:                                         # |W| / 2 with |W| = 4 frames
        args.radius = 4 * args.tokens_per_frame // 2
    default_shapes = TINY["shapes"] if args.tiny else DEFAULT_SHAPES
    args.shapes = [int(s) for s in args.shapes.split(",")] if args.shapes else default_shapes
    args.modes = [m for m in args.modes.split(",") if m]
    args.skip = [s for s in args.skip.split(",") if s]
    return args


def write_result(result: dict, out: str | Path | None, name: str) -> None:
    """`result` as indented JSON in the folder `out` (made if missing) under `name`; nothing if out is None.
    Shared by this script and the per-kernel scripts."""
    if out is None:
        return
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(result, indent=1, default=str))


def kernel_script_parser(doc: str, out_name: str) -> argparse.ArgumentParser:
    """The options of the per-kernel scripts (attention_backward_kernels.py, attention_gluon_kernels.py):
    this script's benchmark shape at one token count (--n, --heads, --head-dim, --radius) and --out, the
    folder for `out_name`. Each script adds its own options."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--n", type=int, default=32760, help="tokens before dropping")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--radius", type=int, default=3120)
    p.add_argument("--out", default=None, help=f"folder for {out_name}")
    return p


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.figure_from:
        saved = json.loads(Path(args.figure_from).read_text())
        print(write_figure(saved, Path(args.out) / "attention_fig2a.html", args.plotlyjs))
        return 0
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    for n in args.shapes:
        if n % args.tokens_per_frame:
            raise SystemExit(f"--shapes: {n} is not a whole number of frames of {args.tokens_per_frame} tokens")
    if device.type == "cuda":            # the fp32 references must be fp32, not TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    try:                                                            # one compiled graph per shape at most
        from torch import _dynamo as dynamo
        for key in ("cache_size_limit", "recompile_limit"):
            if hasattr(dynamo.config, key):
                setattr(dynamo.config, key, max(64, getattr(dynamo.config, key)))
    except Exception:                                              # noqa: BLE001
        pass
    try:
        import triton
        triton_version = triton.__version__
    except Exception:                                              # noqa: BLE001
        triton_version = "not installed"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    result = {"device": name, "torch": torch.__version__, "triton": triton_version,
              "config": {"batch": args.batch, "heads": args.heads, "head_dim": args.head_dim, "radius": args.radius,
                         "dtype": str(dtype).replace("torch.", ""), "tokens_per_frame": args.tokens_per_frame,
                         "shapes": args.shapes, "modes": args.modes},
              "backends": {k: list(v) for k, v in kernels.available_backends(device).items()}, "rows": []}
    t_start = time.perf_counter()
    result["matmul_bf16_tflops"] = matmul_tflops(device)
    gen = torch.Generator().manual_seed(args.seed)
    for n_full in args.shapes:
        for mode in args.modes:
            t0 = time.perf_counter()
            try:
                row = run_shape(n_full, mode, args, device, dtype, gen)
            except Exception as exc:                               # noqa: BLE001 - keep the sweep going
                traceback.print_exc()
                row = {"n_full": n_full, "mode": mode, "tokens": 0, "avg_keys": float("nan"), "checks": {},
                       "timings": [], "correct": False, "failed_checks": ["run"], "dynamo_graphs_added": 0,
                       "dynamo_recompiles_added": 0,
                       "notes": [f"{'OOM' if _is_oom(exc) else type(exc).__name__}: {str(exc)[:300]}"]}
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            row["seconds"] = time.perf_counter() - t0
            result["rows"].append(row)
            write_result(result, args.out, "attention.json")            # after every row: a run cut short keeps its rows
            status = "ok" if row["correct"] else f"FAILED {row['failed_checks']}"
            print(f"[{time.perf_counter() - t_start:6.1f}s] N={n_full} {mode}: {status}; "
                  f"compile graphs +{row['dynamo_graphs_added']}", flush=True)
            if row["dynamo_recompiles_added"] > 2:
                print(f"  warning: {row['dynamo_recompiles_added']} torch.compile recompiles for one shape "
                      f"(recompile storm?)", flush=True)
    result["total_seconds"] = time.perf_counter() - t_start
    if device.type == "cuda":
        try:
            from eflow_core.kernels.triton_window import autotune_choices, gluon_status, tma_status
            result["triton_tma"] = tma_status()
            result["triton_gluon"] = gluon_status()
            result["triton_autotune"] = autotune_choices()
        except Exception as exc:                                   # noqa: BLE001
            result["triton_tma"] = f"unknown ({type(exc).__name__})"
    result["dynamo_graphs_total"] = dynamo_graphs()
    result["dynamo_recompiles_total"] = dynamo_recompiles()
    print_table(result)
    out = Path(args.out)
    write_result(result, out, "attention.json")
    fig = write_figure(result, out / "attention_fig2a.html", args.plotlyjs)
    print(f"\nwrote {out / 'attention.json'}; figure: {fig}; total {result['total_seconds']:.0f} s; "
          f"torch.compile graphs {result['dynamo_graphs_total']}, recompiles {result['dynamo_recompiles_total']}")
    all_ok = all(row["correct"] for row in result["rows"])
    if not all_ok:
        print("CORRECTNESS FAILURES:", [(r["n_full"], r["mode"], r["failed_checks"]) for r in result["rows"]
                                         if not r["correct"]])
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
