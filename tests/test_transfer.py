"""transfer.to_device: host tensors reach a CUDA device without the host waiting for the work queued
there, so the training loop prepares step n + 1 while the device runs step n (docs/BENCHMARKS.md §1k)."""
import pytest
import torch

from eflow_core.conditioning import TextCondition, condition_to, encode_condition
from eflow_core.data.resident import ResidentSet, dequantize, quantize
from eflow_core.data.shapes import ShapesWorld
from eflow_core.transfer import to_device


def test_on_the_host_it_is_a_plain_move():
    tensor = torch.randn(3, 5)
    assert to_device(tensor, "cpu") is tensor
    cond = condition_to(TextCondition(tensor, tensor > 0), "cpu", torch.bfloat16)
    assert cond.tokens.dtype == torch.bfloat16 and torch.equal(cond.mask, tensor > 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_steps_inputs_reach_the_gpu_while_it_is_busy_without_a_host_wait():
    """Under sync debug mode "error" any host wait raises: the caption states, labels and a resident
    batch are moved while matmuls are still queued, and only a plain `.to("cuda")` waits."""
    tokens, mask = torch.randn(512, 16, 384), torch.rand(512, 16) > 0.5
    labels = torch.randint(0, 9, (512,)).tolist()
    world = ShapesWorld(num_samples=23, num_frames=5, size=16, seed=3)
    resident = ResidentSet(world, "cuda", progress=False, chunk=8)
    busy = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(20):                                   # about 3 TFLOP queued ahead of the copies
            busy = busy @ busy / 64
        cond = condition_to(TextCondition(tokens, mask), "cuda", torch.bfloat16)
        label_tensor = encode_condition(None, None, labels, "cuda")
        batch = resident.batch([3, 1, 4])
        with pytest.raises(RuntimeError, match="synchroniz"):  # the check can fail: a pageable copy waits
            torch.ones(3).to("cuda")
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.synchronize()
    assert torch.equal(cond.tokens.cpu(), tokens.bfloat16()) and torch.equal(cond.mask.cpu(), mask)
    assert label_tensor.tolist() == labels
    expected = torch.stack([world[i]["video"] for i in (3, 1, 4)])
    assert torch.allclose(batch["video"].cpu(), dequantize(quantize(expected)), rtol=0, atol=1e-6)
