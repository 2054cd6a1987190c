"""FP8 linear layers (issue 26): e4m3 quantisation, the emulated product against nn.Linear, the DiT conversion."""
import copy

import pytest
import torch
from torch import nn

from eflow_core.conditioning import TextCondition
from eflow_core.config import MODEL_PRESETS
from eflow_core.model.dit import VideoDiT
from eflow_core.model.fp8 import (
    E4M3,
    E4M3_MAX,
    Float8Linear,
    convert_linear_to_fp8,
    dequantize_e4m3,
    quantize_e4m3,
    resolve_fp8_backend,
)


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_quantize_round_trips_representable_values_exactly():
    """Rows of e4m3 values times a power of two, each row's largest |value| 448: the per-row scale is
    that power of two, so quantising gives back the same codes and dequantising the same numbers."""
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 256, (6, 40), dtype=torch.uint8, generator=generator).view(E4M3).float()
    codes = torch.where(codes.isnan(), torch.zeros_like(codes), codes).clamp(-E4M3_MAX / 2, E4M3_MAX / 2)
    codes[:, 7] = E4M3_MAX * torch.tensor([1, -1, 1, 1, -1, 1.0])        # each row's amax is 448
    powers = 2.0 ** torch.tensor([-12, -3, 0, 1, 5, 9.0])[:, None]
    x = codes * powers
    q, scale = quantize_e4m3(x)
    assert q.dtype == E4M3 and scale.shape == (6, 1)
    assert torch.equal(scale, powers)
    assert torch.equal(q.float(), codes)
    assert torch.equal(dequantize_e4m3(q, scale), x)
    q_tensor, scale_tensor = quantize_e4m3(x[2:3], per_row=False)         # per tensor: the same for one row
    assert scale_tensor.shape == (1, 1) and torch.equal(dequantize_e4m3(q_tensor, scale_tensor), x[2:3])


def test_quantize_saturates_and_survives_zero_rows():
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 1e-30]])
    q, scale = quantize_e4m3(x)
    assert torch.isfinite(q.float()).all() and torch.isfinite(scale).all()
    assert torch.equal(dequantize_e4m3(q, scale)[0], torch.zeros(3))
    assert q.float().abs().max() == E4M3_MAX


@pytest.mark.parametrize("activation_scaling", ["row", "tensor"])
def test_emulated_fp8_linear_is_close_to_linear(activation_scaling):
    """Fresh random input through a random layer: e4m3 keeps 3 mantissa bits (relative rounding up to
    1/16 per operand), so the output is within a few percent of nn.Linear, but not equal to it."""
    torch.manual_seed(0)
    linear = nn.Linear(256, 384)
    with torch.no_grad():                                                # output channels of different magnitude
        linear.weight.mul_(torch.exp(torch.randn(384, 1)))
    layer = Float8Linear.from_linear(linear, activation_scaling=activation_scaling)
    assert layer.backend == "emulated" and layer.weight_fp8.dtype == E4M3 and layer.weight_scale.shape == (1, 384)
    x = torch.randn(3, 37, 256) * torch.exp(torch.randn(3, 37, 1))       # rows of different magnitude
    with torch.no_grad():
        y, reference = layer(x), linear(x)
    assert y.shape == reference.shape == (3, 37, 384) and y.dtype == x.dtype
    error = relative_l2(y, reference)
    assert 1e-3 < error < 0.06, error
    # the emulation is exactly "dequantise, then multiply in fp32"
    q, scale = quantize_e4m3(x.reshape(-1, 256), per_row=activation_scaling == "row")
    manual = dequantize_e4m3(q, scale) @ layer.dequantized_weight().t() + linear.bias
    assert torch.allclose(y.reshape(-1, 384), manual, rtol=1e-6, atol=1e-6)


def test_scaled_mm_path_matches_the_emulation_where_torch_runs_it():
    """torch._scaled_mm's argument layout (column-major b, scale_a (M, 1), scale_b (1, N), bias in the
    epilogue) gives the emulation's numbers. Recent CPU builds run _scaled_mm too; skipped where not."""
    torch.manual_seed(1)
    linear = nn.Linear(64, 48).to(torch.bfloat16)
    x = torch.randn(40, 64, dtype=torch.bfloat16)                        # 40 rows: not a multiple of 16
    reference = Float8Linear.from_linear(linear)(x)
    for fused in (True, False):
        layer = Float8Linear.from_linear(linear, backend="scaled_mm", bias_in_epilogue=fused)
        try:
            y = layer(x)
        except (RuntimeError, NotImplementedError) as err:
            pytest.skip(f"torch._scaled_mm does not run here: {err}")
        assert y.dtype == torch.bfloat16 and relative_l2(y, reference) < 1e-2


def test_auto_backend_is_the_emulation_on_the_cpu():
    assert resolve_fp8_backend("auto", "cpu")[0] == "emulated"
    with pytest.raises(ValueError):
        resolve_fp8_backend("int8", "cpu")


def _tiny_text_dit() -> VideoDiT:
    """The tiny preset with text cross-attention, every zero-initialised layer (adaLN-Zero modulation,
    gates, final layer) given random weights: otherwise every block is the identity and the output 0."""
    torch.manual_seed(0)
    model = VideoDiT(MODEL_PRESETS["tiny"].replace(text_dim=16)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear) and not module.weight.any():
                nn.init.normal_(module.weight, std=0.08)
                nn.init.normal_(module.bias, std=0.02)
    return model


def test_conversion_swaps_the_block_projections_and_ffn_only():
    model = _tiny_text_dit()
    converted = copy.deepcopy(model)
    swapped = convert_linear_to_fp8(converted)
    expected = [f"{block}.{layer}" for block in ("encoder.0", "middle.0", "middle.1", "decoder.0")
                for layer in ("attn.proj_in.qkv", "attn.proj_out", "cross.q", "cross.proj_out", "ffn.0", "ffn.2")]
    assert swapped == expected
    modules = dict(converted.named_modules())
    assert all(isinstance(modules[name], Float8Linear) for name in expected)
    kept = [name for name, m in modules.items() if type(m) is nn.Linear]
    assert all(name.endswith(("modulation.1", "attn.gate", "cross.kv")) or not name.startswith(
        ("encoder", "middle", "decoder")) for name in kept), kept
    for name in ("patch_embed", "fuse", "final.linear", "text_proj.0", "pooled_proj", "time_embed.mlp.0"):
        assert type(modules[name]) is nn.Linear, name
    assert convert_linear_to_fp8(converted) == []                        # idempotent: nothing left to swap
    # a skip list of its own
    other = copy.deepcopy(model)
    assert not any(".ffn." in name for name in convert_linear_to_fp8(other, skip=("modulation", "attn.gate",
                                                                                  "cross", "ffn")))


def test_converted_dit_output_stays_close():
    model = _tiny_text_dit()
    converted = copy.deepcopy(model)
    convert_linear_to_fp8(converted)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 4, 8, 8, generator=generator)
    t, s, w = torch.tensor([0.9, 0.4]), torch.zeros(2), torch.full((2,), 4.0)
    cond = TextCondition(torch.randn(2, 6, 16, generator=generator), torch.ones(2, 6, dtype=torch.bool))
    with torch.no_grad():
        reference, out = model(x, t, s, cond, w), converted(x, t, s, cond, w)
    assert reference.std() > 0.1                                         # the blocks are not the identity
    error = relative_l2(out, reference)
    assert 1e-3 < error < 0.12, error
