"""Runtime modes of the Triton window attention: which load path, backward and kernels run.

This module owns the environment variables and the state they seed, with their getters, setters and
one-line status reports:

- EFLOW_TRITON_TMA (`set_tma_mode`, `tma_mode`, `tma_status`): TMA tensor descriptors or pointer loads;
- EFLOW_TRITON_BWD (`set_backward_mode`, `backward_mode`, BACKWARD_MODES): the "split" or "atomic" backward;
- EFLOW_GLUON (`set_gluon_mode`, `gluon_mode`, `gluon_status`, GLUON_MODES): the warp-specialised Gluon
  forward and dq kernels (eflow_core/kernels/gluon_window.py) or the Triton ones;
- TRITON_INTERPRET (INTERPRET): the CPU interpreter (tests), read once at import.

It also decides, per call, whether the tensors at hand take the descriptor path (`_use_descriptors`), the
bulk dq reductions (`_descriptor_atomics`) or the Gluon kernels (`_use_gluon`). The launchers
(`launch.py`) record failures into the same state (`_TMA`, `_DESC_ATOMIC`, `_GLUON`), after which the
fallback runs for the rest of the process (or until a setter clears the record).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# ------------------------------------------------------------------------------------------ TMA loads

# TMA tensor descriptors (Hopper+): K/V (forward, dq) and Q/dO (dk/dv) tiles are loaded by the copy
# engine instead of per-element pointers, which frees ~64 registers per thread (no spills at
# 128 x 64 tiles, head dim 128, measured with ptxas for sm_90) and lets loads pipeline.
# EFLOW_TRITON_TMA: "auto" (default: CUDA capability >= 9), "1" (wherever Triton supports it,
# including the interpreter), "0" (never). A failed descriptor launch switches to pointer loads.
_TMA = {"mode": os.environ.get("EFLOW_TRITON_TMA", "auto"), "broken": None}
_DESC_ATOMIC = {"broken": None}     # why the bulk dq reductions failed, once they have


def set_tma_mode(mode: str) -> None:
    """"auto", "1" or "0" (see above); also clears a recorded failure."""
    if mode not in ("auto", "1", "0"):
        raise ValueError(f"TMA mode must be 'auto', '1' or '0', got {mode!r}")
    _TMA["mode"], _TMA["broken"] = mode, None


def tma_mode() -> str:
    """The TMA mode set by EFLOW_TRITON_TMA or `set_tma_mode`: "auto", "1" or "0"."""
    return _TMA["mode"]


def _descriptor_atomics() -> bool:
    """Whether the atomic backward may add dq tiles through a descriptor (a bulk TMA reduction): this
    Triton has `tensor_descriptor.atomic_add` (the interpreter does not implement it) and it has not
    failed here. Applies only where the kernel also runs with descriptors (USE_DESC)."""
    return (not INTERPRET and not _DESC_ATOMIC["broken"]
            and hasattr(getattr(tl, "tensor_descriptor", None), "atomic_add"))


def tma_status() -> str:
    """One line: whether the descriptor path is used and why (not), and whether the atomic backward's
    dq adds are bulk reductions."""
    if _TMA["broken"]:
        return f"off: a descriptor launch failed ({_TMA['broken'][:200]})"
    if not hasattr(tl, "make_tensor_descriptor"):
        return "off: this Triton has no tl.make_tensor_descriptor"
    status = {"0": "off: EFLOW_TRITON_TMA=0", "1": "on where supported (EFLOW_TRITON_TMA=1)"}.get(
        _TMA["mode"], "auto: on for CUDA capability >= 9 with 16-byte aligned rows")
    if _DESC_ATOMIC["broken"]:
        return (f"{status}; atomic backward: per-element dq atomics "
                f"(bulk reductions failed: {_DESC_ATOMIC['broken'][:120]})")
    return status + ("; atomic backward: bulk dq reductions" if _descriptor_atomics()
                     else "; atomic backward: per-element dq atomics")


def _use_descriptors(*tensors: torch.Tensor) -> bool:
    """Whether a kernel streaming these tensors (each (B, H, N, D), any strides) loads them through TMA
    descriptors: the mode allows it on their device and every base and row stride is 16-byte aligned."""
    mode = _TMA["mode"]
    if mode == "0" or _TMA["broken"] or not hasattr(tl, "make_tensor_descriptor"):
        return False
    dev = tensors[0].device
    if dev.type == "cuda":
        if not hasattr(triton, "set_allocator"):
            return False
        if mode == "auto" and torch.cuda.get_device_capability(dev)[0] < 9:
            return False
    elif not (INTERPRET and mode == "1"):
        return False
    for t in tensors:                       # TMA: 16-byte aligned base and row strides
        if t.data_ptr() % 16 or any((st * t.element_size()) % 16 for st in t.stride()[:-1]):
            return False
    return True


# ------------------------------------------------------------------------------------------- backward

# Backward: "split" (default: a dk/dv kernel and a dq kernel, no atomics; 7 block matmuls per visible
# pair) or "atomic" (FlashAttention-2 style: the dk/dv kernel also adds each key block's dq share into
# an fp32 buffer with atomics; 5 matmuls, plus atomic traffic: with TMA descriptors on, one bulk
# reduction per tile where this Triton has tensor_descriptor.atomic_add; still slower than "split" with
# dense bands, docs/BENCHMARKS.md §3 run E). EFLOW_TRITON_BWD picks one; the GPU benchmark
# (benchmarks/attention.py) times both. The atomic sums run in no fixed order, so dq is not bitwise
# reproducible from run to run (the trainer's exact resume holds with "split" only).
_BWD = {"mode": "split"}
BACKWARD_MODES = ("split", "atomic")


def set_backward_mode(mode: str) -> None:
    """One of BACKWARD_MODES (see above)."""
    if mode not in BACKWARD_MODES:
        raise ValueError(f"backward mode must be one of {BACKWARD_MODES}, got {mode!r}")
    _BWD["mode"] = mode


def backward_mode() -> str:
    """The backward in use, one of BACKWARD_MODES (EFLOW_TRITON_BWD or `set_backward_mode`)."""
    return _BWD["mode"]


set_backward_mode(os.environ.get("EFLOW_TRITON_BWD", "split"))     # a typo fails here, not silently

# ---------------------------------------------------------------------------------------------- Gluon

# Gluon kernels: "auto" (default) runs the warp-specialised Gluon forward and dq kernels
# (eflow_core/kernels/gluon_window.py) on CUDA capability 9.x (their warpgroup MMAs exist on Hopper only) for
# fp16/bf16 with head dim 64 or 128 and TMA-compatible strides, and the Triton kernels elsewhere; "off"
# always runs the Triton kernels. EFLOW_GLUON picks one. A Gluon build or launch failure is recorded,
# warned about once, and the Triton kernels run from then on (same outputs).
GLUON_MODES = ("auto", "off")
_GLUON = {"mode": "auto", "broken": None}
GLUON_HEAD_DIMS = (64, 128)


def set_gluon_mode(mode: str, *, keep_failure: bool = False) -> None:
    """One of GLUON_MODES (see above); also clears a recorded Gluon failure unless `keep_failure`
    (a benchmark switching the kernels on and off for a while keeps it)."""
    if mode not in GLUON_MODES:
        raise ValueError(f"Gluon mode must be one of {GLUON_MODES}, got {mode!r}")
    _GLUON["mode"] = mode
    if not keep_failure:
        _GLUON["broken"] = None


def gluon_mode() -> str:
    """The Gluon mode set by EFLOW_GLUON or `set_gluon_mode`, one of GLUON_MODES (a recorded failure
    turns the kernels off without changing it: see `gluon_status`)."""
    return _GLUON["mode"]


set_gluon_mode(os.environ.get("EFLOW_GLUON", "auto"))


def _gluon_module():
    """kernels.gluon_window, or None where it cannot be imported (no triton.experimental.gluon, or a
    Gluon API other than the one the kernels are written for)."""
    if INTERPRET:
        return None
    try:
        from eflow_core.kernels import gluon_window
    except Exception:                                  # noqa: BLE001 - any import failure means "not here"
        return None
    return gluon_window


def gluon_status() -> str:
    """One line: where the Gluon forward and dq kernels run, or why they do not."""
    if _GLUON["broken"]:
        return f"off: a Gluon kernel failed ({_GLUON['broken'][:200]})"
    if _GLUON["mode"] == "off":
        return "off: EFLOW_GLUON=off"
    if _gluon_module() is None:
        return "off: no usable triton.experimental.gluon"
    return (f"forward and dq on CUDA capability 9.x for fp16/bf16, head dims {GLUON_HEAD_DIMS}, 16-byte aligned "
            "rows; the Triton kernels elsewhere")


def _use_gluon(*tensors: torch.Tensor) -> bool:
    """Whether the Gluon kernel runs for these tensors (q first, (B, H, N, D) each): mode "auto", no
    recorded failure, CUDA capability 9.x, fp16/bf16, head dim in GLUON_HEAD_DIMS, TMA-compatible."""
    q = tensors[0]
    if _GLUON["mode"] != "auto" or _GLUON["broken"] or q.device.type != "cuda":
        return False
    if torch.cuda.get_device_capability(q.device)[0] != 9:
        return False
    if q.dtype not in (torch.float16, torch.bfloat16) or q.shape[-1] not in GLUON_HEAD_DIMS:
        return False
    return _use_descriptors(*tensors) and _gluon_module() is not None
