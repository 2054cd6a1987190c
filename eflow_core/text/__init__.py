"""Text encoders: packaged MiniLM (offline default), T5 from a local folder, an on-disk embedding cache.

    enc = load_text_encoder("minilm")            # 384-d, loads offline in a few seconds
    enc = load_text_encoder("t5:/path/to/t5")    # any local T5 / mT5 / UMT5 folder
    load_text_encoder("none")                    # -> None: class-conditional or unconditional models
    cond = enc.encode(["a red circle", ""])      # TextCondition: tokens (2, L, 384), mask (2, L); row 1 is null
    vec = enc.pooled(["a red circle"])           # (1, 384), L2-normalised
"""
from __future__ import annotations

import threading
from pathlib import Path

import torch

from .base import HFTextEncoder, TextEncoder, is_empty, masked_mean_pool
from .cache import CachedTextEncoder

__all__ = ["CachedTextEncoder", "HFTextEncoder", "TextEncoder", "is_empty", "load_text_encoder", "masked_mean_pool"]

_SHARED: dict[tuple, TextEncoder] = {}
_SHARED_LOCK = threading.Lock()


def load_text_encoder(spec: str = "minilm", max_length: int | None = None, device: str | torch.device = "cpu",
                      cache_dir: str | Path | None = None, shared: bool = True) -> TextEncoder | None:
    """Build a text encoder from a spec: "minilm" | "t5:PATH" | "none" (returns None).

    `max_length` caps tokens (default 64 for MiniLM, 128 for T5). `cache_dir` wraps the encoder in a
    `CachedTextEncoder`. `shared=True` returns one instance per (spec, max_length, device) for the whole
    process (the web app and the trainer then load the weights once).
    """
    spec = (spec or "none").strip()
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    if kind in ("none", ""):
        return None
    if kind not in ("minilm", "t5"):
        raise ValueError(f"unknown text encoder {spec!r}: use 'minilm', 't5:PATH' or 'none'")
    if kind == "t5" and not arg:
        raise ValueError("the t5 text encoder needs a local folder: use 't5:/path/to/t5'")
    max_length = max_length or (64 if kind == "minilm" else 128)
    key = (kind, arg, max_length, str(device))

    def build() -> TextEncoder:
        with _SHARED_LOCK:
            encoder = _SHARED.get(key) if shared else None
            if encoder is None:
                if kind == "minilm":
                    from .minilm import MiniLMEncoder

                    encoder = MiniLMEncoder(max_length=max_length, device=device)
                else:
                    from .t5 import T5Encoder

                    encoder = T5Encoder(arg, max_length=max_length, device=device)
                if shared:
                    _SHARED[key] = encoder
            return encoder

    if cache_dir is not None:   # the model loads only if a text is missing from the cache
        name = "minilm" if kind == "minilm" else f"t5:{Path(arg).name}"
        return CachedTextEncoder(build, cache_dir, name=name, max_length=max_length)
    return build()
