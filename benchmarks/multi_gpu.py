"""Multi-GPU data-parallel training through `accelerate launch` (DDP): throughput at 1 and G processes
and loss agreement with a one-process run at the same global batch. Three trainer runs, one after the other:

    one         1 process,  batch b            (the one-GPU throughput)
    multi       G processes, batch b each      (scaling = samples/s(multi) / samples/s(one), same per-GPU batch)
    one_global  1 process,  batch G * b        (same global batch as `multi`: the loss reference)

Throughput is the median of the trainer's logged `it_per_s` over rows with step > --skip (start-up and
warm-up left out), samples/s = it/s x global batch; `data wait` is the median share of that time the
trainer waited for its data loader (near 100%: the CPU-side data, not the GPUs, sets the speed). Acceptance (GPU only): two GPUs give at least 1.8x
the one-GPU samples/s. Loss agreement: the data order depends only on (seed, step, rank), so `multi` and
`one_global` see the same clips at every step (the noise draws differ); over the logged steps > --skip,
d = loss(multi) - loss(one_global) per step, and the runs agree when |mean d| <= 3 x its standard
error (s_d / sqrt(n)) OR |mean d| / mean loss(one_global) <= 0.05.

    python -m benchmarks.multi_gpu --config shapes-t2v --batch 256 --steps 120 --skip 40 --gpus 2 \\
        data.text_cache=.cache/text model.backend=sdpa --out $OUT/multi_gpu.json
    python -m benchmarks.multi_gpu --config tiny --cpu --batch 4 --steps 6 --skip 2 --log-every 1 data.num_samples=32

(the second: a plumbing check, 2 CPU processes with gloo). Choose b so that each process's FM/SCM/MVA
split is 1/G of the global batch's (a multiple of 4 for the default phases); the script warns otherwise.

Writes the JSON after every run (a run cut short keeps what was measured) and multi_gpu_loss.html
(plotly, loss vs step) next to it. Each run's output is in WORKDIR/<run>.log.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import accelerate
import torch


from eflow_core.config import load_train_config
from eflow_core.flow.solution_flow import split_batch

ROOT = Path(__file__).resolve().parents[1]
# Hard rule of the lent machines: NVLink multicast can take the host's GPUs out of service.
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
AGREE_RULE = "|mean d| <= 3 * stderr(d) or |mean d| / mean loss(one_global) <= 0.05, d = loss(multi) - loss(one_global)"


def launch_command(args, processes: int, batch: int, output: Path) -> list[str]:
    """`accelerate launch` of the trainer with `processes` processes at per-process `batch`. More than one
    process always goes through torchrun (`--multi_gpu`): `accelerate launch --cpu --num_processes 2` starts
    a single process; with --cpu the trainer sees no GPU (run_env) and uses gloo."""
    if processes > 1:
        launch = ["--multi_gpu", "--num_processes", str(processes), "--main_process_port", "0"]
    else:
        launch = (["--cpu"] if args.cpu else []) + ["--num_processes", "1"]
    return [sys.executable, "-m", "accelerate.commands.launch", *launch, "--num_machines", "1",
            "--mixed_precision", "no" if args.cpu else "bf16", "--dynamo_backend", "no",
            "-m", "eflow_core", "train", "--config", args.config, *args.overrides, f"batch_size={batch}",
            f"steps={args.steps}", f"log_every={args.log_every}", f"checkpoint_every={args.steps + 1}",
            "--output", str(output)]


def split_mismatch(args) -> str | None:
    """Why `multi` (G x b) and `one_global` (G b) train a different mix of FM / SCM / MVA samples, or None:
    each process splits its own batch, so the rounded shares must scale. Loading the config also checks
    the overrides here, before any run."""
    config = load_train_config(args.config, args.overrides)
    for phase in config.phases:
        ratios = (phase.fm_ratio, phase.scm_ratio, phase.mva_ratio)
        per, whole = split_batch(args.batch, *ratios), split_batch(args.gpus * args.batch, *ratios)
        if [args.gpus * n for n in per] != list(whole):
            return (f"FM/SCM/MVA split of batch {args.batch} per process {per} x {args.gpus} != split of "
                    f"{args.gpus * args.batch} {whole}: the loss comparison mixes different terms")
    return None


def run_env(cpu: bool) -> dict[str, str]:
    """os.environ + repository on PYTHONPATH, OMP threads, NVLink multicast off (always); --cpu hides GPUs."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.setdefault("OMP_NUM_THREADS", "1" if cpu else "4")
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return {**env, **NO_MULTICAST}


def run_logged(cmd: list[str], env: dict, log: Path, timeout: float) -> tuple[int | str, float]:
    """Run `cmd` with stdout + stderr into `log`. Returns (exit status or "timeout", wall seconds). On
    timeout: SIGTERM to its process group (torchrun then stops its workers), SIGKILL 60 s later."""
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = "timeout"
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
    return status, time.perf_counter() - start


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Rows of the trainer's metrics.csv as {column: float} (empty cells left out); [] when missing."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def throughput(rows: list[dict], skip: int) -> float | None:
    """Median logged it/s over rows with step > skip (each row: the rate since the previous row); None if none."""
    rates = [r["it_per_s"] for r in rows if r["step"] > skip and "it_per_s" in r]
    return statistics.median(rates) if rates else None


def loss_agreement(curve: list, reference: list, skip: int) -> dict:
    """Paired comparison of two loss curves ([step, loss] pairs) at the steps > skip both logged: n, mean
    of each, mean difference d (curve - reference), its standard error s_d / sqrt(n), relative difference
    and `agree` (AGREE_RULE). What cannot be computed is None (no pairs; the standard error needs 2)."""
    ref = {step: loss for step, loss in reference if step > skip}
    pairs = [(loss, ref[step]) for step, loss in curve if step in ref]
    out = {"rule": AGREE_RULE, "n": len(pairs), "mean_loss": None, "mean_loss_reference": None,
           "mean_diff": None, "stderr": None, "rel_diff": None, "agree": False}
    if not pairs:
        return out
    diffs = [a - b for a, b in pairs]
    mean_ref = statistics.fmean(b for _, b in pairs)
    out.update(mean_loss=statistics.fmean(a for a, _ in pairs), mean_loss_reference=mean_ref,
               mean_diff=statistics.fmean(diffs), rel_diff=statistics.fmean(diffs) / mean_ref if mean_ref else None)
    if len(pairs) >= 2:
        out["stderr"] = statistics.stdev(diffs) / math.sqrt(len(pairs))
    out["agree"] = bool((out["stderr"] is not None and abs(out["mean_diff"]) <= 3 * out["stderr"])
                        or (out["rel_diff"] is not None and abs(out["rel_diff"]) <= 0.05))
    return out


def train_run(args, name: str, processes: int, batch: int, workdir: Path) -> dict:
    """One trainer run in a fresh WORKDIR/<name>: its throughput (all rows after --skip, and per training
    phase: a row carries the phase of the step that logged it), steps, wall time and loss curve. Measured
    from metrics.csv even when the run failed part-way; then `error` holds the log's tail and
    `error_lines` its first distinct exception lines (the root cause is above torchrun's summary)."""
    output, log = workdir / name, workdir / f"{name}.log"
    shutil.rmtree(output, ignore_errors=True)
    cmd = launch_command(args, processes, batch, output)
    print(f"[{name}] {shlex.join(cmd[1:])}", flush=True)
    status, wall = run_logged(cmd, run_env(args.cpu), log, args.timeout)
    rows = read_metrics(output / "metrics.csv")
    used = [r for r in rows if r["step"] > args.skip and "it_per_s" in r]
    rate = throughput(used, args.skip)
    by_phase = {int(ph): throughput([r for r in used if r["phase"] == ph], args.skip)
                for ph in sorted({r["phase"] for r in used})}
    record = {"run": name, "processes": processes, "batch_per_process": batch, "global_batch": processes * batch,
              "it_per_s": rate, "samples_per_s": rate * processes * batch if rate else None,
              "samples_per_s_by_phase": {ph: v * processes * batch for ph, v in by_phase.items()},
              "rows_measured": len(used), "steps": int(rows[-1]["step"]) if rows else 0, "wall_s": wall,
              # tokens per optimizer step as the trainer counted them (its global batch): checks the launch
              "tokens_per_step": statistics.median(r["tokens_per_s"] / r["it_per_s"] for r in used) if used else None,
              # share of the time the main process waited for data (near 1: the loader, not the GPU, limits)
              "data_wait": statistics.median(r["data_wait"] for r in used if "data_wait" in r)
              if any("data_wait" in r for r in used) else None,
              "exit": status, "log": str(log), "command": shlex.join(cmd),
              "curve": [[int(r["step"]), r["loss"]] for r in rows if "loss" in r]}
    if status != 0:
        text = log.read_text(errors="replace")
        causes = [line.strip()[:400] for line in text.splitlines() if re.search(r"\w(Error|Exception): ", line)]
        causes = [f"timed out after {args.timeout:.0f} s"] * (status == "timeout") + causes
        record.update(error=text[-2000:], error_lines=list(dict.fromkeys(causes))[:5])
    return record


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def summarize(args, runs: list[dict]) -> dict:
    """Scaling (overall and per phase), efficiency, the 1.8x check, the process-count check and the loss
    agreement of `runs`."""
    by = {r["run"]: r for r in runs}
    one, multi, glob = by.get("one", {}), by.get("multi", {}), by.get("one_global", {})
    scaling = _ratio(multi.get("samples_per_s"), one.get("samples_per_s"))
    measured = _ratio(multi.get("tokens_per_step"), one.get("tokens_per_step"))
    one_phases, multi_phases = one.get("samples_per_s_by_phase", {}), multi.get("samples_per_s_by_phase", {})
    return {"scaling": scaling, "efficiency": scaling / args.gpus if scaling else None,
            "scaling_by_phase": {ph: _ratio(multi_phases[ph], v) for ph, v in one_phases.items() if ph in multi_phases},
            "meets_1_8x": scaling >= 1.8 if scaling is not None and args.gpus == 2 else None,
            "acceptance": "GPU runs only: two GPUs >= 1.8x the one-GPU samples/s at the same per-GPU batch"
                          + (" (this is a CPU plumbing run: reported, not checked)" if args.cpu else ""),
            "process_check": {"expected": args.gpus, "measured": measured,
                              "ok": measured is not None and abs(measured - args.gpus) < 1e-3 * args.gpus},
            "loss_agreement": loss_agreement(multi.get("curve", []), glob.get("curve", []), args.skip)}


def write_figure(runs: list[dict], path: Path) -> None:
    """Loss vs step of every run as a self-contained plotly HTML (dropped if over 5 MB)."""
    try:
        import plotly.graph_objects as go
    except ImportError:
        print("plotly is not importable: no figure (the curves are in the JSON)")
        return
    fig = go.Figure([go.Scatter(x=[s for s, _ in r["curve"]], y=[v for _, v in r["curve"]], mode="lines+markers",
                                name=f"{r['run']} ({r['processes']} x {r['batch_per_process']})") for r in runs])
    fig.update_layout(title="loss vs step: 1 process, multi-process, 1 process at the same global batch",
                      xaxis_title="step", yaxis_title="loss")
    fig.write_html(path, include_plotlyjs=True)
    if path.stat().st_size > 5e6:
        path.unlink()
        print("figure over 5 MB: not kept (the curves are in the JSON)")


def run_info(args) -> dict:
    """What was run, on what, when."""
    return {"config": args.config, "overrides": args.overrides, "batch": args.batch, "steps": args.steps,
            "skip": args.skip, "log_every": args.log_every, "gpus": args.gpus, "cpu": args.cpu,
            "device": "cpu" if args.cpu else torch.cuda.get_device_name(0),
            "device_count": torch.cuda.device_count(), "torch": torch.__version__,
            "accelerate": accelerate.__version__, "omp_threads": run_env(args.cpu)["OMP_NUM_THREADS"],
            "date": time.strftime("%Y-%m-%d %H:%M"), "command": shlex.join(["python", *sys.argv])}


def save(path: str, info: dict, runs: list[dict], summary: dict | None = None) -> None:
    """Write the JSON (after every run too: a run cut short keeps what it measured)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump({"info": info, "runs": runs, **(summary or {})}, f, indent=2)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="key=value trainer config overrides")
    parser.add_argument("--config", default="shapes-t2v")
    parser.add_argument("--batch", type=int, default=256, help="per process")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--skip", type=int, default=40, help="leave out logged rows up to this step")
    parser.add_argument("--gpus", type=int, default=2, help="processes of the multi run")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run")
    parser.add_argument("--cpu", action="store_true", help="plumbing mode: CPU processes, gloo")
    parser.add_argument("--workdir", default=None, help="run folders and logs (default: a new folder in /tmp)")
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "multi_gpu.json"))
    args = parser.parse_args()
    try:
        split_warning = split_mismatch(args)
    except ValueError as err:                    # an unknown preset or config key: before any run
        sys.exit(f"config: {err}")
    if not args.cpu and torch.cuda.device_count() < args.gpus:
        sys.exit(f"--gpus {args.gpus} needs {args.gpus} GPUs, torch sees {torch.cuda.device_count()} "
                 f"(use --cpu for a plumbing run)")
    if split_warning:
        print(f"WARNING: {split_warning}", flush=True)
    info = {**run_info(args), "split_warning": split_warning}
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="multi_gpu_", dir="/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"run folders and logs in {workdir}", flush=True)

    runs: list[dict] = []
    for name, processes, batch in (("one", 1, args.batch), ("multi", args.gpus, args.batch),
                                   ("one_global", 1, args.gpus * args.batch)):
        runs.append(train_run(args, name, processes, batch, workdir))
        if "error" in runs[-1]:
            print(f"[{name}] FAILED (exit {runs[-1]['exit']}):", *runs[-1]["error_lines"] or [runs[-1]["error"][-800:]],
                  sep="\n    ", flush=True)
        save(args.out, info, runs)
    summary = summarize(args, runs)
    save(args.out, info, runs, summary)
    write_figure(runs, Path(args.out).with_name("multi_gpu_loss.html"))

    print(f"\n{'run':11s} {'procs':>5s} {'batch/proc':>10s} {'global':>6s} {'it/s':>8s} {'samples/s':>10s} "
          f"{'steps':>5s} {'wall s':>7s} {'data wait':>9s}")
    for r in runs:
        print(f"{r['run']:11s} {r['processes']:5d} {r['batch_per_process']:10d} {r['global_batch']:6d} "
              f"{_fmt(r['it_per_s'], '.3f'):>8s} {_fmt(r['samples_per_s'], '.1f'):>10s} {r['steps']:5d} "
              f"{r['wall_s']:7.0f} {_fmt(r['data_wait'], '.0%'):>9s}" + ("  FAILED" if "error" in r else ""))
    check = summary["process_check"]
    print(f"scaling {_fmt(summary['scaling'], '.2f')}x with {args.gpus} processes, efficiency "
          f"{_fmt(summary['efficiency'], '.0%')}, >= 1.8x: {summary['meets_1_8x']}"
          + (" (CPU: not an acceptance check)" if args.cpu else "") + "; by phase: "
          + (", ".join(f"{ph}: {_fmt(v, '.2f')}x" for ph, v in summary["scaling_by_phase"].items()) or "-")
          + ("" if check["ok"] else f"; WARNING: the trainer's global batch says {_fmt(check['measured'], '.2f')} "
                                    f"processes, not {args.gpus}"))
    agree = summary["loss_agreement"]
    print(f"loss multi vs one_global (same global batch, {agree['n']} logged steps > {args.skip}): "
          f"{_fmt(agree['mean_loss'], '.4f')} vs {_fmt(agree['mean_loss_reference'], '.4f')}, diff "
          f"{_fmt(agree['mean_diff'], '+.4f')} +- {_fmt(agree['stderr'], '.4f')} "
          f"(rel {_fmt(agree['rel_diff'], '+.1%')}), agree: {agree['agree']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
