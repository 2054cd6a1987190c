"""Captions of the `shapes` world: many sentence frames and several words for every attribute value, each
split into a training part and a held-out part, so that evaluation can measure how well a model follows
wording it never saw (issue 23: prompts phrased as a person would dropped shape adherence from 95% to 67%).

A caption is surface text over four labels, the canonical values of `eflow_core.data.shapes` (`SHAPES`,
`COLORS`, `BACKGROUNDS`, `MOTIONS`), which stay the labels. It is a *frame*, a sentence with slots, filled
with one word form per slot:

    {color} {shape}   colour and shape words                 "crimson", "disc"
    {ing} / {verb}    motion: -ing form / 3rd-person form    "drifting to the left" / "drifts to the left"
    {background}      background word                        "dark"
    {noun}            background noun                        "backdrop"
    adverb            optional, before the motion (1 in 3)   "slowly"

The split. The first training word of every value is the canonical one; the six frames marked * are the
`TRAIN_TEMPLATES` the shipped `shapes-t2v` was trained on until 2026-12-06, the three marked + its old
held-out templates. The training part is wide (6-8 words a value since 2026-12-07): with 2-3 words a value,
motion words never seen were read right 90% of the time by a probe on the token states, with 7-8, 96%
(benchmarks/text_side.py, docs/RESULTS.md); the held-out part is the one of 2026-12-06, unchanged.

    value          training words                                       held-out words
    circle         circle, disc, orb, round shape, circular shape, coin ball, dot
    square         square, box, cube, tile, square shape,               block
                   four-sided shape
    triangle       triangle, triangular shape, wedge,                   pyramid
                   three-sided shape, arrowhead, delta
    red            red, crimson, ruby, cherry-red, vermilion,           scarlet
                   blood-red, brick-red, carmine
    green          green, emerald, lime, grass-green, forest-green,     jade
                   mint, leaf-green, kelly-green
    blue           blue, azure, navy, cobalt, sky-blue, royal blue,     sapphire
                   cerulean, ultramarine
    yellow         yellow, lemon, canary, sunflower-yellow,             golden
                   butter-yellow, banana-yellow, daffodil, mustard
    purple         purple, plum, lavender, lilac, amethyst, mauve,      violet
                   grape, orchid
    orange         orange, pumpkin-orange, carrot-orange, apricot,      tangerine
                   amber, marigold, rust-orange, mandarin
    black          black, dark, jet-black, ebony, coal-black, onyx,     pitch-black, inky
                   raven, midnight
    gray           gray, grey, silver, ash-grey, gunmetal, stone-grey,  slate, medium grey
                   pewter, smoky
    white          white, light, ivory, milky, chalk-white,             snow-white, pale
                   bright white, pearl, cream
    moving left    moves left, drifts to the left, slides leftward,     heads left, travels toward the left side
                   glides to the left, shifts left, goes leftward,
                   crosses from right to left
    moving right   moves right, drifts to the right, slides rightward,  heads right, travels toward the right side
                   glides to the right, shifts right, goes rightward,
                   crosses from left to right
    moving up      moves up, rises, climbs upward, goes up,             floats upward, ascends
                   soars upward, lifts up, moves toward the top
    moving down    moves down, sinks, drops downward, goes down,        falls, descends
                   plunges, dives downward, moves toward the bottom
    growing        grows, gets bigger, expands, enlarges, gets larger,  swells, increases in size
                   inflates, scales up, balloons
    shrinking      shrinks, gets smaller, contracts, gets tinier,       dwindles, decreases in size
                   deflates, scales down, diminishes, becomes small
    (noun)         background, backdrop, field, surface, setting        canvas, screen
    (adverb)       slowly, smoothly, gently, calmly, evenly             steadily, gradually

    training frames                                               held-out frames
    * a {color} {shape} {ing} on a {background} background        + a {background} background with a {color}
    * on a {background} background, a {color} {shape} {verb}          {shape} that {verb}
    * a {color} {shape} {verb} against a {background} background  + we see a {color} {shape} {ing} in front of
    * {color} {shape} {ing}, {background} background                  a {background} background
    * a {shape}, {color}, {ing} over a {background} background    + {background} backdrop: one {color} {shape} {ing}
    * the {color} {shape} {verb} on {background}                    a clip showing a {color} {shape} {ing}; the
      a video of a {color} {shape} {ing} on a {background} {noun}     {noun} is {background}
      there is a {color} {shape} on a {background} {noun}, and    here a {color} {shape} {verb} while the {noun}
          it {verb}                                                   stays {background}
      footage of a {color} {shape} that {verb}, {background}      in this video, a {shape} coloured {color} {verb}
          {noun}                                                      on a {background} {noun}
      A {color} {shape} {verb} in front of a {background} {noun}. watch the {color} {shape} as it {verb} against
      a {background} {noun} where a {color} {shape} {verb}            a {background} {noun}
      {color} {shape} on {background}, {ing}                      {color} {shape}. {background} {noun}. it {verb}.
      an animation: a {color} {shape} {ing} over a {background}
          {noun}
      the {shape} is {color} and {verb} on a {background} {noun}

Frames and words are disjoint between the parts, and every held-out word brings at least one word that
no training caption contains. Every word names one value only (`named_attributes` reads a caption back),
so a caption can never be ambiguous.

Caption sets (`CAPTION_SETS`): which frames x which words.

    train               training frames x training words    what a model is trained on
    heldout-frames      held-out frames x training words    new sentences, known words (`ShapesWorld` eval)
    heldout-vocabulary  training frames x held-out words    known sentences, new words
    heldout-both        held-out frames x held-out words
    heldout-vocabulary-2  training frames x the second held-out words
    heldout-vocabulary-3  training frames x the third held-out words

The second held-out word list (2026-12-07) was written down and committed before the prompt lexicon
(`eflow_core/text/lexicon.py`), which maps words a model never trained on to its training words, was
built, and without looking any of its words up in the lexicon's sources. The first list was studied
while the lexicon was designed, so it is its development set; the second is the one that reports it.

    value          second held-out words            value          second held-out words
    circle         sphere, bubble                   black          obsidian, sooty
    square         crate, panel                     gray           steel, graphite
    triangle       cone, spike                      white          alabaster, snowy
    red            maroon, tomato                   moving left    veers left, wanders off to the left
    green          olive, moss                      moving right   veers right, wanders off to the right
    blue           denim, cornflower                moving up      rockets upward, levitates
    yellow         gold, straw                      moving down    tumbles down, plummets
    purple         eggplant, indigo                 growing        widens, puffs up
    orange         copper, peach                    shrinking      shrivels, narrows
    (noun)         wall, scene                      (adverb)       leisurely, softly

The third held-out word list (2026-12-07, the next session) was written down and committed the same way,
before any change to the lexicon that the first two lists could inform, and without looking its words up.
From then on the first two lists are both development sets and the third reports.

    value          third held-out words             value          third held-out words
    circle         globe, ring                      black          sable, licorice
    square         slab, boxy shape                 gray           leaden, concrete
    triangle       pennant, three-cornered shape    white          porcelain, frosty
    red            cardinal, strawberry             moving left    scoots left, migrates to the left
    green          pine, clover                     moving right   scoots right, migrates to the right
    blue           ocean, lapis                     moving up      bobs up, drifts skyward
    yellow         buttercup, blond                 moving down    settles downward, sags down
    purple         magenta, aubergine               growing        bulges, mushrooms
    orange         ginger, saffron                  shrinking      withers, condenses
    (noun)         ground, plane                    (adverb)       lazily, quietly

Each set is finite: `VARIANTS[set]` captions for each of the 3 x 6 x 3 x 6 = 324 attribute combinations,
chosen deterministically from `CAPTION_SEED` (`caption_variants`; frames taken in turn, so every frame is
used about equally); `all_captions(set)` lists them all (what the text-embedding cache must hold) and
`ShapesWorld` draws among them. `caption(attributes, rng, set)` draws one caption freely from a set.
"""
from __future__ import annotations

import functools
import itertools
import re

import numpy as np

from .shapes import ATTRIBUTES

# value -> (training words, held-out words, second held-out words, third held-out words); the first training
# word is the canonical one. The training part is wide on purpose: the text encoder places a word it was never
# shown beside its value only if the generator learned the value's direction from many words, not a point from
# one (benchmarks/text_side.py).
SHAPE_WORDS: dict[str, tuple[list[str], ...]] = {
    "circle": (["circle", "disc", "orb", "round shape", "circular shape", "coin"], ["ball", "dot"],
               ["sphere", "bubble"], ["globe", "ring"]),
    "square": (["square", "box", "cube", "tile", "square shape", "four-sided shape"], ["block"],
               ["crate", "panel"], ["slab", "boxy shape"]),
    "triangle": (["triangle", "triangular shape", "wedge", "three-sided shape", "arrowhead", "delta"], ["pyramid"],
                 ["cone", "spike"], ["pennant", "three-cornered shape"]),
}
COLOR_WORDS: dict[str, tuple[list[str], ...]] = {
    "red": (["red", "crimson", "ruby", "cherry-red", "vermilion", "blood-red", "brick-red", "carmine"], ["scarlet"],
            ["maroon", "tomato"], ["cardinal", "strawberry"]),
    "green": (["green", "emerald", "lime", "grass-green", "forest-green", "mint", "leaf-green", "kelly-green"],
              ["jade"], ["olive", "moss"], ["pine", "clover"]),
    "blue": (["blue", "azure", "navy", "cobalt", "sky-blue", "royal blue", "cerulean", "ultramarine"], ["sapphire"],
             ["denim", "cornflower"], ["ocean", "lapis"]),
    "yellow": (["yellow", "lemon", "canary", "sunflower-yellow", "butter-yellow", "banana-yellow", "daffodil",
                "mustard"], ["golden"], ["gold", "straw"], ["buttercup", "blond"]),
    "purple": (["purple", "plum", "lavender", "lilac", "amethyst", "mauve", "grape", "orchid"], ["violet"],
               ["eggplant", "indigo"], ["magenta", "aubergine"]),
    "orange": (["orange", "pumpkin-orange", "carrot-orange", "apricot", "amber", "marigold", "rust-orange",
                "mandarin"], ["tangerine"], ["copper", "peach"], ["ginger", "saffron"]),
}
BACKGROUND_WORDS: dict[str, tuple[list[str], ...]] = {
    "black": (["black", "dark", "jet-black", "ebony", "coal-black", "onyx", "raven", "midnight"],
              ["pitch-black", "inky"], ["obsidian", "sooty"], ["sable", "licorice"]),
    "gray": (["gray", "grey", "silver", "ash-grey", "gunmetal", "stone-grey", "pewter", "smoky"],
             ["slate", "medium grey"], ["steel", "graphite"], ["leaden", "concrete"]),
    "white": (["white", "light", "ivory", "milky", "chalk-white", "bright white", "pearl", "cream"],
              ["snow-white", "pale"], ["alabaster", "snowy"], ["porcelain", "frosty"]),
}
# motion: (-ing form, 3rd-person form) pairs, frames use either
MOTION_WORDS: dict[str, tuple[list[tuple[str, str]], ...]] = {
    "moving left": ([("moving left", "moves left"), ("drifting to the left", "drifts to the left"),
                     ("sliding leftward", "slides leftward"), ("gliding to the left", "glides to the left"),
                     ("shifting left", "shifts left"), ("going leftward", "goes leftward"),
                     ("crossing from right to left", "crosses from right to left")],
                    [("heading left", "heads left"),
                     ("travelling toward the left side", "travels toward the left side")],
                    [("veering left", "veers left"), ("wandering off to the left", "wanders off to the left")],
                    [("scooting left", "scoots left"), ("migrating to the left", "migrates to the left")]),
    "moving right": ([("moving right", "moves right"), ("drifting to the right", "drifts to the right"),
                      ("sliding rightward", "slides rightward"), ("gliding to the right", "glides to the right"),
                      ("shifting right", "shifts right"), ("going rightward", "goes rightward"),
                      ("crossing from left to right", "crosses from left to right")],
                     [("heading right", "heads right"),
                      ("travelling toward the right side", "travels toward the right side")],
                     [("veering right", "veers right"), ("wandering off to the right", "wanders off to the right")],
                     [("scooting right", "scoots right"), ("migrating to the right", "migrates to the right")]),
    "moving up": ([("moving up", "moves up"), ("rising", "rises"), ("climbing upward", "climbs upward"),
                   ("going up", "goes up"), ("soaring upward", "soars upward"), ("lifting up", "lifts up"),
                   ("moving toward the top", "moves toward the top")],
                  [("floating upward", "floats upward"), ("ascending", "ascends")],
                  [("rocketing upward", "rockets upward"), ("levitating", "levitates")],
                  [("bobbing up", "bobs up"), ("drifting skyward", "drifts skyward")]),
    "moving down": ([("moving down", "moves down"), ("sinking", "sinks"), ("dropping downward", "drops downward"),
                     ("going down", "goes down"), ("plunging", "plunges"), ("diving downward", "dives downward"),
                     ("moving toward the bottom", "moves toward the bottom")],
                    [("falling", "falls"), ("descending", "descends")],
                    [("tumbling down", "tumbles down"), ("plummeting", "plummets")],
                    [("settling downward", "settles downward"), ("sagging down", "sags down")]),
    "growing": ([("growing", "grows"), ("getting bigger", "gets bigger"), ("expanding", "expands"),
                 ("enlarging", "enlarges"), ("getting larger", "gets larger"), ("inflating", "inflates"),
                 ("scaling up", "scales up"), ("ballooning", "balloons")],
                [("swelling", "swells"), ("increasing in size", "increases in size")],
                [("widening", "widens"), ("puffing up", "puffs up")],
                [("bulging", "bulges"), ("mushrooming", "mushrooms")]),
    "shrinking": ([("shrinking", "shrinks"), ("getting smaller", "gets smaller"), ("contracting", "contracts"),
                   ("getting tinier", "gets tinier"), ("deflating", "deflates"), ("scaling down", "scales down"),
                   ("diminishing", "diminishes"), ("becoming small", "becomes small")],
                  [("dwindling", "dwindles"), ("decreasing in size", "decreases in size")],
                  [("shriveling", "shrivels"), ("narrowing", "narrows")],
                  [("withering", "withers"), ("condensing", "condenses")]),
}
VOCABULARY: dict[str, dict] = {"shape": SHAPE_WORDS, "color": COLOR_WORDS, "background": BACKGROUND_WORDS,
                               "motion": MOTION_WORDS}
# filler words, not attributes: (training, held-out, second held-out, third held-out)
BACKGROUND_NOUNS: tuple[list[str], ...] = (["background", "backdrop", "field", "surface", "setting"],
                                                  ["canvas", "screen"], ["wall", "scene"],
                                                  ["ground", "plane"])
ADVERBS: tuple[list[str], ...] = (["slowly", "smoothly", "gently", "calmly", "evenly"], ["steadily", "gradually"],
                                        ["leisurely", "softly"], ["lazily", "quietly"])
ADVERB_RATE = 1 / 3

# The frames the shipped shapes-t2v was trained on / evaluated with (kept: the first are training frames,
# the second held-out ones).
TRAIN_TEMPLATES = [
    "a {color} {shape} {ing} on a {background} background",
    "on a {background} background, a {color} {shape} {verb}",
    "a {color} {shape} {verb} against a {background} background",
    "{color} {shape} {ing}, {background} background",
    "a {shape}, {color}, {ing} over a {background} background",
    "the {color} {shape} {verb} on {background}",
]
EVAL_TEMPLATES = [
    "a {background} background with a {color} {shape} that {verb}",
    "we see a {color} {shape} {ing} in front of a {background} background",
    "{background} backdrop: one {color} {shape} {ing}",
]
TRAIN_FRAMES = TRAIN_TEMPLATES + [
    "a video of a {color} {shape} {ing} on a {background} {noun}",
    "there is a {color} {shape} on a {background} {noun}, and it {verb}",
    "footage of a {color} {shape} that {verb}, {background} {noun}",
    "A {color} {shape} {verb} in front of a {background} {noun}.",
    "a {background} {noun} where a {color} {shape} {verb}",
    "{color} {shape} on {background}, {ing}",
    "an animation: a {color} {shape} {ing} over a {background} {noun}",
    "the {shape} is {color} and {verb} on a {background} {noun}",
]
HELDOUT_FRAMES = EVAL_TEMPLATES + [
    "a clip showing a {color} {shape} {ing}; the {noun} is {background}",
    "here a {color} {shape} {verb} while the {noun} stays {background}",
    "in this video, a {shape} coloured {color} {verb} on a {background} {noun}",
    "watch the {color} {shape} as it {verb} against a {background} {noun}",
    "{color} {shape}. {background} {noun}. it {verb}.",
]

# caption set -> (which frames, which words): 0 = training part, 1 = held-out part
CAPTION_SETS: dict[str, tuple[int, int]] = {"train": (0, 0), "heldout-frames": (1, 0), "heldout-vocabulary": (0, 1),
                                            "heldout-both": (1, 1), "heldout-vocabulary-2": (0, 2),
                                            "heldout-vocabulary-3": (0, 3)}
# what `eflow eval` reports
HELDOUT_SETS = ("heldout-frames", "heldout-vocabulary", "heldout-vocabulary-2", "heldout-vocabulary-3")
EVAL_CAPTIONS = "heldout-frames"                          # a ShapesWorld eval split's default
CAPTION_TITLES = {"train": "training frames and words", "heldout-frames": "held-out sentence frames, training words",
                  "heldout-vocabulary": "training sentence frames, held-out words",
                  "heldout-both": "held-out sentence frames and words",
                  "heldout-vocabulary-2": "training sentence frames, the second held-out word list",
                  "heldout-vocabulary-3": "training sentence frames, the third held-out word list"}
VARIANTS = {"train": 24, "heldout-frames": 8, "heldout-vocabulary": 8, "heldout-both": 8, "heldout-vocabulary-2": 8,
            "heldout-vocabulary-3": 8}
CAPTION_SEED = 23


def check_caption_set(name: str) -> str:
    """`name` when it is a caption set, else ValueError listing them."""
    if name not in CAPTION_SETS:
        raise ValueError(f"unknown caption set {name!r}: choose from {', '.join(CAPTION_SETS)}")
    return name


def frames(split: str = "train") -> list[str]:
    """The sentence frames of caption set `split`."""
    return (TRAIN_FRAMES, HELDOUT_FRAMES)[CAPTION_SETS[check_caption_set(split)][0]]


def words(attribute: str, value: str, split: str = "train") -> list:
    """The word forms of one attribute value in caption set `split` (motion: (-ing, 3rd-person) pairs)."""
    return VOCABULARY[attribute][value][CAPTION_SETS[check_caption_set(split)][1]]


def forms(entry: str | tuple[str, ...]) -> tuple[str, ...]:
    """The surface forms of one vocabulary entry: a motion pair's two forms, any other word itself."""
    return entry if isinstance(entry, tuple) else (entry,)


def _fill(frame: str, attributes: dict[str, str], pick, part: int, adverb: str = "") -> str:
    """Fill `frame` with one word per slot; `pick(options)` chooses among the word forms of `part`."""
    chosen = {key: pick(VOCABULARY[key][attributes[key]][part]) for key in ("shape", "color", "background")}
    ing, verb = pick(MOTION_WORDS[attributes["motion"]][part])
    noun = pick(BACKGROUND_NOUNS[part])
    if adverb:
        ing, verb = f"{adverb} {ing}", f"{adverb} {verb}"
    return fix_articles(frame.format(noun=noun, ing=ing, verb=verb, **chosen))


def caption(attributes: dict[str, str], rng: np.random.Generator, split: str = "train",
            frame: str | None = None) -> str:
    """One caption of `attributes` ({shape, color, background, motion} -> canonical value) from caption set
    `split`: a random frame of the set (or `frame`), a random word form per slot, an adverb one time in
    three. Deterministic given the generator's state."""
    frame_part, part = CAPTION_SETS[check_caption_set(split)]
    if frame is None:
        options = (TRAIN_FRAMES, HELDOUT_FRAMES)[frame_part]
        frame = options[int(rng.integers(len(options)))]

    def pick(options):
        return options[int(rng.integers(len(options)))]

    adverb = pick(ADVERBS[part]) if rng.random() < ADVERB_RATE else ""
    return _fill(frame, attributes, pick, part, adverb)


def caption_for(attributes: dict[str, str], frame: str) -> str:
    """`frame` filled with the canonical words ("a red circle moving left on a black background")."""
    return _fill(frame, attributes, lambda options: options[0], 0)


@functools.cache
def caption_table(split: str = "train") -> dict[tuple[str, ...], tuple[str, ...]]:
    """{attribute values in `ATTRIBUTES` order: `VARIANTS[split]` distinct captions} for every combination.

    Deterministic (`CAPTION_SEED`); the frames of the set are taken in turn, starting one further for
    each combination, so every frame is used about equally."""
    set_frames, count = frames(split), VARIANTS[split]
    table = {}
    for i, values in enumerate(itertools.product(*ATTRIBUTES.values())):
        attributes = dict(zip(ATTRIBUTES, values))
        rng = np.random.default_rng((CAPTION_SEED, list(CAPTION_SETS).index(split), i))
        variants: list[str] = []
        for j in range(count):
            frame = set_frames[(i + j) % len(set_frames)]
            for _ in range(1000):
                text = caption(attributes, rng, split, frame)
                if text not in variants:
                    break
            else:
                raise RuntimeError(f"could not find {count} distinct {split} captions of {attributes}")
            variants.append(text)
        table[values] = tuple(variants)
    return table


def caption_variants(attributes: dict[str, str], split: str = "train") -> tuple[str, ...]:
    """The `VARIANTS[split]` captions of one attribute combination in caption set `split`."""
    return caption_table(split)[tuple(attributes[key] for key in ATTRIBUTES)]


def all_captions(split: str = "train") -> list[str]:
    """Every caption of caption set `split` (what a `ShapesWorld` with these captions can draw)."""
    return [text for variants in caption_table(split).values() for text in variants]


@functools.lru_cache(maxsize=1)
def _word_patterns() -> dict[str, list[tuple[str, re.Pattern]]]:
    """attribute -> [(value, regex matching any of its word forms, both parts, as whole words)]."""
    patterns = {}
    for attribute, table in VOCABULARY.items():
        patterns[attribute] = []
        for value, parts in table.items():
            every = [f for part in parts for w in part for f in forms(w)]
            alternatives = "|".join(re.escape(f) for f in sorted(every, key=len, reverse=True))
            patterns[attribute].append((value, re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.IGNORECASE)))
    return patterns


def named_attributes(text: str) -> dict[str, list[str]]:
    """Which values of each attribute `text` names, by every word form of every part (whole words;
    hyphenated words count whole: "pitch-black" names black once). A caption names exactly one each."""
    return {attribute: [value for value, pattern in patterns if pattern.search(text)]
            for attribute, patterns in _word_patterns().items()}


def fix_articles(text: str) -> str:
    """'a orange' -> 'an orange' (and 'A orange' -> 'An orange')."""
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)
