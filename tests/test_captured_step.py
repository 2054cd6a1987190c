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
def test_captured_step_skips_a_non_finite_step_on_the_device(tmp_path, monkeypatch):
    trainer = Trainer(_config(capture="true", max_bad_steps=100, steps=8), tmp_path, progress=False)
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
    `Trainer._update` (loss, backward, clip, AdamW, EMA); logs come back as tensors."""
    trainer = Trainer(_config(), tmp_path, progress=False, cpu=True)
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
