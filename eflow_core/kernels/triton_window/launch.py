"""Host side of the Triton window attention: position tables, kernel launches and autotune plumbing.

This module owns what runs on the host around the kernels of `jit.py`:
- `position_tables`: the per-query visible key ranges (and per-key query ranges) from sorted positions;
- `window_forward`, `backward_vectors`, `window_backward`: grids, strides, scales, the choice between the
  Gluon kernels, TMA descriptors and pointer loads (`modes.py` decides, these launch), and the fallbacks
  when a Gluon kernel or a descriptor launch fails (same outputs, recorded once, warned about once);
- `autotune_choices`, `autotune_timings`: what autotuning picked and measured (benchmarks).
The torch custom ops that call the launchers, and autograd, are in `ops.py`.
"""
from __future__ import annotations

import math
import warnings

import torch
import triton

from eflow_core.kernels.triton_window.jit import (VECTOR_ALIGN, _bwd_preprocess, _window_bwd_dkdv, _window_bwd_dq,
                                                  _window_fwd)
from eflow_core.kernels.triton_window.modes import (_DESC_ATOMIC, _GLUON, _TMA, _descriptor_atomics, _gluon_module,
                                                    _use_descriptors, _use_gluon, backward_mode)

LOG2E = 1.4426950408889634


def position_tables(q_pos: torch.Tensor, k_pos: torch.Tensor, radius: int):
    """Visible index ranges from ascending positions (all int32, contiguous).

    q_pos: (B, Nq), k_pos: (B, Nk). Returns (qpos32, kpos32, klo, khi, qlo, qhi):
    klo/khi (B, Nq): query i sees keys [klo[i], khi[i]); qlo/qhi (B, Nk): key j is seen by
    queries [qlo[j], qhi[j]). Self-attention (k_pos is q_pos) reuses the query tables for the keys:
    half the launches of this host-side step, which runs before every forward.
    """
    qp = q_pos.to(torch.int64).contiguous()
    r = int(radius)

    def ranges(sorted_pos, pos):                       # where [pos - r, pos + r] starts and ends in sorted_pos
        return (torch.searchsorted(sorted_pos, pos - r, right=False, out_int32=True),
                torch.searchsorted(sorted_pos, pos + r, right=True, out_int32=True))

    if k_pos is q_pos:
        qp32 = qp.to(torch.int32)
        klo, khi = ranges(qp, qp)
        return qp32, qp32, klo, khi, klo, khi
    kp = k_pos.to(torch.int64).contiguous()
    klo, khi = ranges(kp, qp)
    qlo, qhi = ranges(qp, kp)
    return qp.to(torch.int32), kp.to(torch.int32), klo, khi, qlo, qhi


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs: "tf32x3" (three tf32 tensor-core products, ~fp32 accuracy; plain tf32 would cost
    # ~1e-3 relative error, and "ieee" FMA dots spill badly and take minutes to compile for sm_90).
    # 16-bit inputs: tensor cores directly (the value only matters for fp32).
    return "tf32x3" if dtype == torch.float32 else "tf32"


def _size_class(nq: int, nk: int) -> int:
    """The autotune key's size bucket (see jit._TUNE_KEY)."""
    return max(nq, nk).bit_length()


def _strides(t: torch.Tensor):
    return t.stride(0), t.stride(1), t.stride(2)


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


# ------------------------------------------------------------------------------- launches and fallbacks


def _scratch(size: int, alignment: int, stream):
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _ensure_allocator(device: torch.device) -> None:
    """In-kernel descriptors need a small global scratch buffer per launch (Triton's allocator hook).
    Triton keeps the allocator in a ContextVar, so it is set on every launch: autograd runs the
    backward kernels in its own thread, where a value set once in the main thread is not seen."""
    if device.type == "cuda":
        triton.set_allocator(_scratch)


def _try_descriptor_launch(kernel, grid, args, broken: dict, fallback: str, **meta) -> bool:
    """Launch a variant that uses tensor descriptors (USE_DESC=True); if it fails to compile or launch,
    record why in `broken` (so it is not tried again), warn once that `fallback` runs instead, and
    return False."""
    try:
        _ensure_allocator(args[0].device)
        kernel[grid](*args, USE_DESC=True, **meta)
        return True
    except Exception as exc:                           # noqa: BLE001 - fall back, keep the message
        broken["broken"] = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"Triton window attention: {fallback} ({type(exc).__name__}: {str(exc)[:300]})")
        return False


def _launch(kernel, grid, args, use_desc: bool, **meta) -> None:
    """Launch with USE_DESC; if the descriptor variant fails, run the pointer-load variant (same results)."""
    if use_desc and _try_descriptor_launch(kernel, grid, args, _TMA,
                                           "TMA descriptor path failed, using pointer loads", **meta):
        return
    kernel[grid](*args, USE_DESC=False, **meta)


def _try_gluon(name: str, nq: int, batch_heads: int, args) -> bool:
    """Launch the Gluon kernel `name` (autotuned) on the arguments of its Triton counterpart; on a build
    or launch failure record why, warn once, and return False (the caller runs the Triton kernel)."""
    gluon = _gluon_module()
    try:
        _ensure_allocator(args[0].device)             # the loader warp builds TMA descriptors in-kernel
        getattr(gluon, name)[gluon.grid(nq, batch_heads)](*args, HEAD_DIM=args[0].shape[-1])
        return True
    except Exception as exc:                           # noqa: BLE001 - fall back, keep the message
        _GLUON["broken"] = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"Triton window attention: the Gluon kernel {name} failed, using the Triton kernels "
                      f"({type(exc).__name__}: {str(exc)[:300]})")
        return False


def window_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qpos32: torch.Tensor, kpos32: torch.Tensor,
                   klo: torch.Tensor, khi: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward launch (the body of the custom op `eflow::triton_window_fwd`).

    q: (B, H, Nq, D), k, v: (B, H, Nk, D); qpos32, klo, khi: (B, Nq) and kpos32: (B, Nk) int32 from
    `position_tables`. Returns (o (B, H, Nq, D) in q's dtype, lse2 (B, H, Nq) fp32; +inf where a query
    sees no key, whose output is 0). Runs the Gluon forward where `_use_gluon` allows, else the Triton
    kernel with TMA descriptors where `_use_descriptors` allows, else with pointer loads.
    """
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    B, H, nq, D = q.shape
    nk = k.shape[2]
    o = torch.empty(B, H, nq, D, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, H, nq, dtype=torch.float32, device=q.device)
    if nq > 0:
        if nk == 0:
            o.zero_()
            lse.fill_(float("inf"))
        else:
            args = (q, k, v, o, lse, qpos32, kpos32, klo, khi, *_strides(q), *_strides(k), *_strides(v),
                    *_strides(o), H, nq, nk, int(radius), LOG2E / math.sqrt(D), _size_class(nq, nk))
            if not (_use_gluon(q, k, v) and _try_gluon("window_fwd_ws", nq, B * H, args)):
                grid = lambda meta: (triton.cdiv(nq, meta["BLOCK_M"]), B * H)
                _launch(_window_fwd, grid, args, _use_descriptors(k, v), HEAD_DIM=D, PRECISION=_precision(q.dtype))
    return o, lse


def backward_vectors(o: torch.Tensor, do: torch.Tensor, lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The backward kernels' per-query vectors from o, do (B, H, Nq, D) and lse2 (B, H, Nq): (lse2, delta =
    rowsum(o * do)), each (B, H, NQP) fp32 with rows padded to NQP, a multiple of VECTOR_ALIGN (16 bytes,
    for TMA); the padding holds lse2 = +inf and delta = 0."""
    B, H, nq, D = o.shape
    nqp = triton.cdiv(nq, VECTOR_ALIGN.value) * VECTOR_ALIGN.value
    lse_pad = torch.empty(B, H, nqp, dtype=torch.float32, device=o.device)
    delta = torch.empty(B, H, nqp, dtype=torch.float32, device=o.device)
    pre_block = 64
    _bwd_preprocess[(triton.cdiv(nqp, pre_block), B * H)](o, do, lse, lse_pad, delta, *_strides(o), *_strides(do),
                                                          H, nq, nqp, HEAD_DIM=D, BLOCK_M=pre_block)
    return lse_pad, delta


def window_backward(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                    lse: torch.Tensor, qpos32: torch.Tensor, kpos32: torch.Tensor, klo: torch.Tensor,
                    khi: torch.Tensor, qlo: torch.Tensor, qhi: torch.Tensor,
                    radius: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward launches (the body of the custom op `eflow::triton_window_bwd`).

    do, o: (B, H, Nq, D) like q; k, v: (B, H, Nk, D); lse: the forward's lse2 (B, H, Nq) fp32; the six
    tables of `position_tables`. Returns (dq, dk, dv) shaped and typed like q, k, v. `backward_mode()`
    picks "split" (dk/dv kernel, then dq kernel: Gluon where `_use_gluon` allows) or "atomic" (the dk/dv
    kernel also adds dq in fp32: bulk TMA reductions where `_descriptor_atomics` allows, else per element).
    """
    q, k, v, o, do = (_last_dim_contiguous(t) for t in (q, k, v, o, do))
    B, H, nq, D = q.shape
    nk = k.shape[2]
    if nq == 0 or nk == 0:
        return q.new_zeros(q.shape), k.new_zeros(k.shape), v.new_zeros(v.shape)
    dk, dv = k.new_empty(k.shape), v.new_empty(v.shape)                              # every element written
    sm_scale = 1.0 / math.sqrt(D)
    prec = _precision(q.dtype)
    lse_pad, delta = backward_vectors(o, do, lse)
    nqp = lse_pad.shape[-1]
    common = (H, nq, nqp, nk, int(radius), sm_scale * LOG2E, sm_scale, _size_class(nq, nk))
    grid_kv = lambda meta: (triton.cdiv(nk, meta["BLOCK_N"]), B * H)
    fuse_dq = backward_mode() == "atomic"
    # the atomic path accumulates dq here; the split path never touches it (FUSE_DQ is a constexpr)
    dq32 = (torch.zeros(B, H, nq, D, dtype=torch.float32, device=q.device) if fuse_dq
            else torch.empty(1, dtype=torch.float32, device=q.device))
    args = (q, k, v, do, dk, dv, lse_pad, delta, qpos32, kpos32, qlo, qhi, dq32, *_strides(q), *_strides(k),
            *_strides(v), *_strides(do), *_strides(dk), *_strides(dv), *common)
    use_desc = _use_descriptors(q, do)
    if fuse_dq and use_desc and _descriptor_atomics():
        # its own fallback: a failure here turns off the bulk adds only, not TMA loads
        if _try_descriptor_launch(_window_bwd_dkdv, grid_kv, args, _DESC_ATOMIC,
                                  "bulk dq reductions failed, using per-element atomics",
                                  HEAD_DIM=D, PRECISION=prec, FUSE_DQ=True, TMA_ATOMIC=True):
            return dq32.to(q.dtype), dk, dv
        dq32.zero_()
    _launch(_window_bwd_dkdv, grid_kv, args, use_desc, HEAD_DIM=D, PRECISION=prec, FUSE_DQ=fuse_dq, TMA_ATOMIC=False)
    if fuse_dq:
        return dq32.to(q.dtype), dk, dv
    dq = q.new_empty(q.shape)
    args = (q, k, v, do, dq, lse_pad, delta, qpos32, kpos32, klo, khi, *_strides(q), *_strides(k), *_strides(v),
            *_strides(do), *_strides(dq), *common)
    if not (_use_gluon(q, k, v, do) and _try_gluon("window_bwd_dq_ws", nq, B * H, args)):
        grid_q = lambda meta: (triton.cdiv(nq, meta["BLOCK_M"]), B * H)
        _launch(_window_bwd_dq, grid_q, args, _use_descriptors(k, v), HEAD_DIM=D, PRECISION=prec)
    return dq, dk, dv


# ------------------------------------------------------------------------------------------- autotune


def _tuned_kernels() -> dict:
    """The autotuned kernels by the names the benchmarks report."""
    kernels = {"forward": _window_fwd, "backward dk/dv": _window_bwd_dkdv, "backward dq": _window_bwd_dq}
    gluon = _gluon_module()
    if gluon is not None:
        kernels.update({"forward (gluon)": gluon.window_fwd_ws, "backward dq (gluon)": gluon.window_bwd_dq_ws})
    return kernels


def autotune_choices() -> dict[str, dict[str, str]]:
    """The configuration autotune picked per kernel and key so far: {kernel: {key: config}} (benchmarks)."""
    return {name: {str(key): str(config) for key, config in getattr(kernel, "cache", {}).items()}
            for name, kernel in _tuned_kernels().items()}


def autotune_timings() -> dict[str, dict[str, float]]:
    """Median ms of every configuration in each kernel's latest autotuning run (Triton's own
    benchmark, on the arguments of that call): {kernel: {config: ms}}, fastest first (benchmarks)."""
    out = {}
    for name, kernel in _tuned_kernels().items():
        timings = getattr(kernel, "configs_timings", None) or {}
        ms = {str(config): float(t[0] if isinstance(t, (list, tuple)) else t) for config, t in timings.items()}
        out[name] = dict(sorted(ms.items(), key=lambda item: item[1]))
    return out
