"""EFlowPipeline: prompt or label in, video out, with per-stage timings (docs/DESIGN.md "Public interfaces").

    pipe = EFlowPipeline.from_pretrained("shapes-t2v")          # shipped, no network
    result = pipe(prompt="a red circle moving left on a black background", steps=4, seed=0)
    result.video        # uint8 (T, H, W, 3)
    result.timings      # {"text": s, "steps": [s, ...], "decode": s, "total": s}
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from eflow_core.checkpoint import CheckpointError, load_model_folder, resolve_model_path
from eflow_core.conditioning import NULL_LABEL, encode_condition
from eflow_core.config import TrainConfig
from eflow_core.flow import SolutionFlow
from eflow_core.model.dit import VideoDiT
from eflow_core.text.lexicon import PromptLexicon, Rewrite, lexicon_for_world

DEFAULT_MODEL = "shapes-t2v"
MAX_PROMPT_CHARS = 300
MAX_STEPS = 64
DEFAULT_STEPS = 4           # when the card chose none
MAX_SEED = 2 ** 63 - 1
FPS = 8


class PipelineError(ValueError):
    """A request or a model path the pipeline cannot serve; the message is one sentence a person can act on."""


@dataclass
class GenerationResult:
    video: np.ndarray                 # uint8 (T, H, W, 3)
    fps: int
    timings: dict                     # seconds: text, steps (list), decode, total
    nfe: int                          # network evaluations
    tokens: int                       # tokens per network evaluation
    sampler: str
    steps: int
    guidance: float
    seed: int
    device: str
    gates: dict | None = None         # {layer: (T', H', W', 2) numpy [global, local]} when captured
    extras: dict = field(default_factory=dict)
    read_as: Rewrite | None = None    # the prompt as the model read it, when the lexicon changed or left words


def check_seed(seed) -> int:
    """`seed` if it is a whole number from 0 to MAX_SEED (what torch.Generator takes); PipelineError otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise PipelineError(f"seed must be a whole number from 0 to 2^63 - 1, got {seed!r}")
    return int(seed)


class EFlowPipeline:
    """A trained VideoDiT + its codec + text encoder, sampling with Algorithm 2 or the Euler/CFG baseline."""

    def __init__(self, model: VideoDiT, config: TrainConfig, card: dict, device: torch.device,
                 text_cache: str | Path | None = None, lexicon: bool = True):
        from eflow_core.codecs import load_codec

        self.model, self.config, self.card, self.device = model.eval(), config, card, device
        defaults = card.get("defaults") or {}
        if "guidance_t_min" in defaults:    # the guidance interval chosen with the card's default guidance
            config.flow.guidance_t_min = float(defaults["guidance_t_min"])
        self.flow = SolutionFlow(model, config.flow)
        try:
            self.codec = load_codec(config.data.codec, config.data.codec_factor, device=device)
            self.text_encoder = None
            if config.model.text_dim:
                from eflow_core.text import load_text_encoder
                self.text_encoder = load_text_encoder(config.data.text_encoder, cache_dir=text_cache)
        except (FileNotFoundError, ValueError, ImportError, OSError) as err:
            raise PipelineError(f"the model's codec or text encoder cannot be loaded ({err})") from None
        self._capture_lock = threading.Lock()
        # words the model never trained on -> its training words (eflow_core/text/lexicon.py); None: prompts
        # reach the text encoder as typed. Built on first use (about 1 s on a 2-core CPU; the studio builds it at load).
        self._use_lexicon = bool(lexicon) and self.kind == "text"
        self._lexicon: PromptLexicon | None = None

    @classmethod
    def from_pretrained(cls, path_or_name: str | Path = DEFAULT_MODEL, device: str | torch.device | None = None,
                        dtype: torch.dtype = torch.float32, compile: bool | str = False,
                        text_cache: str | Path | None = None, lexicon: bool = True) -> "EFlowPipeline":
        """Load a shipped model by name (no network) or a folder written by the trainer / exporter.

        text_cache: a caption cache folder (`python -m eflow_core data text-cache`): prompts found there
        need no text-encoder package, which then loads only for a prompt missing from the cache (a GPU
        machine without the package evaluates the cached captions).

        compile: torch.compile each block (`VideoDiT.compile_blocks`): True for the default backend
        (inductor), or a backend name. Meant for GPUs, where a small model's many small kernels
        cost more in launches than in work; the first generation of each new shape pays the
        compile time. (Measured for the 1.5B preset at 480p: docs/BENCHMARKS.md §4a.)

        lexicon: rewrite the words of a prompt the model never trained on into words it did, through
        WordNet and the xkcd colour names (`eflow_core.text.lexicon`), for text models of a world with a
        caption vocabulary (`shapes`). False: the prompt reaches the text encoder as typed."""
        try:
            folder = resolve_model_path(path_or_name)
            config, card, weights = load_model_folder(folder)
        except CheckpointError as err:
            raise PipelineError(str(err)) from None
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        with torch.device("meta"):      # no random init that the weights overwrite at once
            model = VideoDiT(config.model)
        try:
            model.load_state_dict({k: v.to(torch.float32) for k, v in weights.items()}, assign=True)
        except RuntimeError as err:
            raise PipelineError(f"the weights in {folder} do not fit the model its card describes "
                                f"({str(err).splitlines()[0]})") from None
        model = model.to(device=device, dtype=dtype)
        if compile:
            model.compile_blocks(backend="inductor" if compile is True else str(compile))
        pipe = cls(model, config, card, device, text_cache=text_cache, lexicon=lexicon)
        pipe.path = folder
        return pipe

    # --------------------------------------------------------------- facts
    @property
    def kind(self) -> str:
        """"text", "class" or "unconditional"."""
        if self.config.model.text_dim:
            return "text"
        return "class" if self.config.model.num_classes else "unconditional"

    @property
    def world(self) -> str:
        return self.card.get("world", self.config.data.kind)

    @property
    def classes(self) -> list[str]:
        return list(self.card.get("classes", [str(i) for i in range(self.config.model.num_classes)]))

    @property
    def default_guidance(self) -> float:
        """The card's chosen guidance (`eflow choose-defaults`), else its training recipe's."""
        defaults = self.card.get("defaults") or {}
        return float(defaults.get("guidance", self.card.get("guidance", self.config.flow.guidance_inference)))

    @property
    def default_steps(self) -> int:
        """The card's chosen step count (`eflow choose-defaults`), else 4."""
        return int((self.card.get("defaults") or {}).get("steps", DEFAULT_STEPS))

    @property
    def guidance_range(self) -> tuple[float, float]:
        return 1.0, max(8.0, self.config.flow.guidance_max + 2.0)

    @property
    def default_size(self) -> tuple[int, int, int]:
        """(frames, height, width) the model was trained on."""
        return self.config.data.num_frames, self.config.data.size, self.config.data.size

    # ----------------------------------------------------------- checking
    def _check_request(self, prompts, labels, steps, guidance, num_frames, height, width, sampler):
        if sampler not in ("solution", "ode"):
            raise PipelineError(f"sampler must be 'solution' or 'ode', not {sampler!r}")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= MAX_STEPS:
            raise PipelineError(f"steps must be a whole number from 1 to {MAX_STEPS}, got {steps!r}")
        low, high = self.guidance_range
        if isinstance(guidance, (int, float)) and not math.isfinite(guidance):
            raise PipelineError(f"guidance must be a finite number, got {guidance!r}")
        if not isinstance(guidance, (int, float)) or not low <= guidance <= high:
            raise PipelineError(f"guidance must be a number from {low:g} to {high:g}, got {guidance!r}")
        if self.kind == "text":
            if prompts is None:
                raise PipelineError("this is a text-to-video model: give a prompt")
            for p in prompts:
                if not isinstance(p, str) or not p.strip():
                    raise PipelineError("the prompt is empty: describe the video you want "
                                        "(for example 'a red circle moving right on a black background')")
                if len(p) > MAX_PROMPT_CHARS:
                    raise PipelineError(f"the prompt is {len(p)} characters long; keep it under {MAX_PROMPT_CHARS}")
        elif self.kind == "class":
            if labels is None:
                raise PipelineError("this is a class-conditional model: pick a class label")
            for label in labels:
                if not isinstance(label, (int, np.integer)) or not 0 <= label < self.config.model.num_classes:
                    raise PipelineError(f"label must be a class index from 0 to "
                                        f"{self.config.model.num_classes - 1}, got {label!r}")
        frames, h, w = num_frames, height, width
        for name, value in (("frames", frames), ("height", h), ("width", w)):
            if not isinstance(value, (int, np.integer)) or value <= 0 or value > 1024:
                raise PipelineError(f"{name} must be a positive whole number up to 1024, got {value!r}")
        try:
            latent = self.codec.latent_shape(frames, h, w)
            self.model.token_grid(tuple(latent[1:]))
        except (ValueError, AssertionError) as err:
            raise PipelineError(f"{frames} frames at {h}x{w} does not fit this model ({err})") from None
        return latent

    # --------------------------------------------------------- generation
    @torch.no_grad()
    def generate_batch(self, prompts: list[str] | None = None, labels: list[int] | None = None, steps: int | None = None,
                       guidance: float | None = None, seed: int = 0, sampler: str = "solution",
                       num_frames: int | None = None, height: int | None = None, width: int | None = None,
                       step_callback=None, capture_gates: bool = False):
        """Generate a batch; returns (uint8 video (B, T, H, W, 3) tensor, timings dict, gates | None).

        For the evaluation loop use `generate_batch(...)[0]`. Sample b uses noise from seed + b, so a
        clip is the same whether generated alone or in a batch.
        """
        guidance = self.default_guidance if guidance is None else guidance
        steps = self.default_steps if steps is None else steps
        frames, h, w = self.default_size
        frames, h, w = num_frames or frames, height or h, width or w
        latent = self._check_request(prompts, labels, steps, guidance, frames, h, w, sampler)
        batch = len(prompts) if prompts is not None else len(labels) if labels is not None else 1
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        timings: dict = {"steps": []}
        start = time.perf_counter()

        cond = self._condition(prompts, labels)
        sync()
        timings["text"] = time.perf_counter() - start

        noise = torch.stack([torch.randn(tuple(latent), generator=torch.Generator().manual_seed(seed + b))
                             for b in range(batch)]).to(self.device, self.model_dtype)
        generator = torch.Generator(self.device).manual_seed(seed)
        last = [time.perf_counter()]

        def on_step(index, total, x):
            sync()
            now = time.perf_counter()
            timings["steps"].append(now - last[0])
            last[0] = now
            if step_callback is not None:
                step_callback(index, total)

        gates = None
        with self._capture_lock if capture_gates else contextlib.nullcontext():
            if capture_gates:
                with self.model.capture_gates() as captured:
                    x0 = self._sample(noise, cond, steps, float(guidance), generator, on_step, sampler)
                gates = captured
            else:
                x0 = self._sample(noise, cond, steps, float(guidance), generator, on_step, sampler)
        decode_start = time.perf_counter()
        video = self.codec.decode(x0.float())
        video = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu()
        timings["decode"] = time.perf_counter() - decode_start
        timings["total"] = time.perf_counter() - start
        return video, timings, gates

    @property
    def lexicon(self) -> PromptLexicon | None:
        """The prompt lexicon of this model's world, or None (turned off, not a text model, no vocabulary)."""
        if self._use_lexicon and self._lexicon is None:
            self._lexicon = lexicon_for_world(self.world)
            self._use_lexicon = self._lexicon is not None
        return self._lexicon

    @lexicon.setter
    def lexicon(self, on: bool) -> None:
        """`pipe.lexicon = False` sends prompts to the text encoder as typed; True turns the lexicon back on."""
        self._use_lexicon, self._lexicon = bool(on) and self.kind == "text", None

    def read_prompt(self, prompt: str) -> Rewrite:
        """`prompt` as the model reads it: the lexicon's rewrite (no substitutions without a lexicon)."""
        lexicon = self.lexicon
        return lexicon.rewrite(prompt) if lexicon is not None else Rewrite(prompt, ())

    def _condition(self, prompts: list[str] | None, labels: list[int] | None):
        """The model's condition for a checked request: TextCondition (B rows), labels (B,) or None."""
        if prompts is not None and self.lexicon is not None:
            prompts = [self.read_prompt(p).text for p in prompts]
        return encode_condition(self.text_encoder, prompts, labels if self.kind == "class" else None,
                                self.device, self.model_dtype)

    def _sample(self, noise, cond, steps, guidance, generator, callback, sampler):
        run = self.flow.sample if sampler == "solution" else self.flow.sample_ode
        return run(noise, cond, steps, guidance, generator=generator, callback=callback)

    @property
    def model_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def evaluations(self, steps: int, sampler: str = "solution") -> int:
        """Network evaluations (NFE) of one clip: `steps` for Algorithm 2; 2 per Euler step with CFG."""
        return steps * (2 if sampler == "ode" and self.config.flow.guidance != "none" else 1)

    def tokens_per_evaluation(self, num_frames: int, height: int, width: int) -> int:
        grid = self.model.token_grid(tuple(self.codec.latent_shape(num_frames, height, width)[1:]))
        return grid[0] * grid[1] * grid[2]

    def __call__(self, prompt: str | None = None, label: int | None = None, steps: int | None = None,
                 guidance: float | None = None, seed: int = 0, num_frames: int | None = None,
                 height: int | None = None, width: int | None = None, sampler: str = "solution",
                 capture_gates: bool = False, step_callback=None) -> GenerationResult:
        """One clip. step_callback(index, total) is called after every sampler step (progress bars)."""
        check_seed(seed)
        guidance = self.default_guidance if guidance is None else guidance
        steps = self.default_steps if steps is None else steps
        video, timings, gates = self.generate_batch(
            prompts=None if prompt is None else [prompt], labels=None if label is None else [label],
            steps=steps, guidance=guidance, seed=seed, sampler=sampler, num_frames=num_frames, height=height,
            width=width, step_callback=step_callback, capture_gates=capture_gates)
        frames, h, w = video.shape[1:4]
        grid = self.model.token_grid(tuple(self.codec.latent_shape(frames, h, w)[1:]))
        gate_maps = None
        if gates is not None:   # full-token layers as (T', H', W', 2) maps; middle layers scattered over kept ids
            gate_maps = {i: g[0].mean(dim=1).reshape(*grid, 2).numpy() for i, g in gates.items()
                         if g.shape[1] == grid[0] * grid[1] * grid[2]}
        read_as = self.read_prompt(prompt) if prompt is not None else None
        return GenerationResult(video=video[0].numpy(), fps=FPS, timings=timings, nfe=self.evaluations(steps, sampler),
                                tokens=grid[0] * grid[1] * grid[2], sampler=sampler, steps=steps,
                                guidance=float(guidance), seed=int(seed), device=str(self.device), gates=gate_maps,
                                read_as=read_as if read_as is not None and (read_as.substitutions or read_as.unplaced)
                                else None)

    @torch.no_grad()
    def semigroup_defect(self, prompt: str | None = None, label: int | None = None, seed: int = 0,
                         guidance: float | None = None, mid: float = 0.5) -> dict:
        """One jump f(x_1, 1, 0) vs two jumps f(f(x_1, 1, l), l, 0) from the same noise (Lemma 1: the MVA
        residual). Returns {"l", "defect_rms", "relative"}: RMS of the difference, and over the RMS of the
        one-jump result."""
        guidance = self.default_guidance if guidance is None else guidance
        frames, h, w = self.default_size
        latent = self._check_request(None if prompt is None else [prompt], None if label is None else [label],
                                     1, guidance, frames, h, w, "solution")
        cond = self._condition(None if prompt is None else [prompt], None if label is None else [label])
        x1 = torch.randn(tuple(latent), generator=torch.Generator().manual_seed(seed))[None]
        x1 = x1.to(self.device, self.model_dtype)
        one, w = torch.ones(1, device=self.device), torch.full((1,), float(guidance), device=self.device)
        l = torch.full((1,), mid, device=self.device)
        direct = self.flow.solution(x1, one, 0 * one, cond, w)
        two = self.flow.solution(self.flow.solution(x1, one, l, cond, w), l, 0 * one, cond, w)
        defect = (two - direct).float().pow(2).mean().sqrt().item()
        return {"l": mid, "defect_rms": defect, "relative": defect / max(direct.float().pow(2).mean().sqrt().item(), 1e-12)}


__all__ = ["EFlowPipeline", "GenerationResult", "PipelineError", "check_seed", "NULL_LABEL"]
