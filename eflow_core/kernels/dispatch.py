"""Backend choice for the attention operations (docs/DESIGN.md "Kernels").

Window attention backends:
  reference  eflow_core/kernels/reference.py, the definition (dense N x N; tests and tiny inputs only)
  chunked    exact PyTorch path by query blocks over position-derived key slices; O(N * window)
             memory, differentiable; the fastest exact CPU path and "auto" on the CPU
  sdpa       torch SDPA with a dense band mask (O(N^2) mask: small N only)
  flex       FlexAttention with a position block mask (CUDA: compiled; CPU: forward only)
  triton     the project's Triton kernels (CUDA; CPU only under TRITON_INTERPRET=1, for tests)
  flash      flash-attn sliding window, only when nothing is dropped (positions == arange(N))
"auto": CUDA -> triton (flex if Triton cannot run this input, then chunked); CPU -> sdpa while the
masked score matrix is small (B * H * Nq * Nk <= SDPA_MAX_SCORES: one fused call beats the block loop),
chunked above (O(N * window) memory: never an N x N matrix at large N).

Linear attention backends: reference (fp32 einsum, exact), einsum (torch in the input dtype),
triton (fused kernels, CUDA). "auto": CUDA -> einsum (cuBLAS; faster than the Triton pair where
benchmarked, docs/BENCHMARKS.md §3); otherwise reference. Window-only names
(chunked, sdpa, flex, flash) select "reference" so one backend string can drive a whole block.
"""
from __future__ import annotations

import functools
import importlib.util
import os

import torch

from eflow_core.kernels.chunked import chunked_window_attention
from eflow_core.kernels.reference import linear_attention_reference, window_attention_reference

WINDOW_BACKENDS = ("reference", "chunked", "sdpa", "flex", "triton", "flash")
LINEAR_BACKENDS = ("reference", "einsum", "triton")
TRITON_HEAD_DIMS = (16, 32, 64, 128, 256)
SDPA_MAX_SCORES = 1 << 22   # CPU "auto" uses the dense band mask up to this many scores (16 MB in fp32)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _triton_runs_on(device: torch.device) -> tuple[bool, str]:
    if not _has_module("triton"):
        return False, "triton is not installed"
    if device.type == "cuda":
        return True, "Triton kernels on CUDA"
    if _interpreting():
        return True, "TRITON_INTERPRET=1: interpreted on the CPU (slow; for tests)"
    return False, "needs a CUDA device (on the CPU only under TRITON_INTERPRET=1, for tests)"


def _triton_fits(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    return (q.shape[-1] in TRITON_HEAD_DIMS and k.shape[-1] == q.shape[-1] and v.shape[-1] == q.shape[-1]
            and q.dtype in (torch.float16, torch.bfloat16, torch.float32) and k.dtype == q.dtype == v.dtype)


def _flex_available() -> bool:
    return _has_module("torch.nn.attention.flex_attention")


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def auto_window_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
    """The backend "auto" uses for these inputs (same choice for dense and dropped tokens)."""
    if q.device.type == "cuda":
        if _triton_runs_on(q.device)[0] and _triton_fits(q, k, v):
            return "triton"
        if _flex_available():
            return "flex"
        return "chunked"
    if q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] <= SDPA_MAX_SCORES:
        return "sdpa"
    return "chunked"


def _validate_window(q, k, v, q_pos, k_pos, radius):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be (B, H, N, D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, H, nq, D = q.shape
    nk = k.shape[2]
    if k.shape[:2] != (B, H) or k.shape[-1] != D or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"k, v must be (B, H, Nk, D) matching q {tuple(q.shape)}; got {tuple(k.shape)}, {tuple(v.shape)}")
    if tuple(q_pos.shape) != (B, nq) or tuple(k_pos.shape) != (B, nk):
        raise ValueError(f"q_pos must be (B, Nq) = {(B, nq)} and k_pos (B, Nk) = {(B, nk)}; "
                         f"got {tuple(q_pos.shape)}, {tuple(k_pos.shape)}")
    if q_pos.dtype.is_floating_point or k_pos.dtype.is_floating_point or q_pos.dtype == torch.bool:
        raise ValueError("positions must be integer tensors (int64 raster positions)")
    if int(radius) < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
                     k_pos: torch.Tensor, radius: int, backend: str = "auto") -> torch.Tensor:
    """Softmax attention of each query to the keys whose original position lies within `radius`.

    q: (B, H, Nq, D); k, v: (B, H, Nk, D); q_pos: (B, Nq), k_pos: (B, Nk) int64 original raster
    positions, ascending per row (rows may differ: dropped tokens). Key j is visible to query i iff
    |q_pos[i] - k_pos[j]| <= radius; scale 1/sqrt(D). Returns (B, H, Nq, D) in q's dtype; a query
    with no visible key outputs zeros. backend: "auto" or one of WINDOW_BACKENDS (module docstring).
    Differentiable w.r.t. q, k, v on every backend except flex on the CPU.
    """
    _validate_window(q, k, v, q_pos, k_pos, radius)
    radius = int(radius)
    name = auto_window_backend(q, k, v) if backend == "auto" else backend
    same_positions = k_pos is q_pos                   # self-attention: position tables are shared
    q_pos = q_pos.to(device=q.device, dtype=torch.int64)
    k_pos = q_pos if same_positions else k_pos.to(device=q.device, dtype=torch.int64)
    if name == "reference":
        return window_attention_reference(q, k, v, q_pos, k_pos, radius)
    if name == "chunked":
        return chunked_window_attention(q, k, v, q_pos, k_pos, radius)
    if name == "sdpa":
        from eflow_core.kernels.sdpa import sdpa_window_attention
        return sdpa_window_attention(q, k, v, q_pos, k_pos, radius)
    if name == "flex":
        from eflow_core.kernels.flex import flex_window_attention
        return flex_window_attention(q, k, v, q_pos, k_pos, radius)
    if name == "triton":
        ok, why = _triton_runs_on(q.device)
        if not ok:
            raise RuntimeError(f"backend='triton' unavailable: {why}")
        from eflow_core.kernels.triton_window import triton_window_attention
        return triton_window_attention(q, k, v, q_pos, k_pos, radius)
    if name == "flash":
        from eflow_core.kernels import flash
        if flash.flash_module() is None:
            raise RuntimeError("backend='flash' unavailable: flash-attn is not installed")
        if not flash.positions_are_dense(q_pos, k_pos):
            raise ValueError("backend='flash' needs q_pos == k_pos == arange(N) (no dropped tokens); "
                             "use 'triton', 'flex' or 'chunked' for dropped tokens")
        return flash.flash_window_attention(q, k, v, radius)
    raise ValueError(f"unknown window attention backend {backend!r}; choose 'auto' or one of {WINDOW_BACKENDS}")


def auto_linear_backend(q: torch.Tensor) -> str:
    """The backend "auto" uses for linear attention on q's device: on CUDA the two cuBLAS batched
    matmuls of "einsum" (measured faster than the Triton pair at every benchmarked shape, forward
    and backward: H100, 2026-11-23, docs/BENCHMARKS.md); elsewhere the exact fp32 "reference"."""
    return "einsum" if q.device.type == "cuda" else "reference"


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Denominator-free linear attention: o = q (k^T v) per (batch, head).

    q, k: (B, H, N, D), v: (B, H, N, Dv). Returns (B, H, N, Dv) in q's dtype; differentiable.
    backend: "auto", "reference" (fp32, exact), "einsum" (input dtype), "triton"; window-only names
    ("chunked", "sdpa", "flex", "flash") use "reference".
    """
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"q, k must be (B, H, N, D) and v (B, H, N, Dv); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    name = auto_linear_backend(q) if backend == "auto" else backend
    if name in ("chunked", "sdpa", "flex", "flash"):
        name = "reference"
    if name == "reference":
        return linear_attention_reference(q, k, v)
    if name == "einsum":
        summary = torch.einsum("bhnd,bhne->bhde", k, v)
        return torch.einsum("bhnd,bhde->bhne", q, summary)
    if name == "triton":
        ok, why = _triton_runs_on(q.device)
        if not ok:
            raise RuntimeError(f"backend='triton' unavailable: {why}")
        from eflow_core.kernels.triton_linear import triton_linear_attention
        return triton_linear_attention(q, k, v)
    raise ValueError(f"unknown linear attention backend {backend!r}; choose 'auto' or one of {LINEAR_BACKENDS}")


def available_backends(device: str | torch.device | None = None) -> dict[str, tuple[bool, str]]:
    """Which backends can run on `device` (default: cuda if present, else cpu), and why (not).

    Returns {name: (available, reason)} for every window backend, "linear:<name>" for the linear
    attention backends, and "auto" / "linear:auto" with what auto picks here for dense and for
    dropped tokens.
    """
    dev = torch.device(device) if device is not None else _default_device()
    cuda = dev.type == "cuda"
    out: dict[str, tuple[bool, str]] = {
        "reference": (True, "pure PyTorch definition; materialises N x N scores (small inputs only)"),
        "chunked": (True, "exact PyTorch, key slices from positions per query block; O(N * window) memory; "
                          "forward and backward on any device"),
        "sdpa": (True, "torch SDPA with a dense band mask; O(N^2) mask memory, small N only"),
    }
    if not _flex_available():
        out["flex"] = (False, "torch.nn.attention.flex_attention is missing in this torch")
    elif cuda:
        out["flex"] = (True, "FlexAttention, compiled, block mask from positions (_compile=True)")
    else:
        out["flex"] = (True, "FlexAttention on the CPU: forward only (no backward), unfused")
    out["triton"] = _triton_runs_on(dev)
    if cuda and out["triton"][0]:
        try:
            from eflow_core.kernels.triton_window import gluon_status, tma_status
            out["triton"] = (True, f"{out['triton'][1]}; TMA loads: {tma_status()}; Gluon kernels: {gluon_status()}")
        except Exception as exc:                       # noqa: BLE001 - report, do not fail
            out["triton"] = (False, f"importing the Triton kernels failed: {type(exc).__name__}: {exc}")
    from eflow_core.kernels import flash
    if flash.flash_module() is None:
        out["flash"] = (False, "flash-attn is not installed (optional)")
    elif not cuda:
        out["flash"] = (False, "flash-attn needs a CUDA device")
    else:
        out["flash"] = (True, "flash-attn sliding window; only when nothing is dropped (positions == arange(N))")
    if cuda and out["triton"][0]:
        pick = "triton for dense and for dropped tokens (head dims 16..256, power of 2; otherwise flex)"
    elif cuda and out["flex"][0]:
        pick = "flex for dense and for dropped tokens (Triton unavailable)"
    else:
        pick = ("sdpa (dense band mask) up to B*H*Nq*Nk = 2^22 scores, chunked above, for dense and for dropped "
                "tokens (exact, differentiable; flex has no CPU backward)")
    out["auto"] = (True, pick)
    out["linear:reference"] = (True, "fp32 einsum: S = k^T v, o = q S (exact)")
    out["linear:einsum"] = (True, "torch einsum in the input dtype")
    out["linear:triton"] = out["triton"]
    out["linear:auto"] = (True, "einsum (cuBLAS; faster than the Triton pair on an H100)" if cuda else "reference")
    return out
