"""The Triton kernels (eflow_core/kernels/triton_window/, eflow_core/kernels/triton_linear.py) run under
TRITON_INTERPRET=1 on the CPU against the reference definitions.

The interpreter must be switched on before Triton is imported, so one child process (this file
run as a script) computes every case and prints JSON; the tests below check its numbers. Shapes
are small because the interpreter is slow; fp32 and fp16 only (a bf16 tl.dot is wrong in the
interpreter). Tolerances: fp32 1e-4, fp16 5e-3 (relative, gradients floored at ||do||).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# name: (B, H, Nq, Nk, D, radius, dropped, dtype, layout)
WINDOW_CASES = {
    "f32_dense_n37_d16_r5": (2, 2, 37, 37, 16, 5, False, "float32", "bhnd"),
    "f32_dense_n100_d32_r0": (1, 2, 100, 100, 32, 0, False, "float32", "bhnd"),
    "f32_dense_n100_d32_r40_interior": (1, 2, 100, 100, 32, 40, False, "float32", "bhnd"),
    "f32_dropped_n200_d64_r120": (2, 1, 200, 200, 64, 120, True, "float32", "bhnd"),
    "f32_window_larger_than_n": (1, 2, 100, 100, 32, 1000, False, "float32", "bhnd"),
    "f32_nq60_nk150_dropped": (2, 1, 60, 150, 16, 25, True, "float32", "bhnd"),
    "f32_strided_bnhd_layout": (2, 2, 70, 70, 16, 20, True, "float32", "bnhd"),
    "f32_queries_without_keys": (2, 1, 4, 7, 16, 3, True, "float32", "empty"),
    "f32_growing_logits_n120_d32_r60": (1, 2, 120, 120, 32, 60, False, "float32", "growing"),
    "f16_dense_n100_d32_r20": (2, 2, 100, 100, 32, 20, False, "float16", "bhnd"),
    "f16_dropped_n200_d32_r50": (2, 1, 200, 200, 32, 50, True, "float16", "bhnd"),
}
# name: (B, H, N, D, Dv, dtype, rows_per_split or None)
LINEAR_CASES = {
    "f32_n100_d32": (2, 2, 100, 32, 32, "float32", None),
    "f32_n37_d16_dv64": (1, 3, 37, 16, 64, "float32", None),
    "f32_n100_split_rows24": (1, 2, 100, 32, 16, "float32", 24),
    "f16_n200_d64_dv32": (2, 1, 200, 64, 32, "float16", None),
}
TOL = {"float32": 1e-4, "float16": 5e-3}
# load path and backward: (EFLOW_TRITON_TMA, backward mode)
LOADS = {"ptr": ("0", "split"), "tma": ("1", "split"), "ptr+atomic": ("0", "atomic")}


def _hopper_ptx_child() -> dict:
    """Runs without the interpreter: compiles the dk/dv kernel for sm_90 (no GPU needed: Triton's bundled
    ptxas). The atomic backward with and without the bulk dq reductions: the adds in its PTX. The split
    backward with descriptors and with pointers: the 1-D bulk copies and the per-entry copies."""
    import inspect
    import re

    import triton
    from triton.backends.compiler import GPUTarget

    from eflow_core.kernels import triton_window

    fn = triton_window._window_bwd_dkdv.fn
    names = list(inspect.signature(fn.fn).parameters)
    pointers = {"LSE": "*fp32", "DELTA": "*fp32", "DQ32": "*fp32", "QPOS": "*i32", "KPOS": "*i32", "QLO": "*i32",
                "QHI": "*i32", **{n: "*bf16" for n in ("Q", "K", "V", "DO", "DK", "DV")}}
    def ptx(**const):
        const = {"HEAD_DIM": 128, "PRECISION": "ieee", "BLOCK_M": 64, "BLOCK_N": 64, **const}
        signature = {n: pointers.get(n) or ("constexpr" if n in const else
                                            "fp32" if n in ("qk_scale", "sm_scale") else "i32") for n in names}
        src = triton.compiler.ASTSource(fn=fn, signature=signature,
                                        constexprs={(names.index(k),): v for k, v in const.items()})
        return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8, "num_stages": 3}).asm["ptx"]

    out = {}
    for tma_atomic in ((True, False) if hasattr(getattr(triton.language, "tensor_descriptor", None), "atomic_add")
                       else ()):
        code = ptx(USE_DESC=True, FUSE_DQ=True, TMA_ATOMIC=tma_atomic)
        out[str(tma_atomic)] = {"bulk_reductions": code.count("cp.reduce.async.bulk.tensor"),
                                "element_atomics": len(re.findall(r"(?:^|\s)(?:red|atom)\.[\w.]*add", code, re.M))}
    for use_desc in (True, False):
        code = ptx(USE_DESC=use_desc, FUSE_DQ=False, TMA_ATOMIC=False)
        out[f"split_desc_{use_desc}"] = {"bulk_1d_copies": code.count("cp.async.bulk.tensor.1d"),
                                         "entry_copies": len(re.findall(r"cp\.async\.c[ag]\.shared\.global[^;]*, 0x4\b", code))}
    return out


def _child() -> dict:
    """Runs in the TRITON_INTERPRET=1 process: every case, as relative errors."""
    assert os.environ.get("TRITON_INTERPRET") == "1"
    import torch

    from eflow_core import kernels
    from eflow_core.kernels import triton_linear, triton_window
    from eflow_core.kernels.reference import linear_attention_reference, window_attention_reference

    def rel(a, b, floor=0.0):
        a, b = a.detach().double(), b.detach().double()
        return float((a - b).norm() / max(float(b.norm()), floor, 1e-300))

    def positions(B, n, n_full, drop, gen):
        if not drop:
            return torch.arange(n).expand(B, n).contiguous()
        return torch.stack([torch.sort(torch.randperm(n_full, generator=gen)[:n])[0] for _ in range(B)])

    out = {"window": {}, "linear": {}}
    for loads, (tma, bwd) in LOADS.items():
        triton_window.set_tma_mode(tma)
        triton_window.set_backward_mode(bwd)
        for i, (name, (B, H, nq, nk, D, radius, drop, dt, layout)) in enumerate(WINDOW_CASES.items()):
            gen = torch.Generator().manual_seed(100 + i)
            dtype = getattr(torch, dt)
            if layout == "empty":
                k_pos = torch.tensor([[0, 1, 2, 3, 50, 51, 52], [10, 11, 12, 13, 14, 15, 16]])
                q_pos = torch.tensor([[1, 20, 26, 52], [0, 12, 30, 40]])
            else:
                q_pos = positions(B, nq, 4 * max(nq, nk), drop, gen)
                k_pos = positions(B, nk, 4 * max(nq, nk), drop, gen)
            if layout == "bnhd":               # (B, N, H, D) storage viewed as (B, H, N, D)
                q, k, v = (torch.randn(B, n, H, D, generator=gen).to(dtype).transpose(1, 2) for n in (nq, nk, nk))
            else:
                q, k, v = (torch.randn(B, H, n, D, generator=gen).to(dtype) for n in (nq, nk, nk))
            if layout == "growing":   # block maxima of the logits rise by ~9 (base 2) per 16 keys, so the
                q = q * 3             # forward's running maximum moves, and rescales, many times
                k = k * torch.linspace(0.2, 8.0, nk)[:, None].to(dtype)
            do = torch.randn(B, H, nq, D, generator=gen).to(dtype)
            qt, kt, vt = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
            o = kernels.window_attention(qt, kt, vt, q_pos, k_pos, radius, backend="triton")
            grads = torch.autograd.grad(o, (qt, kt, vt), do)
            qr, kr, vr = (t.detach().float().requires_grad_(True) for t in (q, k, v))
            o_ref = window_attention_reference(qr, kr, vr, q_pos, k_pos, radius)
            g_ref = torch.autograd.grad(o_ref, (qr, kr, vr), do.float())
            res = {"o": rel(o, o_ref), "dtype_ok": o.dtype == dtype and all(g.dtype == dtype for g in grads),
                   "used_tma": triton_window._use_descriptors(kt, vt) and triton_window._use_descriptors(qt, do)}
            floor = float(do.float().norm())
            for g, gr, n in zip(grads, g_ref, ("dq", "dk", "dv")):
                res[n] = rel(g, gr, floor)
            if layout == "empty":
                res["empty_rows_zero"] = bool((o[0, :, 1:3] == 0).all() and (o[1, :, 2:] == 0).all()
                                              and (grads[0][0, :, 1:3] == 0).all())
            out["window"][f"{name}@{loads}"] = res
    triton_window.set_backward_mode("split")
    out["tma_failure"] = triton_window._TMA["broken"]

    for i, (name, (B, H, N, D, Dv, dt, rows)) in enumerate(LINEAR_CASES.items()):
        gen = torch.Generator().manual_seed(200 + i)
        dtype = getattr(torch, dt)
        q, k = (torch.randn(B, H, N, D, generator=gen).to(dtype) for _ in range(2))
        v = torch.randn(B, H, N, Dv, generator=gen).to(dtype)
        do = torch.randn(B, H, N, Dv, generator=gen).to(dtype)
        res = {}
        if rows is not None:                 # several token splits summed (the GPU's split-K path)
            s = triton_linear.at_b(k, v, rows=rows)
            res["split_S"] = rel(s, torch.einsum("bhnd,bhne->bhde", k.float(), v.float()))
        qt, kt, vt = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
        o = kernels.linear_attention(qt, kt, vt, backend="triton")
        grads = torch.autograd.grad(o, (qt, kt, vt), do)
        qr, kr, vr = (t.detach().float().requires_grad_(True) for t in (q, k, v))
        o_ref = linear_attention_reference(qr, kr, vr)
        g_ref = torch.autograd.grad(o_ref, (qr, kr, vr), do.float())
        res["o"] = rel(o, o_ref)
        res["dtype_ok"] = o.dtype == dtype and all(g.dtype == dtype for g in grads)
        for g, gr, n in zip(grads, g_ref, ("dq", "dk", "dv")):
            res[n] = rel(g, gr)
        out["linear"][name] = res

    # torch.compile sees the kernels as custom ops: one graph (fullgraph), same values and grads
    gen = torch.Generator().manual_seed(300)
    q, k, v, do = (torch.randn(2, 2, 24, 16, generator=gen) for _ in range(4))
    pos = positions(2, 24, 60, True, gen)

    def both(q, k, v):
        return (kernels.window_attention(q, k, v, pos, pos, 7, backend="triton")
                + kernels.linear_attention(q, k, v, backend="triton"))

    import torch._dynamo
    results = []
    for fn in (both, torch.compile(both, fullgraph=True, backend="aot_eager")):
        qt, kt, vt = (t.clone().requires_grad_(True) for t in (q, k, v))
        o = fn(qt, kt, vt)
        results.append((o, *torch.autograd.grad(o, (qt, kt, vt), do)))
    out["compiled"] = {n: rel(c, e) for n, e, c in zip(("o", "dq", "dk", "dv"), *results)}

    info = kernels.available_backends("cpu")
    q = torch.randn(1, 1, 8, 16)
    out["meta"] = {
        "triton_available": info["triton"][0],
        "auto_cpu": kernels.auto_window_backend(q, q, q),
        "n_configs": [len(f.configs) for f in (triton_window._window_fwd, triton_window._window_bwd_dkdv,
                                               triton_window._window_bwd_dq, triton_linear._at_b, triton_linear._x_m)],
    }
    return out


@pytest.fixture(scope="module")
def interpreted():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("loads", list(LOADS))
@pytest.mark.parametrize("case", list(WINDOW_CASES))
def test_triton_window_matches_reference(interpreted, case, loads):
    """Both load paths: pointer loads, and TMA tensor descriptors (the Hopper path); the
    FlashAttention-2 style backward whose dq comes from atomic adds in the dk/dv kernel."""
    r = interpreted["window"][f"{case}@{loads}"]
    tol = TOL[WINDOW_CASES[case][7]]
    assert interpreted["tma_failure"] is None
    assert r["used_tma"] == loads.startswith("tma")
    assert r["dtype_ok"]
    for key in ("o", "dq", "dk", "dv"):
        assert r[key] < tol, (key, r)
    if "empty_rows_zero" in r:
        assert r["empty_rows_zero"]


@pytest.mark.parametrize("case", list(LINEAR_CASES))
def test_triton_linear_matches_reference(interpreted, case):
    r = interpreted["linear"][case]
    tol = TOL[LINEAR_CASES[case][5]]
    assert r["dtype_ok"]
    for key in ("o", "dq", "dk", "dv") + (("split_S",) if "split_S" in r else ()):
        assert r[key] < tol, (key, r)


def test_triton_kernels_compile_as_custom_ops(interpreted):
    """torch.compile(fullgraph=True) traces through both kernels (custom ops with fake shapes and
    registered backward) and gives the eager values and gradients."""
    for key, err in interpreted["compiled"].items():
        assert err < 1e-6, (key, interpreted["compiled"])


def test_interpreter_uses_one_config_and_auto_never_picks_triton_on_cpu(interpreted):
    meta = interpreted["meta"]
    assert meta["n_configs"] == [1, 1, 1, 1, 1]
    assert meta["triton_available"] is True          # explicit backend="triton" runs interpreted
    assert meta["auto_cpu"] in ("sdpa", "chunked")   # but "auto" never picks it on the CPU


@pytest.fixture(scope="module")
def hopper_ptx():
    """The counts of `_hopper_ptx_child`, from one child process (without the interpreter)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--hopper-ptx"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_atomic_backward_adds_dq_tiles_as_bulk_reductions_on_hopper(hopper_ptx):
    """The atomic backward's dq adds, compiled for sm_90 with TMA on: one bulk tensor reduction per phase
    (masked edge, interior, masked edge) and no per-element atomics; without them, per-element atomics.
    Only the lowering is pinned here (the interpreter cannot run descriptor reductions); the GPU benchmark
    checks the values (benchmarks/attention.py, `triton_atomic_dq`)."""
    if "True" not in hopper_ptx:
        pytest.skip("this Triton has no tensor_descriptor.atomic_add")
    counts = hopper_ptx
    assert counts["True"] == {"bulk_reductions": 3, "element_atomics": 0}, counts
    assert counts["False"]["bulk_reductions"] == 0 and counts["False"]["element_atomics"] > 0, counts


def test_dkdv_kernel_reads_lse_and_delta_by_bulk_copies_on_hopper(hopper_ptx):
    """With descriptors, the split dk/dv kernel gets lse2 and delta by 1-D TMA copies (at least one of each
    per phase); the 4-byte per-entry copies left are the masked phases' query positions, fewer than the
    pointer path's (positions, lse2, delta). The change that cut the kernel 12% on an H200
    (docs/BENCHMARKS.md §3 run G)."""
    counts = hopper_ptx
    desc, pointers = counts["split_desc_True"], counts["split_desc_False"]
    assert desc["bulk_1d_copies"] >= 6 and pointers["bulk_1d_copies"] == 0, counts
    assert 0 < desc["entry_copies"] < pointers["entry_copies"], counts


if __name__ == "__main__" and "--child" in sys.argv:
    print(json.dumps(_child()))
if __name__ == "__main__" and "--hopper-ptx" in sys.argv:
    print(json.dumps(_hopper_ptx_child()))
