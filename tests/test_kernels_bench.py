"""benchmarks/attention.py on the CPU: its correctness-check functions, and a --tiny end-to-end run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    from benchmarks import attention
    return attention


def test_quarter_positions_are_sorted_distinct_and_differ_per_row(bench):
    pos = bench.keep_quarter_positions(400, 3, torch.Generator().manual_seed(0), "cpu")
    assert pos.shape == (3, 100) and pos.dtype == torch.int64
    for row in pos:
        assert bool((row[1:] > row[:-1]).all()) and int(row.min()) >= 0 and int(row.max()) < 400
    assert not torch.equal(pos[0], pos[1])


def test_visible_key_counts_and_flops_match_brute_force(bench):
    pos = bench.keep_quarter_positions(800, 2, torch.Generator().manual_seed(1), "cpu")
    counts = bench.visible_key_counts(pos, pos, 37)
    brute = ((pos[:, :, None] - pos[:, None, :]).abs() <= 37).sum(-1)
    assert torch.equal(counts, brute)
    assert bench.window_flops(pos, pos, 37, heads=3, head_dim=16) == 4.0 * float(brute.sum()) * 16 * 3
    dense = bench.dense_positions(100, 1, "cpu")
    assert float(bench.visible_key_counts(dense, dense, 1000).float().mean()) == 100.0


def test_forward_check_accepts_exact_and_catches_wrong_outputs(bench):
    from eflow_core import kernels
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 300, 16, generator=gen) for _ in range(3))
    pos = bench.keep_quarter_positions(1200, 1, gen, "cpu")
    o = kernels.window_attention(q, k, v, pos, pos, 40, backend="chunked")
    assert bench.forward_rel_error(o, q, k, v, pos, pos, 40, rows=64) < 1e-5
    wrong = kernels.window_attention(q, k, v, pos, pos, 20, backend="chunked")          # wrong radius
    assert bench.forward_rel_error(wrong, q, k, v, pos, pos, 40, rows=64) > bench.FWD_TOL
    assert bench.forward_rel_error(o.bfloat16(), q, k, v, pos, pos, 40, rows=64) < bench.FWD_TOL


def test_gradient_check_against_exact_backend(bench):
    gen = torch.Generator().manual_seed(3)
    q, k, v, do = (torch.randn(2, 2, 120, 16, generator=gen) for _ in range(4))
    pos = bench.keep_quarter_positions(480, 2, gen, "cpu")
    errs = bench.gradient_rel_errors("sdpa", q, k, v, pos, pos, 30, do, ref_backend="chunked")
    assert set(errs) == {"dq", "dk", "dv"} and max(errs.values()) < 1e-5
    errs = bench.gradient_rel_errors("chunked", q.bfloat16(), k.bfloat16(), v.bfloat16(), pos, pos, 30,
                                     do.bfloat16(), ref_backend="chunked")
    assert max(errs.values()) < bench.GRAD_TOL
    assert bench.linear_rel_error("einsum", q, k, v) < 1e-5


def test_tiny_cpu_run_end_to_end(tmp_path, benchmark_env):
    env = {**benchmark_env, "OUT": str(tmp_path)}
    env.pop("TRITON_INTERPRET", None)
    res = subprocess.run([sys.executable, "-m", "benchmarks.attention", "--device", "cpu", "--tiny"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads((tmp_path / "attention.json").read_text())
    assert [(r["n_full"], r["mode"]) for r in result["rows"]] == [(48, "dense"), (48, "dropped"),
                                                                  (160, "dense"), (160, "dropped")]
    for row in result["rows"]:
        assert row["correct"], row
        assert {"chunked_fwd", "chunked_dq", "chunked_dk", "chunked_dv", "flex_fwd"} <= set(row["checks"])
        names = {e["name"] for e in row["timings"]}
        assert {"window_chunked", "window_flex", "linear_einsum", "glga_core"} <= names
        assert all("error" not in e for e in row["timings"]), row["timings"]
    dropped = result["rows"][1]
    assert dropped["tokens"] == 12 and result["config"]["radius"] == 32
    assert (tmp_path / "attention_fig2a.html").stat().st_size > 10_000
    assert "checks:" in res.stdout and "wrote" in res.stdout


def test_other_backwards_lists_every_triton_backward_but_the_one_in_use(bench):
    """attention.py checks and times each of these beside "window_triton" (none for other backends)."""
    from eflow_core.kernels import triton_window

    assert bench.other_backwards("chunked") == ()
    before = triton_window.backward_mode()
    try:
        for mode in triton_window.BACKWARD_MODES:
            triton_window.set_backward_mode(mode)
            others = bench.other_backwards("triton")
            assert set(others) | {mode} == set(triton_window.BACKWARD_MODES) and mode not in others
    finally:
        triton_window.set_backward_mode(before)


def test_backward_kernel_profile_needs_a_gpu(benchmark_env):
    """benchmarks/attention_backward_kernels.py imports on the CPU and refuses with a clear message."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.attention_backward_kernels"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=benchmark_env)
    assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr, proc.stderr[-2000:]


def test_gluon_kernel_benchmark_needs_a_gpu_and_its_checks_reach_every_edge(benchmark_env):
    """benchmarks/attention_gluon_kernels.py refuses on the CPU; its checks cover a query count that is not
    a multiple of the 128-row CTA tile, every key visible, dropped tokens, head dim 64 through the model's
    strided view, and queries that see no key (cross-attention), for both autotuned kernels and every
    configuration; its position specs are what they say."""
    from benchmarks import attention_gluon_kernels as gk
    kinds = {case[3].split(":")[0] for case in gk.CHECKS}
    assert kinds == {"dense", "quarter", "spaced"}
    assert any(int(case[3].split(":")[1]) % 128 for case in gk.CHECKS if case[3].startswith("dense"))
    assert any(case[5] == 64 and case[8] for case in gk.CHECKS)                 # head dim 64, strided
    assert any(case[4] is not None for case in gk.CHECKS)                       # cross-attention
    assert torch.equal(gk.positions("spaced:5:3", None, "cpu"), torch.tensor([[0, 3, 6, 9, 12]]))
    assert torch.equal(gk.positions("dense:4", None, "cpu"), torch.arange(4)[None])
    if torch.cuda.is_available():
        return
    proc = subprocess.run([sys.executable, "-m", "benchmarks.attention_gluon_kernels"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=benchmark_env)
    assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr, proc.stderr[-2000:]
