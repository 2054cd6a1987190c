"""Prompt adherence: does the probe read, off each generated clip, what its prompt asked for?

Text-conditional worlds (`shapes`): per attribute, the fraction of clips whose probed value equals the
requested one (over the clips whose prompt named that attribute), and `all`: the fraction of clips
whose every requested attribute matches. Class-conditional worlds (`actions`): top-1 accuracy of the
probe's class head against the requested label.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from eflow_core.metrics.probe import VideoProbe


def score_attributes(vocabularies: Mapping[str, Sequence[str]], predicted: Mapping[str, torch.Tensor],
                     requested: Sequence[Mapping[str, str]]) -> dict[str, float]:
    """Adherence from probe predictions already computed.

    vocabularies: {head: class names}; predicted: {head: (N,) int64 class indices};
    requested: N dicts {attribute: value name}. Attributes without a head are ignored; a value outside
    its head's vocabulary raises ValueError. Returns {head: fraction} for every head requested at
    least once, `all` (fraction of clips whose every requested, probed attribute matched), `count` (N).
    """
    if len(requested) == 0:
        raise ValueError("no clips to score")
    hits: dict[str, int] = {}
    totals: dict[str, int] = {}
    all_hits = 0
    for i, wanted in enumerate(requested):
        ok = True
        for name, value in wanted.items():
            if name not in vocabularies:
                continue
            vocab = list(vocabularies[name])
            if value not in vocab:
                raise ValueError(f"requested {name}={value!r} is not in the probe's vocabulary {vocab}")
            match = vocab[int(predicted[name][i])] == value
            hits[name] = hits.get(name, 0) + int(match)
            totals[name] = totals.get(name, 0) + 1
            ok = ok and match
        all_hits += int(ok)
    result: dict[str, float] = {name: hits[name] / totals[name] for name in vocabularies if name in totals}
    result["all"] = all_hits / len(requested)
    result["count"] = len(requested)
    return result


def confusion_counts(vocabularies: Mapping[str, Sequence[str]], predicted: Mapping[str, torch.Tensor],
                     requested: Sequence[Mapping[str, str]]) -> dict[str, dict[str, dict[str, int]]]:
    """Which value the probe read where the prompt asked for which: per head, {requested value: {probed value:
    clips}}, over the clips whose prompt named that head (same arguments as `score_attributes`). The
    diagonal is what adherence counts; the rest says what a miss looks like (e.g. squares read as circles)."""
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for i, wanted in enumerate(requested):
        for name, value in wanted.items():
            if name not in vocabularies:
                continue
            got = list(vocabularies[name])[int(predicted[name][i])]
            row = counts.setdefault(name, {}).setdefault(value, {})
            row[got] = row.get(got, 0) + 1
    return counts


def attribute_adherence(probe: VideoProbe, videos: torch.Tensor, requested: Sequence[Mapping[str, str]],
                        batch_size: int = 64) -> dict[str, float]:
    """Fraction of clips matching their requested attributes, per attribute and all together.

    videos: (N, 3, T, H, W) float in [-1, 1] or uint8 (N, T, H, W, 3).
    requested: N dicts {attribute: value name}, e.g. {"color": "red", "shape": "circle"}; attributes the
    probe has no head for are ignored, a value outside a head's vocabulary raises ValueError.
    Returns {attribute: fraction in [0, 1]} for every probe head requested at least once, plus
    `all` (every requested, probed attribute matched) and `count` (N).
    """
    if videos.shape[0] != len(requested):
        raise ValueError(f"{videos.shape[0]} clips but {len(requested)} requested attribute sets")
    if len(requested) == 0:
        raise ValueError("no clips to score")
    return score_attributes(probe.vocabularies, probe.predict(videos, batch_size=batch_size), requested)


def class_adherence(probe: VideoProbe, videos: torch.Tensor, labels: Sequence[int] | torch.Tensor,
                    head: str | None = None, batch_size: int = 64) -> dict[str, float]:
    """Top-1 accuracy of the probe's class head against the requested labels.

    videos: (N, 3, T, H, W) float in [-1, 1] or uint8 (N, T, H, W, 3); labels: N ints.
    head: which probe head holds the classes (default: the probe's only head).
    Returns {"top1": fraction, "count": N}.
    """
    if head is None:
        if len(probe.vocabularies) != 1:
            raise ValueError(f"the probe has heads {list(probe.vocabularies)}; say which one holds the classes")
        head = next(iter(probe.vocabularies))
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    if videos.shape[0] != labels.shape[0]:
        raise ValueError(f"{videos.shape[0]} clips but {labels.shape[0]} labels")
    n_classes = len(probe.vocabularies[head])
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}) for head {head!r}")
    predicted = probe.predict(videos, batch_size=batch_size)[head]
    return {"top1": (predicted == labels).float().mean().item(), "count": int(labels.numel())}
