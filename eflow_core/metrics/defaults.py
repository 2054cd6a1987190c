"""A model's default steps, guidance and guidance interval, chosen by evaluation on selection prompts (issue 23).

The card stores what a user gets without touching a control: `card["defaults"] = {"steps", "guidance",
"guidance_t_min", "chosen_by"}` (`EFlowPipeline.default_steps` / `default_guidance` read it; the studio's
sliders and `eflow sample` start there). They are chosen here, on prompts that are not the ones the card
reports: another prompt and noise seed (`SELECTION_SEED`; the reports use seed 0), so other attribute
combinations, other captions drawn and other noise. For text worlds the captions come from the
`heldout-frames` set, free sentences in words the model knows, which is how people write prompts. The
`heldout-both` set (held-out words too) was tried first for shapes-t2v on 2026-12-07, and every setting
scored 5-12% there, so the choice said nothing.

The grid: every step count x guidance x guidance interval (`FlowConfig.guidance_t_min`: 0 guides every step,
Algorithm 2 as printed; 0.8 only the steps that start at t >= 0.8). A setting's score is its all-attribute
adherence (every attribute right; class worlds: top-1 class accuracy). Settings within two binomial
standard errors of the best adherence (`tie_margin`: with 100 prompts at 90%, 6 points) cannot be told
apart by it, and among them the lowest probe-FD wins, then fewer steps. `guidance_t_min` does not change a 1-step sample (the first step is always
guided), so 1-step settings are evaluated once per guidance.
"""
from __future__ import annotations

import math
from typing import Sequence

from eflow_core.metrics.evaluate import evaluate
from eflow_core.metrics.worlds import get_world

SELECTION_SEED = 1
SELECTION_CAPTIONS = "heldout-frames"


def tie_margin(adherence: float, num_prompts: int) -> float:
    """Adherence differences below this are noise: two binomial standard errors of `adherence` (a fraction)
    over `num_prompts` prompts, at least one prompt."""
    return max(1.0 / num_prompts, 2.0 * math.sqrt(adherence * (1.0 - adherence) / num_prompts))


def pick_default(grid: list[dict], num_prompts: int) -> dict:
    """The chosen row of a grid ([{steps, guidance, guidance_t_min, adherence {all, ...}, probe_fd}]): the lowest
    probe-FD, then the fewest steps, among the rows within `tie_margin` of the best all-attribute adherence."""
    best = max(row["adherence"]["all"] for row in grid)
    near = [row for row in grid if row["adherence"]["all"] >= best - tie_margin(best, num_prompts)]
    return min(near, key=lambda row: (row["probe_fd"], row["steps"]))


def choose_defaults(pipeline, steps: Sequence[int] = (1, 2, 4), guidances: Sequence[float] = (3.0, 4.0, 5.0),
                    t_mins: Sequence[float] = (0.0, 0.8), num_prompts: int = 100, seed: int = SELECTION_SEED,
                    captions: str | None = None, progress: bool = True, **kwargs) -> dict:
    """Evaluate the grid steps x guidances x t_mins on selection prompts; returns the card's `defaults`:

        {"steps": int, "guidance": float, "guidance_t_min": float,
         "chosen_by": {"seed", "captions" (text worlds), "num_prompts", "score", "grid": [{steps, guidance,
                       guidance_t_min, adherence {attribute: fraction, all}, probe_fd}, ...]}}

    The pipeline's `flow.config.guidance_t_min` is restored on return. Other keyword arguments go to
    `evaluate` (batch_size, probe, sampler)."""
    if seed == 0:
        raise ValueError("seed 0 draws the prompts the card reports: choose defaults on another seed")
    text = get_world(getattr(pipeline, "world", None) or "shapes").conditioning == "text"
    captions = (captions or SELECTION_CAPTIONS) if text else None
    flow_config = pipeline.flow.config
    before = flow_config.guidance_t_min
    grid: list[dict] = []
    try:
        for t_min in t_mins:
            flow_config.guidance_t_min = float(t_min)
            counts = [n for n in steps if n > 1 or t_min == t_mins[0]]     # 1 step: the same sample for any t_min
            for guidance in guidances:
                result = evaluate(pipeline, steps=counts, num_prompts=num_prompts, seed=seed, guidance=float(guidance),
                                  captions=captions, progress=progress, **kwargs)
                grid += [{"steps": row["steps"], "guidance": float(guidance), "guidance_t_min": float(t_min),
                          "adherence": {k: v for k, v in row["adherence"].items() if k != "count"},
                          "probe_fd": row["probe_fd"]} for row in result["rows"]]
    finally:
        flow_config.guidance_t_min = before
    chosen = pick_default(grid, num_prompts)
    return {"steps": chosen["steps"], "guidance": chosen["guidance"], "guidance_t_min": chosen["guidance_t_min"],
            "chosen_by": {"seed": seed, **({"captions": captions} if captions else {}), "num_prompts": num_prompts,
                          "score": "all-attribute adherence; within two standard errors of the best: lower probe-FD, "
                                   "then fewer steps",
                          "grid": grid}}


def format_defaults(defaults: dict) -> str:
    """The grid as a table (one row per setting, the chosen one marked) and the choice in one line."""
    by = defaults["chosen_by"]
    lines = [f"defaults chosen on {by['num_prompts']} selection prompts (seed {by['seed']}"
             + (f", captions {by['captions']}" if "captions" in by else "") + f"); score: {by['score']}",
             f"{'steps':>5} {'guidance':>8} {'t_min':>5} {'all':>6} {'probe-FD':>9}"]
    for row in by["grid"]:
        mark = " <- default" if (row["steps"], row["guidance"], row["guidance_t_min"]) == (
            defaults["steps"], defaults["guidance"], defaults["guidance_t_min"]) else ""
        lines.append(f"{row['steps']:>5} {row['guidance']:>8g} {row['guidance_t_min']:>5g} "
                     f"{100 * row['adherence']['all']:>5.1f}% {row['probe_fd']:>9.2f}{mark}")
    return "\n".join(lines)
