"""Small notebook-only helpers shared by the tutorials (nothing here is part of the library).

- `REPO`: the repository root (the notebooks write their runs under it; `eflow_core` and `studio` come from
  `pip install -e .`),
- `setup()`: plotly renderer that embeds plotly.js (works offline and in executed notebooks), one torch
  thread per `OMP_NUM_THREADS`, quiet tqdm,
- `show_video` / `show_videos`: uint8 (T, H, W, 3) clips as inline, looping H.264 videos (base64 in the page),
- `LiveFigure`: a plotly figure that re-draws in place while a loop runs.
"""
from __future__ import annotations

import base64
import html
import os
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def setup() -> None:
    """Plotly renderer, torch threads, warnings. Call once at the top of a notebook."""
    import plotly.io as pio
    import torch

    # "plotly_mimetype" is what JupyterLab draws (its plotly extension ships with plotly); "notebook" adds an
    # HTML version with plotly.js embedded, so executed notebooks and HTML exports work without the internet.
    pio.renderers.default = "plotly_mimetype+notebook"
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        torch.set_num_threads(int(threads))
    # without ipywidgets, tqdm.auto falls back to the text bar and warns once; the text bar is fine here
    warnings.filterwarnings("ignore", message="IProgress not found")


def upscale(frames, scale: int):
    """Nearest-neighbour upscaling of (T, H, W, 3) frames (small clips stay crisp in the browser)."""
    import numpy as np

    frames = np.asarray(frames)
    return frames if scale <= 1 else frames.repeat(scale, axis=1).repeat(scale, axis=2)


def tile(clips, columns: int | None = None, pad: int = 2, value: int = 255):
    """Clips (list of (T, H, W, 3) uint8, same size) side by side in a grid -> one (T, H', W', 3) clip."""
    import numpy as np

    clips = [np.asarray(c) for c in clips]
    columns = columns or len(clips)
    rows = -(-len(clips) // columns)
    t, h, w, _ = clips[0].shape
    out = np.full((t, rows * (h + pad) - pad, columns * (w + pad) - pad, 3), value, dtype=np.uint8)
    for i, c in enumerate(clips):
        r, k = divmod(i, columns)
        out[:, r * (h + pad): r * (h + pad) + h, k * (w + pad): k * (w + pad) + w] = c
    return out


def video_html(frames, fps: float = 8.0, scale: int = 1, caption: str | None = None, width: int | None = None) -> str:
    """HTML for one looping inline video: H.264 mp4 (eflow_core.data.write_mp4), base64 in a data URL."""
    from eflow_core.data import write_mp4

    frames = upscale(frames, scale)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_mp4(Path(tmp) / "clip.mp4", frames, fps=fps)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    size = f' width="{width}"' if width else ""
    label = f'<figcaption style="font-size:12px">{html.escape(caption)}</figcaption>' if caption else ""
    return (f'<figure style="display:inline-block;margin:4px 8px;text-align:center">'
            f'<video autoplay loop muted playsinline controls{size} src="data:video/mp4;base64,{data}"></video>'
            f'{label}</figure>')


def show_video(frames, fps: float = 8.0, scale: int = 1, caption: str | None = None, width: int | None = None):
    """Display uint8 (T, H, W, 3) frames as an inline video."""
    from IPython.display import HTML, display

    display(HTML(video_html(frames, fps, scale, caption, width)))


def show_videos(items, fps: float = 8.0, scale: int = 1, width: int | None = None):
    """Display several clips in one row: items = [(caption, frames), ...]."""
    from IPython.display import HTML, display

    display(HTML('<div style="display:flex;flex-wrap:wrap;align-items:flex-start">'
                 + "".join(video_html(f, fps, scale, c, width) for c, f in items) + "</div>"))


class LiveFigure:
    """A plotly figure shown once and re-drawn in place: `live = LiveFigure(fig)`; change `live.fig`;
    `live.refresh()`. Works in JupyterLab, VS Code and executed notebooks (a display id, no widgets)."""

    def __init__(self, fig):
        from IPython.display import display

        self.fig = fig
        # a plotly figure displays itself through its own hook, which ignores display ids: pass its mime bundle
        self.handle = display(self._bundle(), raw=True, display_id=True)

    def _bundle(self) -> dict:
        import plotly.io as pio

        # the default renderers' bundle; plotly.js is embedded once per notebook (fig._repr_mimebundle_ would
        # re-embed it on every call)
        build = getattr(pio.renderers, "_build_mime_bundle", None)
        return build(self.fig.to_dict()) if build else self.fig._repr_mimebundle_()

    def refresh(self) -> None:
        if self.handle is not None:
            self.handle.update(self._bundle(), raw=True)


def work_dir(name: str, smoke: bool) -> Path:
    """Where a notebook writes: a new temporary folder in smoke mode, else runs/notebooks/<name> in the
    repository (git-ignored), or $EFLOW_WORK/<name>."""
    if smoke:
        return Path(tempfile.mkdtemp(prefix=f"eflow-{name}-"))
    root = Path(os.environ.get("EFLOW_WORK", REPO / "runs" / "notebooks"))
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    return path
