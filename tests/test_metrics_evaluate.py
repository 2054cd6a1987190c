"""evaluate() + format_table() with fake pipelines that satisfy the EFlowPipeline contract.

- "faithful": renders a fresh real clip of what each prompt asks for -> adherence ~ 100%, FD near the floor;
- "noise": uniform noise clips -> adherence ~ chance, FD large;
- "wrong": real clips of random other attributes -> FD small-ish (real-looking) but adherence low.
Uses the shipped probe in checkpoints/probe-shapes/ (trained by `eflow train-probe`).
"""
import json

import numpy as np
import pytest
import torch

from eflow_core.data.captions import HELDOUT_SETS, named_attributes
from eflow_core.data.shapes import ATTRIBUTES, render_shape_clip
from eflow_core.metrics.evaluate import evaluate, evaluate_caption_sets, format_table, format_tables
from eflow_core.metrics.probe import default_probe_dir, load_probe
from eflow_core.metrics.video import to_uint8

pytestmark = pytest.mark.skipif(not (default_probe_dir("shapes") / "probe.json").is_file(),
                                reason="no shipped shapes probe (train: eflow train-probe)")

def parse_shapes_caption(caption: str) -> dict[str, str]:
    """The one value of each attribute the caption names (in any word form of any caption set)."""
    named = named_attributes(caption)
    assert all(len(values) == 1 for values in named.values()), (caption, named)
    return {key: values[0] for key, values in named.items()}


class FakePipeline:
    world = "shapes"
    kind = "text"
    default_size = (16, 64, 64)
    default_guidance = 4.0
    device = "cpu"

    def __init__(self, mode: str):
        self.mode = mode
        self.card = {"name": f"fake-{mode}"}
        self.calls = []

    def evaluations(self, steps, sampler="solution"):
        return steps * (2 if sampler == "ode" else 1)

    def generate_batch(self, prompts=None, labels=None, steps=4, guidance=None, seed=0, sampler="solution"):
        assert prompts is not None and labels is None
        self.calls.append((len(prompts), steps, seed))
        clips = []
        for b, prompt in enumerate(prompts):
            rng = np.random.default_rng((seed + b, 12345))
            if self.mode == "noise":
                clips.append(torch.from_numpy(rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)))
                continue
            attrs = parse_shapes_caption(prompt)
            if self.mode == "wrong":
                attrs = {k: ATTRIBUTES[k][(ATTRIBUTES[k].index(v) + 1) % len(ATTRIBUTES[k])]
                         for k, v in attrs.items()}
            video, _ = render_shape_clip(**attrs, num_frames=16, size=64, rng=rng)
            clips.append(to_uint8(video[None])[0])
        return torch.stack(clips), {"total": 0.0}, None  # the lead's pipeline returns (video, timings, gates)


@pytest.fixture(scope="module")
def probe():
    return load_probe("shapes")


@pytest.mark.parametrize("captions", HELDOUT_SETS)
def test_caption_parser_reads_eval_captions(captions):
    from eflow_core.data.shapes import ShapesWorld

    ds = ShapesWorld(30, split="eval", num_frames=2, size=16, captions=captions)
    for i in range(30):
        item = ds[i]
        assert parse_shapes_caption(item["caption"]) == item["attributes"], item["caption"]


@pytest.fixture(scope="module")
def results(probe):
    torch.set_num_threads(1)
    kw = dict(steps=(1, 2), num_prompts=48, seed=0, batch_size=16, probe=probe, progress=False)
    return {mode: evaluate(FakePipeline(mode), **kw) for mode in ("faithful", "noise", "wrong")}


def test_faithful_pipeline_scores_high(results):
    r = results["faithful"]
    assert [row["steps"] for row in r["rows"]] == [1, 2]
    for row in r["rows"]:
        for key in ("color", "shape", "motion", "background", "all"):
            assert row["adherence"][key] >= 0.9, (key, row["adherence"])
        assert row["adherence"]["count"] == 48
        assert row["probe_fd"] < 3 * r["real_fd_floor"] + 1e-6
        assert row["latency_s_per_clip"] > 0 and row["nfe"] == row["steps"]


def test_noise_pipeline_scores_low(results):
    faithful, noise = results["faithful"]["rows"][0], results["noise"]["rows"][0]
    assert noise["adherence"]["all"] < 0.1
    assert noise["adherence"]["color"] < 0.5 and noise["adherence"]["shape"] < 0.7
    assert noise["probe_fd"] > 5 * faithful["probe_fd"]  # at N=48 the real-vs-real floor is already ~20


def test_wrong_attributes_fail_adherence_not_realism(results):
    wrong, noise = results["wrong"]["rows"][0], results["noise"]["rows"][0]
    assert wrong["adherence"]["color"] < 0.1 and wrong["adherence"]["all"] < 0.1
    assert wrong["probe_fd"] < noise["probe_fd"]


def test_results_are_json_and_table_prints(results):
    r = results["faithful"]
    json.dumps(r)
    table = format_table(r)
    assert "probe-FD" in table and "colour" in table and "shape" in table and "motion" in table
    assert len([line for line in table.splitlines() if line.strip().startswith(("1 ", "2 "))]) == 2


def test_same_noise_seeds_across_step_counts(probe):
    pipe = FakePipeline("faithful")
    evaluate(pipe, steps=(1, 4), num_prompts=20, batch_size=8, probe=probe, progress=False)
    timed = pipe.calls[1:]  # the first call is the warm-up
    assert [c[2] for c in timed if c[1] == 1] == [c[2] for c in timed if c[1] == 4] == [0, 8, 16]


def test_bad_arguments(probe):
    with pytest.raises(ValueError, match="num_prompts"):
        evaluate(FakePipeline("faithful"), num_prompts=1, probe=probe, progress=False)
    with pytest.raises(ValueError, match="no probe metrics"):
        evaluate(FakePipeline("faithful"), world="mars", num_prompts=4, probe=probe, progress=False)


_ACTIONS_PROBE = (default_probe_dir("actions") / "probe.json").is_file()


class FakeActionsPipeline:
    world = "actions"
    kind = "class"
    default_size = (16, 64, 64)
    default_guidance = 4.0

    def __init__(self, mode: str):
        from eflow_core.data.actions import CLASSES

        self.mode, self.classes, self.card = mode, list(CLASSES), {"name": f"fake-actions-{mode}"}

    def evaluations(self, steps, sampler="solution"):
        return steps

    def generate_batch(self, prompts=None, labels=None, steps=4, guidance=None, seed=0, sampler="solution"):
        from eflow_core.data.actions import render_action_clip

        assert labels is not None and prompts is None
        clips = []
        for b, label in enumerate(labels):
            rng = np.random.default_rng((seed + b, 999))
            if self.mode == "noise":
                clips.append(rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8))
            else:
                clips.append(render_action_clip(self.classes[label], 16, 64, rng))
        return torch.from_numpy(np.stack(clips))  # the plain-tensor form of the contract


@pytest.mark.skipif(not _ACTIONS_PROBE, reason="no shipped actions probe")
def test_class_conditional_evaluation():
    torch.set_num_threads(1)
    probe = load_probe("actions")
    kw = dict(steps=(2,), num_prompts=30, batch_size=15, probe=probe, progress=False)
    good = evaluate(FakeActionsPipeline("faithful"), **kw)
    bad = evaluate(FakeActionsPipeline("noise"), **kw)
    assert good["rows"][0]["adherence"]["action"] >= 0.9 and bad["rows"][0]["adherence"]["action"] < 0.5
    assert good["rows"][0]["probe_fd"] * 5 < bad["rows"][0]["probe_fd"]
    assert "action" in format_table(good)


def test_eval_command_takes_sampler_and_guidance(tmp_path):
    """`python -m eflow_core eval --sampler ode --guidance 2`: the FM baseline's sampler from the command line."""
    from eflow_core.cli import main
    from studio.standin import write_standin_checkpoint

    model = write_standin_checkpoint(tmp_path / "tiny", preset="tiny")
    out = tmp_path / "eval.json"
    main(["eval", "--checkpoint", str(model), "--steps", "1,2", "--prompts", "2", "--sampler", "ode",
          "--guidance", "2", "--captions", "heldout-vocabulary", "--out", str(out)])
    by_set = json.loads(out.read_text())
    assert list(by_set) == ["heldout-vocabulary"]
    results = by_set["heldout-vocabulary"]
    assert results["sampler"] == "ode" and results["guidance"] == 2.0
    assert [row["nfe"] for row in results["rows"]] == [2, 4]     # Euler + CFG: 2 evaluations a step


def test_sample_sheet_lays_out_each_step_count_then_the_real_clip():
    from eflow_core.metrics.evaluate import _requests
    from eflow_core.metrics.sheet import CAPTION_HEIGHT, LABEL_WIDTH, sample_sheet
    from eflow_core.metrics.worlds import get_world

    pipe = FakePipeline("faithful")
    sheet = np.asarray(sample_sheet(pipe, steps=(4, 1), num_prompts=2, frames=3, scale=1))
    t, h, w = pipe.default_size
    lines = 3                                             # 4 steps, 1 step, real
    assert sheet.shape == (2 * (CAPTION_HEIGHT + lines * h), LABEL_WIDTH + 3 * w, 3)
    assert [c[1] for c in pipe.calls] == [4, 1]           # one batch per step count, in the order given
    prompts = _requests(get_world("shapes"), pipe, 2, 0, pipe.default_size)[0]   # the sheet's prompts
    clip = pipe.generate_batch(prompts=prompts, steps=4, seed=0)[0][1].numpy()   # prompt 1, 4 steps
    top = CAPTION_HEIGHT + lines * h + CAPTION_HEIGHT                             # second block, first line
    np.testing.assert_array_equal(sheet[top:top + h, LABEL_WIDTH:LABEL_WIDTH + w], clip[0])
    np.testing.assert_array_equal(sheet[top:top + h, LABEL_WIDTH + 2 * w:LABEL_WIDTH + 3 * w], clip[-1])
    with pytest.raises(ValueError, match="at least one step count"):
        sample_sheet(pipe, steps=())


def test_table_names_the_most_frequent_misreads(probe):
    results = evaluate(FakePipeline("wrong"), steps=(1,), num_prompts=24, batch_size=12, probe=probe, progress=False)
    row = results["rows"][0]
    for head, table in row["confusion"].items():           # every clip counted once per attribute it asked for
        assert sum(sum(probed.values()) for probed in table.values()) == 24
    table = format_table(results)
    assert "most frequent misreads at 1 step:" in table and " read as " in table


def test_caption_sets_show_the_same_clips_in_other_words(probe):
    pipe = FakePipeline("faithful")
    by_set = evaluate_caption_sets(pipe, steps=(1,), num_prompts=16, batch_size=8, probe=probe, progress=False)
    assert list(by_set) == list(HELDOUT_SETS)
    frames, vocab, *later_lists = (by_set[name] for name in HELDOUT_SETS)
    assert frames["captions"] == "heldout-frames" and vocab["captions"] == "heldout-vocabulary"
    assert [r["captions"] for r in later_lists] == ["heldout-vocabulary-2", "heldout-vocabulary-3"]
    assert all(r["rows"][0]["confusion"] == vocab["rows"][0]["confusion"] for r in later_lists)
    assert frames["real_fd_floor"] == vocab["real_fd_floor"]            # the same real clips behind the prompts
    assert frames["rows"][0]["confusion"] == vocab["rows"][0]["confusion"]   # same attributes, faithfully drawn
    table = format_tables(by_set)
    assert table.count("probe-FD: Fréchet") == len(HELDOUT_SETS)
    assert table.index("heldout-frames (held-out sentence frames, training words)") < table.index(
        "heldout-vocabulary (training sentence frames, held-out words)")
    json.dumps(by_set)
    with pytest.raises(ValueError, match="unknown caption set"):
        evaluate_caption_sets(pipe, ["heldout"], steps=(1,), num_prompts=4, probe=probe, progress=False)


def test_misreads_are_summarised_per_attribute(probe):
    results = evaluate(FakePipeline("wrong"), steps=(1,), num_prompts=24, batch_size=12, probe=probe, progress=False,
                       captions="heldout-vocabulary")
    lines = format_table(results).splitlines()
    start = lines.index("most frequent misreads at 1 step:")
    summary = lines[start + 1:start + 5]
    # "wrong" draws the next value of every attribute: each attribute's line names its own misreads
    assert [line.split()[0] for line in summary] == ["colour", "shape", "motion", "bg"]
    assert all(" read as " in line for line in summary)
    assert "red read as green" in summary[0] or "green read as blue" in summary[0]


def test_eval_command_reports_both_held_out_sets_and_the_card_keeps_them(tmp_path, capsys):
    """`eflow eval --write-card` on a tiny text stand-in: a table per held-out caption set, JSON keyed by set,
    both in the model card, and the studio's summary reads the card's prompt fidelity back."""
    from types import SimpleNamespace

    from eflow_core.cli import main
    from studio.readout import model_summary
    from studio.standin import write_standin_checkpoint

    model = write_standin_checkpoint(tmp_path / "tiny-text", preset="tiny", model_overrides={"text_dim": 384})
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(model), "--steps", "1,4", "--prompts", "4", "--out", str(out),
                 "--write-card"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("steps  NFE  probe-FD") == len(HELDOUT_SETS) and "heldout-vocabulary (" in printed
    by_set = json.loads(out.read_text())
    assert list(by_set) == list(HELDOUT_SETS) and all(len(r["rows"]) == 2 for r in by_set.values())
    card = json.loads((model / "model_card.json").read_text())
    assert card["eval"] == by_set and card["eval_table"] in printed
    pipe = SimpleNamespace(card=card, model=torch.nn.Linear(3, 2), default_size=(4, 16, 16), kind="text",
                           classes=[], world="shapes", device="cpu", default_steps=4)
    summary = model_summary(pipe, "tiny")
    assert "Prompt fidelity at 4 steps" in summary
    shape = 100 * by_set["heldout-vocabulary"]["rows"][1]["adherence"]["shape"]
    assert f"shape {shape:.0f}%" in summary.split("new words — ")[1].split(";")[0]
    assert main(["eval", "--checkpoint", str(model), "--steps", "1", "--prompts", "2", "--captions", "nope"]) == 2
