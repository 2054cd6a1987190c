"""What the studio does, without any UI: check a request, run the pipeline, write the files.

`StudioService` is the layer between the Gradio callbacks and `EFlowPipeline`: it turns the raw values
a browser or an API client sends (strings, floats, NaN, None) into a checked request, raising
`RequestError` (a `PipelineError`: one sentence a person can act on) for anything wrong; runs the
few-step sampler, the 50-step baseline or a gate capture under the model's lock; and writes the mp4
and GIF into the app-owned output folder. No gradio here, so it can be tested and scripted directly.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable

import numpy as np

from eflow_core.pipeline import MAX_PROMPT_CHARS, GenerationResult, PipelineError
from studio.registry import ModelEntry, ModelRegistry
from studio.storage import OutputStore

UI_MAX_STEPS = 8            # the few-step sampler's range in the studio (docs/DESIGN.md "What users see")
BASELINE_STEPS = 50         # the multi-step Euler + CFG baseline on the same network
FRAME_CHOICES = (4, 8, 12, 16, 24, 32)
SIZE_CHOICES = (32, 48, 64, 96, 128)

Progress = Callable[[float, str], None]


class RequestError(PipelineError):
    """A request the studio refuses before it reaches the pipeline (same one-sentence contract)."""


@dataclass
class Generation:
    """One finished clip: the pipeline's result and the files written for it."""

    result: GenerationResult
    mp4: str
    gif: str | None
    entry: ModelEntry


# ------------------------------------------------------------------ parsing
def _number(value, name: str) -> float:
    if isinstance(value, bool) or value is None:
        raise RequestError(f"{name} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise RequestError(f"{name} must be a number, got {value!r}") from None
    if not isinstance(value, numbers.Real):
        raise RequestError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise RequestError(f"{name} must be a finite number, got {value!r}")
    return value


def parse_int(value, name: str, low: int, high: int) -> int:
    """A whole number in [low, high] from an int, an integral float or a numeric string."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)                   # exact, also for seeds beyond float precision
    else:
        number = _number(value, name)
        if number != int(number):
            raise RequestError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    if not low <= number <= high:
        raise RequestError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return int(number)


def parse_float(value, name: str, low: float, high: float) -> float:
    """A finite number in [low, high]."""
    number = _number(value, name)
    if not low <= number <= high:
        raise RequestError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
    return number


def parse_seed(value) -> int:
    """A seed: a whole number from 0 to 2^63 - 1 (an empty field means 0)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0
    return parse_int(value, "seed", 0, 2 ** 63 - 1)


def parse_size(value) -> int | None:
    """'64x64', '64×64', '64' or 64 -> 64; None / '' -> None (the model's default)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).lower().replace("×", "x").split("x")[0]
    return parse_int(text, "size", 8, 1024)


def condition_for(pipe, prompt=None, class_choice=None) -> dict:
    """The pipeline keyword for the request: {"prompt": str} for text models, {"label": int} for class models.

    Class models accept a class index (int or digit string) or a class name (case-insensitive), given as
    `class_choice` or, through the API, as `prompt`.
    """
    if pipe.kind == "text":
        if prompt is None or not isinstance(prompt, str) or not prompt.strip():
            raise RequestError("the prompt is empty: describe the video you want "
                               "(for example 'a red circle moving right on a black background')")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise RequestError(f"the prompt is {len(prompt)} characters long; keep it under {MAX_PROMPT_CHARS}")
        return {"prompt": prompt.strip()}
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
        """Check raw inputs against `entry`'s model; returns the pipeline keyword arguments."""
        pipe = entry.pipe
        low, high = pipe.guidance_range
        kwargs = condition_for(pipe, prompt, class_choice)
        kwargs["steps"] = parse_int(steps, "steps", 1, max_steps)
        kwargs["guidance"] = parse_float(pipe.default_guidance if guidance is None else guidance,
                                         "guidance", low, high)
        kwargs["seed"] = parse_seed(seed)
        if frames not in (None, ""):
            kwargs["num_frames"] = parse_int(frames, "frames", 1, 1024)
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
