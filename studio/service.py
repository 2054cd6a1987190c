"""What the studio does, without any UI: read a request, run the pipeline, write the files.

`StudioService` is the layer between the Gradio callbacks and `EFlowPipeline`. It converts the raw values
a browser or an API client sends (strings, floats, None) into the pipeline's Python values, raising
`RequestError` (a `PipelineError`: one sentence a person can act on) for a value that is not what its
control holds (not a number, not a whole number, outside a studio control's own range such as the steps
slider); the pipeline checks the request against the model (prompt, steps, guidance, seed, size) and
raises `PipelineError`. It runs the few-step sampler, the 50-step baseline or a gate capture under the
model's lock, and writes the mp4 and GIF into the app-owned output folder. No gradio here, so it can be
tested and scripted directly.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable

import numpy as np

from eflow_core.pipeline import GenerationResult, PipelineError
from studio.registry import ModelEntry, ModelRegistry
from studio.storage import OutputStore

UI_MAX_STEPS = 8            # the few-step sampler's range in the studio (docs/DESIGN.md "What users see")
BASELINE_STEPS = 50         # the multi-step Euler + CFG baseline on the same network
FRAME_CHOICES = (4, 8, 12, 16, 24, 32)
SIZE_CHOICES = (32, 48, 64, 96, 128)

Progress = Callable[[float, str], None]


class RequestError(PipelineError):
    """A browser value the studio cannot turn into the pipeline's argument (same one-sentence contract)."""


@dataclass
class Generation:
    """One finished clip: the pipeline's result and the files written for it."""

    result: GenerationResult
    mp4: str
    gif: str | None
    entry: ModelEntry


# ------------------------------------------------------------------ parsing: browser values -> Python values
def _number(value, name: str) -> float:
    """A number or a numeric string as a float (NaN and infinities pass: the pipeline judges them)."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RequestError(f"{name} must be a number, got {value!r}")
    return float(value)


def parse_int(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """A whole number from an int, an integral float or a numeric string, in [low, high] when given (the
    range of a studio control, e.g. the steps slider; the model's limits are the pipeline's to check)."""
    refusal = f"{name} must be a whole number{'' if low is None else f' from {low} to {high}'}, got {value!r}"
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)                   # exact, also for seeds beyond float precision
    else:
        number = _number(value, name)
        if not number.is_integer():           # fractions, NaN, infinities
            raise RequestError(refusal)
    if low is not None and not low <= number <= high:
        raise RequestError(refusal)
    return int(number)


def parse_float(value, name: str, low: float | None = None, high: float | None = None) -> float:
    """A number from a float, an int or a numeric string, in [low, high] when given (a studio control's range)."""
    number = _number(value, name)
    if low is not None and not low <= number <= high:
        raise RequestError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
    return number


def parse_seed(value) -> int:
    """The seed box as a whole number (an empty box means 0); the pipeline checks its range."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0
    return parse_int(value, "seed")


def parse_size(value) -> int | None:
    """'64x64', '64×64', '64' or 64 -> 64; None / '' -> None (the model's default)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).lower().replace("×", "x").split("x")[0]
    return parse_int(text, "size")


def condition_for(pipe, prompt=None, class_choice=None) -> dict:
    """The pipeline keyword for the request: {"prompt": str} for text models, {"label": int} for class models.

    A text model gets the prompt box's text, stripped (an empty box is ""; the pipeline refuses an empty
    or too long prompt). Class models accept a class index (int or digit string) or a class name
    (case-insensitive) from the class menu, given as `class_choice` or, through the API, as `prompt`.
    """
    if pipe.kind == "text":
        return {"prompt": prompt.strip() if isinstance(prompt, str) else ""}
    choice = class_choice if class_choice not in (None, "") else prompt
    names = pipe.classes
    if not names:
        raise RequestError("this model takes neither a prompt nor a class (it is unconditional), "
                           "which the studio cannot serve")
    if isinstance(choice, str):
        text = choice.strip()
        lowered = [n.lower() for n in names]
        if text.lower() in lowered:
            return {"label": lowered.index(text.lower())}
        if text.lstrip("-").isdigit():
            choice = int(text)
        else:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise RequestError(f"{text!r} is not a class of this model: pick one of {shown} (or its index)")
    if choice is None:
        raise RequestError("this is a class-conditional model: pick a class")
    return {"label": parse_int(choice, "class index", 0, len(names) - 1)}


def size_options(pipe) -> tuple[list[int], list[int]]:
    """(frame counts, square sizes) this model can generate, the defaults included."""
    frames0, height0, width0 = pipe.default_size

    def fits(f, h, w):
        try:
            pipe.tokens_per_evaluation(f, h, w)
            return True
        except Exception:  # codec or patch grid does not divide
            return False

    frames = sorted({f for f in FRAME_CHOICES if f <= 2 * frames0 and fits(f, height0, width0)} | {frames0})
    sizes = sorted({s for s in SIZE_CHOICES if s <= 2 * height0 and fits(frames0, s, s)} | {height0})
    return frames, sizes


def _stem(result: GenerationResult, sampler: str) -> str:
    return f"eflow_{'baseline' if sampler == 'ode' else 'fast'}_{result.steps}steps_seed{result.seed}"


# ------------------------------------------------------------------ service
class StudioService:
    """Checked generation on top of a model registry and an output store."""

    def __init__(self, registry: ModelRegistry, store: OutputStore, default_model: str):
        self.registry, self.store, self.default_model = registry, store, default_model

    def model(self, name_or_path: str | None) -> ModelEntry:
        """The entry for a model name or folder (the default model when empty)."""
        return self.registry.get(name_or_path or self.default_model)

    def request(self, entry: ModelEntry, prompt, class_choice, steps, guidance, seed, frames=None, size=None,
                max_steps: int = UI_MAX_STEPS) -> dict:
        """Raw inputs -> the pipeline's keyword arguments for `entry`'s model (which the pipeline checks).

        Steps stay within the studio's few-step range 1..`max_steps` (its slider); guidance None means the
        model's default."""
        kwargs = condition_for(entry.pipe, prompt, class_choice)
        kwargs["steps"] = parse_int(steps, "steps", 1, max_steps)
        kwargs["guidance"] = None if guidance is None else parse_float(guidance, "guidance")
        kwargs["seed"] = parse_seed(seed)
        if frames not in (None, ""):
            kwargs["num_frames"] = parse_int(frames, "frames")
        side = parse_size(size)
        if side is not None:
            kwargs["height"] = kwargs["width"] = side
        return kwargs

    def run(self, entry: ModelEntry, kwargs: dict, sampler: str = "solution", progress: Progress | None = None,
            capture_gates: bool = False, write_gif: bool = True, label: str = "") -> Generation:
        """Generate one clip and write it; `progress(fraction, description)` after every step."""
        def on_step(index: int, total: int) -> None:
            if progress is not None:
                progress((index + 1) / total, f"{label}step {index + 1}/{total}")

        lock = entry.lock.exclusive() if capture_gates else entry.lock.shared()
        with lock:
            result = entry.pipe(**kwargs, sampler=sampler, capture_gates=capture_gates, step_callback=on_step)
        mp4, gif = self.store.write(result.video, result.fps, _stem(result, sampler), gif=write_gif)
        return Generation(result=result, mp4=str(mp4), gif=None if gif is None else str(gif), entry=entry)

    def generate(self, model, prompt, class_choice, steps, guidance, seed, frames=None, size=None,
                 progress: Progress | None = None) -> Generation:
        """The Generate tab and the `/generate` API: the few-step sampler."""
        entry = self.model(model)
        kwargs = self.request(entry, prompt, class_choice, steps, guidance, seed, frames, size)
        return self.run(entry, kwargs, progress=progress)

    def compare(self, model, prompt, class_choice, steps, guidance, seed, frames=None, size=None,
                progress: Progress | None = None) -> tuple[Generation, Generation]:
        """The few-step clip and the 50-step CFG baseline from the same prompt, seed and network."""
        entry = self.model(model)
        kwargs = self.request(entry, prompt, class_choice, steps, guidance, seed, frames, size)
        fast_nfe, slow_nfe = kwargs["steps"], 2 * BASELINE_STEPS
        share = fast_nfe / (fast_nfe + slow_nfe)

        def fast_progress(fraction, desc):
            if progress is not None:
                progress(share * fraction, desc)

        def slow_progress(fraction, desc):
            if progress is not None:
                progress(share + (1 - share) * fraction, desc)

        fast = self.run(entry, kwargs, progress=fast_progress, write_gif=False, label="EFlow few-step: ")
        baseline = self.run(entry, {**kwargs, "steps": BASELINE_STEPS}, sampler="ode", progress=slow_progress,
                            write_gif=False, label="50-step baseline: ")
        return fast, baseline

    def inspect(self, model, prompt, class_choice, steps, guidance, seed,
                progress: Progress | None = None) -> tuple[Generation, dict]:
        """A clip at the model's default size with its gate maps, and this sample's semigroup defect."""
        entry = self.model(model)
        kwargs = self.request(entry, prompt, class_choice, steps, guidance, seed)
        generation = self.run(entry, kwargs, progress=progress, capture_gates=True, write_gif=False)
        condition = {k: kwargs[k] for k in ("prompt", "label") if k in kwargs}
        with entry.lock.shared():
            defect = entry.pipe.semigroup_defect(**condition, seed=kwargs["seed"], guidance=kwargs["guidance"])
        return generation, defect


def frame_for_latent(video: np.ndarray, latent_frame: int, latent_frames: int) -> np.ndarray:
    """The first video frame covered by latent frame `latent_frame` of `latent_frames` (uint8 (H, W, 3))."""
    stride = max(1, video.shape[0] // max(1, latent_frames))
    return video[min(video.shape[0] - 1, latent_frame * stride)]
