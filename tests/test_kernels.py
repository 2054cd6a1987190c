"""CPU backends of eflow_core/kernels/ against the reference definitions (the Triton kernels are tested,
interpreted, in test_kernels_triton.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from eflow_core import kernels
import eflow_core.kernels.chunked as chunked_mod
from eflow_core.kernels import available_backends, linear_attention, window_attention
from eflow_core.kernels.reference import linear_attention_reference, window_attention_reference

ROOT = Path(__file__).resolve().parents[1]


def rel_err(a: torch.Tensor, b: torch.Tensor, floor: float = 0.0) -> float:
    """||a - b|| / max(||b||, floor), in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / max(float(b.norm()), floor, 1e-300))


def sorted_subset(n_keep: int, n_full: int, gen: torch.Generator) -> torch.Tensor:
    return torch.sort(torch.randperm(n_full, generator=gen)[:n_keep])[0]


def make_positions(B: int, n: int, drop: bool, gen: torch.Generator, n_full: int | None = None) -> torch.Tensor:
    """(B, n) int64 ascending: arange(n) (dense) or a different random sorted subset per row."""
    if not drop:
        return torch.arange(n).expand(B, n).contiguous()
    return torch.stack([sorted_subset(n, n_full or 4 * n, gen) for _ in range(B)])


def make_case(B, H, nq, nk, D, drop, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    n_full = 4 * max(nq, nk)
    q_pos = make_positions(B, nq, drop or nq != nk, gen, n_full)
    k_pos = make_positions(B, nk, drop or nq != nk, gen, n_full)
    q = torch.randn(B, H, nq, D, generator=gen).to(dtype)
    k = torch.randn(B, H, nk, D, generator=gen).to(dtype)
    v = torch.randn(B, H, nk, D, generator=gen).to(dtype)
    do = torch.randn(B, H, nq, D, generator=gen).to(dtype)
    return q, k, v, q_pos, k_pos, do


def run_with_grads(backend, q, k, v, q_pos, k_pos, radius, do):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    o = window_attention(q, k, v, q_pos, k_pos, radius, backend=backend)
    grads = torch.autograd.grad(o, (q, k, v), do)
    return o, grads


def fp32_reference(q, k, v, q_pos, k_pos, radius, do):
    q, k, v = (t.detach().float().requires_grad_(True) for t in (q, k, v))
    o = window_attention_reference(q, k, v, q_pos, k_pos, radius)
    return o, torch.autograd.grad(o, (q, k, v), do.float())


# (B, H, Nq, Nk, D, radius, dropped)
CASES = {
    "dense_n37_r5": (2, 2, 37, 37, 16, 5, False),
    "dense_r0": (1, 2, 100, 100, 32, 0, False),
    "window_larger_than_seq": (2, 1, 64, 64, 16, 1000, False),
    "dropped_rows_differ": (3, 2, 150, 150, 32, 40, True),
    "nq_ne_nk": (2, 2, 50, 130, 16, 30, True),
    "n257_d24_odd_sizes": (1, 2, 257, 257, 24, 20, False),
    "dropped_n600": (2, 2, 600, 600, 16, 150, True),
    "n128_one_flex_block": (1, 2, 128, 128, 16, 10, False),
}


@pytest.mark.parametrize("backend", ["chunked", "sdpa", "auto"])
@pytest.mark.parametrize("case", list(CASES))
def test_window_backends_match_reference_fp32(backend, case):
    B, H, nq, nk, D, radius, drop = CASES[case]
    q, k, v, q_pos, k_pos, do = make_case(B, H, nq, nk, D, drop, torch.float32, seed=list(CASES).index(case))
    o_ref, g_ref = fp32_reference(q, k, v, q_pos, k_pos, radius, do)
    o, grads = run_with_grads(backend, q, k, v, q_pos, k_pos, radius, do)
    assert o.dtype == torch.float32 and o.shape == o_ref.shape
    assert rel_err(o, o_ref) < 1e-5
    for g, gr, name in zip(grads, g_ref, "qkv"):
        # Floor at ||do||: with radius 0 the exact dq, dk are 0 and only rounding remains.
        assert rel_err(g, gr, floor=float(do.norm())) < 1e-5, f"d{name}"


@pytest.mark.parametrize("case", ["dense_n37_r5", "dropped_rows_differ", "nq_ne_nk", "window_larger_than_seq",
                                  "n128_one_flex_block"])
def test_flex_forward_matches_reference_cpu(case):
    B, H, nq, nk, D, radius, drop = CASES[case]
    q, k, v, q_pos, k_pos, _ = make_case(B, H, nq, nk, D, drop, torch.float32, seed=7)
    with torch.no_grad():
        o = window_attention(q, k, v, q_pos, k_pos, radius, backend="flex")
    assert rel_err(o, window_attention_reference(q, k, v, q_pos, k_pos, radius)) < 1e-5


def test_flex_cpu_backward_is_refused_clearly():
    q, k, v, q_pos, k_pos, _ = make_case(1, 1, 20, 20, 16, False, torch.float32, seed=0)
    q.requires_grad_(True)
    with pytest.raises(NotImplementedError, match="chunked"):
        window_attention(q, k, v, q_pos, k_pos, 3, backend="flex")


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 5e-3)])
@pytest.mark.parametrize("backend", ["chunked", "sdpa"])
def test_window_low_precision_close_to_fp32_reference(backend, dtype, tol):
    q, k, v, q_pos, k_pos, do = make_case(2, 2, 120, 120, 32, True, dtype, seed=3)
    o_ref, g_ref = fp32_reference(q, k, v, q_pos, k_pos, 25, do)
    o, grads = run_with_grads(backend, q, k, v, q_pos, k_pos, 25, do)
    assert o.dtype == dtype and all(g.dtype == dtype for g in grads)
    assert rel_err(o, o_ref) < tol
    for g, gr in zip(grads, g_ref):
        assert rel_err(g, gr) < 2 * tol


@pytest.mark.parametrize("bq", [16, 32])
def test_chunked_many_blocks_and_mask_free_interior(monkeypatch, bq):
    """Small forced blocks: many blocks, edge-only masks and mask-free interior columns."""
    monkeypatch.setattr(chunked_mod, "_block_size", lambda *a: bq)
    for drop, radius in [(False, 40), (True, 90), (True, 3)]:
        q, k, v, q_pos, k_pos, do = make_case(2, 2, 200, 200, 16, drop, torch.float32, seed=radius)
        ranges = chunked_mod._block_ranges(q_pos, k_pos, radius, bq)
        if radius >= 40:
            assert any(c1 > c0 for _, _, _, _, c0, c1, _ in ranges), "no mask-free interior exercised"
        o_ref, g_ref = fp32_reference(q, k, v, q_pos, k_pos, radius, do)
        o, grads = run_with_grads("chunked", q, k, v, q_pos, k_pos, radius, do)
        assert rel_err(o, o_ref) < 1e-5
        for g, gr in zip(grads, g_ref):
            assert rel_err(g, gr, floor=float(do.norm())) < 1e-5


@pytest.mark.parametrize("backend", ["chunked", "sdpa", "reference"])
def test_queries_without_visible_keys_give_zeros_and_finite_grads(backend):
    B, H, D = 2, 2, 16
    gen = torch.Generator().manual_seed(0)
    k_pos = torch.tensor([[0, 1, 2, 3, 50, 51, 52], [10, 11, 12, 13, 14, 15, 16]])
    q_pos = torch.tensor([[1, 20, 26, 52], [0, 12, 30, 40]])      # 20, 26 / 30, 40 see nothing at r=3
    q = torch.randn(B, H, 4, D, generator=gen)
    k = torch.randn(B, H, 7, D, generator=gen)
    v = torch.randn(B, H, 7, D, generator=gen)
    do = torch.randn(B, H, 4, D, generator=gen)
    o_ref, g_ref = fp32_reference(q, k, v, q_pos, k_pos, 3, do)
    o, grads = run_with_grads(backend, q, k, v, q_pos, k_pos, 3, do)
    assert torch.equal(o[0, :, 1:3], torch.zeros_like(o[0, :, 1:3]))
    assert torch.equal(o[1, :, 2:], torch.zeros_like(o[1, :, 2:]))
    assert rel_err(o, o_ref) < 1e-5
    for g, gr in zip(grads, g_ref):
        assert torch.isfinite(g).all() and rel_err(g, gr, floor=float(do.norm())) < 1e-5
    assert float(grads[0][0, :, 1:3].abs().max()) == 0.0


def test_chunked_accepts_strided_layout():
    """(B, N, H, D) projections viewed as (B, H, N, D) without a copy."""
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(3, 2, 90, 4, 16, generator=gen)                     # (3, B, N, H, D)
    q, k, v = (t.transpose(1, 2) for t in base)
    pos = make_positions(2, 90, True, gen)
    o = window_attention(q, k, v, pos, pos, 17, backend="chunked")
    assert rel_err(o, window_attention_reference(q, k, v, pos, pos, 17)) < 1e-5


def test_chunked_larger_sequence_natural_blocks():
    """Default block choice at N=2000 (several 128-query blocks), dropped rows."""
    q, k, v, q_pos, k_pos, do = make_case(2, 2, 2000, 2000, 16, True, torch.float32, seed=11)
    o_ref, g_ref = fp32_reference(q, k, v, q_pos, k_pos, 300, do)
    o, grads = run_with_grads("chunked", q, k, v, q_pos, k_pos, 300, do)
    assert rel_err(o, o_ref) < 1e-5
    for g, gr in zip(grads, g_ref):
        assert rel_err(g, gr) < 1e-5


def test_flash_backend_maps_position_window_to_index_window(monkeypatch):
    """flash-attn is not installed here: a fake flash_attn_func with flash's index-window
    semantics (layout (B, N, H, D), window_size=(left, right)) checks the dispatcher's mapping."""
    from eflow_core.kernels import flash

    def fake_flash_attn_func(q, k, v, softmax_scale, causal, window_size):
        assert not causal and q.shape[1] == k.shape[1]
        left, right = window_size
        n = q.shape[1]
        i = torch.arange(n)[:, None]
        j = torch.arange(n)[None, :]
        visible = (j >= i - left) & (j <= i + right)
        s = torch.einsum("bihd,bjhd->bhij", q, k) * softmax_scale
        p = torch.softmax(s.masked_fill(~visible, float("-inf")), -1)
        return torch.einsum("bhij,bjhd->bihd", p, v)

    monkeypatch.setattr(flash, "flash_module", lambda: types.SimpleNamespace(flash_attn_func=fake_flash_attn_func))
    q, k, v, q_pos, k_pos, do = make_case(2, 2, 70, 70, 16, False, torch.float32, seed=5)
    o_ref, g_ref = fp32_reference(q, k, v, q_pos, k_pos, 9, do)
    o, grads = run_with_grads("flash", q, k, v, q_pos, k_pos, 9, do)
    assert rel_err(o, o_ref) < 1e-5
    for g, gr in zip(grads, g_ref):
        assert rel_err(g, gr) < 1e-5
    dropped = make_positions(2, 70, True, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="arange"):
        window_attention(q, k, v, dropped, dropped, 9, backend="flash")


def test_flash_unavailable_is_a_clear_error(monkeypatch):
    from eflow_core.kernels import flash
    monkeypatch.setattr(flash, "flash_module", lambda: None)
    q, k, v, q_pos, k_pos, _ = make_case(1, 1, 8, 8, 16, False, torch.float32, seed=0)
    with pytest.raises(RuntimeError, match="flash-attn is not installed"):
        window_attention(q, k, v, q_pos, k_pos, 2, backend="flash")


def test_bad_arguments_raise_value_errors():
    q, k, v, q_pos, k_pos, _ = make_case(1, 2, 10, 10, 16, False, torch.float32, seed=0)
    with pytest.raises(ValueError, match="unknown window attention backend"):
        window_attention(q, k, v, q_pos, k_pos, 2, backend="nope")
    with pytest.raises(ValueError, match="q_pos"):
        window_attention(q, k, v, q_pos[:, :5], k_pos, 2)
    with pytest.raises(ValueError, match="radius"):
        window_attention(q, k, v, q_pos, k_pos, -1)
    with pytest.raises(ValueError, match="integer"):
        window_attention(q, k, v, q_pos.float(), k_pos, 2)
    with pytest.raises(ValueError, match="unknown linear attention backend"):
        linear_attention(q, k, v, backend="nope")


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="interpreter enabled in this process")
def test_position_tables_brute_force_and_shared_for_self_attention():
    """The Triton kernels' visible ranges (kernels/triton_window.position_tables) against a brute-force
    scan of |q_pos - k_pos| <= r; passing one tensor as both positions (self-attention) shares the
    query tables and gives the same values as two equal tensors."""
    pytest.importorskip("triton")
    from eflow_core.kernels.triton_window import position_tables

    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,))))
    q_pos = torch.stack([torch.sort(torch.randperm(400, generator=gen)[:90])[0] for _ in range(2)])
    k_pos = torch.stack([torch.sort(torch.randperm(400, generator=gen)[:70])[0] for _ in range(2)])
    radius = int(torch.randint(0, 60, (1,), generator=gen))
    qp, kp, klo, khi, qlo, qhi = position_tables(q_pos, k_pos, radius)
    visible = (q_pos[:, :, None] - k_pos[:, None, :]).abs() <= radius           # (B, Nq, Nk)
    for b in range(2):
        for i in range(90):
            idx = visible[b, i].nonzero().flatten()
            lo, hi = (int(idx[0]), int(idx[-1]) + 1) if len(idx) else (int(klo[b, i]), int(klo[b, i]))
            assert (int(klo[b, i]), int(khi[b, i])) == (lo, hi)
        for j in range(70):
            idx = visible[b, :, j].nonzero().flatten()
            if len(idx):
                assert (int(qlo[b, j]), int(qhi[b, j])) == (int(idx[0]), int(idx[-1]) + 1)
            else:
                assert int(qlo[b, j]) == int(qhi[b, j])
    shared = position_tables(q_pos, q_pos, radius)
    separate = position_tables(q_pos, q_pos.clone(), radius)
    assert shared[2] is shared[4] and shared[3] is shared[5]
    for a, b in zip(shared, separate):
        assert a.dtype == torch.int32 and a.is_contiguous() and torch.equal(a, b)


def test_triton_backend_on_cpu_is_refused_without_interpreter():
    q, k, v, q_pos, k_pos, _ = make_case(1, 1, 8, 8, 16, False, torch.float32, seed=0)
    with pytest.raises(RuntimeError, match="CUDA"):
        window_attention(q, k, v, q_pos, k_pos, 2, backend="triton")
    with pytest.raises(RuntimeError, match="CUDA"):
        linear_attention(q, k, v, backend="triton")


def test_available_backends_and_auto_on_cpu():
    info = available_backends("cpu")
    for name in ("reference", "chunked", "sdpa", "flex", "triton", "flash", "auto",
                 "linear:reference", "linear:einsum", "linear:triton", "linear:auto"):
        ok, why = info[name]
        assert isinstance(ok, bool) and isinstance(why, str) and why
    assert info["chunked"][0] and info["reference"][0]
    assert info["auto"][1].startswith("sdpa (dense band mask) up to")
    assert "forward only" in info["flex"][1]
    assert info["linear:auto"] == (True, "reference")
    q, k, v, q_pos, k_pos, _ = make_case(1, 1, 8, 8, 16, False, torch.float32, seed=0)
    assert kernels.auto_window_backend(q, k, v) == "sdpa"              # small: one fused masked call
    big = torch.empty(1, 1, 4096, 8)                                    # 4096^2 > 2^22 scores: chunked
    assert kernels.auto_window_backend(big, big, big) == "chunked"
    assert kernels.auto_linear_backend(q) == "reference"
    assert set(available_backends()) == set(info)                      # default device here is the CPU


# ------------------------------------------------------------------------------------ linear attention

@pytest.mark.parametrize("backend", ["einsum", "auto", "chunked", "reference"])
@pytest.mark.parametrize("shape", [(2, 3, 37, 16, 16), (1, 2, 100, 32, 64)])
def test_linear_backends_match_reference(backend, shape):
    B, H, N, D, Dv = shape
    gen = torch.Generator().manual_seed(N)
    q, k = (torch.randn(B, H, N, D, generator=gen) for _ in range(2))
    v = torch.randn(B, H, N, Dv, generator=gen)
    do = torch.randn(B, H, N, Dv, generator=gen)
    qr, kr, vr = (t.clone().requires_grad_(True) for t in (q, k, v))
    ref = linear_attention_reference(qr, kr, vr)
    g_ref = torch.autograd.grad(ref, (qr, kr, vr), do)
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    o = linear_attention(q, k, v, backend=backend)
    grads = torch.autograd.grad(o, (q, k, v), do)
    assert o.shape == (B, H, N, Dv) and rel_err(o, ref) < 1e-5
    for g, gr in zip(grads, g_ref):
        assert rel_err(g, gr) < 1e-5


def test_linear_reference_is_denominator_free():
    q = torch.ones(1, 1, 3, 2)
    k = torch.ones(1, 1, 3, 2)
    v = torch.arange(6.0).view(1, 1, 3, 2)
    o = linear_attention(q, k, v)
    # S = k^T v = [[6, 9], [6, 9]]; o_i = q_i S = [12, 18] (no division by sum q k^T = 6).
    assert torch.equal(o, torch.tensor([12.0, 18.0]).expand(1, 1, 3, 2))


# ------------------------------------------------------------------------------------------- memory

_MEMORY_SCRIPT = r"""
import json, resource, sys, torch
torch.set_num_threads(1)
from eflow_core import kernels
from eflow_core.kernels.chunked import chunked_window_attention
B, H, N, D, R = 1, 4, 16384, 64, 1024
gen = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(B, H, N, D, generator=gen) for _ in range(3))
pos = torch.arange(N).expand(B, N).contiguous()
# Warm the kernels' code paths on a tiny input so lazy initialisation is not counted.
kernels.window_attention(q[:, :, :300], k[:, :, :300], v[:, :, :300], pos[:, :300], pos[:, :300], 50)
kernels.window_attention(q[:, :, :300].requires_grad_(), k[:, :, :300], v[:, :, :300], pos[:, :300], pos[:, :300], 50).sum().backward()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with torch.no_grad():
    o = kernels.window_attention(q, k, v, pos, pos, R)            # backend="auto" -> chunked on the CPU
fwd = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
# Exactness spot check on 64 query rows against all keys.
rows = torch.arange(0, N, N // 64)
ref = kernels.window_attention_reference(q[:, :, rows], k, v, pos[:, rows], pos, R)
err = float((o[:, :, rows] - ref).norm() / ref.norm())
qg = q.clone().requires_grad_(True)
kernels.window_attention(qg, k, v, pos, pos, R).sum().backward()
train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
print(json.dumps({"fwd_bytes": fwd, "train_bytes": train, "err": err, "auto": kernels.auto_window_backend(q, k, v)}))
"""


def test_chunked_memory_is_linear_in_n():
    """N=16,384 tokens, 4 heads x 64, fp32, radius 1024: the default CPU path stays far below the
    3 GiB a dense 16384^2 x 4 heads fp32 score matrix (4 GiB) alone would need. Measured in a fresh
    process with ru_maxrss (peak resident memory) minus the baseline after imports and inputs."""
    dense_scores = 16384 ** 2 * 4 * 4
    limit = 3 * 2 ** 30
    assert dense_scores > limit                                      # 4 GiB would not fit the limit
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    res = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(ROOT)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["auto"] == "chunked"
    assert out["err"] < 1e-5
    assert out["fwd_bytes"] < limit, out
    assert out["train_bytes"] < limit, out
    # Much tighter in practice: activations are O(N * D); one block of scores is ~10 MiB.
    assert out["fwd_bytes"] < 512 * 2 ** 20, out
