"""`eflow {train,sample,data,eval,bench,export,presets,train-codec,train-probe} ...` (or `python -m eflow_core ...`)

    python -m eflow_core train --config shapes-t2v steps=2000 batch_size=32 --output runs/shapes
    accelerate launch --num_processes 2 -m eflow_core train --config shapes-t2v --output runs/shapes
    python -m eflow_core sample --checkpoint shapes-t2v --prompt "a red circle moving left" --steps 4 --out clip.mp4
    python -m eflow_core data make-actions --out data/actions --classes 10 --per-class 200
    python -m eflow_core eval --checkpoint shapes-t2v --steps 1,2,4,8 --out eval.json
    python -m eflow_core bench --checkpoint shapes-t2v --steps 1,4 --baseline-steps 50
    eflow choose-defaults --checkpoint shapes-t2v --write-card           # the card's default steps and guidance
    eflow train-codec --out checkpoints/codec-shapes-ae --steps 3000     # the small video autoencoder
    eflow train-probe --world shapes --steps 800                          # the evaluation probe
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path


def _name_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def cmd_train(args) -> None:
    from eflow_core.config import load_train_config
    from eflow_core.train import train_main

    config = load_train_config(args.config, args.overrides)
    train_main(config, args.output, stop_at=args.stop_at, time_budget=args.time_budget, stop_after=args.stop_after,
               command=args.invocation)


def cmd_sample(args) -> None:
    from eflow_core.data.video import write_video
    from eflow_core.pipeline import EFlowPipeline

    pipe = EFlowPipeline.from_pretrained(args.checkpoint, device=args.device)
    result = pipe(prompt=args.prompt, label=args.label, steps=args.steps, guidance=args.guidance, seed=args.seed,
                  sampler=args.sampler)
    path = write_video(args.out, result.video, fps=result.fps)
    t = result.timings
    print(f"wrote {path} ({result.video.shape[0]} frames {result.video.shape[2]}x{result.video.shape[1]}); "
          f"NFE {result.nfe}, text {t['text'] * 1e3:.0f} ms, steps {sum(t['steps']) * 1e3:.0f} ms, "
          f"decode {t['decode'] * 1e3:.0f} ms, total {t['total'] * 1e3:.0f} ms on {result.device}")


def cmd_data(args) -> None:
    if args.data_command == "text-cache":
        from eflow_core.data.captions import CAPTION_SETS, all_captions
        from eflow_core.text import load_text_encoder

        sets = list(CAPTION_SETS) if args.include_eval else ["train"]
        captions = [text for name in sets for text in all_captions(name)]
        encoder = load_text_encoder(args.encoder, cache_dir=args.out)
        encoder.autosave_every = len(captions) + 1      # one write at the end, not one per 512 new captions
        for start in range(0, len(captions), 256):
            encoder.encode(captions[start:start + 256])
        print(f"cached {len(encoder)} captions of the shapes world ({', '.join(sets)}) in {encoder.save()}")
        return
    from eflow_core.data.actions import make_actions

    if args.data_command == "make-actions":
        counts = make_actions(args.out, classes=args.classes, per_class=args.per_class, num_frames=args.frames,
                              size=args.size, seed=args.seed)
        written = ", ".join(f"{n} {split}" for split, n in counts.items())
        print(f"wrote the actions set in the Kinetics-700 layout under {args.out} ({written} clips)")


def _store(args, pipe, results, card_fields: dict) -> None:
    """`--out`: `results` as JSON; `--write-card`: `card_fields` into the checkpoint's model card."""
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.out}")
    if args.write_card:
        from eflow_core.checkpoint import atomic_write_json
        card_path = pipe.path / "model_card.json"
        atomic_write_json(card_path, {**json.loads(card_path.read_text()), **card_fields})
        print(f"updated {card_path}")


def cmd_eval(args) -> None:
    from eflow_core.metrics.evaluate import evaluate, evaluate_caption_sets, format_tables
    from eflow_core.metrics.worlds import get_world
    from eflow_core.pipeline import EFlowPipeline

    pipe = EFlowPipeline.from_pretrained(args.checkpoint, device=args.device, text_cache=args.text_cache,
                                         lexicon=not args.no_lexicon)
    kwargs = {"world": pipe.world, "steps": tuple(args.steps), "num_prompts": args.prompts, "seed": args.seed,
              "guidance": args.guidance, "sampler": args.sampler}
    if get_world(pipe.world).conditioning == "text":      # {caption set: results}, one table each
        results = evaluate_caption_sets(pipe, args.captions, **kwargs)
    elif args.captions:
        raise ValueError(f"--captions is for text worlds; {pipe.world} models are conditioned on class labels")
    else:
        results = evaluate(pipe, **kwargs)
    table = format_tables(results)
    print(table)
    _store(args, pipe, results, {"eval": results, "eval_table": table})
    if args.sheet:
        from eflow_core.metrics.sheet import sample_sheet
        sample_sheet(pipe, steps=sorted(args.steps, reverse=True), num_prompts=args.sheet_prompts, seed=args.seed,
                     guidance=args.guidance, sampler=args.sampler).save(args.sheet)
        print(f"wrote {args.sheet} (the first {args.sheet_prompts} prompts: each step count, then the real clip)")


def cmd_choose_defaults(args) -> None:
    from eflow_core.metrics.defaults import SELECTION_SEED, choose_defaults, format_defaults
    from eflow_core.pipeline import EFlowPipeline

    pipe = EFlowPipeline.from_pretrained(args.checkpoint, device=args.device, text_cache=args.text_cache,
                                         lexicon=not args.no_lexicon)
    defaults = choose_defaults(pipe, steps=args.steps, guidances=args.guidance, t_mins=args.t_min,
                               num_prompts=args.prompts, seed=SELECTION_SEED if args.seed is None else args.seed)
    print(format_defaults(defaults))
    _store(args, pipe, defaults, {"defaults": defaults})


def cmd_bench(args) -> None:
    """CPU/GPU latency of the shipped pipeline: few-step sampler vs the Euler + CFG baseline, same run."""
    from eflow_core.pipeline import EFlowPipeline

    pipe = EFlowPipeline.from_pretrained(args.checkpoint, device=args.device)
    request = {"prompt": "a red circle moving left on a black background"} if pipe.kind == "text" else {"label": 0}
    rows = []
    runs = [("solution", s) for s in args.steps] + [("ode", args.baseline_steps)]
    for sampler, steps in runs:
        pipe(**request, steps=steps, sampler=sampler, seed=0)            # warm-up
        times = []
        for r in range(args.repeats if sampler == "solution" else max(1, args.repeats // 2)):
            start = time.perf_counter()
            pipe(**request, steps=steps, sampler=sampler, seed=r)
            times.append(time.perf_counter() - start)
        times.sort()
        rows.append({"sampler": sampler, "steps": steps, "nfe": steps if sampler == "solution" else 2 * steps,
                     "median_s": times[len(times) // 2], "min_s": times[0]})
    baseline = rows[-1]["median_s"]
    print(f"{'sampler':9s} {'steps':>5s} {'NFE':>4s} {'median':>9s} {'speed-up':>9s}")
    for row in rows:
        row["speedup_vs_baseline"] = baseline / row["median_s"]
        print(f"{row['sampler']:9s} {row['steps']:5d} {row['nfe']:4d} {row['median_s'] * 1e3:7.0f}ms "
              f"{row['speedup_vs_baseline']:8.1f}x")
    if args.out:
        import platform

        import torch
        Path(args.out).write_text(json.dumps({"rows": rows, "device": str(pipe.device),
                                              "threads": torch.get_num_threads(), "machine": platform.machine(),
                                              "checkpoint": str(args.checkpoint)}, indent=2))


def cmd_export(args) -> None:
    from eflow_core.checkpoint import export_for_inference

    extra = json.loads(Path(args.card).read_text()) if args.card else {}
    out = export_for_inference(args.train_dir, args.out, extra_card=extra)
    print(f"exported the EMA weights of {args.train_dir} to {out}")


def cmd_presets(args) -> None:
    from eflow_core.config import MODEL_PRESETS, PAPER_PARAMS
    from eflow_core.model.dit import count_parameters

    print(f"{'preset':8s} {'params':>10s} {'paper (Tab. 5)':>15s} {'diff':>7s}")
    for name, cfg in MODEL_PRESETS.items():
        n = count_parameters(cfg)
        paper = PAPER_PARAMS.get(name)
        diff = f"{(n - paper) / paper:+.0%}" if paper else ""
        paper_text = f"{paper / 1e6:.0f}M" if paper else "-"
        print(f"{name:8s} {n / 1e6:9.1f}M {paper_text:>15s} {diff:>7s}")


def cmd_train_codec(args) -> None:
    from eflow_core.codecs.autoencoder import AutoencoderConfig
    from eflow_core.codecs.train_ae import train_autoencoder

    config = AutoencoderConfig(latent_channels=args.latent_channels, enc_width=args.enc_width,
                               dec_width=args.dec_width, dec_layers=args.dec_layers)
    card = train_autoencoder(args.out, args.world, args.steps, args.batch_size, args.frames, args.size, args.lr,
                             args.seed, args.crop or None, config=config, max_minutes=args.max_minutes,
                             progress=not args.no_progress, pca_clips=args.pca_clips, command=args.invocation)
    print(json.dumps({k: card[k] for k in ("metrics", "parameters", "file_bytes", "train")}, indent=1))


def cmd_train_probe(args) -> None:
    from eflow_core.metrics.probe import default_probe_dir, train_probe

    out = args.out or default_probe_dir(args.world)
    _, card = train_probe(args.world, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                          eval_clips=args.eval_clips, seed=args.seed, out_dir=out, threads=args.threads,
                          command=args.invocation)
    print(json.dumps({"out": str(out), "heldout_accuracy": card["heldout_accuracy"],
                      "wall_seconds": card["train"]["wall_seconds"]}, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eflow", description="EFlow: few-step video generation "
                                     "(`eflow ...` and `python -m eflow_core ...` are the same CLI)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train (resumes when --output holds a checkpoint)")
    p.add_argument("--config", required=True, help="a preset (tiny, shapes-t2v, actions-b) or a JSON file")
    p.add_argument("overrides", nargs="*", help="key=value overrides, dotted for nested: model.dim=128")
    p.add_argument("--output", required=True, help="folder for config, checkpoint and metrics.csv")
    p.add_argument("--stop-at", type=int, default=None, help="stop at this step as if interrupted (resume later)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds of training for the whole run, summed over resumed calls: `steps` is lowered to "
                        "end in time (phases scale along; a resumed run keeps the step total it was fitted to)")
    p.add_argument("--stop-after", type=float, default=None,
                   help="seconds: stop this call after training this long and save (resume later)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate one clip")
    p.add_argument("--checkpoint", default="shapes-t2v", help="a shipped name or a checkpoint folder")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--prompt")
    group.add_argument("--label", type=int)
    p.add_argument("--steps", type=int, default=None, help="default: the model card's (`choose-defaults`), else 4")
    p.add_argument("--guidance", type=float, default=None, help="default: the model card's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", choices=["solution", "ode"], default="solution")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="clip.mp4", help=".mp4 or .gif")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("data", help="make data sets")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("make-actions", help="write the class-conditional actions set in the Kinetics layout")
    q.add_argument("--out", required=True)
    q.add_argument("--classes", type=int, default=10)
    q.add_argument("--per-class", type=int, default=200)
    q.add_argument("--frames", type=int, default=32)
    q.add_argument("--size", type=int, default=64)
    q.add_argument("--seed", type=int, default=0)
    q = data_sub.add_parser("text-cache", help="precompute text embeddings of every shapes caption (offline training)")
    q.add_argument("--out", required=True, help="cache folder (pass it as data.text_cache=DIR when training)")
    q.add_argument("--encoder", default="minilm")
    q.add_argument("--include-eval", action="store_true",
                   help="also every held-out caption set (`eflow_core.data.captions.CAPTION_SETS`), which "
                        "`eval` words its prompts from")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("eval", help="probe-FD, adherence and latency per step count")
    p.add_argument("--checkpoint", default="shapes-t2v")
    p.add_argument("--steps", type=_int_list, default=[1, 2, 4, 8])
    p.add_argument("--prompts", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--guidance", type=float, default=None, help="default: the model's inference guidance")
    p.add_argument("--sampler", choices=["solution", "ode"], default="solution",
                   help="solution: Algorithm 2, 1 NFE a step; ode: Euler (+ CFG), the flow-matching baseline")
    p.add_argument("--captions", type=_name_list, default=None, metavar="SET,SET",
                   help="text worlds: the caption sets to word the prompts from, one table each (default "
                        "heldout-frames,heldout-vocabulary,heldout-vocabulary-2,heldout-vocabulary-3: sentence "
                        "frames / three lists of words the model never trained on; also train, heldout-both)")
    p.add_argument("--out", default=None, help="write the results as JSON here (text worlds: keyed by caption set)")
    p.add_argument("--write-card", action="store_true",
                   help="store the results and tables in the checkpoint's model card (`eval`, `eval_table`)")
    p.add_argument("--sheet", default=None, metavar="PNG", help="also write a contact sheet of the first prompts")
    p.add_argument("--sheet-prompts", type=int, default=8)
    p.add_argument("--text-cache", default=None, metavar="DIR",
                   help="caption cache (`data text-cache --include-eval`): no text-encoder package needed")
    p.add_argument("--no-lexicon", action="store_true",
                   help="prompts reach the text encoder as worded, without the prompt lexicon's rewrite of words "
                        "the model never trained on (the network alone)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("choose-defaults", help="choose the card's default steps, guidance and guidance interval "
                       "by evaluation on selection prompts (not the ones `eval` reports)")
    p.add_argument("--checkpoint", default="shapes-t2v")
    p.add_argument("--steps", type=_int_list, default=[1, 2, 4])
    p.add_argument("--guidance", type=_float_list, default=[3.0, 4.0, 5.0], metavar="W,W")
    p.add_argument("--t-min", type=_float_list, default=[0.0, 0.8], metavar="T,T",
                   help="guidance intervals to try (flow.guidance_t_min: guide the steps starting at t >= T)")
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--seed", type=int, default=None, help="default: metrics.defaults.SELECTION_SEED (not 0)")
    p.add_argument("--device", default=None)
    p.add_argument("--text-cache", default=None, metavar="DIR")
    p.add_argument("--no-lexicon", action="store_true", help="without the prompt lexicon (see `eval`)")
    p.add_argument("--out", default=None, help="write the defaults and their grid as JSON here")
    p.add_argument("--write-card", action="store_true", help="store them in the checkpoint's card (`defaults`)")
    p.set_defaults(func=cmd_choose_defaults)

    p = sub.add_parser("bench", help="latency of the few-step sampler against the 50-step CFG baseline")
    p.add_argument("--checkpoint", default="shapes-t2v")
    p.add_argument("--steps", type=_int_list, default=[1, 2, 4])
    p.add_argument("--baseline-steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", help="turn a training folder into a shipped model (EMA weights + card)")
    p.add_argument("--train-dir", required=True,
                   help="a training output folder; of an fsdp=true run, its sharded EMA is joined into the one file")
    p.add_argument("--out", required=True)
    p.add_argument("--card", default=None, help="JSON file with extra model-card fields")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("presets", help="parameter count of every model preset beside the paper's Tab. 5")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("train-codec", help="train the small causal video autoencoder on a synthetic world")
    p.add_argument("--out", required=True, help="output folder (model.safetensors, config.json, card.json)")
    p.add_argument("--world", default="shapes", help="shapes | scenes | shapes+scenes")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--crop", type=int, default=32, help="training crop (multiple of 8); 0 = whole frames")
    p.add_argument("--frames", type=int, default=9, help="training clip length, 1 + 4k")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latent-channels", type=int, default=16)
    p.add_argument("--enc-width", type=int, default=128)
    p.add_argument("--dec-width", type=int, default=192)
    p.add_argument("--dec-layers", type=int, default=2)
    p.add_argument("--pca-clips", type=int, default=256, help="clips for the PCA initialisation (0: random init)")
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train_codec)

    p = sub.add_parser("train-probe", help="train and save the evaluation probe of a synthetic world")
    p.add_argument("--world", default="shapes")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval-clips", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="output folder (default checkpoints/probe-<world>)")
    p.set_defaults(func=cmd_train_probe)
    return parser


def main(argv: list[str] | None = None) -> int:
    from eflow_core.checkpoint import CheckpointError
    from eflow_core.pipeline import PipelineError

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.invocation = shlex.join(["eflow", *argv])      # recorded in what a command trains (cards, run records)
    try:
        args.func(args)
    except (PipelineError, CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
