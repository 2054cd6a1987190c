"""The captured training step (eflow_core/captured_step.py, issue 24): on a GPU a replayed CUDA graph
trains like the eager step, across App. C's phase change, and skips a non-finite step on the device.
On the CPU: capture=true is a clear error, and the eager update never reads a device value back."""
import pytest
import torch

from eflow_core.config import load_train_config
from eflow_core.train import Trainer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


def _config(**overrides):
    items = [f"{k}={v}" for k, v in overrides.items()]
    # 20 steps: the 75%-drop phase until step 16, then dense + MVA; 3 eager warm-up steps per phase
    return load_train_config("tiny", ["steps=20", "checkpoint_every=100", "log_every=5", "data.num_samples=64",
                                      "mixed_precision=no"] + items)


def _train(tmp_path, capture: bool):
    trainer = Trainer(_config(capture=str(capture).lower()), tmp_path, progress=False)
    history = trainer.fit()
    return trainer, [row["loss"] for row in history]


@cuda
def test_replayed_graph_trains_like_the_eager_step(tmp_path):
    eager, eager_losses = _train(tmp_path / "eager", False)
    captured, captured_losses = _train(tmp_path / "captured", True)
    assert captured.captured.key[0] == 1 and captured.captured.graph is not None   # phase 2 was captured too
    # fp32: the same kernels and random numbers (each replay draws from the generator's state, as eager does)
    torch.testing.assert_close(torch.tensor(captured_losses), torch.tensor(eager_losses), rtol=2e-3, atol=1e-5)
    for name, value in eager.raw_model.state_dict().items():
        torch.testing.assert_close(captured.raw_model.state_dict()[name], value, rtol=2e-3, atol=2e-5, msg=name)
    for name, value in eager.ema.shadow.items():
        torch.testing.assert_close(captured.ema.shadow[name], value, rtol=2e-3, atol=2e-5, msg=name)


@cuda
def test_captured_run_in_intervals_trains_like_one_eager_call(tmp_path):
    """The time-to-quality pattern: `fit` in intervals, each call starting fresh DataLoader workers, whose
    batches the pin-memory thread pins while the step is captured; then a new trainer (as in the next
    device call) resumes the checkpoint, with new optimizer and EMA tensors, and captures on them."""
    eager, eager_losses = _train(tmp_path / "eager", False)
    config = _config(capture="true", **{"data.num_workers": 2})
    first = Trainer(config, tmp_path / "intervals", progress=False)
    history = first.fit(stop_at=6) + first.fit(stop_at=12)
    # a new process's trainer: loads model, EMA and AdamW state (step counts on the GPU), then captures
    trainer = Trainer(config, tmp_path / "intervals", progress=False)
    history += trainer.fit()                       # phase 1 starts at step 16
    assert trainer.step == 20 and trainer.captured.key[0] == 1 and trainer.captured.graph is not None
    torch.testing.assert_close(torch.tensor([row["loss"] for row in history]),
                               torch.tensor(eager_losses), rtol=2e-3, atol=1e-5)
    for name, value in eager.raw_model.state_dict().items():
        torch.testing.assert_close(trainer.raw_model.state_dict()[name], value, rtol=2e-3, atol=2e-5, msg=name)
    for name, value in eager.ema.shadow.items():       # a stale graph would update the EMA tensors it replaced
        torch.testing.assert_close(trainer.ema.shadow[name], value, rtol=2e-3, atol=2e-5, msg=name)


@cuda
def test_captured_step_skips_a_non_finite_step_on_the_device(tmp_path, monkeypatch):
    trainer = Trainer(_config(capture="true", max_bad_steps=100), tmp_path, progress=False)
    before = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    real_loss = trainer.flow.loss_tensors
    monkeypatch.setattr(trainer.flow, "loss_tensors",
                        lambda *a, **k: (lambda loss, logs: (loss * float("nan"), logs))(*real_loss(*a, **k)))
    history = trainer.fit()
    assert trainer.captured.graph is not None and all(row["skipped"] == 1 for row in history)
    after = trainer.raw_model.state_dict()
    assert all(torch.equal(before[k].to(after[k].device), after[k]) for k in before)


def test_capture_on_the_cpu_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="capture=true records CUDA graphs"):
        Trainer(_config(capture="true"), tmp_path, progress=False, cpu=True)


def test_eager_update_never_reads_the_device(tmp_path, monkeypatch):
    """What makes the step capturable: no .item(), no bool() / float() of a tensor, no .cpu() inside
    `Trainer._update` (loss, backward, clip, AdamW, EMA); logs come back as tensors. On the GPU where
    there is one (accelerate keeps one device per process)."""
    trainer = Trainer(_config(), tmp_path, progress=False)
    trainer.apply_phase(0)
    x0, cond = trainer.encode_batch(__import__("eflow_core.data", fromlist=["collate"]).collate(
        [trainer.dataset[i] for i in range(4)]))
    reads = []
    for name in ("item", "tolist", "cpu", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, spy)
    logs = trainer._update(x0, cond, 0.05, 0.99)
    monkeypatch.undo()
    assert reads == [], f"the update read tensors back on the host: {sorted(set(reads))}"
    assert isinstance(logs["loss"], torch.Tensor) and isinstance(logs["grad_norm"], torch.Tensor)
    assert logs["skipped"].item() == 0.0


class _StandInGraph:
    """torch.cuda.CUDAGraph on the CPU: `replay` re-runs the recorded body (set after the capture)."""

    def __init__(self):
        self.body = None

    def replay(self):
        self.body()


@pytest.fixture
def stand_in_streams(monkeypatch):
    """torch.cuda's streams on the CPU: every Stream is the "side" stream; returns the names of the streams
    that `torch.cuda.stream` entered, in order."""
    import contextlib
    import types

    entered = []
    monkeypatch.setattr(torch.cuda, "Stream", lambda: types.SimpleNamespace(wait_stream=lambda s: None, name="side"))
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: entered.append(stream.name) or contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: types.SimpleNamespace(wait_stream=lambda s: None))
    return entered


@pytest.mark.usefixtures("stand_in_streams")
def test_captured_step_plumbing_with_a_stand_in_graph(monkeypatch):
    """On the CPU, with torch.cuda's graph calls standing in: eager warm-up calls, then every replay
    runs on this call's inputs (static buffers filled, text padded), logs come back packed, and a new
    phase or shape starts a new graph."""
    import contextlib

    from eflow_core.captured_step import CapturedStep
    from eflow_core.conditioning import TextCondition

    monkeypatch.setattr(torch.cuda, "CUDAGraph", _StandInGraph)
    modes = []
    monkeypatch.setattr(torch.cuda, "graph", lambda graph, capture_error_mode: modes.append(capture_error_mode)
                        or contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    calls = []

    def update(x0, cond, ratio, decay):           # pure: what a replay computes from the static inputs
        calls.append(x0.data_ptr())
        tokens = (cond.tokens * cond.mask[..., None]).sum()
        return {"loss": x0.sum() * ratio, "decay": torch.as_tensor(decay), "text": tokens,
                "length": cond.mask.sum().float(), "n_fm": 3}

    step = CapturedStep(update, text_length=6, warmup=2)
    original = step._capture

    def capture(*args):
        original(*args)
        step.graph.body = step._record
    step._capture = capture
    for k in range(6):
        phase = 0 if k < 4 else 1
        x0 = torch.randn(2, 3, 4)
        length = 3 + k % 3
        cond = TextCondition(torch.randn(2, length, 5), torch.rand(2, length) > 0.3)
        ratio, decay = 0.1 / (k + 1), 0.9 + k / 100
        logs = step(phase, x0, cond, ratio, decay)
        torch.testing.assert_close(logs["loss"], x0.sum() * ratio)
        torch.testing.assert_close(logs["text"], (cond.tokens * cond.mask[..., None]).sum())
        assert logs["length"].item() == cond.mask.sum().item() and logs["n_fm"] == 3
        assert logs["decay"].item() == pytest.approx(decay)
        replayed = step.graph is not None
        # calls 1-2 of a phase run eagerly on the caller's tensors; from the 3rd, on the static buffers
        assert replayed == (k in (2, 3)), k
        assert ("x0" in step.inputs and calls[-1] == step.inputs["x0"].data_ptr()) == replayed
    assert step.key[0] == 1 and step.graph is None          # phase 1 is still warming up: its own graph later
    assert modes == ["thread_local"]          # the pin-memory thread may allocate while this one records
    step(0, torch.randn(2, 3, 4), cond, 0.1, 0.9)
    step(0, torch.randn(2, 3, 4), cond, 0.1, 0.9)
    step(0, torch.randn(2, 3, 4), cond, 0.1, 0.9)
    assert step.graph is not None
    step.reset()                              # as after a resume: the next calls warm up and capture anew
    x0 = torch.randn(2, 3, 4)
    step(0, x0, cond, 0.1, 0.9)
    assert step.graph is None and calls[-1] == x0.data_ptr()
    with pytest.raises(ValueError, match="more than the text length 6"):
        step(1, torch.randn(2, 3, 4), TextCondition(torch.randn(2, 7, 5), torch.ones(2, 7, dtype=torch.bool)), 0.1, 0.9)


def test_a_ddp_step_follows_pytorchs_capture_rules(monkeypatch, stand_in_streams):
    """Several processes: 11 eager DDP steps before the capture, a thread-local capture (NCCL's watchdog
    thread polls its events meanwhile), DDP built on the capture side stream; fewer warm-up steps are
    refused. fsdp=true with capture=true is a clear error."""
    from eflow_core.captured_step import CapturedStep

    assert CapturedStep(lambda *a: {}).warmup == 3
    ddp = CapturedStep(lambda *a: {}, processes=2)
    assert ddp.warmup == CapturedStep.DDP_WARMUP == 11 and ddp.capture_mode == "thread_local"
    with ddp.setup_stream():
        pass
    assert stand_in_streams == ["side"]
    with pytest.raises(ValueError, match="at least 11 eager steps"):
        CapturedStep(lambda *a: {}, processes=2, warmup=3)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ValueError, match="not fsdp=true"):
        Trainer._check_capture(_config(capture="true", fsdp="true"), cpu=False)
    assert Trainer._check_capture(_config(capture="true"), cpu=False)


def test_a_tensor_learning_rate_survives_state_json():
    """A captured step's lr is a device tensor that the scheduler fills in place; the scheduler's and the
    optimizer's states go to state.json as floats, and after loading them the same tensor is filled."""
    import json

    from eflow_core.checkpoint import flatten_optimizer_state, tensors_to_floats, unflatten_optimizer_state

    def build():
        param = torch.nn.Parameter(torch.randn(3))
        optimizer = torch.optim.AdamW([param], lr=torch.tensor(1e-3))
        return param, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10))

    param, optimizer, scheduler = build()
    for _ in range(3):
        param.grad = torch.randn(3)
        optimizer.step()
        scheduler.step()
    tensors, rest = flatten_optimizer_state(optimizer.state_dict())
    saved = json.loads(json.dumps({"scheduler": tensors_to_floats(scheduler.state_dict()), "optimizer": rest}))
    _, resumed, resumed_scheduler = build()
    resumed.load_state_dict(unflatten_optimizer_state(tensors, saved["optimizer"]))
    lr = resumed.param_groups[0]["lr"] = torch.tensor(float(resumed.param_groups[0]["lr"]))   # as Trainer.resume
    resumed_scheduler.load_state_dict(saved["scheduler"])
    scheduler.step()
    resumed_scheduler.step()
    assert resumed.param_groups[0]["lr"] is lr and torch.is_tensor(optimizer.param_groups[0]["lr"])
    assert lr.item() == pytest.approx(optimizer.param_groups[0]["lr"].item()) == pytest.approx(5e-4)


def test_resume_of_the_checkpoint_just_written_keeps_the_tensors(tmp_path, monkeypatch):
    """fit, stop, fit again (time_to_quality's intervals): the second resume reads only the counters of the
    checkpoint this trainer wrote at its step, so a captured graph keeps the tensors it recorded. A new
    trainer on the same folder loads them, and has the same weights."""
    import eflow_core.train as train

    trainer = Trainer(_config(), tmp_path, progress=False, cpu=True)
    trainer.fit(stop_at=4)
    loads, real_load = [], train.load_tensors
    monkeypatch.setattr(train, "load_tensors", lambda *a, **k: loads.append(a[0].name) or real_load(*a, **k))
    ema = dict(trainer.ema.shadow)
    assert trainer.resume() and loads == [] and trainer.step == 4
    assert all(trainer.ema.shadow[k] is v for k, v in ema.items())
    fresh = Trainer(_config(), tmp_path, progress=False, cpu=True)
    assert fresh.resume() and fresh.step == 4 and "ema.safetensors" in loads
    for name, value in trainer.ema.shadow.items():
        assert torch.equal(fresh.ema.shadow[name], value), name
