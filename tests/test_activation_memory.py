"""Activation memory of the attention blocks (issue 24, item 3): a GLGA block saves no more for its
backward than a softmax block of the same width, and its recomputing backward gives the gradients of
the plain composition. Saved tensors are counted with `torch.autograd.graph.saved_tensors_hooks`, each
storage once. CPU, small shapes, fp32 and bf16 autocast; fresh random inputs each run."""
import math

import pytest
import torch

from eflow_core.config import MODEL_PRESETS, ModelConfig
from eflow_core.model.attention import glga_mix
from eflow_core.model.blocks import DiTBlock
from eflow_core.model.dit import VideoDiT, structured_keep_indices
from eflow_core.model.rope import rope_tables

DIM, HEADS, GRID, BATCH = 64, 4, (4, 6, 8), 2          # 192 tokens, head dim 16
RADIUS = 2 * GRID[1] * GRID[2] // 2                    # a window of 2 frames
DTYPES = {"fp32": None, "bf16": torch.bfloat16}
# (rtol, atol) for the output and gradient checks, by compute dtype
TOLERANCE = {"fp32": (1e-5, 1e-6), "bf16": (2e-2, 2e-2)}


def randomize_(module: torch.nn.Module) -> torch.nn.Module:
    """Random values for every parameter (the zero-initialised gates and adaLN too)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.2)
    return module


def positions(drop: bool) -> torch.Tensor:
    """(BATCH, N) raster positions: all tokens, or the kept ones of a 50% structured drop (rows differ)."""
    n = math.prod(GRID)
    if drop:
        return structured_keep_indices(GRID, (1, 2, 2), 0.5, BATCH, torch.device("cpu"))
    return torch.arange(n).expand(BATCH, n).contiguous()


def saved_bytes(fn, exclude) -> tuple[int, int]:
    """(bytes, storages) that autograd saves for the backward while `fn()` runs; each storage counted
    once; storages of `exclude` (parameters, the block's inputs: alive anyway) are not counted."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values()), len(seen)


def block_saved_bytes(attention: str, dtype, drop: bool) -> tuple[int, int]:
    # "chunked": the exact CPU window path; like the Triton kernels it saves q, k, v and the output (CPU
    # "auto" picks "sdpa" at this size, whose dense band mask is O(N^2) and would dominate the count)
    config = ModelConfig(dim=DIM, num_heads=HEADS, ffn_dim=4 * DIM, attention=attention, backend="chunked")
    block = randomize_(DiTBlock(config, 0))
    pos = positions(drop)
    x = torch.randn(BATCH, pos.shape[1], DIM, requires_grad=True)
    c = torch.randn(BATCH, DIM)
    rope = rope_tables(pos, GRID, DIM // HEADS)

    def forward():
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            block(x, c, rope, pos, RADIUS)

    return saved_bytes(forward, [*block.parameters(), x, c, *rope, pos])


@pytest.mark.parametrize("drop", [False, True], ids=["dense", "dropped"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_glga_block_saves_less_than_a_softmax_block(dtype, drop):
    """The GLGA block saves at least one (B, N, C) activation less than the softmax block: the output
    projection's input, which GLGA recomputes and softmax keeps."""
    glga, glga_storages = block_saved_bytes("glga", DTYPES[dtype], drop)
    softmax, softmax_storages = block_saved_bytes("softmax", DTYPES[dtype], drop)
    tokens = positions(drop).shape[1]
    one_activation = BATCH * tokens * DIM * (DTYPES[dtype] or torch.float32).itemsize
    assert glga <= softmax - one_activation, (f"GLGA block saves {glga} B in {glga_storages} storages, "
                                              f"softmax block {softmax} B in {softmax_storages}")


def glga_and_inputs(branches: str, drop: bool):
    config = ModelConfig(dim=DIM, num_heads=HEADS, attention=branches, backend="chunked")
    attn = randomize_(DiTBlock(config, 0).attn)
    pos = positions(drop)
    x = torch.randn(BATCH, pos.shape[1], DIM)
    return attn, x, rope_tables(pos, GRID, DIM // HEADS), pos


def plain_glga(attn, x, rope, pos):
    """The composition GLGA had before recomputation: projections, gates, `glga_mix`, output projection."""
    b, n, c = x.shape
    q, k, v = attn.proj_in(x, rope)
    o = glga_mix(q, k, v, pos, RADIUS, attn.gate_logits(x), attn.norm_global_weight, attn.norm_local_weight,
                 attn.backend, attn.branches)
    return attn.proj_out(o.transpose(1, 2).reshape(b, n, c))


def output_and_grads(fn, attn, x, dtype, grad_out=None):
    x = x.clone().requires_grad_()
    attn.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        out = fn(x)
    if grad_out is None:
        grad_out = torch.randn_like(out)
    out.backward(grad_out)
    return out.detach(), grad_out, {"x": x.grad, **{name: p.grad for name, p in attn.named_parameters()}}


@pytest.mark.parametrize("drop", [False, True], ids=["dense", "dropped"])
@pytest.mark.parametrize("branches", ["glga", "linear", "window"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_recomputed_glga_matches_the_plain_composition(dtype, branches, drop):
    """Outputs and gradients (input and every parameter) of the recomputing GLGA equal those of
    `recompute = False` and of the plain `glga_mix` composition."""
    attn, x, rope, pos = glga_and_inputs(branches, drop)
    assert attn.recompute                                                # the default
    rtol, atol = TOLERANCE[dtype]
    out, grad_out, grads = output_and_grads(lambda x: attn(x, rope, pos, RADIUS), attn, x, DTYPES[dtype])
    attn.recompute = False
    saved = output_and_grads(lambda x: attn(x, rope, pos, RADIUS), attn, x, DTYPES[dtype], grad_out)
    plain = output_and_grads(lambda x: plain_glga(attn, x, rope, pos), attn, x, DTYPES[dtype], grad_out)
    for ref_out, _, ref_grads in (saved, plain):
        torch.testing.assert_close(out, ref_out, rtol=rtol, atol=atol)
        assert ref_grads.keys() == grads.keys()
        for name, g in grads.items():
            torch.testing.assert_close(g, ref_grads[name], rtol=rtol, atol=atol,
                                       msg=lambda m, name=name: f"{name}: {m}")


def test_dit_with_token_dropping_recompute_gives_the_same_gradients():
    """The whole VideoDiT in training mode with SPRINT token dropping (the middle GLGA blocks see the
    kept positions): recomputing and saving GLGA give the same loss gradients."""
    model = randomize_(VideoDiT(MODEL_PRESETS["tiny"].replace(backend="chunked")))
    model.train()
    x = torch.randn(BATCH, 4, 4, 8, 8)
    t, s = torch.rand(BATCH), torch.rand(BATCH) * 0.5
    keep = structured_keep_indices(model.token_grid((4, 8, 8)), (1, 2, 2), 0.75, BATCH, torch.device("cpu"))
    glga = [b.attn for b in model.blocks if b.attention_kind == "glga"]
    assert len(glga) >= 3

    def grads(recompute: bool):
        for attn in glga:
            attn.recompute = recompute
        model.zero_grad(set_to_none=True)
        model(x, t, s, keep_indices=keep).square().mean().backward()
        return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}

    recomputed, saved = grads(True), grads(False)
    assert recomputed.keys() == saved.keys() and len(saved) > 0
    for name, g in recomputed.items():
        torch.testing.assert_close(g, saved[name], rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
