"""The prompt lexicon: rewrite the words of a prompt that a model never trained on into words it did.

A text-to-video model trained on a closed vocabulary follows the words it was trained on and guesses at
the rest: the shipped `shapes-t2v` reads 97-100% of attributes right in new sentence frames, but only
45-73% when the colour, shape or background is named by a word it never saw, and probes on MiniLM's
output show the text encoder itself does not place "jade" with green (docs/RESULTS.md, "Does the text
side carry words the model never saw?"). The knowledge that jade is green has to come from somewhere;
here it comes from two public lexical resources that ship in the repository (`lexicon_data/`, built by
`scripts/build_lexicon.py`):

- the xkcd colour survey (949 colour names with their sRGB): a colour name the model never saw becomes
  the nearest of the model's own colour words by CIEDE2000 (lightness weighted half, kL = 2); the colour
  names of one prompt are read together, each naming an attribute the prompt leaves open;
- WordNet 3.0: any other word becomes the nearest training word that names a value, in WordNet's graph: a
  synonym first, then a word one or two steps away (hypernym, similar-to, also-see, verb group,
  pertainym), senses in WordNet's frequency order breaking ties, inflected like the word it replaces;
  a motion verb's replacement is fitted to the words after it ("tumbles down" -> "goes down").

    lexicon = lexicon_for_world("shapes")        # PromptLexicon(captions, value words, colour classes)
    lexicon.rewrite("a jade pyramid heads left on a slate canvas")
    # Rewrite(text="a green pyramid goes left on a grey canvas",
    #         substitutions=(("jade", "green", "colour name"), ("heads", "goes", "wordnet: head -> go (2 steps)"),
    #                        ("slate", "grey", "colour name")))

Words the model trained on are never touched, so a prompt in the training vocabulary passes unchanged.
What the system then follows beyond its training words comes from these resources, not from the network:
docs/RESULTS.md reports the network with and without the lexicon.
"""
from __future__ import annotations

import functools
import gzip
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).with_name("lexicon_data")
# CIEDE2000's lightness factor for colour names: a name's lightness (maroon is dark, lavender light) says less
# about which of a model's few saturated colours it means than its hue does; kL = 2 is the standard's value
# for textiles, where the same holds (development words: 5 of 75 wrong against 11 with kL = 1)
COLOUR_KL = 2.0
MAX_DEPTH = 2                       # WordNet steps from a word's own synset to a training word
WALK = ("similar", "hypernym", "also", "group", "pertainym")     # the first step from the word's own synset
LATER_WALK = ("hypernym", "also", "group")       # later steps: similar-to twice goes from one satellite of an
#                                                  adjective cluster to any other ("inky" -> "achromatic" -> "silver")
WORD = re.compile(r"[A-Za-z]+(?:['-][A-Za-z]+)*")
# function words: never replaced and never a replacement (WordNet lists some: "in" as inch, "it" as IT)
FUNCTION_WORDS = frozenset("""a an the this that these those it its is are was were be been being am and or but
nor so of on in at to from by for with without over under into onto off up down out as than then there here
where while which who whom whose what when how why one ones some any each every all both no not very just
we you he she they them his her their our your my me us him i""".split())
# WordNet's detachment rules (morphy), by part of speech: (suffix, replacement)
SUFFIXES = {"n": [("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
                  ("men", "man"), ("ies", "y")],
            "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"),
                  ("ing", "")],
            "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")], "r": []}


@dataclass(frozen=True)
class Rewrite:
    """A rewritten prompt: `text`, each `(original, replacement, reason)` substitution in order, and the
    `unplaced` words: words no training caption has that the lexicon left as typed (frame words such as
    "showing" among them: only some of them matter)."""
    text: str
    substitutions: tuple[tuple[str, str, str], ...]
    unplaced: tuple[str, ...] = ()


@functools.cache
def wordnet() -> dict:
    """WordNet 3.0 as `scripts/build_lexicon.py` stores it: synsets [pos, words, {relation: [synset]}],
    senses {word: {pos: [synset, most frequent first]}}, exceptions {pos: {inflected: [base]}}."""
    return json.loads(gzip.decompress((DATA / "wordnet-3.0.json.gz").read_bytes()))


@functools.cache
def xkcd_colours() -> dict[str, tuple[float, float, float]]:
    """{colour name: CIELAB (L, a, b)} of the xkcd colour survey."""
    names = json.loads((DATA / "xkcd-colours.json").read_text())["colours"]
    return {name: srgb_to_lab(int(hex_[1:3], 16), int(hex_[3:5], 16), int(hex_[5:7], 16))
            for name, hex_ in names.items()}


def srgb_to_lab(r: int, g: int, b: int) -> tuple[float, float, float]:
    """8-bit sRGB -> CIELAB under D65."""
    def linear(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    rl, gl, bl = linear(r), linear(g), linear(b)
    xyz = (0.4124 * rl + 0.3576 * gl + 0.1805 * bl) / 0.95047, 0.2126 * rl + 0.7152 * gl + 0.0722 * bl, \
        (0.0193 * rl + 0.1192 * gl + 0.9505 * bl) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    fx, fy, fz = (f(t) for t in xyz)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def ciede2000(lab1: tuple[float, float, float], lab2: tuple[float, float, float], kl: float = 1.0) -> float:
    """CIEDE2000 colour difference (Sharma, Wu and Dalal 2005), the CIE's distance between perceived colours.

    `kl` is the standard's parametric lightness factor: 1 for the reference conditions, 2 where lightness
    matters less, as for textiles (`COLOUR_KL`)."""
    (l1, a1, b1), (l2, a2, b2) = lab1, lab2
    c_mean = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
    g = 0.5 * (1 - math.sqrt(c_mean ** 7 / (c_mean ** 7 + 25 ** 7)))
    a1, a2 = a1 * (1 + g), a2 * (1 + g)
    c1, c2 = math.hypot(a1, b1), math.hypot(a2, b2)
    h1 = math.degrees(math.atan2(b1, a1)) % 360 if c1 else 0.0
    h2 = math.degrees(math.atan2(b2, a2)) % 360 if c2 else 0.0
    dl, dc = l2 - l1, c2 - c1
    dh = 0.0 if c1 * c2 == 0 else (h2 - h1 + 180) % 360 - 180
    dh_big = 2 * math.sqrt(c1 * c2) * math.sin(math.radians(dh / 2))
    l_mean, c_mean = (l1 + l2) / 2, (c1 + c2) / 2
    if c1 * c2 == 0:
        h_mean = h1 + h2
    elif abs(h1 - h2) <= 180:
        h_mean = (h1 + h2) / 2
    else:
        h_mean = (h1 + h2 + 360) / 2 if h1 + h2 < 360 else (h1 + h2 - 360) / 2
    t = (1 - 0.17 * math.cos(math.radians(h_mean - 30)) + 0.24 * math.cos(math.radians(2 * h_mean))
         + 0.32 * math.cos(math.radians(3 * h_mean + 6)) - 0.20 * math.cos(math.radians(4 * h_mean - 63)))
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / math.sqrt(20 + (l_mean - 50) ** 2)
    s_c, s_h = 1 + 0.045 * c_mean, 1 + 0.015 * c_mean * t
    r_t = (-2 * math.sqrt(c_mean ** 7 / (c_mean ** 7 + 25 ** 7))
           * math.sin(math.radians(60 * math.exp(-(((h_mean - 275) / 25) ** 2)))))
    return math.sqrt((dl / (kl * s_l)) ** 2 + (dc / s_c) ** 2 + (dh_big / s_h) ** 2 + r_t * (dc / s_c) * (dh_big / s_h))


def looks_grey(lab: tuple[float, float, float]) -> bool:
    """A colour whose CIELAB chroma is under 30% of its lightness (or under 5) reads as a grey, black or
    white: slate (C* 11, L* 41) and pale (C* 21, L* 97) do, navy (C* 38, L* 12) does not."""
    c = math.hypot(lab[1], lab[2])
    return c < 5 or c < 0.3 * lab[0]


@functools.lru_cache(maxsize=1 << 16)
def base_forms(word: str, pos: str) -> tuple[str, ...]:
    """WordNet's morphy: the dictionary forms of `word` as part of speech `pos` ("rises", "v" -> ("rise",))."""
    net, word = wordnet(), word.lower().replace(" ", "_")
    head, sep, rest = word.partition("_")
    if sep:                                           # a phrase inflects its first word: "goes_down"
        return tuple(b for h in base_forms(head, pos) if pos in net["senses"].get(b := f"{h}_{rest}", {})) + \
            ((word,) if pos in net["senses"].get(word, {}) and not base_forms(head, pos) else ())
    found = list(net["exceptions"].get(pos, {}).get(word, []))
    if pos in net["senses"].get(word, {}):
        found.append(word)
    for suffix, replacement in SUFFIXES[pos]:
        if word.endswith(suffix) and len(word) > len(suffix) + 1:
            base = word[: len(word) - len(suffix)] + replacement
            if pos in net["senses"].get(base, {}):
                found.append(base)
    return tuple(dict.fromkeys(b for b in found if pos in net["senses"].get(b, {})))


def words_of(text: str) -> set[str]:
    """The lower-cased words of `text`, a hyphenated compound also by its parts ("jet-black": jet, black)."""
    tokens = {t.lower() for t in WORD.findall(text)}
    return tokens | {part for t in tokens for part in t.split("-")}


def inflection(word: str) -> str:
    """The inflection a replacement must copy: "ing", "ed", "s" or "" (a word's own form)."""
    word = word.lower()
    for ending in ("ing", "ed"):
        if word.endswith(ending) and len(word) > len(ending) + 2:
            return ending
    return "s" if word.endswith("s") and not word.endswith("ss") and len(word) > 3 else ""


def inflect(base: str, form: str) -> str:
    """`base` ("go down") in `form` ("s" -> "goes down"); only the first word inflects."""
    head, _, rest = base.partition(" ")
    if form == "s":
        head = head[:-1] + "ies" if re.search(r"[^aeiou]y$", head) else \
            head + "es" if re.search(r"(s|x|z|ch|sh|o)$", head) else head + "s"
    elif form in ("ing", "ed"):
        stem = head[:-1] if head.endswith("e") and not head.endswith(("ee", "ye", "oe")) else head
        if re.search(r"(^|[^aeiou])[aeiou][bdgmnpt]$", head) and len(head) <= 4:   # drop -> dropping
            stem = head + head[-1]
        head = stem + form if form == "ing" else stem + ("d" if stem.endswith("e") else "ed")
    return f"{head} {rest}" if rest else head


class PromptLexicon:
    """Maps the words of a prompt that are not in `training_texts` to the nearest words that name a value.

    `training_texts`: every caption the model was trained on; their words are known and never rewritten.
    `value_words`: {attribute: (parts of speech ("n", "a", "v"), the training words and phrases that name
    its values)}: what a replacement may be, and only in those parts of speech. A
    word of a sentence frame is not a value ("a clip showing ...": "showing" may not become "leaving",
    "watch" (noun) not "shift" (a motion verb)); for a motion phrase its verb is ("drifts to the left":
    drift) and so is a particle verb ("goes down": go down).
    `colour_words`: the model's colour classes ("red", ..., "white"); a colour name it never saw
    becomes the nearest of them by CIEDE2000. Words that are neither a colour name nor in WordNet near a
    value word are left as they are.
    """

    def __init__(self, training_texts: list[str], value_words: Mapping[str, tuple[str, Iterable[str]]],
                 colour_words: Iterable[str] = ()):
        self.known: set[str] = set()                     # surface words, hyphenated compounds and their parts
        self.surfaces: dict[tuple[str, str], str] = {}   # (dictionary form, inflection) -> a training surface
        for text in dict.fromkeys(training_texts):
            self.known |= words_of(text)
            tokens = [t.lower() for t in WORD.findall(text)]
            for i, token in enumerate(tokens):
                # the word and the WordNet lemmas it starts ("jet-black", "round shape", "goes down"), by form
                form = inflection(token)
                for surface in (" ".join(tokens[i:i + n]) for n in (1, 2, 3) if i + n <= len(tokens)):
                    for pos in "nvar":
                        for base in base_forms(surface.replace("-", "_"), pos):
                            self.surfaces.setdefault((base.replace("_", " "), form), surface)
        # what a replacement may be: the words and lemmas that name a value, in their part of speech
        self.targets: dict[str, dict[str, set[str]]] = {}           # base -> {part of speech: attributes}
        self.verb_attributes = {attribute for attribute, (parts_of_speech, _) in value_words.items()
                                if "v" in parts_of_speech}
        self.value_attributes: dict[str, set[str]] = {}            # a value word as written -> attributes
        for attribute, (parts_of_speech, phrases) in value_words.items():
            for phrase in phrases:
                self.value_attributes.setdefault(phrase.lower(), set()).add(attribute)
                words = phrase.lower().split(" ")
                for pos in parts_of_speech:
                    units = [phrase.lower()] + ([words[0], " ".join(words[:2])] if pos == "v" else [])
                    for unit in units:
                        for base in base_forms(unit.replace("-", "_"), pos):
                            self.targets.setdefault(base.replace("_", " "), {}).setdefault(pos, set()).add(attribute)
        colours = xkcd_colours()
        missing = [w for w in colour_words if w.lower() not in colours]
        if missing:
            raise ValueError(f"colour words with no xkcd colour: {missing}")
        self.colour_words = {w: colours[w.lower()] for w in colour_words}
        # the attribute each colour word names ("red": color, "black": background); a colour word names one
        self.colour_attribute = {w: min(self.attributes(w) or {""}) for w in self.colour_words}
        self.colour_attributes = set(self.colour_attribute.values()) - {""}

    # ----------------------------------------------------------------------------------------------
    def rewrite(self, prompt: str) -> Rewrite:
        """`prompt` with each unknown word (or two-word colour name / particle verb) replaced.

        A replacement that would name an attribute the prompt already names with a word the model knows
        is not made: in "a circle coloured red on a black backdrop", "coloured" (WordNet: "dark") stays.
        Colour names are read together (`_assign_colours`): each takes a value of an attribute the prompt
        leaves open, so "denim" on its own is blue, but the grey background in "a jade orb on a denim
        canvas" and in "a red orb on a denim canvas"."""
        matches = list(WORD.finditer(prompt))
        units: list[tuple[int, int, tuple[str, str] | None]] = []    # (first match, matches spanned, replacement)
        i = 0
        while i < len(matches):
            match = matches[i]
            span, found = 1, None
            if match.group().lower() not in self.known:
                # a two-word unit first ("medium grey", "puffs up"), if only a space separates the words
                if i + 1 < len(matches) and prompt[match.end():matches[i + 1].start()] == " ":
                    pair = f"{match.group()} {matches[i + 1].group()}"
                    found = self.replacement(pair)
                    span = 2 if found else 1
                found = found or self.replacement(match.group())
            units.append((i, span, found))
            i += span
        # what the prompt names with known words, outside the units to replace ("medium grey" names nothing)
        named = {a for i, span, found in units if not found for m in matches[i:i + span]
                 if m.group().lower() in self.known for a in self.attributes(m.group())}
        colour_units = [k for k, (_, _, found) in enumerate(units) if found and found[1] == "colour name"]
        labs = [self._colour_lab(" ".join(m.group() for m in matches[i:i + span]))
                for i, span, _ in (units[k] for k in colour_units)]
        for k, word in zip(colour_units, self._assign_colours(labs, self.colour_attributes - named)):
            units[k] = (*units[k][:2], (word, "colour name"))
        out, substitutions, unplaced, last = [], [], [], 0
        for i, span, found in units:
            if not found or self.attributes(found[0]) & named:
                unplaced += [m.group() for m in matches[i:i + span]
                             if m.group().lower() not in self.known and m.group().lower() not in FUNCTION_WORDS]
                continue
            match = matches[i]
            start, end = match.start(), matches[i + span - 1].end()
            original = prompt[start:end]
            following = matches[i + span].group().lower() if i + span < len(matches) and \
                prompt[end:matches[i + span].start()] == " " else ""
            word = self._fit(found[0], following)
            if original[:1].isupper():
                word = word[:1].upper() + word[1:]
            before = prompt[last:start]
            article = re.search(r"\b([Aa])(n?) $", before)      # "a ball" -> "an orb", "an inky" -> "a black"
            if article:
                an = "n" if word[:1].lower() in "aeiou" else ""
                before = before[:article.start()] + article.group(1) + an + " "
            out.append(before + word)
            substitutions.append((original, word, found[1]))
            last = end
        out.append(prompt[last:])
        return Rewrite("".join(out), tuple(substitutions), tuple(dict.fromkeys(unplaced)))

    def _fit(self, replacement: str, following: str) -> str:
        """A motion replacement fitted to the word after it. A particle verb drops a particle that the next
        word repeats ("rockets upward": "moves up" -> "moves", read "moves upward"; "tumbles down": "goes
        down" -> "goes"); a lone verb that begins exactly one training phrase takes the whole phrase unless
        the next word is in it ("levitates": "lifts" -> "lifts up"; "plummets": "drops" -> "drops
        downward"), so that what the model reads is a phrase it trained on."""
        if not self.attributes(replacement) & self.verb_attributes:
            return replacement
        head, _, particle = replacement.rpartition(" ")
        if head and particle and following.startswith(particle):
            return head
        if not head:
            phrases = [p for p in self.value_attributes if p.split(" ")[0] == replacement and " " in p]
            if len(phrases) == 1 and following not in phrases[0].split(" "):
                return phrases[0]
        return replacement

    @staticmethod
    def _colour_lab(unit: str) -> tuple[float, float, float] | None:
        """The CIELAB colour of a colour name ("medium grey", "snow-white"), or None when it is not one."""
        return xkcd_colours().get(unit.lower().replace("-", " "))

    def attributes(self, word: str) -> set[str]:
        """The attributes a known word or a replacement names ("crimson" -> {"color"}; "moves" -> {"motion"})."""
        word = word.lower()
        if word in self.value_attributes:
            return self.value_attributes[word]
        return {a for pos in "nvar" for base in base_forms(word.replace("-", "_"), pos)
                for a in self.targets.get(base.replace("_", " "), {}).get(pos, ())}

    def replacement(self, unit: str) -> tuple[str, str] | None:
        """(replacement, reason) for an unknown word or two-word unit, or None."""
        lowered = unit.lower()
        if lowered in FUNCTION_WORDS or lowered in self.known or len(lowered) < 3:
            return None
        if "-" in lowered and " " not in lowered:         # a compound whose head is known: "snow-white"
            head = lowered.rsplit("-", 1)[1]
            if head in self.known and head not in FUNCTION_WORDS:
                return head, "compound head"
        colour = self._colour(lowered)
        if colour:
            return colour
        return self._wordnet(lowered)

    def _colour(self, unit: str) -> tuple[str, str] | None:
        """("nearest colour word", "colour name") for a colour name read on its own, else None."""
        lab = self._colour_lab(unit)
        if lab is None or not self.colour_words:
            return None
        return self._nearest_colour(lab, self.colour_attributes), "colour name"

    def _nearest_colour(self, lab: tuple[float, float, float], attributes: set[str]) -> str:
        """The nearest colour word to `lab` by CIEDE2000 (kL = `COLOUR_KL`): among those of `attributes` when
        exactly one colour attribute is given; otherwise among the greys (black, gray, white) for a colour
        that `looks_grey` and among the hues for the rest: CIEDE2000 alone puts a bluish grey ("slate")
        nearer blue."""
        if len(attributes & self.colour_attributes) == 1:
            options = [w for w in self.colour_words if self.colour_attribute[w] in attributes]
        else:
            options = [w for w, ref in self.colour_words.items() if looks_grey(ref) == looks_grey(lab)]
        return min(options or self.colour_words, key=lambda w: ciede2000(lab, self.colour_words[w], COLOUR_KL))

    def _assign_colours(self, labs: list[tuple[float, float, float]], open_attributes: set[str]) -> list[str]:
        """One colour word for each colour name of a prompt (CIELAB `labs`), among the colour attributes the
        prompt leaves open. When two names read on their own as hues (one attribute named twice) and a grey
        attribute is open, the less colourful one (lower CIELAB chroma) takes the grey one: in "a jade orb
        on a denim canvas" jade stays green and denim becomes the background."""
        choices = [self._nearest_colour(lab, open_attributes) for lab in labs]
        hues = [k for k, w in enumerate(choices) if not looks_grey(self.colour_words[w])]
        greys = {self.colour_attribute[w] for w in self.colour_words if looks_grey(self.colour_words[w])}
        if len(hues) == 2 and len(open_attributes & greys) == 1:
            muted = min(hues, key=lambda k: math.hypot(labs[k][1], labs[k][2]))
            choices[muted] = self._nearest_colour(labs[muted], open_attributes & greys)
        return choices

    def _wordnet(self, unit: str) -> tuple[str, str] | None:
        """The nearest known word in WordNet's graph, by (a synonym before a word some steps away, the
        sense's frequency rank, steps, part of speech, the longer known word): a synonym in any sense
        ("ball" -> "orb") beats the first sense's neighbours; else the most frequent sense that reaches a
        known word within `MAX_DEPTH` steps (one step of any relation in `WALK`, then of `LATER_WALK`).
        A hyphenated word on the way counts by its head, as a typed one does ("inky" = "ink-black" -> "black").

        Parts of speech rank in the order the word's form suggests ("heads", "floating": a verb first);
        only the first part of speech the word has may go two steps ("pyramid": the noun reaches nothing,
        and the verb's "get", two steps away, is not taken; "ebony": the noun's synonym "jet black")."""
        net, head = wordnet(), unit.split(" ")[0]
        # an inflected verb form (a dictionary form other than the word: "heads", "floating") reads as a verb
        form = inflection(head) if any(b != head for b in base_forms(head, "v")) else ""
        parts = [pos for pos in ("vnar" if form else "anvr") if base_forms(unit, pos)]
        best = None
        for pos_rank, pos in enumerate(parts):
            for base in base_forms(unit, pos):
                for sense_rank, synset in enumerate(net["senses"][base][pos]):
                    frontier, seen = [synset], {synset}
                    for depth in range(MAX_DEPTH + 1 if pos_rank == 0 else 2):
                        for s in frontier:
                            for lemma in net["synsets"][s][1]:
                                lemma = lemma.replace("_", " ")
                                if lemma not in self.targets and "-" in lemma:   # "ink-black": its head
                                    lemma = lemma.rsplit("-", 1)[1]
                                fits = net["synsets"][s][0] in self.targets.get(lemma, {})   # part of speech
                                if fits and lemma != base.replace("_", " "):
                                    key = (depth > 0, sense_rank, depth, pos_rank, -len(lemma.split(" ")))
                                    if best is None or key < best[0]:
                                        best = (key, lemma, base, pos)
                        relations = WALK if depth == 0 else LATER_WALK
                        frontier = [t for s in frontier for rel in relations for t in net["synsets"][s][2].get(rel, [])
                                    if t not in seen and not seen.add(t)]
        if best is None:
            return None
        (_, _, depth, _, _), lemma, base, pos = best
        form = form if pos in "vn" else ""
        word = self.surfaces.get((lemma, form)) or (inflect(lemma, form) if form else lemma)
        return word, f"wordnet: {base.replace('_', ' ')} -> {lemma} ({depth} step{'s' if depth != 1 else ''})"


@functools.cache
def lexicon_for_world(world: str) -> PromptLexicon | None:
    """The lexicon of a world whose models read captions (`shapes`), or None for the others."""
    if world != "shapes":
        return None
    from eflow_core.data.captions import VOCABULARY, all_captions, forms, words
    from eflow_core.data.shapes import ATTRIBUTES

    def training(attribute: str) -> list[str]:
        return [f for value in VOCABULARY[attribute] for entry in words(attribute, value) for f in forms(entry)]

    value_words = {"shape": ("n", training("shape")), "color": ("an", training("color")),
                   "background": ("an", training("background")), "motion": ("v", training("motion"))}
    return PromptLexicon(all_captions("train"), value_words, colour_words=[
        "grey" if c == "gray" else c for c in ATTRIBUTES["color"] + ATTRIBUTES["background"]])
