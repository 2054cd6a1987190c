"""Attention operations with a backend choice (docs/DESIGN.md "Kernels").

Public API:
    window_attention(q, k, v, q_pos, k_pos, radius, backend="auto") -> o   # (B, H, Nq, D)
    linear_attention(q, k, v, backend="auto") -> o                         # (B, H, N, Dv)
    available_backends(device=None) -> {name: (available, reason)}

See eflow_core/kernels/dispatch.py for the backends and what "auto" picks. Triton is imported only when a
Triton backend runs, so importing `kernels` is cheap and works without Triton.
"""
from eflow_core.kernels.dispatch import (LINEAR_BACKENDS, WINDOW_BACKENDS, auto_linear_backend, auto_window_backend,
                              available_backends, linear_attention, window_attention)
from eflow_core.kernels.reference import linear_attention_reference, window_attention_reference

__all__ = [
    "window_attention", "linear_attention", "available_backends", "auto_window_backend", "auto_linear_backend",
    "WINDOW_BACKENDS", "LINEAR_BACKENDS", "window_attention_reference", "linear_attention_reference",
]
