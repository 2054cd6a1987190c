"""Plain-text readouts of what a generation cost and what a model is (no gradio; notebooks may use them).

The latency readout is the text the `/generate` API returns and the UI shows in a monospace box:

    4 steps, few-step solution sampler
    NFE 4 · 512 tokens · device cpu
    text encoding      7.3 ms
    step 1           142.0 ms
    ...
    decode             1.2 ms
    total            590.1 ms
    read as: a green spike moving left on a black background
      (words the model never trained on: jade -> green)
      never trained on, left as typed: spike

The last lines appear only when the prompt lexicon (eflow_core/text/lexicon.py) changed words, or found
words that no training caption has and that it could not place.
"""
from __future__ import annotations

from typing import Mapping


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:9.1f} ms" if seconds < 10 else f"{seconds:9.2f} s "


def latency_readout(result) -> str:
    """Stage timings of one `GenerationResult` (text encoding, each step, decode, total, NFE, tokens, device)."""
    timings = result.timings
    sampler = "few-step solution sampler" if result.sampler == "solution" else "Euler ODE + CFG baseline"
    lines = [f"{result.steps} steps, {sampler}",
             f"NFE {result.nfe} · {result.tokens} tokens · device {result.device}",
             f"{'text encoding':<14}{_ms(timings.get('text', 0.0))}"]
    steps = list(timings.get("steps", []))
    if len(steps) <= 10:
        lines += [f"{f'step {i + 1}':<14}{_ms(s)}" for i, s in enumerate(steps)]
    else:  # the 50-step baseline: summarise instead of fifty lines
        mean = sum(steps) / len(steps)
        lines += [f"{f'steps 1-{len(steps)}':<14}{_ms(sum(steps))}",
                  f"{'  per step':<14}{_ms(mean)}  (min {min(steps) * 1000:.1f}, max {max(steps) * 1000:.1f} ms)"]
    lines += [f"{'decode':<14}{_ms(timings.get('decode', 0.0))}",
              f"{'total':<14}{_ms(timings.get('total', 0.0))}"]
    read_as = getattr(result, "read_as", None)
    if read_as is not None and read_as.substitutions:     # the lexicon replaced words the model never trained on
        changes = ", ".join(f"{old} -> {new}" for old, new, _ in read_as.substitutions)
        lines += [f"read as: {read_as.text}", f"  (words the model never trained on: {changes})"]
    if read_as is not None and read_as.unplaced:          # ... and left some as typed
        lines.append(f"  never trained on, left as typed: {', '.join(read_as.unplaced)}")
    return "\n".join(lines)


def speedup_readout(fast, baseline) -> str:
    """The measured speed-up of the few-step result over the baseline (same prompt, seed, network, machine)."""
    fast_total, slow_total = fast.timings["total"], baseline.timings["total"]
    speedup = slow_total / max(fast_total, 1e-9)
    nfe_ratio = baseline.nfe / max(fast.nfe, 1)
    return (f"speed-up {speedup:.1f}x measured on this machine ({fast.device}): "
            f"{fast.steps}-step EFlow {fast_total * 1000:.0f} ms vs {baseline.steps}-step CFG baseline "
            f"{slow_total * 1000:.0f} ms; NFE {fast.nfe} vs {baseline.nfe} ({nfe_ratio:.0f}x fewer evaluations)")


def defect_readout(defect: Mapping[str, float]) -> str:
    """The semigroup defect of one sample: one jump 1 -> 0 against two jumps 1 -> l -> 0."""
    return (f"semigroup defect at l = {defect['l']:g}: RMS {defect['defect_rms']:.4f}, "
            f"relative {defect['relative']:.1%} of the one-jump result "
            f"(0 means jumping straight to the clean video agrees with stopping half-way first)")


def model_summary(pipe, name: str) -> str:
    """One markdown paragraph on a loaded pipeline: name, kind, world, size, training steps, device."""
    card = pipe.card
    params = sum(p.numel() for p in pipe.model.parameters())
    frames, height, width = pipe.default_size
    kind = "text-to-video" if pipe.kind == "text" else f"class-conditional ({len(pipe.classes)} classes)"
    parts = [f"**{name}**", kind, f"world *{pipe.world}*", f"{params / 1e6:.1f} M parameters",
             f"{frames}×{height}×{width}"]
    if card.get("steps") is not None:
        parts.append(f"{card['steps']:,} training steps")
    parts.append(f"on {pipe.device}")
    text = " · ".join(parts)
    if card.get("standin"):
        text += "  \n⚠️ untrained stand-in weights: the videos show the pipeline working, not a trained model"
    fidelity = prompt_fidelity(card, steps=pipe.default_steps)   # at the steps a user starts with
    if fidelity:
        text += f"  \n{fidelity}"
    if card.get("limitations"):                 # what the model card says the model cannot do
        text += f"  \n⚠️ {card['limitations']}"
    return text


_SET_WORDING = {"heldout-frames": "new sentence frames, training words", "heldout-vocabulary": "new words",
                "heldout-vocabulary-2": "a second list of new words",
                "heldout-vocabulary-3": "a third list of new words",
                "heldout-both": "new sentence frames and new words", "train": "its training wording"}
_ATTRIBUTE_ORDER = ("color", "shape", "motion", "background")
_ATTRIBUTE_WORD = {"color": "colour"}          # the attribute as the summary spells it


def _card_row(results: Mapping, steps: int) -> Mapping | None:
    """The row of `steps` steps of one evaluate() result, else its last row; None without attribute rows."""
    rows = list(results.get("rows") or [])
    row = next((r for r in rows if r.get("steps") == steps), rows[-1] if rows else None)
    return row if row and "shape" in row.get("adherence", {}) else None


def _adherence_words(row: Mapping) -> str:
    """"colour 100%, shape 67%, motion 84%, background 97%" of one evaluate() row."""
    return ", ".join(f"{_ATTRIBUTE_WORD.get(k, k)} {100 * row['adherence'][k]:.0f}%" for k in _ATTRIBUTE_ORDER
                     if k in row["adherence"])


def prompt_fidelity(card: Mapping, steps: int = 4) -> str | None:
    """A plain-language line on how faithfully a text model follows prompts worded unlike its training
    captions, from the model card's `eval` (what `eflow eval --write-card` stores), at `steps` steps (else
    the most evaluated). Cards evaluated per caption set ({set: results}) give one clause per set; older
    cards (one result, prompts from held-out templates reusing the training words) say just that; None
    when the card has no attribute evaluation (none at all, or a class-conditional model)."""
    ev = card.get("eval")
    if not isinstance(ev, Mapping):
        return None
    if "rows" in ev and not ev.get("captions"):       # written before caption sets: training words only
        row = _card_row(ev, steps)
        return row and (f"Prompt fidelity: measured only on prompts that use its training words (new sentence "
                        f"frames, the same words for shape, colour, motion and background): "
                        f"{_adherence_words(row)} at {row['steps']} steps. Other wording (synonyms, other verbs) "
                        f"is not part of this evaluation.")
    sets = {ev["captions"]: ev} if "rows" in ev else ev
    rows = {name: _card_row(r, steps) for name, r in sets.items() if isinstance(r, Mapping)}
    rows = {name: row for name, row in rows.items() if row}
    if not rows:
        return None
    counts = sorted({row["steps"] for row in rows.values()})
    at = f"at {counts[0]} steps" if len(counts) == 1 else "at the step counts evaluated"
    text = (f"Prompt fidelity {at}, by how the prompt is worded: "
            + "; ".join(f"{_SET_WORDING.get(name, name)} — {_adherence_words(row)}" for name, row in rows.items())
            + ".")
    if any(isinstance(r, Mapping) and r.get("prompt_lexicon") for r in sets.values()):
        text += (" Measured with the prompt lexicon, which rewrites words the model never trained on into its "
                 "own through WordNet and colour names before the model reads them.")
    new = [(row["adherence"][k], k) for name, row in rows.items() if name != "train" for k in _ATTRIBUTE_ORDER
           if k in row["adherence"]]
    if new and min(new)[0] < 0.9:
        value, key = min(new)
        text += f" Wording it never trained on is followed least well for {_ATTRIBUTE_WORD.get(key, key)} " \
                f"({100 * value:.0f}%)."
    return text


def stage_times(timings: Mapping) -> list[tuple[str, float]]:
    """[(stage name, seconds)] in order: text encoding, step 1..N, decode (for bar charts)."""
    stages = [("text", float(timings.get("text", 0.0)))]
    stages += [(f"step {i + 1}", float(s)) for i, s in enumerate(timings.get("steps", []))]
    stages.append(("decode", float(timings.get("decode", 0.0))))
    return stages
