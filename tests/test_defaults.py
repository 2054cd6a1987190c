"""Card defaults (issue 23): chosen by evaluation on selection prompts, used by the pipeline, the CLI and the studio."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from eflow_core.data.captions import all_captions, named_attributes
from eflow_core.data.shapes import ATTRIBUTES, render_shape_clip
from eflow_core.metrics.defaults import SELECTION_CAPTIONS, choose_defaults, format_defaults
from eflow_core.metrics.probe import default_probe_dir
from eflow_core.metrics.video import to_uint8

needs_probe = pytest.mark.skipif(not (default_probe_dir("shapes") / "probe.json").is_file(),
                                 reason="no shipped shapes probe (train: eflow train-probe)")


class SettingPipeline:
    """Follows the prompt only at one (steps, guidance, guidance_t_min); elsewhere it shows other attributes."""
    world, kind, default_size, default_guidance, device = "shapes", "text", (16, 64, 64), 4.0, "cpu"

    def __init__(self, good: tuple[int, float, float]):
        self.good, self.card, self.prompts = good, {"name": "setting"}, []
        self.flow = SimpleNamespace(config=SimpleNamespace(guidance_t_min=0.5))

    def evaluations(self, steps, sampler="solution"):
        return steps

    def generate_batch(self, prompts=None, labels=None, steps=4, guidance=None, seed=0, sampler="solution"):
        self.prompts += prompts
        faithful = (steps, guidance, self.flow.config.guidance_t_min) == self.good
        clips = []
        for b, prompt in enumerate(prompts):
            attrs = {key: values[0] for key, values in named_attributes(prompt).items()}
            if not faithful:
                attrs = {k: ATTRIBUTES[k][(ATTRIBUTES[k].index(v) + 1) % len(ATTRIBUTES[k])] for k, v in attrs.items()}
            video, _ = render_shape_clip(**attrs, num_frames=16, size=64, rng=np.random.default_rng((seed + b, 7)))
            clips.append(to_uint8(video[None])[0])
        return torch.stack(clips), {"total": 0.0}, None


@needs_probe
@pytest.mark.parametrize("good", [(2, 4.0, 0.8), (1, 3.0, 0.0)])
def test_defaults_are_the_setting_that_follows_the_prompts(good):
    pipe = SettingPipeline(good)
    defaults = choose_defaults(pipe, steps=(1, 2), guidances=(3.0, 4.0), t_mins=(0.0, 0.8), num_prompts=8,
                               progress=False)
    assert (defaults["steps"], defaults["guidance"], defaults["guidance_t_min"]) == good
    assert pipe.flow.config.guidance_t_min == 0.5                        # restored
    # 1 step is the same sample for every interval: evaluated once per guidance; 2 steps once per interval
    assert sorted((r["steps"], r["guidance"], r["guidance_t_min"]) for r in defaults["chosen_by"]["grid"]) == [
        (1, 3.0, 0.0), (1, 4.0, 0.0), (2, 3.0, 0.0), (2, 3.0, 0.8), (2, 4.0, 0.0), (2, 4.0, 0.8)]
    # chosen on prompts the card does not report: another seed, the held-out frames and words together
    assert defaults["chosen_by"]["seed"] != 0 and defaults["chosen_by"]["captions"] == SELECTION_CAPTIONS
    assert set(pipe.prompts) <= set(all_captions(SELECTION_CAPTIONS))
    assert "<- default" in format_defaults(defaults)
    json.dumps(defaults)


def test_defaults_are_never_chosen_on_the_reported_prompts():
    with pytest.raises(ValueError, match="seed 0"):
        choose_defaults(SettingPipeline((1, 3.0, 0.0)), seed=0)


def test_pipeline_cli_and_studio_start_at_the_card_defaults(tmp_path):
    from eflow_core.pipeline import EFlowPipeline
    from studio.standin import write_standin_checkpoint

    folder = write_standin_checkpoint(tmp_path / "m", preset="tiny", model_overrides={"text_dim": 384})
    plain = EFlowPipeline.from_pretrained(folder, device="cpu")
    assert plain.default_steps == 4 and plain.flow.config.guidance_t_min == 0.8
    card = json.loads((folder / "model_card.json").read_text())
    card["defaults"] = {"steps": 2, "guidance": 3.0, "guidance_t_min": 0.0}
    (folder / "model_card.json").write_text(json.dumps(card))
    pipe = EFlowPipeline.from_pretrained(folder, device="cpu")
    assert (pipe.default_steps, pipe.default_guidance, pipe.flow.config.guidance_t_min) == (2, 3.0, 0.0)
    result = pipe(prompt="a red circle moving left on a black background")
    assert (result.steps, result.guidance, result.nfe) == (2, 3.0, 2)

    from eflow_core.cli import build_parser
    args = build_parser().parse_args(["sample", "--checkpoint", str(folder), "--prompt", "x"])
    assert args.steps is None and args.guidance is None               # the pipeline's (the card's) defaults

    from studio.callbacks import Callbacks
    from studio.registry import ModelRegistry
    from studio.service import OutputStore, StudioService

    service = StudioService(ModelRegistry(), OutputStore(tmp_path / "out", keep=2), str(folder))
    entry = service.model(str(folder))
    summary, prompt, classes, examples, steps, guidance, *_ = Callbacks(service).controls_for(entry)
    assert steps["value"] == 2 and guidance["value"] == 3.0


def test_adherence_differences_within_the_noise_go_to_the_lower_probe_fd():
    from eflow_core.metrics.defaults import pick_default, tie_margin

    def row(steps, adherence, fd):
        return {"steps": steps, "guidance": 4.0, "guidance_t_min": 0.8, "adherence": {"all": adherence}, "probe_fd": fd}

    assert abs(tie_margin(0.9, 100) - 0.06) < 1e-9 and tie_margin(1.0, 300) == 1 / 300
    # 2 of 100 prompts apart: noise, the lower probe-FD wins; 20 apart: adherence wins
    assert pick_default([row(2, 0.90, 10.0), row(4, 0.88, 5.0)], 100)["steps"] == 4
    assert pick_default([row(2, 0.90, 10.0), row(4, 0.70, 5.0)], 100)["steps"] == 2
    # the same 2 points over 3,000 prompts are a real difference
    assert pick_default([row(2, 0.90, 10.0), row(4, 0.88, 5.0)], 3000)["steps"] == 2
    # equal scores: fewer steps
    assert pick_default([row(4, 0.9, 5.0), row(1, 0.9, 5.0)], 100)["steps"] == 1
