"""How often the prompt lexicon (eflow_core/text/lexicon.py) maps a word the model never saw to the right value,
measured on words alone, without a generator.

Four word sets of the `shapes` captions (eflow_core/data/captions.py), each word on its own:
- leave-one-out over the training words: each non-canonical training word is removed from the known
  vocabulary (with every word part no other training word has), and the lexicon must map it back to a
  word of its own value;
- the first and second held-out lists (development: the second reported the lexicon's first version);
- the third held-out list (written down before the lexicon's second version: its report).

A word counts as right when the rewritten text names its value and no other (`named_attributes`), as "left"
when the lexicon leaves it unchanged. A motion phrase counts as right when every word the lexicon put in
occurs in a training phrase of its value: "heads left" -> "goes left" is right ("goes leftward"), "heads
left" -> "rises left" and "floats upward" -> "drifts upward" are wrong (drift is a left/right word).

    python -m benchmarks.lexicon [--json out.json] [--show]
"""
from __future__ import annotations

import argparse
import copy
import json

from eflow_core.data import captions as C
from eflow_core.text.lexicon import FUNCTION_WORDS, WORD, lexicon_for_world, words_of


def judge(lexicon, attribute: str, value: str, form: str) -> tuple[str, str]:
    """("right" | "wrong" | "left", rewritten text) for one word form of `value`."""
    rewrite = lexicon.rewrite(form)
    if not rewrite.substitutions:
        return "left", rewrite.text
    if attribute == "motion":     # phrases: every word put in must occur in a training phrase of the value
        own = motion_tokens(value)
        right = all(t in own for _, replacement, _ in rewrite.substitutions for t in content(replacement))
    else:
        right = C.named_attributes(rewrite.text)[attribute] == [value]
    return ("right" if right else "wrong"), rewrite.text


def motion_tokens(value: str) -> set[str]:
    """The content words of a motion value's training phrases ("moving left": moving, moves, drifting, ...)."""
    return {t for pair in C.MOTION_WORDS[value][0] for form in pair for t in content(form)}


def content(text: str) -> list[str]:
    return [t.lower() for t in WORD.findall(text) if t.lower() not in FUNCTION_WORDS]


def without(lexicon, form: str, keep: set[str]):
    """A copy of `lexicon` that does not know the words of `form` that are not in `keep`."""
    reduced = copy.copy(lexicon)
    dropped = words_of(form) - keep
    reduced.known = lexicon.known - dropped
    reduced.targets = {t: pos for t, pos in lexicon.targets.items() if not set(t.split(" ")) & dropped}
    reduced.value_attributes = {w: a for w, a in lexicon.value_attributes.items() if not set(w.split(" ")) & dropped}
    reduced.surfaces = {k: v for k, v in lexicon.surfaces.items() if not set(v.split(" ")) & dropped}
    reduced.colour_words = {w: lab for w, lab in lexicon.colour_words.items() if w not in dropped}
    return reduced


SETS = {"leave-one-out (training words)": 0, "held-out list 1 (development)": 1, "held-out list 2 (development)": 2,
        "held-out list 3 (report)": 3}


def measure(show: bool = False, sets: tuple[int, ...] = (0, 1, 2, 3)) -> dict:
    lexicon = lexicon_for_world("shapes")
    frame_words = {w for frame in C.TRAIN_FRAMES for w in words_of(frame)}
    results: dict[str, dict] = {}
    for set_name, part in SETS.items():
        if part not in sets:
            continue
        counts: dict[str, dict[str, int]] = {}
        for attribute, table in C.VOCABULARY.items():
            tally = counts.setdefault(attribute, {"right": 0, "wrong": 0, "left": 0})
            for value, parts in table.items():
                entries = parts[part][1:] if part == 0 else parts[part]       # the canonical word stays known
                for entry in entries:
                    for form in C.forms(entry):
                        if part == 0:         # keep the words that the attribute's other training forms use
                            others = {w for v in table.values() for e in v[0] for f in C.forms(e) if f != form
                                      for w in words_of(f)}
                            verdict, text = judge(without(lexicon, form, others | frame_words), attribute, value,
                                                  form)
                        else:
                            verdict, text = judge(lexicon, attribute, value, form)
                        tally[verdict] += 1
                        if show and verdict != "right":
                            print(f"  {set_name[:18]:18s} {attribute:10s} {value:12s} {form!r:32s} -> {text!r} "
                                  f"({verdict})")
        results[set_name] = counts
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the counts here")
    parser.add_argument("--show", action="store_true", help="print every word not mapped right")
    parser.add_argument("--sets", default="0,1,2,3", help="which word sets: 0 leave-one-out, 1-3 the held-out lists")
    args = parser.parse_args(argv)
    results = measure(args.show, tuple(int(p) for p in args.sets.split(",")))
    print(f"{'word set':32s} {'attribute':10s} {'right':>6s} {'wrong':>6s} {'left':>6s}")
    for set_name, counts in results.items():
        for attribute, tally in counts.items():
            n = sum(tally.values())
            print(f"{set_name:32s} {attribute:10s} {tally['right']:3d}/{n:<3d}{tally['wrong']:6d} {tally['left']:6d}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
