"""The studio's output folder: every mp4 / GIF the app writes goes under one app-owned temp folder.

Each generation gets its own sub-folder; the oldest ones are deleted once there are more than
`keep` of them, so a long-running server does not fill the disk. The app removes the whole temp
folder at exit.
"""
from __future__ import annotations

import shutil
import threading
import uuid
from pathlib import Path

import numpy as np

from eflow_core.data.video import write_gif, write_mp4


class OutputStore:
    """Writes videos under `root`, one sub-folder per generation, keeping the newest `keep` folders."""

    def __init__(self, root: str | Path, keep: int = 256):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = max(1, keep)
        self._order: list[Path] = []
        self._lock = threading.Lock()

    def new_folder(self) -> Path:
        folder = self.root / uuid.uuid4().hex[:12]
        folder.mkdir()
        with self._lock:
            self._order.append(folder)
            stale, self._order = self._order[:-self.keep], self._order[-self.keep:]
        for old in stale:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def write(self, video: np.ndarray, fps: float, stem: str, gif: bool = True) -> tuple[Path, Path | None]:
        """Write uint8 (T, H, W, 3) as `stem`.mp4 (H.264) and optionally `stem`.gif; returns their paths."""
        folder = self.new_folder()
        mp4 = write_mp4(folder / f"{stem}.mp4", video, fps=fps)
        return mp4, (write_gif(folder / f"{stem}.gif", video, fps=fps) if gif else None)
