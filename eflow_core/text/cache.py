"""On-disk embedding cache for training: (encoder name, max length, text) -> per-token states + pooled vector.

One file per encoder, `cache_dir/{encoder name}-L{max_length}.pt`, holding {text: (tokens (L_i, D), pooled (D,))}
in float16 (token states of MiniLM / T5 lose nothing that matters at that precision). Training captions
repeat (the shapes world has a few thousand distinct ones), so after the first epoch every lookup hits.
"""
from __future__ import annotations

import io
import logging
import re
import threading
from pathlib import Path
from typing import Callable

import torch

from eflow_core.checkpoint import atomic_write_bytes
from eflow_core.conditioning import TextCondition

from .base import TextEncoder, is_empty, masked_mean_pool

log = logging.getLogger(__name__)


class CachedTextEncoder(TextEncoder):
    """Wraps a TextEncoder with a persistent per-text cache; same interface (`encode`, `pooled`, `dim`, `name`).

    `hits` / `misses` count texts looked up. New entries are written to disk by `save()`, automatically
    every `autosave_every` new entries, and when used as a context manager.
    """

    def __init__(self, encoder: TextEncoder | Callable[[], TextEncoder], cache_dir: str | Path,
                 dtype: torch.dtype = torch.float16, autosave_every: int = 512, name: str | None = None,
                 max_length: int | None = None):
        """`encoder` is a TextEncoder, or a zero-argument factory together with `name` and `max_length`:
        then the encoder is built only on the first cache miss (a machine with a complete cache never
        loads the text model at all, e.g. a GPU box without the packaged weights)."""
        super().__init__()
        if isinstance(encoder, TextEncoder):
            self._encoder, self._factory = encoder, None
            name, max_length = encoder.name, encoder.max_length
        elif name is None or max_length is None:
            raise ValueError("a lazily built encoder needs its name and max_length")
        else:
            self._encoder, self._factory = None, encoder
        self.name, self.max_length = name, max_length
        self.dtype = dtype
        self.autosave_every = autosave_every
        self.cache_dir = Path(cache_dir)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name)
        self.path = self.cache_dir / f"{safe}-L{self.max_length}.pt"
        self.entries: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.hits = self.misses = 0
        self._dirty = 0
        self._cache_lock = threading.RLock()
        if self.path.is_file():
            try:
                data = torch.load(self.path, map_location="cpu", weights_only=True)
                if data.get("name") == self.name and data.get("max_length") == self.max_length:
                    self.entries = dict(data["entries"])
            except Exception as e:  # a damaged cache is rebuilt, never fatal
                log.warning("ignoring unreadable text cache %s: %s", self.path, e)
        if self._encoder is not None:
            self.dim = self._encoder.dim
        elif self.entries:
            self.dim = next(iter(self.entries.values()))[1].shape[-1]
        else:
            self.dim = self.encoder.dim

    @property
    def encoder(self) -> TextEncoder:
        """The wrapped encoder, built on first use when a factory was given."""
        with self._cache_lock:
            if self._encoder is None:
                self._encoder = self._factory()
            return self._encoder

    def __len__(self) -> int:
        return len(self.entries)

    def encode_with_pooled(self, texts: list[str]) -> tuple[TextCondition, torch.Tensor]:
        """texts (B) -> (TextCondition tokens (B, L, dim) float32 / mask (B, L), pooled (B, dim)) through the cache."""
        if isinstance(texts, str):
            texts = [texts]
        keys = ["" if is_empty(t) else str(t) for t in texts]
        with self._cache_lock:
            missing = list(dict.fromkeys(k for k in keys if k not in self.entries))
            self.misses += sum(1 for k in keys if k in missing)
            self.hits += len(keys) - sum(1 for k in keys if k in missing)
            if missing:
                cond, pooled = self.encoder.encode_with_pooled(missing)
                for i, k in enumerate(missing):
                    self.entries[k] = (cond.tokens[i][cond.mask[i]].to("cpu", self.dtype).clone(),
                                       pooled[i].to("cpu", self.dtype).clone())
                self._dirty += len(missing)
                if self._dirty >= self.autosave_every:
                    self.save()
            rows = [self.entries[k] for k in keys]
        length = max(1, max(r[0].shape[0] for r in rows))
        tokens = torch.zeros(len(rows), length, self.dim)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, (tok, _) in enumerate(rows):
            tokens[i, : tok.shape[0]] = tok.float()
            mask[i, : tok.shape[0]] = True
        pooled = torch.stack([p.float() for _, p in rows])
        return TextCondition(tokens, mask), pooled

    def save(self) -> Path:
        """Write the cache file atomically (temp file + rename)."""
        with self._cache_lock:
            buffer = io.BytesIO()
            torch.save({"name": self.name, "max_length": self.max_length, "entries": self.entries}, buffer)
            atomic_write_bytes(self.path, buffer.getvalue())
            self._dirty = 0
        return self.path

    def __enter__(self) -> "CachedTextEncoder":
        return self

    def __exit__(self, *exc) -> None:
        if self._dirty:
            self.save()


__all__ = ["CachedTextEncoder", "masked_mean_pool"]
