"""Time to quality (issue 24): train a text model from scratch on one device and measure, at fixed intervals
of training time, how well its 4-step samples follow held-out prompts; report the training seconds until
every attribute reaches the target.

The run is the trainer's own (`Trainer.fit` with a time budget: the step total and the phases of App. C
are fitted to `--budget`, as `scripts/train_shipped.sh` does). Its recipe is the one on the shipped model's
card (`--recipe shipped`: learning rate 5e-4, 100 warm-up steps, batch 512 for `shapes-t2v`), from a
fresh initialisation; overrides set the machine's side (workers, compile, capture, resident data).
Every `--every` seconds of training it stops and saves (`stop_after`), the EMA weights are exported
(`export_for_inference`) and evaluated (`evaluate`: 4 steps, the held-out-frames captions, seed 0, the
world's probe), and training resumes from the checkpoint. Evaluation time is not training time: the clock is the trainer's own (`train_seconds` in
the checkpoint). Output: a table, `time_to_quality.json` (one row per evaluation, rewritten after each) and
a plotly page of adherence against training seconds.

A run spans several processes when it must (a device call shorter than the budget): `--call-seconds S`
ends this process at the first evaluation after which another interval would not fit in S seconds of wall
time, and the same command later resumes from `--out` (the trainer's checkpoint and the rows so far).

    export TORCHINDUCTOR_CACHE_DIR=$PWD/.cache/inductor TRITON_CACHE_DIR=$PWD/.cache/triton  # a resumed call reuses kernels
    python -m benchmarks.time_to_quality --config shapes-t2v data.text_cache=.cache/text data.resident=true \\
        compile=true capture=true --budget 600 --every 60 --call-seconds 470 --out runs/ttq   # one GPU (§1k)
    python -m benchmarks.time_to_quality --config shapes-t2v --recipe preset model.dim=64 batch_size=4 \\
        --budget 20 --every 10 --prompts 8 --device cpu --out /tmp/ttq      # plumbing check
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks import command_line
from eflow_core.checkpoint import SHIPPED_DIR, export_for_inference
from eflow_core.config import TrainConfig, load_train_config
from eflow_core.metrics.evaluate import evaluate
from eflow_core.train import Trainer

ATTRIBUTE_ORDER = ("color", "shape", "motion", "background")


def training_config(name: str, recipe: str, overrides: list[str]) -> TrainConfig:
    """The run's config: the shipped model `name`'s card config (recipe "shipped") or the preset `name`
    ("preset"), then `overrides`; from a fresh initialisation, with a step total the time budget lowers."""
    source = name
    if recipe == "shipped":
        source = str(SHIPPED_DIR / name / "model_card.json")
        if not Path(source).is_file():
            raise SystemExit(f"--recipe shipped: no shipped model card {source} (use --recipe preset)")
    config = load_train_config(source, overrides)
    config.init_from = ""                              # from scratch
    config.steps = max(config.steps, 100_000)          # the time budget fits the step total
    return config


def evaluate_now(train_dir: Path, export_dir: Path, device: str, prompts: int, steps: int, captions: str,
                 text_cache: str | None) -> dict:
    """Export the run's EMA weights and evaluate them: evaluate()'s row at `steps` steps."""
    from eflow_core.pipeline import EFlowPipeline

    export_for_inference(train_dir, export_dir)
    pipe = EFlowPipeline.from_pretrained(export_dir, device=device, text_cache=text_cache)
    result = evaluate(pipe, steps=(steps,), num_prompts=prompts, seed=0, captions=captions, progress=False)
    return result["rows"][0]


def reached(adherence: dict, target: float) -> bool:
    """Every attribute of one evaluate() row's adherence at or above `target` (a fraction)."""
    return all(adherence[k] >= target for k in adherence if k not in ("all", "count"))


def write_figure(rows: list[dict], target: float, path: Path) -> bool:
    """Adherence per attribute (and all four) against training seconds, with the target line. Returns
    False (and writes nothing) where plotly is not installed, as on a bare GPU image: `--plot-only`
    draws the page later from the JSON."""
    try:
        import plotly.graph_objects as go
    except ImportError:
        return False

    fig = go.Figure()
    keys = [k for k in (*ATTRIBUTE_ORDER, "all") if rows and k in rows[0]["adherence"]]
    for key in keys:
        fig.add_trace(go.Scatter(x=[r["train_seconds"] for r in rows], y=[100 * r["adherence"][key] for r in rows],
                                 mode="lines+markers", name=key))
    fig.add_hline(y=100 * target, line_dash="dash", annotation_text=f"target {100 * target:.0f}%")
    fig.update_layout(title="Time to quality: 4-step adherence on held-out prompts against training time",
                      xaxis_title="training seconds (evaluation excluded)", yaxis_title="adherence (%)",
                      yaxis_range=[0, 101])
    fig.write_html(path, include_plotlyjs="cdn")
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="shapes-t2v")
    parser.add_argument("--recipe", choices=("shipped", "preset"), default="shipped",
                        help="shipped: the training config on the shipped model's card (its learning rate, "
                             "warm-up, batch, EMA, phases), from scratch; preset: the preset's defaults")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds of training of the whole run")
    parser.add_argument("--every", type=float, default=60.0, help="seconds of training between evaluations")
    parser.add_argument("--target", type=float, default=0.95, help="adherence every attribute must reach")
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--steps", type=int, default=4, help="sampler steps of the evaluation")
    parser.add_argument("--captions", default="heldout-frames")
    parser.add_argument("--device", default=None)
    parser.add_argument("--keep-going", action="store_true", help="train the whole budget after the target")
    parser.add_argument("--call-seconds", type=float, default=None,
                        help="end this process (resumable from --out) before another interval would pass this wall time")
    parser.add_argument("--plot-only", action="store_true",
                        help="draw time_to_quality.html from --out's JSON (of a run on a machine without plotly)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.plot_only:
        result = json.loads((out / "time_to_quality.json").read_text())
        if not write_figure(result["rows"], result["target"], out / "time_to_quality.html"):
            raise SystemExit("--plot-only needs plotly (pip install plotly)")
        print(f"wrote {out / 'time_to_quality.html'}")
        return
    out.mkdir(parents=True, exist_ok=True)
    config = training_config(args.config, args.recipe, args.overrides)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    train_dir = out / "run"
    trainer = Trainer(config, train_dir, cpu=device == "cpu", progress=False)
    trainer.run_record["command"] = command_line("benchmarks.time_to_quality", argv)
    text_cache = config.data.text_cache or None
    call_start = time.perf_counter()
    rows, reached_at = [], None
    earlier = out / "time_to_quality.json"
    saved_state = train_dir / "checkpoint" / "state.json"
    if saved_state.exists() and earlier.exists():     # resume an earlier call's run
        rows = json.loads(earlier.read_text())["rows"]
        reached_at = next((row for row in rows if reached(row["adherence"], args.target)), None)
        print(f"resuming at step {json.loads(saved_state.read_text())['step']} with {len(rows)} evaluations")
    print(f"{'train s':>8} {'step':>6} " + " ".join(f"{k:>10}" for k in (*ATTRIBUTE_ORDER, "all")) + f" {'probe-FD':>9}")
    while True:
        trainer.fit(time_budget=args.budget, stop_after=args.every)
        state = json.loads((train_dir / "checkpoint" / "state.json").read_text())
        start = time.perf_counter()
        row = evaluate_now(train_dir, out / "export", device, args.prompts, args.steps, args.captions, text_cache)
        record = {"train_seconds": round(state["train_seconds"], 1), "step": trainer.step,
                  "adherence": {k: v for k, v in row["adherence"].items() if k != "count"},
                  "probe_fd": row["probe_fd"], "eval_seconds": round(time.perf_counter() - start, 1)}
        rows.append(record)
        print(f"{record['train_seconds']:>8.0f} {trainer.step:>6} "
              + " ".join(f"{100 * record['adherence'].get(k, float('nan')):>9.1f}%" for k in (*ATTRIBUTE_ORDER, "all"))
              + f" {record['probe_fd']:>9.2f}", flush=True)
        if reached_at is None and reached(record["adherence"], args.target):
            reached_at = record
        done = trainer.step >= trainer.config.steps or state["train_seconds"] >= args.budget
        finished = done or (reached_at is not None and not args.keep_going)
        result = {"date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                  "command": trainer.run_record["command"], "config": config.to_dict(), "target": args.target,
                  "budget": args.budget, "recipe": args.recipe, "steps_sampled": args.steps, "captions": args.captions,
                  "prompts": args.prompts, "finished": finished, "reached": reached_at, "rows": rows}
        earlier.write_text(json.dumps(result, indent=1))
        drawn = write_figure(rows, args.target, out / "time_to_quality.html")
        if finished:
            break
        # another interval and its evaluation (with a half-interval margin for start-up work) must fit the call
        if args.call_seconds and (time.perf_counter() - call_start + 1.5 * args.every + record["eval_seconds"]
                                  > args.call_seconds):
            print(f"stopping this call at {record['train_seconds']:.0f} s of training: run the same command "
                  f"again to resume from {out}")
            return
    verdict = (f"every attribute >= {100 * args.target:.0f}% after {reached_at['train_seconds']:.0f} s of training "
               f"(step {reached_at['step']})" if reached_at else f"target not reached within {args.budget:.0f} s")
    figure = (f" and {out / 'time_to_quality.html'}" if drawn else
              f" (plotly is not installed: draw the curve with --plot-only --out {out})")
    print(f"{verdict}; wrote {earlier}{figure}")


if __name__ == "__main__":
    main()
