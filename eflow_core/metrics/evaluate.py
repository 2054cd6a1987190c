"""Evaluate a pipeline at several step counts: probe-FD, prompt adherence, latency.

    from eflow_core.pipeline import EFlowPipeline
    from eflow_core.metrics.evaluate import evaluate, evaluate_caption_sets, format_table, format_tables
    pipe = EFlowPipeline.from_pretrained("shapes-t2v")
    results = evaluate(pipe, steps=(1, 2, 4, 8), num_prompts=300)
    print(format_table(results))
    by_set = evaluate_caption_sets(pipe, steps=(1, 4))   # {"heldout-frames": ..., "heldout-vocabulary": ...}
    print(format_tables(by_set))

Protocol. Text worlds (`shapes`): `num_prompts` captions and their attributes from the world's `eval`
split (a random stream the training set never saw), worded from one caption set of
`eflow_core.data.captions` (`captions`: `heldout-frames`, sentence frames the model never saw with its
training words, or `heldout-vocabulary`, its training frames with words it never saw; both sets show
the same clips, so their tables differ by wording alone). `evaluate_caption_sets` runs several. Class worlds
(`actions`): `num_prompts` labels, balanced over the classes, shuffled by `seed`. At every step count
the pipeline generates one clip per prompt (noise seeds seed + i, so all step counts start from the
same noise); the probe embeds them; probe-FD is the Fréchet distance to as many real clips of the
world (a separate random stream); adherence is what `eflow_core.metrics.adherence` measures; latency
is wall time of `generate_batch` per clip (after one warm-up call). `real_fd_floor` is the probe-FD
between two independent real sets of the same size: the noise floor of the estimate at this N.

The pipeline contract: `generate_batch(prompts=None | list[str], labels=None | list[int], steps, guidance,
seed, sampler)` returning uint8 (B, T, H, W, 3) (or a tuple whose first element is that); `world` (str);
optionally `card`, `kind`, `classes`, `default_size`, `default_guidance`, `device`.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from eflow_core.metrics.adherence import confusion_counts, score_attributes
from eflow_core.metrics.frechet import frechet_distance_from_features
from eflow_core.metrics.probe import VideoProbe, load_probe
from eflow_core.metrics.video import to_model_input
from eflow_core.metrics.worlds import MetricWorld, get_world

REAL_SEED_OFFSET = 1_000_003   # real reference clips: a random stream apart from the prompts' own


def _pipeline_size(pipeline) -> tuple[int, int, int]:
    size = getattr(pipeline, "default_size", None)
    return tuple(size) if size else (16, 64, 64)


def _pipeline_stride(pipeline) -> int:
    """The frame stride the model's training data was read at (`config.data.frame_stride`), else 1."""
    data = getattr(getattr(pipeline, "config", None), "data", None)
    return int(getattr(data, "frame_stride", 1) or 1)


def _requests(spec: MetricWorld, pipeline, num_prompts: int, seed: int, size: tuple[int, int, int],
              frame_stride: int = 1, captions: str | None = None):
    """Prompts / labels to generate, what each asks for, and the real clips behind the prompts.

    `captions`: the caption set of text worlds' prompts (default: the eval split's). Returns
    (prompts | None, labels | None, requested: list[dict[str, str]], real clips (N, 3, T, H, W)).
    """
    t, h, _ = size
    if spec.conditioning == "text":
        ds = spec.dataset(split="eval", num_samples=num_prompts, seed=seed, num_frames=t, size=h)
        if captions is not None:
            ds = ds.with_captions(captions)
        items = [ds[i] for i in range(num_prompts)]
        prompts = [it["caption"] for it in items]
        requested = [{k: it["attributes"][k] for k in spec.heads} for it in items]
        return prompts, None, requested, torch.stack([it["video"] for it in items])
    (head, vocab), = spec.heads.items()
    names = list(getattr(pipeline, "classes", None) or vocab)
    if all(str(n).isdigit() for n in names) and len(names) <= len(vocab):
        names = vocab[:len(names)]  # a card without class names: labels index the world's class list
    unknown = [n for n in names if n not in vocab]
    if unknown:
        raise ValueError(f"the model's classes {unknown} are not in the {spec.name} probe's vocabulary {vocab}")
    order = torch.randperm(num_prompts, generator=torch.Generator().manual_seed(seed))
    labels = [int(i) % len(names) for i in order]
    requested = [{head: names[label]} for label in labels]
    ds = spec.dataset(split="eval", num_samples=num_prompts * len(vocab), seed=seed, num_frames=t, size=h,
                      frame_stride=frame_stride)
    # ActionsWorld labels item i as i % num_classes: take, per request, an item of the requested class.
    per_class: dict[int, int] = {}
    clips = []
    for label in labels:
        k = vocab.index(names[label])
        clips.append(ds[per_class.get(k, 0) * len(vocab) + k]["video"])
        per_class[k] = per_class.get(k, 0) + 1
    return None, labels, requested, torch.stack(clips)


def _real_clips(spec: MetricWorld, num: int, seed: int, size: tuple[int, int, int],
                frame_stride: int = 1) -> torch.Tensor:
    """num real clips (num, 3, T, H, W) from the world's eval split, a stream apart from the prompts."""
    t, h, _ = size
    ds = spec.dataset(split="eval", num_samples=num, seed=seed + REAL_SEED_OFFSET, num_frames=t, size=h,
                      frame_stride=frame_stride)
    return torch.stack([ds[i]["video"] for i in range(num)])


def _match_size(videos: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Resample (N, 3, T, H, W) to (N, 3, *size) (nearest frames in time, bilinear in space)."""
    t, h, w = size
    if tuple(videos.shape[2:]) == (t, h, w):
        return videos
    idx = torch.linspace(0, videos.shape[2] - 1, t).round().long()
    v = videos[:, :, idx]
    n = v.shape[0]
    frames = v.permute(0, 2, 1, 3, 4).reshape(n * t, 3, v.shape[-2], v.shape[-1])
    frames = F.interpolate(frames, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return frames.reshape(n, t, 3, h, w).permute(0, 2, 1, 3, 4)


@torch.no_grad()
def _embed(probe: VideoProbe, videos: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Probe features (N, F) and top-1 predictions {head: (N,)} in one pass."""
    feats, preds = [], {name: [] for name in probe.heads}
    for start in range(0, videos.shape[0], batch_size):
        z = probe.features(videos[start:start + batch_size])
        feats.append(z.float().cpu())
        for name, logits in probe.classify(z).items():
            preds[name].append(logits.argmax(dim=1).cpu())
    return torch.cat(feats), {k: torch.cat(v) for k, v in preds.items()}


def _generate(pipeline, prompts, labels, steps: int, guidance, seed: int, sampler: str) -> torch.Tensor:
    kwargs = dict(steps=steps, guidance=guidance, seed=seed, sampler=sampler)
    if prompts is not None:
        kwargs["prompts"] = prompts
    else:
        kwargs["labels"] = labels
    out = pipeline.generate_batch(**kwargs)
    video = out[0] if isinstance(out, tuple) else out
    video = torch.as_tensor(video)
    if video.dtype != torch.uint8 or video.ndim != 5 or video.shape[-1] != 3:
        raise ValueError(f"generate_batch must return uint8 clips (B, T, H, W, 3); got {video.dtype} "
                         f"{tuple(video.shape)}")
    return video


def evaluate(pipeline, world: str | None = None, steps: Sequence[int] = (1, 2, 4, 8), num_prompts: int = 300,
             seed: int = 0, batch_size: int = 16, guidance: float | None = None, probe: VideoProbe | None = None,
             sampler: str = "solution", frame_stride: int | None = None, progress: bool = True,
             captions: str | None = None) -> dict:
    """Generate `num_prompts` clips at each step count and score them with the world's probe.

    `captions` (text worlds): the prompts' caption set, default `heldout-frames`.
    Returns a JSON-ready dict: {world, captions (text worlds), num_prompts, seed, guidance, sampler, batch_size,
    size (T, H, W),
    frame_stride, probe {path, heldout_accuracy}, real_fd_floor, rows: [{steps, nfe, probe_fd, adherence {...},
    confusion {head: {requested: {probed: clips}}}, latency_s_per_clip, clips_per_s}]}. For class worlds
    `adherence` is {action: top-1, all, count}.
    `world` defaults to `pipeline.world`; `probe` to `checkpoints/probe-<world>/`. `frame_stride` (default:
    the model's `config.data.frame_stride`) is the speed real clips are shown at, for worlds read off
    files (actions: `KineticsDataset(frame_stride=2)` shows the generator's motion at double speed).
    """
    from tqdm.auto import tqdm

    if num_prompts < 2:
        raise ValueError(f"num_prompts must be at least 2 for a Fréchet distance, got {num_prompts}")
    if not steps or any(int(n) < 1 for n in steps):
        raise ValueError(f"steps must be positive step counts, got {steps!r}")
    spec = get_world(world or getattr(pipeline, "world", None) or "shapes")
    probe = probe if probe is not None else load_probe(spec.name)
    probe.eval()
    missing = [h for h in spec.heads if h not in probe.vocabularies]
    if missing:
        raise ValueError(f"the probe has no head for {missing}; it was trained on a different world")
    if spec.conditioning == "text":
        from eflow_core.data.captions import EVAL_CAPTIONS, check_caption_set

        captions = check_caption_set(captions or EVAL_CAPTIONS)
    elif captions is not None:
        raise ValueError(f"caption sets are for text worlds; {spec.name} is conditioned on class labels")
    size = _pipeline_size(pipeline)
    if guidance is None:
        guidance = getattr(pipeline, "default_guidance", None)

    stride = int(frame_stride) if frame_stride else _pipeline_stride(pipeline)
    prompts, labels, requested, prompt_clips = _requests(spec, pipeline, num_prompts, seed, size, stride, captions)
    real = _real_clips(spec, num_prompts, seed, size, stride)
    real_feats, _ = _embed(probe, real, batch_size)
    prompt_feats, prompt_preds = _embed(probe, prompt_clips, batch_size)
    results: dict = {
        "world": spec.name,
        **({"captions": captions} if captions else {}),
        "num_prompts": num_prompts,
        "seed": seed,
        "guidance": guidance,
        "sampler": sampler,
        "batch_size": batch_size,
        "size": list(size),
        "frame_stride": stride if spec.conditioning == "class" else 1,
        "device": str(getattr(pipeline, "device", "cpu")),
        "prompt_lexicon": getattr(pipeline, "lexicon", None) is not None,
        "model": (getattr(pipeline, "card", None) or {}).get("name", str(getattr(pipeline, "path", ""))),
        "probe": {"path": str((getattr(probe, "card", None) or {}).get("path", f"checkpoints/probe-{spec.name}")),
                  "heldout_accuracy": (getattr(probe, "card", None) or {}).get("heldout_accuracy")},
        "real_fd_floor": frechet_distance_from_features(prompt_feats, real_feats),
        "real_adherence": score_attributes(probe.vocabularies, prompt_preds, requested),
        "rows": [],
    }

    def batch_request(start: int):
        end = min(start + batch_size, num_prompts)
        return (None if prompts is None else prompts[start:end]), (None if labels is None else labels[start:end])

    # Warm-up (allocations, lazy init, text encoder): one small batch, not timed.
    p0, l0 = batch_request(0)
    _generate(pipeline, None if p0 is None else p0[:1], None if l0 is None else l0[:1], int(steps[0]), guidance,
              seed, sampler)

    total_batches = len(steps) * ((num_prompts + batch_size - 1) // batch_size)
    desc = f"evaluate {spec.name}" + (f" ({captions})" if captions else "")
    bar = tqdm(total=total_batches, desc=desc, disable=not progress)
    for n in steps:
        n = int(n)
        feats, preds, seconds = [], {name: [] for name in probe.heads}, 0.0
        for start in range(0, num_prompts, batch_size):
            p, lab = batch_request(start)
            t0 = time.perf_counter()
            video = _generate(pipeline, p, lab, n, guidance, seed + start, sampler)
            seconds += time.perf_counter() - t0
            x = _match_size(to_model_input(video), size)
            f, pr = _embed(probe, x, batch_size)
            feats.append(f)
            for name in pr:
                preds[name].append(pr[name])
            bar.update(1)
        gen_feats = torch.cat(feats)
        predicted = {k: torch.cat(v) for k, v in preds.items()}
        results["rows"].append({
            "steps": n,
            "nfe": pipeline.evaluations(n, sampler),
            "probe_fd": frechet_distance_from_features(gen_feats, real_feats),
            "adherence": score_attributes(probe.vocabularies, predicted, requested),
            "confusion": confusion_counts(probe.vocabularies, predicted, requested),
            "latency_s_per_clip": seconds / num_prompts,
            "clips_per_s": num_prompts / seconds if seconds > 0 else float("inf"),
        })
    bar.close()
    return results


def evaluate_caption_sets(pipeline, captions: Sequence[str] | None = None, probe: VideoProbe | None = None,
                          **kwargs) -> dict[str, dict]:
    """`evaluate` once per caption set of a text world: {caption set: evaluate's results}.

    `captions` defaults to `HELDOUT_SETS` (held-out sentence frames; three lists of held-out words); the other keyword
    arguments go to `evaluate`. Every set shows the same clips (same attributes, noise seeds and real
    clips), so the tables differ by the prompts' wording alone."""
    from eflow_core.data.captions import HELDOUT_SETS, check_caption_set

    names = [check_caption_set(name) for name in (captions or HELDOUT_SETS)]
    if not names:
        raise ValueError("name at least one caption set")
    if probe is None:
        probe = load_probe(get_world(kwargs.get("world") or getattr(pipeline, "world", None) or "shapes").name)
    return {name: evaluate(pipeline, probe=probe, captions=name, **kwargs) for name in names}


def format_tables(results: dict) -> str:
    """`format_table` of evaluate's results, or of each set of `evaluate_caption_sets`' {set: results}."""
    if "rows" in results:
        return format_table(results)
    return "\n\n".join(format_table(r) for r in results.values())


def format_table(results: dict) -> str:
    """A plain-text table: steps, NFE, probe-FD, adherence per attribute (or top-1), latency per clip; the caption
    set in the title (text worlds); under it the most frequent misreads of each attribute at the last step count."""
    rows = results["rows"]
    if not rows:
        return "(no rows)"
    attrs = [k for k in rows[0]["adherence"] if k not in ("all", "count")]
    short = {"color": "colour", "background": "bg"}
    head = ["steps", "NFE", "probe-FD"] + [short.get(a, a) for a in attrs]
    if len(attrs) > 1:
        head.append("all")
    head.append("ms/clip")
    lines = []
    for r in rows:
        cells = [str(r["steps"]), str(r["nfe"]), f"{r['probe_fd']:.2f}"]
        cells += [f"{100 * r['adherence'][a]:.1f}%" for a in attrs]
        if len(attrs) > 1:
            cells.append(f"{100 * r['adherence']['all']:.1f}%")
        cells.append(f"{1000 * r['latency_s_per_clip']:.1f}")
        lines.append(cells)
    real = results.get("real_adherence") or {}
    ref = ["real", "-", f"{results['real_fd_floor']:.2f}"] + [f"{100 * real.get(a, float('nan')):.1f}%"
                                                               for a in attrs]
    if len(attrs) > 1:
        ref.append(f"{100 * real.get('all', float('nan')):.1f}%")
    ref.append("-")
    widths = [max(len(h), *(len(c[i]) for c in lines + [ref])) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    title = (f"{results['world']}: {results['num_prompts']} prompts, seed {results['seed']}, guidance "
             f"{results['guidance']}, sampler {results['sampler']}, device {results.get('device', '?')}")
    if results.get("captions"):
        from eflow_core.data.captions import CAPTION_TITLES

        name = results["captions"]
        title = f"{name} ({CAPTION_TITLES.get(name, 'caption set')}) · {title}"
    out = [title, fmt(head), fmt(["-" * w for w in widths])] + [fmt(c) for c in lines] + [fmt(ref)]
    n = rows[-1]["steps"]
    at = f"most frequent misreads at {n} step{'s' if n != 1 else ''}:"
    per_head = {a: largest_misses(rows[-1], top=2, head=a) for a in attrs}
    if len(attrs) == 1 and any(per_head.values()):       # class worlds: one line, the four largest
        out.append(f"{at} " + "; ".join(largest_misses(rows[-1])))
    elif any(per_head.values()):                          # attributes: a line each, its two largest
        out += [at] + [f"  {short.get(a, a):<7} " + "; ".join(misses) for a, misses in per_head.items() if misses]
    out.append("probe-FD: Fréchet distance of probe features to real clips (lower is better); the `real` row "
               "scores real clips of the same prompts (noise floor).")
    return "\n".join(out)


def largest_misses(row: dict, top: int = 4, head: str | None = None) -> list[str]:
    """The `top` most frequent (requested -> probed) misreads of one evaluate() row, from its `confusion`,
    e.g. "shape square read as circle: 79 of 101" (with `head`: that attribute's only, without the head's
    name: "square read as circle: 79 of 101"); [] for rows without misreads (or without confusion)."""
    found = []
    for name, table in (row.get("confusion") or {}).items():
        if head is not None and name != head:
            continue
        prefix = "" if head is not None else f"{name} "
        for wanted, probed in table.items():
            asked = sum(probed.values())
            found += [(n, f"{prefix}{wanted} read as {got}: {n} of {asked}")
                      for got, n in probed.items() if got != wanted]
    return [text for _, text in sorted(found, key=lambda item: -item[0])[:top]]
