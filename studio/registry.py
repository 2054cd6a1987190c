"""A small thread-safe cache of loaded pipelines, so switching between models is fast.

`ModelRegistry.get(name_or_path)` resolves a shipped name or a folder, loads it once (concurrent
requests for the same model wait for the one load) and keeps the `capacity` most recently used
pipelines. Each entry carries a shared/exclusive lock: ordinary generations share the pipeline, gate
capture (which switches module-level capture flags inside the network) runs alone.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from eflow_core.checkpoint import CheckpointError, resolve_model_path, shipped_models
from eflow_core.pipeline import EFlowPipeline, PipelineError


class SharedExclusiveLock:
    """Many holders in shared mode, or one in exclusive mode (writer-preferring, so capture is not starved)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def shared(self):
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self):
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass
class ModelEntry:
    """A loaded pipeline, the name the UI shows for it, and its lock."""

    key: str
    name: str
    pipe: EFlowPipeline
    lock: SharedExclusiveLock = field(default_factory=SharedExclusiveLock)


def model_key(name_or_path: str | Path) -> tuple[str, str]:
    """(cache key = resolved folder, display name) for a shipped name or a folder; PipelineError if neither."""
    text = str(name_or_path).strip()
    if not text:
        raise PipelineError("the model path is empty: pick a shipped model or give a checkpoint folder")
    try:
        folder = resolve_model_path(text).resolve()
        shipped = {str(resolve_model_path(n).resolve()): n for n in shipped_models()}
    except CheckpointError as err:
        raise PipelineError(str(err)) from None
    return str(folder), shipped.get(str(folder), text)


class ModelRegistry:
    """Loads pipelines on demand and keeps the `capacity` most recently used ones (thread-safe)."""

    def __init__(self, device: str | None = None, capacity: int = 3, compile: bool = False):
        self.device, self.compile = device, compile
        self.capacity = max(1, capacity)
        self._entries: OrderedDict[str, ModelEntry] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, name_or_path: str | Path) -> ModelEntry:
        """The loaded entry for a shipped name or a checkpoint folder (loading it on first use)."""
        key, name = model_key(name_or_path)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            load_lock = self._loading.setdefault(key, threading.Lock())
        with load_lock:                       # one load per model; others wait for it
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    return self._entries[key]
            try:
                pipe = EFlowPipeline.from_pretrained(key, device=self.device, compile=self.compile)
                pipe.lexicon       # the prompt lexicon is built now, with the model, not in its first generation
            except PipelineError:
                raise
            except Exception as err:   # codec / text encoder / device trouble while loading a user's folder
                first = (str(err).strip().splitlines() or [""])[0][:300]
                raise PipelineError(f"the model in {key} could not be loaded ({type(err).__name__}: {first})"
                                    ) from err
            entry = ModelEntry(key=key, name=name, pipe=pipe)
            with self._lock:
                self._entries[key] = entry
                self._loading.pop(key, None)
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
            return entry

    def entries(self) -> list[ModelEntry]:
        """The cached entries, most recently used last."""
        with self._lock:
            return list(self._entries.values())

    def __contains__(self, name_or_path) -> bool:
        try:
            key, _ = model_key(name_or_path)
        except PipelineError:
            return False
        with self._lock:
            return key in self._entries
