"""Example prompts that the shapes-world models understand, built from that world's own vocabularies.

The shapes world (`eflow_core.data.shapes`) captions every clip from a shape, a colour, a background
and a motion through sentence frames and synonyms (`eflow_core.data.captions`). The examples use the
canonical words, and cover every shape, colour, background and motion at least once. Two in three are
free-form: sentence frames the shipped `shapes-t2v` never trained on (`HELDOUT_FRAMES`, where it gets all
four attributes right in 97.7% of 4-step clips at its default guidance, docs/RESULTS.md); the rest use
the plainest training frame. `LEXICON_EXAMPLES` add words the model never trained on that the prompt lexicon
(`eflow_core.text.lexicon`) rewrites into its own ("scarlet" -> "red", "falls" -> "goes down"): words of the first
held-out list, where the model with the lexicon gets colour, motion and background right in 99-100% of 4-step
clips (docs/RESULTS.md, "The prompt lexicon").
"""
from __future__ import annotations

from eflow_core.data.captions import HELDOUT_FRAMES, TRAIN_TEMPLATES, caption_for
from eflow_core.data.shapes import BACKGROUNDS, COLORS, MOTIONS, SHAPES


def example_prompts(count: int = 8) -> list[str]:
    """`count` distinct prompts (deterministic) that together use every word of each vocabulary."""
    prompts: list[str] = []
    i = 0
    while len(prompts) < count and i < 10 * count + 100:
        attributes = {
            "shape": SHAPES[i % len(SHAPES)],
            "color": COLORS[i % len(COLORS)],
            "background": BACKGROUNDS[(i // 2) % len(BACKGROUNDS)],
            "motion": MOTIONS[(i + i // len(MOTIONS)) % len(MOTIONS)],
        }
        # the first training template reads most naturally; the others are free-form sentences
        template = TRAIN_TEMPLATES[0] if i % 3 == 0 else HELDOUT_FRAMES[(i // 3 * 2 + i % 3) % len(HELDOUT_FRAMES)]
        text = caption_for(attributes, template)
        if text not in prompts:
            prompts.append(text)
        i += 1
    return prompts


LEXICON_EXAMPLES = ["a scarlet ball that falls on an inky background",
                    "a jade block ascending on a pale backdrop"]

DEFAULT_PROMPT = caption_for({"shape": "circle", "color": "red", "background": "black", "motion": "moving right"},
                             TRAIN_TEMPLATES[0])

VOCABULARY_HINT = ("This model knows {shapes}; {colors}; backgrounds {backgrounds}; "
                   "and motions {motions}.").format(shapes=", ".join(SHAPES), colors=", ".join(COLORS),
                                                     backgrounds=", ".join(BACKGROUNDS),
                                                     motions=", ".join(MOTIONS))
