"""The studio's pieces without a server: request checking, generation, compare, gates, errors, model cache.

Uses the shipped `shapes-t2v` when checkpoints/ has it, else an untrained stand-in written to a temp dir
(`studio.standin`), so the tests pass before and after the trained model lands.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from eflow_core.pipeline import PipelineError, check_seed
from studio import plots
from studio.examples import DEFAULT_PROMPT, example_prompts
from studio.readout import defect_readout, latency_readout, speedup_readout
from studio.service import (RequestError, condition_for, parse_float, parse_int, parse_seed, parse_size,
                            size_options)
from studio.standin import shipped_or_standin, write_standin_checkpoint

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These models are small: one thread is as fast, and immune to OpenMP spin-waits on a busy machine
    (two threads on an oversubscribed 2-core box made the 50-step baseline 25x slower, measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    """The shipped shapes-t2v, or an untrained stand-in of the same preset."""
    return shipped_or_standin(tmp_path_factory.mktemp("standin-t2v"))


@pytest.fixture(scope="module")
def service(model_path, tmp_path_factory):
    from studio.registry import ModelRegistry
    from studio.service import StudioService
    from studio.storage import OutputStore

    registry = ModelRegistry(device="cpu", capacity=2)
    svc = StudioService(registry, OutputStore(tmp_path_factory.mktemp("outputs"), keep=4), model_path)
    svc.default_model = svc.model(model_path).key
    return svc


@pytest.fixture(scope="module")
def callbacks(service):
    from studio.callbacks import Callbacks

    return Callbacks(service)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """An untrained `tiny` text model (4 frames at 16x16): the 50-step baseline in about a second."""
    return str(write_standin_checkpoint(tmp_path_factory.mktemp("standin-tiny"), preset="tiny",
                                        model_overrides={"text_dim": 384}))


@pytest.fixture(scope="module")
def class_model(tmp_path_factory) -> str:
    return str(write_standin_checkpoint(tmp_path_factory.mktemp("standin-cls"), preset="actions-b"))


def _frames(path) -> np.ndarray:
    from eflow_core.data.video import read_video

    return read_video(path)


# ---------------------------------------------------------------- parsing (no model)
@pytest.mark.parametrize("value, expected", [(4, 4), (4.0, 4), ("4", 4), (" 8 ", 8), (np.int64(3), 3)])
def test_parse_int_accepts_whole_numbers(value, expected):
    assert parse_int(value, "steps", 1, 8) == expected


@pytest.mark.parametrize("value", [0, 9, 99, -1, 2.5, float("nan"), float("inf"), "four", None, True, "", [4]])
def test_parse_int_refuses_with_one_sentence(value):
    with pytest.raises(RequestError) as err:
        parse_int(value, "steps", 1, 8)
    message = str(err.value)
    assert message.startswith("steps must be") and "\n" not in message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e9, 0.5, "nan", None])
def test_parse_float_refuses_non_finite_and_out_of_range(value):
    with pytest.raises(RequestError, match="guidance must be"):
        parse_float(value, "guidance", 1.0, 8.0)


def test_parse_seed_and_size():
    assert parse_seed(None) == 0 and parse_seed("") == 0 and parse_seed(7.0) == 7
    assert parse_seed(2 ** 63 - 1) == 2 ** 63 - 1          # exact, beyond float precision
    assert parse_seed(-1) == -1                               # converted only: the pipeline owns the range
    with pytest.raises(PipelineError, match="seed"):
        check_seed(-1)
    with pytest.raises(RequestError):
        parse_seed("seven")
    assert parse_size("64×64") == 64 and parse_size("48x48") == 48 and parse_size(96) == 96
    assert parse_size(None) is None and parse_size("") is None


def test_examples_use_the_shapes_vocabulary():
    from eflow_core.data.shapes import BACKGROUNDS, COLORS, SHAPES

    prompts = example_prompts(8)
    assert len(prompts) == len(set(prompts)) == 8
    text = " ".join(prompts)
    for word in SHAPES + COLORS + BACKGROUNDS + ["left", "right", "up", "down", "grow", "shrink"]:
        assert word in text, word
    assert DEFAULT_PROMPT == "a red circle moving right on a black background"


def test_lexicon_examples_read_as_training_words():
    from eflow_core.data.captions import named_attributes
    from eflow_core.text.lexicon import lexicon_for_world
    from studio.examples import LEXICON_EXAMPLES

    lexicon = lexicon_for_world("shapes")
    expected = [{"color": ["red"], "shape": ["circle"], "motion": ["moving down"], "background": ["black"]},
                {"color": ["green"], "shape": ["square"], "motion": ["moving up"], "background": ["white"]}]
    for prompt, attributes in zip(LEXICON_EXAMPLES, expected):
        rewrite = lexicon.rewrite(prompt)
        assert rewrite.substitutions, prompt                     # words the model never trained on ...
        assert named_attributes(rewrite.text) == attributes, rewrite.text    # ... read as the intended values


def test_latency_readout_shows_the_rewrite_and_the_words_left_as_typed():
    from types import SimpleNamespace

    from eflow_core.text.lexicon import Rewrite

    def readout(read_as):
        return latency_readout(SimpleNamespace(timings={"text": 0.01, "steps": [0.1], "decode": 0.0, "total": 0.11},
                                               sampler="solution", steps=1, nfe=1, tokens=4, device="cpu",
                                               read_as=read_as))

    both = readout(Rewrite("a red spike", (("scarlet", "red", "colour name"),), ("spike",))).splitlines()
    assert both[-3:] == ["read as: a red spike", "  (words the model never trained on: scarlet -> red)",
                         "  never trained on, left as typed: spike"]
    unplaced_only = readout(Rewrite("a red spike", (), ("spike",))).splitlines()
    assert unplaced_only[-1] == "  never trained on, left as typed: spike" and "read as" not in unplaced_only[-2]
    assert "read as" not in readout(None) and "left as typed" not in readout(None)


def test_plots_import_without_gradio():
    """Notebooks import studio.plots; it must not pull gradio in."""
    code = "import sys, studio.plots, studio.readout, studio.examples; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_gate_figures_from_synthetic_maps():
    rng = np.random.default_rng(0)
    gates = {0: rng.random((4, 3, 5, 2)), 2: rng.random((4, 3, 5, 2))}
    assert plots.gate_layers(gates) == [0, 2]
    fig = plots.gate_heatmaps(gates, 2, 9)                    # frame clipped into range
    assert len(fig.data) == 2 and np.allclose(fig.data[1].z, gates[2][3, ..., 1])
    strip = plots.gate_frame_strip(gates, 0)
    assert len(strip.data) == 8
    bars = plots.mean_gate_figure(gates, highlight=2)
    assert np.allclose(bars.data[0].y, [gates[0][..., 0].mean(), gates[2][..., 0].mean()])
    timings = {"text": 0.01, "steps": [0.1, 0.2], "decode": 0.003, "total": 0.32}
    assert list(plots.latency_figure(timings).data[0].y) == ["decode", "step 2", "step 1", "text"]
    assert len(plots.compare_figure(timings, timings).data) == 3


def test_storage_prunes_old_outputs(tmp_path):
    from studio.storage import OutputStore

    store = OutputStore(tmp_path / "out", keep=2)
    video = np.zeros((4, 16, 16, 3), np.uint8)
    paths = [store.write(video, 8, f"clip{i}")[0] for i in range(4)]
    assert [p.exists() for p in paths] == [False, False, True, True]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.parent.name for p in paths[2:])


def test_shared_exclusive_lock_excludes_writers():
    from studio.registry import SharedExclusiveLock

    lock, events, inside = SharedExclusiveLock(), [], threading.Event()

    def reader():
        with lock.shared():
            inside.set()
            threading.Event().wait(0.2)
            events.append("reader done")

    t = threading.Thread(target=reader)
    t.start()
    inside.wait(5)
    with lock.exclusive():
        events.append("writer")
    t.join()
    assert events == ["reader done", "writer"]


# ---------------------------------------------------------------- with a model
def test_generate_writes_playable_mp4_and_gif(service, model_path):
    gen = service.generate(None, DEFAULT_PROMPT, None, 2, 4.0, 3)
    frames, height, width = gen.entry.pipe.default_size
    video = _frames(gen.mp4)
    assert video.shape == (frames, height, width, 3)
    assert Path(gen.gif).stat().st_size > 0
    text = latency_readout(gen.result)
    for word in ("NFE 2", "tokens", "text encoding", "step 1", "step 2", "decode", "total", "device cpu"):
        assert word in text


def test_progress_reports_every_step(service):
    seen = []
    service.generate(None, DEFAULT_PROMPT, None, 3, None, 0, progress=lambda f, d: seen.append((f, d)))
    assert [round(f, 3) for f, _ in seen] == [round(1 / 3, 3), round(2 / 3, 3), 1.0]
    assert seen[-1][1] == "step 3/3"


def test_request_errors_are_one_sentence(service):
    cases = [("", 4, 4.0, 0, "prompt is empty"), ("   ", 4, 4.0, 0, "prompt is empty"),
             ("x" * 301, 4, 4.0, 0, "characters long"), ("a", 0, 4.0, 0, "steps must"),
             ("a", 99, 4.0, 0, "steps must"), ("a", 4, float("nan"), 0, "guidance must"),
             ("a", 4, 1e6, 0, "guidance must"), ("a", 4, 4.0, -3, "seed must")]
    for prompt, steps, guidance, seed, expected in cases:
        with pytest.raises(PipelineError, match=expected):
            service.generate(None, prompt, None, steps, guidance, seed)


def test_size_options_and_other_sizes(service):
    pipe = service.model(None).pipe
    frames, sizes = size_options(pipe)
    f0, h0, _ = pipe.default_size
    assert f0 in frames and h0 in sizes
    small_f, small_s = min(frames), min(sizes)
    gen = service.generate(None, DEFAULT_PROMPT, None, 1, 4.0, 0, frames=small_f, size=f"{small_s}×{small_s}")
    assert _frames(gen.mp4).shape[:3] == (small_f, small_s, small_s)
    with pytest.raises(PipelineError):
        service.generate(None, DEFAULT_PROMPT, None, 1, 4.0, 0, frames=3, size=50)


def test_same_seed_same_video_and_cache_hits(service, model_path):
    a = service.generate(model_path, DEFAULT_PROMPT, None, 2, 4.0, 11)
    b = service.generate(None, DEFAULT_PROMPT, None, 2, 4.0, 11)
    assert a.entry is b.entry                                   # the registry served the same pipeline
    assert np.array_equal(a.result.video, b.result.video)
    assert np.array_equal(_frames(a.mp4), _frames(b.mp4))


def test_compare_runs_the_50_step_baseline(service, tiny_model):
    fast, slow = service.compare(tiny_model, DEFAULT_PROMPT, None, 2, 4.0, 0)
    assert fast.result.sampler == "solution" and fast.result.nfe == 2
    assert slow.result.sampler == "ode" and slow.result.steps == 50 and len(slow.result.timings["steps"]) == 50
    text = speedup_readout(fast.result, slow.result)
    assert "speed-up" in text and "NFE 2 vs" in text
    assert "steps 1-50" in latency_readout(slow.result)
    assert _frames(fast.mp4).shape == _frames(slow.mp4).shape == (4, 16, 16, 3)


def test_inspect_captures_gates_and_defect(callbacks, service):
    state, layer_upd, frame_upd, heat, strip, image, bars, defect = callbacks.inspect(
        None, DEFAULT_PROMPT, None, 2, 4.0, 0)
    gates = state["gates"]
    assert gates and all(g.ndim == 4 and g.shape[-1] == 2 for g in gates.values())
    assert all(0.0 <= g.min() and g.max() <= 1.0 for g in gates.values())
    assert layer_upd["minimum"] == min(gates) and layer_upd["maximum"] == max(gates)
    assert frame_upd["maximum"] == next(iter(gates.values())).shape[0]
    assert image.dtype == np.uint8 and image.shape[-1] == 3
    assert "semigroup defect" in defect
    # moving the layer slider onto a full-softmax block snaps to the nearest gated layer
    softmax_blocks = [i for i in range(max(gates) + 1) if i not in gates]
    views = callbacks.gate_view(state, softmax_blocks[0] if softmax_blocks else min(gates), 2)
    assert "layer" in views[0].layout.title.text and "latent frame 2/" in views[0].layout.title.text
    if softmax_blocks:
        assert "full softmax" in views[0].layout.title.text
    defect_value = service.model(None).pipe.semigroup_defect(prompt=DEFAULT_PROMPT, seed=0, guidance=4.0)
    assert math.isfinite(defect_value["defect_rms"]) and "relative" in defect_readout(defect_value)


def test_callbacks_turn_errors_into_gr_error(callbacks, monkeypatch):
    import gradio as gr

    with pytest.raises(gr.Error, match="prompt is empty"):
        callbacks.generate(None, "", None, 4, 4.0, 0, None, None)
    with pytest.raises(gr.Error, match="steps must"):
        callbacks.api_generate("a red circle", 99, 4.0, 0)

    def boom(*args, **kwargs):
        raise RuntimeError("internal detail\nTraceback...")

    monkeypatch.setattr(callbacks.service, "generate", boom)
    with pytest.raises(gr.Error) as err:
        callbacks.api_generate("a red circle", 4, 4.0, 0)
    assert "unexpected RuntimeError" in err.value.message and "internal detail" not in err.value.message


def test_bad_checkpoints_are_refused(callbacks, tmp_path, model_path):
    import gradio as gr

    with pytest.raises(gr.Error, match="no model at"):
        callbacks.load_model("shapes-t2v", str(tmp_path / "does-not-exist"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(gr.Error, match="not an EFlow checkpoint"):
        callbacks.load_model(None, str(tmp_path / "empty"))
    # a card for one model over the weights of another
    wrong = write_standin_checkpoint(tmp_path / "wrong", preset="tiny")
    card = json.loads((Path(wrong) / "model_card.json").read_text())
    from eflow_core.config import TRAIN_PRESETS

    card["config"] = TRAIN_PRESETS["shapes-t2v"].to_dict()
    (Path(wrong) / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(gr.Error, match="do not fit"):
        callbacks.load_model(None, str(wrong))
    (Path(wrong) / "model_card.json").write_text("{not json")
    with pytest.raises(gr.Error, match="not a usable EFlow checkpoint"):
        callbacks.load_model(None, str(wrong))
    # the good model still loads afterwards (from the cache)
    key, menu, summary, *_ = callbacks.load_model(None, model_path)
    assert Path(key).is_dir() and "parameters" in summary and menu["value"] == key


def test_class_model_takes_names_or_indices(callbacks, service, class_model):
    entry = service.model(class_model)
    pipe = entry.pipe
    assert pipe.kind == "class"
    assert condition_for(pipe, prompt="class 3") == {"label": 3}
    assert condition_for(pipe, prompt="CLASS 2") == {"label": 2}
    assert condition_for(pipe, prompt="4") == {"label": 4}
    assert condition_for(pipe, class_choice=1) == {"label": 1}
    for bad in ("juggling", "10", "-1", None):
        with pytest.raises(RequestError):
            condition_for(pipe, prompt=bad)
    gen = service.generate(class_model, None, 5, 1, None, 0)
    assert gen.result.video.shape[0] == pipe.default_size[0]
    key, menu, summary, prompt_upd, class_upd, examples_upd, *_ = callbacks.load_model(None, class_model)
    assert "class-conditional" in summary
    assert key in [value for _, value in menu["choices"]]           # the loaded folder joins the model menu
    assert prompt_upd["visible"] is False and class_upd["visible"] is True and examples_upd["visible"] is False
    assert [c[0] for c in class_upd["choices"]][:2] == ["class 0", "class 1"]


def test_compiled_pipeline_generates_what_the_eager_one_does(tiny_model):
    """from_pretrained(compile=...) compiles the blocks (aot_eager here: traced, no code generation):
    same frames, same seed, and gate capture still works through the compiled blocks."""
    from eflow_core.pipeline import EFlowPipeline

    eager = EFlowPipeline.from_pretrained(tiny_model, device="cpu")
    compiled = EFlowPipeline.from_pretrained(tiny_model, device="cpu", compile="aot_eager")
    a = eager("a red circle moves left on black", steps=2, seed=3, capture_gates=True)
    b = compiled("a red circle moves left on black", steps=2, seed=3, capture_gates=True)
    assert np.abs(a.video.astype(int) - b.video.astype(int)).max() <= 1
    assert b.gates and set(a.gates) == set(b.gates)


def test_model_summary_shows_the_cards_limitations():
    from types import SimpleNamespace

    import torch

    from studio.readout import model_summary

    pipe = SimpleNamespace(card={"steps": 12}, model=torch.nn.Linear(3, 2), default_size=(17, 64, 64), kind="text",
                           classes=[], world="shapes", device="cpu", default_steps=4)
    assert "⚠️" not in model_summary(pipe, "m") and "12 training steps" in model_summary(pipe, "m")
    pipe.card["limitations"] = "shape and motion are at chance"
    assert model_summary(pipe, "m").endswith("⚠️ shape and motion are at chance")


def test_model_summary_says_how_prompt_wording_was_evaluated():
    """The prompt-fidelity line comes from the card's held-out tables, and says nothing the card does not."""
    from types import SimpleNamespace

    import torch

    from studio.readout import model_summary, prompt_fidelity

    def row(steps, shape):
        return {"steps": steps, "adherence": {"color": 1.0, "shape": shape, "motion": 0.84, "background": 0.97,
                                              "all": 0.5, "count": 100}}

    by_set = {"heldout-frames": {"captions": "heldout-frames", "rows": [row(1, 0.8), row(4, 0.95)]},
              "heldout-vocabulary": {"captions": "heldout-vocabulary", "rows": [row(1, 0.5), row(4, 0.67)]}}
    pipe = SimpleNamespace(card={"steps": 12, "eval": by_set, "limitations": "see the card"},
                           model=torch.nn.Linear(3, 2), default_size=(17, 64, 64), kind="text", classes=[],
                           world="shapes", device="cpu", default_steps=4)
    text = model_summary(pipe, "m")
    line = next(part for part in text.split("  \n") if part.startswith("Prompt fidelity"))
    assert line.startswith("Prompt fidelity at 4 steps")
    assert "new sentence frames, training words — colour 100%, shape 95%, motion 84%, background 97%" in line
    assert "new words — colour 100%, shape 67%, motion 84%, background 97%" in line
    assert line.endswith("followed least well for shape (67%).") and text.endswith("⚠️ see the card")
    assert "shape 50%" in prompt_fidelity(pipe.card, steps=1) and "lexicon" not in line
    with_lexicon = {"eval": {name: {**r, "prompt_lexicon": True} for name, r in by_set.items()}}
    assert "Measured with the prompt lexicon" in prompt_fidelity(with_lexicon)
    # no evaluation, or a class model's: no line at all
    assert prompt_fidelity({"steps": 3}) is None and "Prompt fidelity" not in model_summary(
        SimpleNamespace(**{**vars(pipe), "card": {"steps": 3}}), "m")
    assert prompt_fidelity({"eval": {"rows": [{"steps": 4, "adherence": {"action": 0.9, "count": 30}}]}}) is None
    # a card evaluated before caption sets existed: prompts that reuse the training words, and it says so
    old = {"eval": {"rows": [row(1, 0.9), row(4, 0.99)]}}
    assert prompt_fidelity(old).startswith("Prompt fidelity: measured only on prompts that use its training words")
    assert "shape 99%" in prompt_fidelity(old) and "is not part of this evaluation" in prompt_fidelity(old)
    shipped = REPO / "checkpoints" / "shapes-t2v" / "model_card.json"
    if shipped.is_file():
        card = json.loads(shipped.read_text())
        if "rows" in card.get("eval", {}):                     # still the evaluation from before caption sets
            assert "measured only on prompts that use its training words" in prompt_fidelity(card)
