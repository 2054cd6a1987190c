"""Does the text side carry words the model never saw? Attribute probes on the text encoder's output (issue 23).

A generator can follow a held-out word only if its text input places that word near the training word of
the same value. This measures that upper bound directly and cheaply (CPU, a few minutes): small classifiers
read the four attributes (shape, colour, background, motion) from the encoder's output of the *training*
captions, and are scored on the held-out caption sets (`eflow_core.data.captions`). Each probe mirrors one
way a generator can read text:

    pooled · linear        the L2-normalised sentence vector (mean of token states), one linear layer
    tokens · attention     token states -> MLP -> one learned query per attribute (masked softmax attention)
                           -> linear: what the DiT's cross-attention can do
    tokens · attention, word dropout p
                           the same, trained with each token masked out with probability p
    tokens · mean          the DiT's own pooled path: mean of the MLP-projected tokens -> linear

It also reports the text length (tokens per caption; the encoder's cap is 64) and the nearest training
value of every held-out word by cosine similarity of the sentence vectors.

    python -m benchmarks.text_side [--seeds 3] [--json docs/results/DATE-text-side.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks import command_line
from eflow_core.data.captions import (CAPTION_SETS, VOCABULARY, caption_for, caption_table)
from eflow_core.data.captions import TRAIN_FRAMES
from eflow_core.data.shapes import ATTRIBUTES
from eflow_core.text import load_text_encoder


def encode_set(encoder, split: str, batch: int = 256):
    """-> tokens (N, L, D) float32 (zero-padded), mask (N, L) bool, pooled (N, D), labels (N, 4) int64."""
    table = caption_table(split)
    texts, labels = [], []
    for values, variants in table.items():
        for text in variants:
            texts.append(text)
            labels.append([ATTRIBUTES[key].index(v) for key, v in zip(ATTRIBUTES, values)])
    tokens, masks, pooled = [], [], []
    for i in range(0, len(texts), batch):
        cond, vec = encoder.encode_with_pooled(texts[i:i + batch])
        tokens += list(cond.tokens.float())
        masks += list(cond.mask)
        pooled.append(vec.float())
    length = max(t.shape[0] for t in tokens)
    tok = torch.zeros(len(texts), length, tokens[0].shape[-1])
    msk = torch.zeros(len(texts), length, dtype=torch.bool)
    for i, (t, m) in enumerate(zip(tokens, masks)):
        tok[i, :t.shape[0]], msk[i, :m.shape[0]] = t, m
    return tok, msk, torch.cat(pooled), torch.tensor(labels), texts


class Probe(nn.Module):
    """Reads the four attributes from the text input: `kind` in {"pooled", "attention", "mean"}."""

    def __init__(self, kind: str, dim: int, hidden: int = 128):
        super().__init__()
        self.kind = kind
        sizes = [len(v) for v in ATTRIBUTES.values()]
        if kind == "pooled":
            self.heads = nn.ModuleList(nn.Linear(dim, n) for n in sizes)
            return
        self.proj = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.queries = nn.Parameter(torch.randn(len(sizes), hidden) * hidden ** -0.5)
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in sizes)

    def forward(self, tokens, mask, pooled) -> list[torch.Tensor]:
        """tokens (B, L, D), mask (B, L), pooled (B, D) -> per attribute logits (B, n_a)."""
        if self.kind == "pooled":
            return [head(pooled) for head in self.heads]
        h = self.proj(tokens)                                                 # (B, L, H)
        if self.kind == "mean":
            m = mask[..., None].float()
            v = (h * m).sum(1) / m.sum(1).clamp_min(1)
            return [head(v) for head in self.heads]
        scores = torch.einsum("blh,ah->bal", h, self.queries) / h.shape[-1] ** 0.5
        scores = scores.masked_fill(~mask[:, None], float("-inf"))
        read = torch.einsum("bal,blh->bah", scores.softmax(-1), h)            # (B, 4, H)
        return [head(read[:, a]) for a, head in enumerate(self.heads)]


def train_probe(kind: str, data, seed: int, word_dropout: float = 0.0, epochs: int = 60, batch: int = 256) -> Probe:
    """Fit a probe on the training captions (Adam, cross-entropy summed over the four attributes)."""
    tokens, mask, pooled, labels, _ = data
    torch.manual_seed(seed)
    probe = Probe(kind, tokens.shape[-1])
    opt = torch.optim.AdamW(probe.parameters(), lr=3e-3, weight_decay=1e-2)
    n = len(labels)
    for _ in range(epochs):
        order = torch.randperm(n)
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            m = mask[idx]
            if word_dropout:
                keep = torch.rand(m.shape) >= word_dropout
                keep[:, 0] = True                       # [CLS] stays, so no caption is emptied
                m = m & keep
            logits = probe(tokens[idx], m, pooled[idx])
            loss = sum(F.cross_entropy(lg, labels[idx, a]) for a, lg in enumerate(logits))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return probe.eval()


@torch.no_grad()
def accuracy(probe: Probe, data) -> dict[str, float]:
    """Per attribute and all-four accuracy (fractions) of `probe` on one encoded caption set."""
    tokens, mask, pooled, labels, _ = data
    right = torch.stack([lg.argmax(-1) == labels[:, a] for a, lg in enumerate(probe(tokens, mask, pooled))], 1)
    out = {key: float(right[:, a].float().mean()) for a, key in enumerate(ATTRIBUTES)}
    out["all"] = float(right.all(1).float().mean())
    return out


@torch.no_grad()
def nearest_values(encoder) -> dict[str, dict[str, str]]:
    """For every held-out word: the value whose canonical sentence is nearest (cosine of the sentence vectors)
    to the same sentence with the held-out word in its slot. attribute -> {held-out word: nearest value}."""
    frame = TRAIN_FRAMES[0]                  # "a {color} {shape} {ing} on a {background} background"
    base = {"shape": "circle", "color": "red", "background": "black", "motion": "moving left"}

    def sentence(attribute: str, word: str) -> str:
        slots = {"shape": "circle", "color": "red", "background": "black", "ing": "moving left"}
        slots["ing" if attribute == "motion" else attribute] = word
        return frame.format(**slots)

    out: dict[str, dict[str, str]] = {}
    for attribute, table in VOCABULARY.items():
        values = list(table)
        anchors = encoder.pooled([caption_for({**base, attribute: v}, frame) for v in values])
        heldout = [(value, w[0] if isinstance(w, tuple) else w) for value, (_, ws) in table.items() for w in ws]
        sims = encoder.pooled([sentence(attribute, word) for _, word in heldout]) @ anchors.T
        out[attribute] = {word: values[int(i)] + ("" if values[int(i)] == value else f" (is {value})")
                          for (value, word), i in zip(heldout, sims.argmax(-1))}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.time()
    encoder = load_text_encoder(args.encoder)
    sets = {split: encode_set(encoder, split) for split in CAPTION_SETS}
    lengths = {split: [int(m.sum()) for m in data[1]] for split, data in sets.items()}
    print(f"encoded {sum(len(d[3]) for d in sets.values())} captions in {time.time() - start:.0f} s; "
          "tokens per caption (median / max): "
          + ", ".join(f"{s} {int(np.median(v))}/{max(v)}" for s, v in lengths.items())
          + f"; the encoder's cap is {encoder.max_length}")
    probes = [("pooled · linear", "pooled", 0.0), ("tokens · mean", "mean", 0.0),
              ("tokens · attention", "attention", 0.0), ("tokens · attention, word dropout 0.2", "attention", 0.2)]
    results = []
    for label, kind, dropout in probes:
        scores = {split: [] for split in CAPTION_SETS}
        for seed in range(args.seeds):
            probe = train_probe(kind, sets["train"], seed, dropout, args.epochs)
            for split in CAPTION_SETS:
                scores[split].append(accuracy(probe, sets[split]))
        row = {"probe": label, "sets": {split: {k: [s[k] for s in runs] for k in runs[0]}
                                         for split, runs in scores.items()}}
        results.append(row)
        print(f"\n{label} ({args.seeds} seeds, mean ± spread):")
        print(f"  {'set':<20}" + "".join(f"{k:>14}" for k in [*ATTRIBUTES, "all"]))
        for split, table in row["sets"].items():
            cells = "".join(f"{100 * np.mean(v):>8.1f} ±{100 * (max(v) - min(v)) / 2:<4.1f}" for v in table.values())
            print(f"  {split:<20}{cells}")
    nearest = nearest_values(encoder)
    wrong = {a: {w: v for w, v in words.items() if "(is " in v} for a, words in nearest.items()}
    print("\nheld-out words whose sentence is nearest another value's canonical sentence:",
          json.dumps({a: w for a, w in wrong.items() if w}, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d"), "encoder": args.encoder, "seeds": args.seeds, "epochs": args.epochs,
            "command": command_line("benchmarks.text_side", argv), "token_lengths": {s: [int(np.median(v)), max(v)]
                                                                            for s, v in lengths.items()},
            "max_length": encoder.max_length, "probes": results, "nearest_value": nearest,
            "wall_s": round(time.time() - start, 1)}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
