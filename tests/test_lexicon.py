"""The prompt lexicon (eflow_core/text/lexicon.py): its colour math, WordNet's morphology, and what it does to
prompts: training wording passes unchanged; words the model never saw become training words. The words
pinned here come from the training vocabulary and the first two held-out lists (the lexicon's development
sets), never from `heldout-vocabulary-3`, which reports it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from eflow_core.data import captions as C
from eflow_core.text import lexicon as L


@pytest.fixture(scope="module")
def lexicon():
    return L.lexicon_for_world("shapes")


def test_ciede2000_matches_the_published_test_pairs():
    # Sharma, Wu and Dalal (2005), Table 1: pairs 1, 2, 7, 17 (the large difference), 20, 30 and 34
    pairs = [((50, 2.6772, -79.7751), (50, 0, -82.7485), 2.0425),
             ((50, -1.3802, -84.2814), (50, 0, -82.7485), 1.0000),
             ((50, 0, 0), (50, -1, 2), 2.3669),
             ((50, 2.5, 0), (73, 25, -18), 27.1492),
             ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
             ((90.8027, -2.0831, 1.4410), (91.1528, -1.6435, 0.0447), 1.4441),
             ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082)]
    for first, second, expected in pairs:
        assert L.ciede2000(first, second) == pytest.approx(expected, abs=1e-4)
        assert L.ciede2000(second, first) == pytest.approx(expected, abs=1e-4)     # symmetric
    assert L.ciede2000((50, 10, 10), (50, 10, 10)) == 0
    # the parametric lightness factor divides the lightness term alone
    lighter = L.ciede2000((40, 0, 0), (60, 0, 0))
    assert L.ciede2000((40, 0, 0), (60, 0, 0), kl=2) == pytest.approx(lighter / 2)
    assert L.ciede2000((50, 20, 0), (50, 0, 20), kl=2) == pytest.approx(L.ciede2000((50, 20, 0), (50, 0, 20)))


def test_srgb_to_lab_anchors():
    assert L.srgb_to_lab(255, 255, 255) == pytest.approx((100, 0, 0), abs=0.02)
    assert L.srgb_to_lab(0, 0, 0) == pytest.approx((0, 0, 0), abs=1e-6)
    lightness, a, b = L.srgb_to_lab(255, 0, 0)                   # sRGB red: L* 53.2, a* 80.1, b* 67.2
    assert (lightness, a, b) == pytest.approx((53.24, 80.09, 67.20), abs=0.05)
    greys = [L.srgb_to_lab(v, v, v) for v in range(0, 256, 17)]
    assert all(abs(a) < 0.02 and abs(b) < 0.02 for _, a, b in greys)
    assert [g[0] for g in greys] == sorted(g[0] for g in greys)


def test_wordnet_data_and_morphology():
    net = L.wordnet()
    assert len(net["synsets"]) == 117659                         # WordNet 3.0's synset count
    count = len(net["synsets"])
    for pos_, words, relations in net["synsets"][::997]:
        assert pos_ in "nvar" and words
        assert all(0 <= t < count for targets in relations.values() for t in targets)
    assert L.base_forms("rises", "v") == ("rise",)
    assert L.base_forms("fell", "v")[0] == "fall"                # the exception list first (then "fell" a tree)
    assert "go_down" in L.base_forms("goes_down", "v")           # a phrase inflects its first word
    assert L.base_forms("boxes", "n") == ("box",)
    assert L.base_forms("qwertyuiop", "n") == ()
    assert [L.inflect("go down", "s"), L.inflect("rise", "ing"), L.inflect("drop", "ing"), L.inflect("fly", "s")] \
        == ["goes down", "rising", "dropping", "flies"]


def test_training_wording_passes_unchanged(lexicon):
    rng = np.random.default_rng(0)
    texts = C.all_captions("train") + C.all_captions("heldout-frames")
    for index in rng.choice(len(C.all_captions("train")), 200, replace=False):
        text = texts[int(index)]
        assert lexicon.rewrite(text) == L.Rewrite(text, ()), text


def test_words_never_seen_become_training_words(lexicon):
    cases = {"scarlet": "red", "jade": "green", "sapphire": "blue", "violet": "purple", "tangerine": "orange",
             "slate": "grey", "pale": "white", "snow-white": "white", "pitch-black": "black", "ball": "orb",
             "block": "cube", "falls": "goes down", "ascending": "going up", "dwindles": "diminishes",
             "swells": "expands"}
    for word, expected in cases.items():
        rewrite = lexicon.rewrite(word)
        assert rewrite.text == expected, (word, rewrite)
        assert [s[0] for s in rewrite.substitutions] == [word]
    # in a sentence: each replaced word in place, capitals kept, the rest untouched
    rewrite = lexicon.rewrite("Scarlet ball that falls, on a pale backdrop.")
    assert rewrite.text == "Red orb that goes down, on a white backdrop."
    assert [s[:2] for s in rewrite.substitutions] == [("Scarlet", "Red"), ("ball", "orb"), ("falls", "goes down"),
                                                      ("pale", "white")]
    assert all(reason for _, _, reason in rewrite.substitutions)
    assert lexicon.rewrite("a ball on an inky field").text == "an orb on a black field"     # articles follow


def test_no_replacement_names_an_attribute_the_prompt_already_names(lexicon):
    # WordNet has "coloured" = "dark" (a background word); the prompt names its background: nothing changes
    text = "in this video, a circle coloured red moves left on a black backdrop"
    assert lexicon.rewrite(text).substitutions == ()
    assert lexicon.attributes("crimson") == {"color"} and lexicon.attributes("goes down") == {"motion"}
    assert lexicon.attributes("dark") == {"background"} and lexicon.attributes("backdrop") == set()
    # and no sentence frame of the held-out frames is touched: only words that name values are replaced
    assert all(not lexicon.rewrite(t).substitutions for t in C.all_captions("heldout-frames")[::7])


def test_form_and_part_of_speech(lexicon):
    assert lexicon.rewrite("heads left").text == "goes left"      # a verb form reads as a verb ("go" 2 steps)
    assert lexicon.rewrite("balls").text == "orbs"                # a plural noun: the synonym in any sense wins
    assert lexicon.rewrite("inky canvas").text == "black canvas"  # "canvas": a frame word, no value: stays
    # a motion replacement fits the words after it: no doubled particle, a lone verb its training phrase
    assert [lexicon.rewrite(t).text for t in ("tumbles down", "rockets upward", "levitates", "plummets quickly")] \
        == ["goes down", "moves upward", "lifts up", "drops downward quickly"]
    assert lexicon.rewrite("pyramid") == L.Rewrite("pyramid", (), ("pyramid",))   # nothing near in WordNet: left
    # words no training caption has, left as typed, are reported (function words and known words are not)
    rewrite = lexicon.rewrite("Watch the scarlet spike as it falls")
    assert rewrite.text == "Watch the red spike as it goes down" and rewrite.unplaced == ("Watch", "spike")
    assert lexicon.rewrite("xyzzy frobs").substitutions == ()     # not a word at all


def test_colour_names_go_to_the_nearest_colour_class(lexicon):
    # looks_grey splits greys from hues before the nearest colour is taken
    assert L.looks_grey(L.srgb_to_lab(0x51, 0x65, 0x72)) and not L.looks_grey(L.srgb_to_lab(0x01, 0x15, 0x3e))
    assert lexicon._colour("navy")[0] == "blue" and lexicon._colour("slate")[0] == "grey"
    assert lexicon._colour("not a colour") is None
    with pytest.raises(ValueError, match="no xkcd colour"):
        L.PromptLexicon(["a red circle"], {"color": ("a", ["red"])}, colour_words=["red", "reddish-ultraviolet"])


def test_colour_names_are_read_together(lexicon):
    # kL = 2: maroon (dark, between red and purple in hue) is red, not purple as with kL = 1
    assert lexicon._colour("maroon")[0] == "red"
    # on its own denim is blue; beside a colour word, or a more colourful colour name, it is the background
    assert lexicon.rewrite("a denim ball").text == "a blue orb"
    assert lexicon.rewrite("a crimson ball on a denim field").text == "a crimson orb on a grey field"
    assert lexicon.rewrite("a jade ball on a denim field").text == "a green orb on a grey field"
    assert lexicon.rewrite("on a denim field, a jade ball").text == "on a grey field, a green orb"   # any order
    # a unit that holds a known word does not name that word's attribute for the rest of the prompt
    assert lexicon.rewrite("medium grey").text == "grey"


def test_only_text_worlds_with_a_vocabulary_have_a_lexicon():
    assert L.lexicon_for_world("actions") is None and L.lexicon_for_world("scenes") is None
    assert isinstance(L.lexicon_for_world("shapes"), L.PromptLexicon)


def test_pipeline_reads_the_rewrite_and_can_turn_it_off():
    from eflow_core.conditioning import encode_condition
    from eflow_core.pipeline import EFlowPipeline

    pipe = EFlowPipeline.from_pretrained("shapes-t2v")
    typed, training = "a scarlet circle moving left on a black background", \
        "a red circle moving left on a black background"
    assert pipe.read_prompt(typed).text == training
    cond = pipe._condition([typed], None)
    expected = encode_condition(pipe.text_encoder, [training], None, pipe.device, pipe.model_dtype)
    assert torch.equal(cond.tokens, expected.tokens) and torch.equal(cond.mask, expected.mask)
    result = pipe(typed, steps=1)
    assert result.read_as is not None and result.read_as.text == training
    assert pipe(training, steps=1).read_as is None                # nothing changed: nothing to report
    unplaced = pipe("a red spike moving left on a black background", steps=1).read_as
    assert unplaced.substitutions == () and unplaced.unplaced == ("spike",)
    pipe.lexicon = False
    assert pipe.lexicon is None and pipe.read_prompt(typed).text == typed
    cond = pipe._condition([typed], None)
    assert not torch.equal(cond.tokens[cond.mask], expected.tokens[expected.mask])
    assert pipe(typed, steps=1).read_as is None
    pipe.lexicon = True
    assert pipe.read_prompt(typed).text == training


def test_word_benchmark_counts_every_word_once():
    from benchmarks.lexicon import measure

    results = measure(sets=(1,))
    counts = results["held-out list 1 (development)"]
    assert {a: sum(t.values()) for a, t in counts.items()} == {"shape": 4, "color": 6, "background": 6, "motion": 24}
    assert counts["color"] == {"right": 6, "wrong": 0, "left": 0}
    assert counts["shape"]["left"] == 1                           # "pyramid": nothing near in WordNet
