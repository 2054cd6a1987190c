"""VideoDiT and GLGA: the acceptance of issue 2 (equivalence under dropping, SPRINT token counts, weak
path, gates) and the math of RoPE and patching. Fresh random inputs each run."""
import dataclasses
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from eflow_core import kernels
from eflow_core.conditioning import TextCondition
from eflow_core.config import MODEL_PRESETS, PAPER_PARAMS, TRAIN_PRESETS, FlowConfig
from eflow_core.flow import SolutionFlow
from eflow_core.model.attention import RMS_EPS, GatedLocalGlobalAttention, rms_norm
from eflow_core.model.blocks import FeedForward
from eflow_core.model.dit import VideoDiT, count_parameters, structured_keep_indices
from eflow_core.model.rope import apply_rope, rope_tables
from eflow_core.train import Trainer


def randomize_(model: torch.nn.Module) -> torch.nn.Module:
    """Give every parameter (zero-initialised ones included) random values, so outputs depend on all of them."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def tiny_model(**changes) -> VideoDiT:
    return randomize_(VideoDiT(MODEL_PRESETS["tiny"].replace(**changes)))


def test_glga_on_kept_tokens_equals_full_sequence_without_dropped_keys():
    """GLGA on the kept tokens (original positions) == GLGA over the full sequence with dropped tokens
    removed from keys and values, read at the kept positions: the same function, not just a shape."""
    dim, heads, grid = 32, 4, (4, 4, 4)
    n = math.prod(grid)
    # the exact reference kernels: this pins GLGA's function; backend agreement is tests/test_kernels.py's job
    attn = randomize_(GatedLocalGlobalAttention(dim, heads, backend="reference")).double()
    x = torch.randn(2, n, dim, dtype=torch.float64)
    keep = structured_keep_indices(grid, (1, 2, 2), 0.75, 2, x.device)
    radius = 2 * grid[1] * grid[2] // 2

    gather = keep[..., None].expand(-1, -1, dim)
    kept_out = attn(torch.gather(x, 1, gather), rope_tables(keep, grid, dim // heads), keep, radius)

    # Full-sequence definition: every token's q, keys/values only from kept tokens.
    positions = torch.arange(n).expand(2, n)
    q, k, v = attn.proj_in(x, rope_tables(positions, grid, dim // heads))
    idx = keep[:, None, :, None].expand(-1, heads, -1, dim // heads)
    k_kept, v_kept = torch.gather(k, 2, idx), torch.gather(v, 2, idx)
    o_global = kernels.linear_attention_reference(q, k_kept, v_kept)
    o_local = kernels.window_attention_reference(q, k_kept, v_kept, positions, keep, radius)
    norm = lambda o, w: torch.nn.functional.rms_norm(o, (o.shape[-1],), w, 1e-6)
    gates = torch.sigmoid(attn.gate(x).view(2, n, heads, 2).transpose(1, 2))
    o = gates[..., :1] * norm(o_global, attn.norm_global_weight) + gates[..., 1:] * norm(o_local, attn.norm_local_weight)
    full_out = attn.proj_out(o.transpose(1, 2).reshape(2, n, dim))
    expected = torch.gather(full_out, 1, gather)
    torch.testing.assert_close(kept_out, expected, rtol=1e-9, atol=1e-9)


def test_dropping_changes_output_so_the_equivalence_test_is_not_vacuous():
    attn = randomize_(GatedLocalGlobalAttention(32, 4)).double()
    grid, n = (4, 4, 4), 64
    x = torch.randn(1, n, 32, dtype=torch.float64)
    positions = torch.arange(n)[None]
    full = attn(x, rope_tables(positions, grid, 8), positions, 16)
    keep = structured_keep_indices(grid, (1, 2, 2), 0.75, 1, x.device)
    kept = attn(torch.gather(x, 1, keep[..., None].expand(-1, -1, 32)), rope_tables(keep, grid, 8), keep, 16)
    assert not torch.allclose(kept, torch.gather(full, 1, keep[..., None].expand(-1, -1, 32)), atol=1e-6)


@pytest.mark.parametrize("grid,group", [((4, 4, 4), (1, 2, 2)), ((3, 5, 7), (1, 2, 2)), ((4, 6, 6), (2, 2, 2))])
def test_structured_sampling_counts_and_coverage(grid, group):
    n = math.prod(grid)
    keep = structured_keep_indices(grid, group, 0.75, 8, torch.device("cpu"))
    assert keep.shape == (8, math.ceil(n / 4))
    assert torch.all(keep[:, 1:] > keep[:, :-1]), "ids must be unique and in raster order"
    if all(g % k == 0 for g, k in zip(grid, group)):      # complete groups: the same count in every group
        t, h, w = grid
        group_id = ((keep // (h * w)) // group[0] * (h // group[1]) + ((keep // w) % h) // group[1]) \
            * (w // group[2]) + (keep % w) // group[2]
        per_group = math.prod(group) // 4
        counts = torch.stack([torch.bincount(row, minlength=n // math.prod(group)) for row in group_id])
        assert torch.all(counts == per_group)
    assert len({tuple(r.tolist()) for r in keep}) > 1, "sampling must be random across samples"


def test_middle_stack_token_counts_and_dense_equivalence():
    model = tiny_model()
    x = torch.randn(2, 4, 4, 8, 8)
    t, s, w = torch.rand(2), torch.rand(2) * 0.5, torch.full((2,), 3.0)
    seen = []
    hook = model.middle[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[1]))
    n = 4 * 4 * 4
    model.eval()
    dense = model(x, t, s, None, w)
    model.train()
    model.drop_ratio = 0.0
    train_dense = model(x, t, s, None, w)
    model.drop_ratio = 0.75
    dropped = model(x, t, s, None, w)
    hook.remove()
    assert seen == [n, n, math.ceil(n / 4)]
    torch.testing.assert_close(train_dense, dense)
    assert not torch.allclose(dropped, dense)


def test_weak_path_skips_middle_stack():
    model = tiny_model(num_classes=5)
    x = torch.randn(2, 4, 4, 8, 8)
    t, s, w = torch.rand(2), torch.rand(2) * 0.5, torch.full((2,), 3.0)
    labels = torch.tensor([1, -1])
    full = model(x, t, s, labels, w)
    model.zero_grad()
    weak = model(x, t, s, labels, w, weak=True)
    weak.square().mean().backward()
    assert not torch.allclose(weak, full)
    assert all(p.grad is None for p in model.middle.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_text_conditioning_and_null_prompt():
    model = tiny_model(text_dim=16)
    x = torch.randn(2, 4, 4, 8, 8)
    t, s, w = torch.rand(2), torch.rand(2) * 0.5, torch.full((2,), 3.0)
    tokens = torch.randn(2, 5, 16)
    with_text = model(x, t, s, TextCondition(tokens, torch.ones(2, 5, dtype=torch.bool)), w)
    null = model(x, t, s, TextCondition(tokens, torch.zeros(2, 5, dtype=torch.bool)), w)
    null_other_tokens = model(x, t, s, TextCondition(torch.randn(2, 5, 16), torch.zeros(2, 5, dtype=torch.bool)), w)
    assert torch.isfinite(null).all()
    assert not torch.allclose(with_text, null)
    torch.testing.assert_close(null, null_other_tokens)  # a null prompt ignores the masked tokens


def test_gates_in_unit_interval_and_capture_does_not_change_outputs():
    model = tiny_model()
    model.eval()
    x = torch.randn(2, 4, 4, 8, 8)
    args = (x, torch.rand(2), torch.rand(2) * 0.5, None, torch.full((2,), 3.0))
    plain = model(*args)
    with model.capture_gates() as gates:
        captured = model(*args)
    torch.testing.assert_close(plain, captured)
    glga_layers = [i for i, b in enumerate(model.blocks) if b.attention_kind == "glga"]
    assert sorted(gates) == glga_layers and len(glga_layers) >= 2
    for g in gates.values():
        assert g.shape == (2, 64, 4, 2)
        assert g.min() >= 0 and g.max() <= 1
    assert all(not b.attn.capture for b in model.blocks if b.attention_kind == "glga")


def test_softmax_block_interleaving():
    cfg = MODEL_PRESETS["B"]
    kinds = [cfg.block_attention(i) for i in range(cfg.depth)]
    assert kinds.count("softmax") == cfg.depth // cfg.softmax_every
    assert kinds[cfg.softmax_every - 1] == "softmax" and kinds[0] == "glga"


def test_patchify_roundtrip():
    model = VideoDiT(MODEL_PRESETS["demo"].replace(in_channels=12, patch_size=(2, 2, 2)))
    x = torch.randn(2, 12, 6, 8, 10)
    tokens = model.patchify(x)
    assert tokens.shape == (2, 3 * 4 * 5, 12 * 8)
    torch.testing.assert_close(model.unpatchify(tokens, (6, 8, 10)), x, rtol=0, atol=0)


def test_head_narrower_than_token_keeps_part_of_the_noise():
    """When token_values > dim the output F lies in range(W) of the final linear, so a sampler step
    x + (s - t) F moves x only inside range(W) (+ the bias): the orthogonal part of the starting noise
    survives every step exactly. Here 48 values per token, dim 32: 16 noise directions per token stay."""
    config = MODEL_PRESETS["tiny"].replace(in_channels=12, dim=32, num_heads=2, ffn_dim=64)
    assert config.token_values == 48 and "16 noise directions" in config.head_rank_problem()
    with pytest.warns(UserWarning, match="exceed its width"):
        model = VideoDiT(config).eval()
    torch.manual_seed(0)
    for p in model.final.parameters():          # the zero-initialised head: give it a random range
        torch.nn.init.normal_(p, std=0.3)
    flow = SolutionFlow(model, FlowConfig(guidance="none"))
    noise = torch.randn(2, 12, 4, 8, 8)
    with torch.no_grad():
        sample = flow.sample_ode(noise, None, steps=3)
    weight, bias = model.final.linear.weight.double(), model.final.linear.bias.double()   # (48, 32), (48,)
    q, _ = torch.linalg.qr(weight)                                   # orthonormal basis of range(W)
    ortho = lambda x: (lambda t: t - (t @ q) @ q.T)(model.patchify(x.double()))   # (B, N, 48) off range(W)
    # sum of (s - t) over the steps is -1, so the off-range part moves by -ortho(bias) in all
    expected = ortho(noise) - (bias - (bias @ q) @ q.T)
    torch.testing.assert_close(ortho(sample), expected, rtol=0, atol=1e-4)
    assert ortho(noise).norm() > 0.3 * model.patchify(noise.double()).norm()   # a third of the noise is left


def test_shipped_presets_can_remove_noise():
    for name, config in TRAIN_PRESETS.items():
        assert config.model.head_rank_problem() is None, name
    with pytest.raises(ValueError, match="refusing to train"):
        Trainer(dataclasses.replace(TRAIN_PRESETS["tiny"], model=MODEL_PRESETS["tiny"].replace(in_channels=12, dim=32)),
                "/nonexistent-never-created", cpu=True, progress=False)


def test_rope_scores_depend_only_on_relative_offsets():
    """<R(p) q, R(p') k> depends on p - p' per axis: shifting both tokens by a grid offset keeps the score."""
    grid, d = (6, 6, 6), 24
    q, k = torch.randn(1, 1, 1, d, dtype=torch.float64), torch.randn(1, 1, 1, d, dtype=torch.float64)

    def score(pq, pk):
        cq, sq = rope_tables(torch.tensor([[pq]]), grid, d)
        ck, sk = rope_tables(torch.tensor([[pk]]), grid, d)
        return (apply_rope(q, cq.double(), sq.double()) * apply_rope(k, ck.double(), sk.double())).sum()

    raster = lambda t, h, w: (t * 6 + h) * 6 + w
    a = score(raster(1, 2, 3), raster(2, 2, 1))
    b = score(raster(3, 4, 5), raster(4, 4, 3))
    c = score(raster(1, 2, 3), raster(2, 3, 1))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)      # the tables are fp32 by design
    assert not torch.allclose(a, c, rtol=1e-3, atol=1e-3)


def test_preset_parameter_counts(capsys):
    counts = {name: count_parameters(cfg) for name, cfg in MODEL_PRESETS.items()}
    for name, n in counts.items():
        print(f"{name}: {n / 1e6:.1f}M")
    assert abs(counts["1.5B"] - PAPER_PARAMS["1.5B"]) / PAPER_PARAMS["1.5B"] < 0.15
    for name in ("B", "XL", "XXL"):      # same order of magnitude as Tab. 5; README says why they differ
        assert 0.7 < counts[name] / PAPER_PARAMS[name] < 1.4
    assert counts["demo"] < 15e6



@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the fused GELU epilogue is CUDA's"))])
def test_feed_forward_fused_gelu_matches_the_plain_layers(device):
    """Sampling on CUDA runs bias + tanh GELU in the first matmul's epilogue: the plain layers' result to
    bf16 rounding; the CPU keeps the plain path (bit-equal); training keeps autograd; the state-dict keys
    stay those of nn.Sequential."""
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    ffn = FeedForward(256, 1024).to(device, dtype)
    x = torch.randn(2, 300, 256, device=device, dtype=dtype)
    with torch.no_grad():
        fused = ffn(x)
        ffn.fuse_gelu = False
        plain = ffn(x)
        ffn.fuse_gelu = True
    if device == "cpu":
        assert torch.equal(fused, plain)
    else:                       # bf16: the epilogue applies GELU before rounding, the plain path after
        assert not torch.equal(fused, plain)        # the fused path ran
        assert ((fused.float() - plain.float()).norm() / plain.float().norm()).item() < 1e-2
    ffn(x.clone().requires_grad_()).float().square().sum().backward()     # _addmm_activation has no derivative
    assert ffn[0].weight.grad is not None
    assert sorted(ffn.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]


RMS_NORM_PROBE = """
import warnings, torch
from eflow_core.conditioning import TextCondition
from eflow_core.config import MODEL_PRESETS
from eflow_core.model.dit import VideoDiT
warnings.simplefilter("always")
model = VideoDiT(MODEL_PRESETS["tiny"].replace(attention="{attention}", backend="reference", text_dim=32))
x, t = torch.randn(2, 4, 4, 8, 8), torch.rand(2)
cond = TextCondition(torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool))
with torch.autocast("cpu", dtype=torch.bfloat16):
    model(x, t, t, cond).float().square().mean().backward()
"""


@pytest.mark.parametrize("attention", ["glga", "softmax"])
def test_rms_norms_get_weights_in_the_activation_dtype_under_autocast(attention):
    """Under bf16 autocast no RMSNorm of the model (q and k norms, GLGA's branch norms) gets an fp32
    weight with a bf16 input: PyTorch then skips its fused kernel for a composite pow/mean/rsqrt chain
    (pytorch/pytorch#167308) and warns, once per process, so the check runs in a fresh one."""
    probe = subprocess.run([sys.executable, "-c", RMS_NORM_PROBE.format(attention=attention)],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert "Cannot dispatch to fused implementation" not in probe.stderr, probe.stderr


def test_rms_norm_casts_the_weight_like_autocast_casts_a_linear():
    """`rms_norm` of a bf16 input with an fp32 weight == the fp32 RMSNorm with the weight rounded to bf16,
    to bf16 rounding; in fp32 it is exactly F.rms_norm."""
    x, weight = torch.randn(3, 5, 64), 1 + 0.1 * torch.randn(64)
    torch.testing.assert_close(rms_norm(x, weight), F.rms_norm(x, (64,), weight, RMS_EPS), rtol=0, atol=0)
    out = rms_norm(x.bfloat16(), weight)
    assert out.dtype == torch.bfloat16
    expected = F.rms_norm(x.bfloat16().float(), (64,), weight.bfloat16().float(), RMS_EPS)
    torch.testing.assert_close(out.float(), expected, rtol=1.6e-2, atol=1e-2)
