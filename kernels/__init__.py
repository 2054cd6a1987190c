"""Attention operations with a backend choice (DESIGN.md "Kernels"). Minimal bootstrap: reference only."""
from kernels.reference import linear_attention_reference, window_attention_reference


def window_attention(q, k, v, q_pos, k_pos, radius, backend="auto"):
    return window_attention_reference(q, k, v, q_pos, k_pos, radius)


def linear_attention(q, k, v, backend="auto"):
    return linear_attention_reference(q, k, v)


def available_backends():
    return {"reference": "always available"}
