"""Where a training step of a shipped model spends its time (issues 6 and 24): the trainer's own step
(`Trainer.train_step`: loss of Algorithm 1, backward, clip, AdamW, EMA) on a real batch of the
model's world, in both phases of App. C (75% drop without MVA; dense with MVA), for each mode:
eager, `capture` (the update replayed from a CUDA graph, eflow_core/captured_step.py) and `compile`
(regionally compiled blocks). Reports samples/s, the speed-up over eager, the GPU-busy share of the
step (profiled kernel time / step wall time), kernels and host launch calls per step, and the top
GPU kernels; writes JSON.

    python -m benchmarks.train_step --config shapes-t2v --batch 512 data.text_cache=.cache/text --out $OUT
    python -m benchmarks.train_step --config tiny --device cpu --iters 2 --modes eager   # plumbing check
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch
import torch._dynamo.utils


from benchmarks.timing import kernel_times
from eflow_core.config import load_train_config
from eflow_core.data import collate
from eflow_core.train import Trainer


def time_steps(trainer: Trainer, x0, cond, phase_step: int, warmup: int, iters: int) -> tuple[list[float], float]:
    """(wall seconds of each of `iters` trainer steps at the phase of `phase_step`, seconds of the
    `warmup` steps before them: compile time shows there). Wall time (with a device sync) is what
    training sees: host work and syncs included."""
    trainer.apply_phase(phase_step)
    times = []
    warmup_start, warmup_seconds = time.perf_counter(), 0.0
    for i in range(warmup + iters):
        if i == warmup:
            warmup_seconds = time.perf_counter() - warmup_start
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.train_step(x0, cond)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times, warmup_seconds


def seeded_losses(trainer: Trainer, x0, cond, phase_step: int, steps: int) -> list[float]:
    """Losses of `steps` updates on (x0, cond) at the phase of `phase_step`, step k seeded with k: the
    same numbers in every mode when the modes compute the same thing (a captured mode's first steps run
    eagerly, the later ones replay its graph)."""
    from eflow_core.flow import logs_to_floats

    trainer.apply_phase(phase_step)
    losses = []
    for k in range(steps):
        torch.manual_seed(k)
        losses.append(logs_to_floats(trainer.train_step(x0, cond))["loss"])
    return losses


def top_kernels(trainer: Trainer, x0, cond, steps: int = 2, rows: int = 12) -> dict:
    """torch.profiler over `steps` steps: kernel launches per step, GPU busy time per step and the
    kernels (or CPU ops on the CPU) that take the most time."""
    cuda = trainer.device.type == "cuda"
    by_name = kernel_times(lambda: trainer.train_step(x0, cond), trainer.device, steps)
    launches = sum(row["launches"] for row in by_name.values())      # kernels on CUDA, CPU ops on the CPU
    host = host_launch_calls(lambda: trainer.train_step(x0, cond), steps) if cuda else float("nan")
    busy = sum(row["ms"] for row in by_name.values()) / 1e3 if cuda else float("nan")
    table = sorted(by_name.items(), key=lambda item: -item[1]["ms"])
    return {"launches_per_step": launches, "host_launches_per_step": host, "gpu_busy_s_per_step": busy,
            "top": [{"name": n[:90], "ms_per_step": r["ms"], "calls_per_step": r["launches"]} for n, r in table[:rows]]}


def host_launch_calls(fn, calls: int) -> float:
    """CUDA runtime / driver launch calls per call of `fn` (cudaLaunchKernel, cuLaunchKernel(Ex),
    cudaGraphLaunch, ...): what the host issues; a replayed graph is one call for all its kernels."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type.name == "CPU" and "Launch" in e.name
               and e.name.startswith("cu")) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="shapes-t2v")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--modes", default="eager,capture", help="comma list of eager, capture, compile, compile+capture")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--check-steps", type=int, default=6,
                        help="seeded steps from the initial weights whose losses every mode must reproduce")
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "train_step.json"))
    args = parser.parse_args()
    cpu = args.device == "cpu"

    results = []
    for mode in args.modes.split(","):
        config = load_train_config(args.config, [*args.overrides, f"batch_size={args.batch}",
                                                 f"compile={str('compile' in mode.split('+')).lower()}",
                                                 f"capture={str('capture' in mode.split('+')).lower()}"])
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            trainer = Trainer(config, tmp, cpu=cpu, progress=False)
            trainer.objective.train()
            batch = collate([trainer.dataset[i] for i in range(args.batch)])
            x0, cond = trainer.encode_batch(batch)
            phases = {"drop 0.75, no MVA": 0, "dense + MVA": config.steps - 1}
            for phase_name, phase_step in phases.items():
                try:
                    check = seeded_losses(trainer, x0, cond, phase_step, args.check_steps)
                    times, warmup_s = time_steps(trainer, x0, cond, phase_step, args.warmup, args.iters)
                    profile = top_kernels(trainer, x0, cond)
                except Exception as err:     # report and go on to the next mode
                    results.append({"mode": mode, "phase": phase_name, "error": f"{type(err).__name__}: {err}"})
                    print(results[-1], flush=True)
                    continue
                seconds = statistics.median(times)
                graphs = int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
                eager = next((r for r in results if r["mode"] == "eager" and r["phase"] == phase_name
                              and "median_s" in r), None)
                # correctness: the same seeded steps from the same initial weights as the eager run
                agree = None
                if eager and mode != "eager":
                    diff = max(abs(a - b) / max(abs(b), 1e-8) for a, b in zip(check, eager["check_losses"]))
                    agree = {"max_rel_loss_diff": diff, "matches_eager": diff < 2e-2}
                results.append({"mode": mode, "phase": phase_name, "it_per_s": 1 / seconds, "median_s": seconds,
                                "samples_per_s": args.batch / seconds,
                                "speedup_vs_eager": eager["median_s"] / seconds if eager else None,
                                "gpu_busy_fraction": profile["gpu_busy_s_per_step"] / seconds,
                                "check_losses": check, "check_vs_eager": agree,
                                "all_s": times, "warmup_s": warmup_s,
                                "compiled_graphs_so_far": graphs, **profile})
                _save(args, results)
                print(f"\n{mode:8s} {phase_name:18s} {1 / seconds:7.2f} it/s  "
                      f"{profile['launches_per_step']:8.0f} kernels/step  "
                      f"{profile['host_launches_per_step']:6.0f} host launch calls/step  "
                      f"GPU busy {profile['gpu_busy_s_per_step'] * 1e3:8.1f} ms/step  compiled graphs {graphs}  "
                      f"warm-up {warmup_s:.0f} s", flush=True)
                for row in profile["top"]:
                    print(f"    {row['ms_per_step']:8.2f} ms {row['calls_per_step']:7.0f}x  {row['name']}")
            del trainer
            if not cpu:
                torch.cuda.empty_cache()
    _save(args, results)
    print(f"\n{'mode':8s} {'phase':18s} {'samples/s':>10s} {'vs eager':>9s} {'GPU busy':>9s} {'kernels':>8s} "
          f"{'host launches':>13s} {'losses vs eager':>16s}")
    for r in results:
        if "median_s" not in r:
            continue
        speedup = f"{r['speedup_vs_eager']:.2f}x" if r["speedup_vs_eager"] else "-"
        print(f"{r['mode']:8s} {r['phase']:18s} {r['samples_per_s']:10.0f} {speedup:>9s} "
              f"{100 * r['gpu_busy_fraction']:8.0f}% {r['launches_per_step']:8.0f} {r['host_launches_per_step']:13.0f} "
              + (f"{r['check_vs_eager']['max_rel_loss_diff']:16.1e}" if r["check_vs_eager"] else f"{'-':>16s}"))


def _save(args, results: list[dict]) -> None:
    """Write the JSON (after every measurement too: a run cut short keeps what it measured)."""
    info = {"config": args.config, "overrides": args.overrides, "batch": args.batch,
            "device": torch.cuda.get_device_name() if args.device != "cpu" else "cpu", "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d")}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"info": info, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
