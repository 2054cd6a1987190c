"""What the studio's buttons and sliders do: `StudioService` results -> Gradio component values.

Every callback that can fail is wrapped by `user_errors`: a `PipelineError` (bad prompt, steps,
guidance, size, checkpoint) becomes a `gr.Error` with its one sentence; anything unexpected is logged
with its traceback on the server and shown as one generic sentence. The server keeps running either way.
"""
from __future__ import annotations

import functools
import logging
import random

import gradio as gr
import numpy as np

from eflow_core.checkpoint import shipped_models
from eflow_core.pipeline import MAX_PROMPT_CHARS, PipelineError
from studio import plots
from studio.examples import VOCABULARY_HINT
from studio.readout import defect_readout, latency_readout, model_summary, speedup_readout
from studio.registry import model_key
from studio.service import UI_MAX_STEPS, StudioService, frame_for_latent, size_options

log = logging.getLogger("studio")

GATE_NOTE = ("**GLGA routing.** Every GLGA block mixes a global linear-attention path (the whole clip at once) "
             "and a local window-attention path (nearby frames), weighted per token by learned sigmoid gates; "
             "the maps show where this layer leans on global context and where on local detail "
             "(gates of the last sampling step, averaged over heads).")
DEFECT_NOTE = ("**MVA = semigroup consistency.** A solution-flow model can jump from noise (t = 1) straight to "
               "the video (t = 0) or stop at t = l on the way; if it is consistent the two agree. The defect is "
               "the RMS difference between one jump and two jumps from the same noise, which is exactly "
               "what the MVA loss trains towards zero (Lemma 1).")


def user_errors(fn):
    """Show PipelineError as a gr.Error sentence, and any other failure as one generic sentence (logged)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except PipelineError as err:
            raise gr.Error(str(err), title="Please check the request", print_exception=False) from None
        except Exception as err:  # never a stack trace in the UI; the server log keeps it
            log.exception("unexpected failure in %s", fn.__name__)
            raise gr.Error(f"the studio hit an unexpected {type(err).__name__}; the server log has the details",
                           title="Something went wrong", print_exception=False) from None
    return wrapper


def _progress(progress):
    """gr.Progress -> the service's progress(fraction, description) callback."""
    return lambda fraction, desc: progress(fraction, desc=desc)


def _upscale(frame: np.ndarray, target: int = 256) -> np.ndarray:
    """Nearest-neighbour upscale (crisp pixels instead of browser blur) to about `target` pixels high."""
    factor = max(1, target // max(1, frame.shape[0]))
    return frame.repeat(factor, axis=0).repeat(factor, axis=1)


def model_menu(loaded: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Model dropdown choices (label, folder): the shipped models, then the `loaded` (label, folder) pairs."""
    choices = []
    for name in shipped_models():
        try:
            choices.append((name, model_key(name)[0]))
        except PipelineError:       # a half-written shipped folder: leave it out of the menu
            continue
    for label, key in loaded:
        if key not in [value for _, value in choices]:
            choices.append((label, key))
    return choices


def _size_label(side: int) -> str:
    return f"{side}×{side}"


class Callbacks:
    """Bound callbacks for one app: each method is a Gradio event handler."""

    def __init__(self, service: StudioService):
        self.service = service

    # ------------------------------------------------------------ generate
    @user_errors
    def generate(self, model, prompt, class_choice, steps, guidance, seed, frames, size,
                 progress=gr.Progress()):
        """Generate tab: few-step clip -> (mp4, GIF, latency readout, latency chart)."""
        progress(0, desc="encoding the prompt")
        gen = self.service.generate(model, prompt, class_choice, steps, guidance, seed, frames, size,
                                    progress=_progress(progress))
        return gen.mp4, gen.gif, latency_readout(gen.result), plots.latency_figure(gen.result.timings)

    @user_errors
    def api_generate(self, prompt, steps, guidance, seed, progress=gr.Progress()):
        """`/generate` API: (prompt or class, steps, guidance, seed) on the app's default model -> (mp4, readout)."""
        gen = self.service.generate(None, prompt, None, steps, guidance, seed, progress=_progress(progress))
        return gen.mp4, latency_readout(gen.result)

    # ------------------------------------------------------------- compare
    @user_errors
    def compare(self, model, prompt, class_choice, steps, guidance, seed, frames, size, progress=gr.Progress()):
        """Compare tab: few-step vs 50-step CFG baseline -> (fast mp4, baseline mp4, speed-up, readouts, chart)."""
        progress(0, desc="encoding the prompt")
        fast, baseline = self.service.compare(model, prompt, class_choice, steps, guidance, seed, frames, size,
                                              progress=_progress(progress))
        summary = f"### {baseline.result.timings['total'] / max(fast.result.timings['total'], 1e-9):.1f}× faster\n" \
                  f"{speedup_readout(fast.result, baseline.result)}"
        return (fast.mp4, baseline.mp4, summary, latency_readout(fast.result), latency_readout(baseline.result),
                plots.compare_figure(fast.result.timings, baseline.result.timings,
                                     fast_label=f"EFlow {fast.result.steps}-step"))

    # ------------------------------------------------------------- inspect
    @user_errors
    def inspect(self, model, prompt, class_choice, steps, guidance, seed, progress=gr.Progress()):
        """Inside-the-model tab: capture gates and the semigroup defect for this prompt and seed."""
        progress(0, desc="encoding the prompt")
        gen, defect = self.service.inspect(model, prompt, class_choice, steps, guidance, seed,
                                           progress=_progress(progress))
        gates = gen.result.gates or {}
        if not gates:
            raise gr.Error("this model has no GLGA layers, so there are no gates to show",
                           print_exception=False)
        layers = plots.gate_layers(gates)
        state = {"gates": gates, "video": gen.result.video, "layers": layers}
        frames = next(iter(gates.values())).shape[0]
        layer, frame = layers[0], 0
        return (state,
                gr.update(minimum=layers[0], maximum=layers[-1], value=layer, interactive=len(layers) > 1),
                gr.update(minimum=1, maximum=frames, value=frame + 1, interactive=frames > 1),
                *self._gate_views(state, layer, frame),
                defect_readout(defect))

    def gate_view(self, state, layer, frame):
        """Layer / frame sliders moved: redraw from the captured gates (no model run)."""
        if not state:
            return (plots.empty_figure("Press “Look inside” first"), plots.empty_figure(""), None,
                    plots.empty_figure(""))
        return self._gate_views(state, int(layer), int(frame) - 1)

    @staticmethod
    def _gate_views(state, layer, frame):
        layers, asked = state["layers"], layer
        layer = min(layers, key=lambda i: (abs(i - layer), i))     # full-softmax blocks have no gates: nearest
        gates = state["gates"]
        latent_frames = gates[layer].shape[0]
        frame = int(np.clip(frame, 0, latent_frames - 1))
        image = _upscale(frame_for_latent(state["video"], frame, latent_frames))
        heatmap = plots.gate_heatmaps(gates, layer, frame)
        if asked != layer:
            heatmap.update_layout(title_text=f"{heatmap.layout.title.text} "
                                             f"(block {asked} is full softmax attention: no gates)")
        return (heatmap, plots.gate_frame_strip(gates, layer), image, plots.mean_gate_figure(gates, highlight=layer))

    # --------------------------------------------------------------- model
    @user_errors
    def load_model(self, choice, path):
        """Model picker: load (or take from the cache) the chosen model and reshape the controls for it."""
        target = (path or "").strip() or choice
        entry = self.service.model(target)
        key, name = model_key(self.service.default_model)
        choices = model_menu([(name, key)] + [(e.name, e.key) for e in self.service.registry.entries()])
        return (entry.key, gr.update(choices=choices, value=entry.key), *self.controls_for(entry))

    def controls_for(self, entry):
        """Updates for (summary, prompt, class dropdown, examples, steps, guidance, frames, size) fitting `entry`:
        steps and guidance start at the model card's defaults."""
        pipe = entry.pipe
        low, high = pipe.guidance_range
        frames, sizes = size_options(pipe)
        f0, h0, _ = pipe.default_size
        is_text = pipe.kind == "text"
        shapes = is_text and pipe.world.startswith("shapes")     # the examples speak the shapes world's words
        hint = f"Up to {MAX_PROMPT_CHARS} characters." + (f" {VOCABULARY_HINT}" if shapes else "")
        classes = [(name, i) for i, name in enumerate(pipe.classes)]
        return (model_summary(pipe, entry.name),
                gr.update(visible=is_text, info=hint),
                gr.update(visible=not is_text, choices=classes, value=0 if classes else None),
                gr.update(visible=shapes),
                gr.update(value=min(pipe.default_steps, UI_MAX_STEPS)),
                gr.update(minimum=low, maximum=high, value=pipe.default_guidance),
                gr.update(choices=frames, value=f0),
                gr.update(choices=[_size_label(s) for s in sizes], value=_size_label(h0)))

    @staticmethod
    def roll_seed():
        """The dice button: a fresh random seed."""
        return random.randrange(0, 2 ** 31)
