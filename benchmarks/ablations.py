"""The paper's objective and architecture ablations (Tab. 2, Tab. 4) at CPU or GPU scale (issue 6).

Each variant x seed is one run of the project's trainer (`eflow_core.train.Trainer` on the
`shapes-t2v` config with the scale's overrides) followed by the project's evaluator
(`eflow_core.metrics.evaluate.evaluate` on the training folder's EMA weights, 1 and 4 steps). Variants:

    pdg-sfm   the full method as configured for shapes-t2v: PDG guidance, FM + SCM, 75% token drop
              for the first 80% of the steps, then dense with the MVA share (App. C.1)
    fm        plain flow matching with CFG dropout (guidance "cfg", fm_ratio 1, p_unguided 1: every
              kept sample trains the plain conditional velocity, 20% the null condition), same drop
              schedule, no SCM, no MVA; evaluated with the Euler ODE sampler and CFG (2 NFE a step)
    no-mva    pdg-sfm with mva_ratio 0 in every phase (the MVA share goes back to FM: 0.75 / 0.25)
    no-drop   pdg-sfm with drop_ratio 0 in every phase (dense all along; MVA phase unchanged)
    fm-no-drop  fm with drop_ratio 0 in every phase: with fm, Tab. 2's Ours1 -> Ours2 as the paper ran
              it (the drop comparison on the FM objective)

Same model, data, steps, batch, learning rate and evaluation prompts (eval seed fixed) for every run;
the seed changes the initialisation, the data order and every random draw of training. Runs go to
`--runs-dir/<variant>-seed<k>/`; a run interrupted in training resumes from its checkpoint. With
`--share-trunk`, variants that differ only in their last phase (pdg-sfm and no-mva: MVA or not in App. C.1's
final 20%) train the steps before it once per seed (`--runs-dir/trunk-<variants>-seed<k>/`) and each continues
from that checkpoint: the arms of a seed are the same model until the phase they differ in, and the trunk's
steps are trained once. The JSON at `--out` gets one record per finished run as it finishes, so a rerun
skips finished runs.

    OMP_NUM_THREADS=1 python -m benchmarks.ablations --jobs 2 --seeds 0,1,2,3,4 --runs-dir /tmp/ablations \\
        --out docs/results/2026-11-23-cpu-ablations.json          # 2 processes x 1 thread: ~47 min, 2 cores
    python -m benchmarks.ablations --scale gpu --gpus 0,1 --jobs 6 --seeds 0,1 --variants pdg-sfm,fm,no-mva \\
        --stop-after 450 --runs-dir runs/ablations-gpu --out runs/ablations-gpu.json   # a lent GPU; rerun to resume
    python -m benchmarks.ablations --scale gpu --steps 1600 --share-trunk --variants pdg-sfm,no-mva,no-drop \\
        --gpus 0,1 --jobs 6 --stop-after 540 --runs-dir runs/ablations-long --out runs/ablations-long.json
    python -m benchmarks.ablations --tiny --runs-dir /tmp/ablations-tiny --out /tmp/ablations-tiny.json
    python -m benchmarks.ablations --out docs/results/2026-11-23-cpu-ablations.json --report   # table only

`--extra VARIANT:SAMPLER:GUIDANCE:STEPS` evaluates finished runs again with another sampler, guidance
("default": the model's) or step counts, same prompts, into the file's `extra_evals` (e.g. FM at the 4 NFE
of Tab. 4 is 2 Euler + CFG steps: `--extra fm:ode:default:2`).

`--figure PAGE.html` draws each claim's comparison (per-seed pairs, means ± std, the real-vs-real floor) with
plotly, after a run or with `--report`.

Prints, per variant and step count, mean ± std over seeds of probe-FD and adherence (colour, shape,
motion, background, all) with the per-seed values, the real-vs-real probe-FD floor, and for each
claim the 4-step probe-FD gap against the seed spread (sum of the two stds) and the paired
per-seed differences (a seed gives every variant the same initialisation and data order).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from benchmarks import command_line     # stdlib only: torch comes after the thread setting below

os.environ.setdefault("OMP_NUM_THREADS", "1")     # before torch: one thread per run unless told otherwise

ROOT = Path(__file__).resolve().parents[1]

BASE_CONFIG = "shapes-t2v"
# The shapes-t2v data as configured (17 x 64 x 64 clips through the shipped autoencoder -> 16 x 5 x 8 x 8
# latents), the demo-shaped model shrunk: 1x2x2 patches -> 80 tokens of 64 values (the recipe of the
# 2026-11-23 runs in docs/RESULTS.md; shapes-t2v itself now has 1x1x1 patches, 4x the tokens), width
# 256 -> 128 (still >= the 64 values a token carries), 8 -> 4 blocks (block 3 softmax, the others GLGA),
# and a short constant-lr run. --tiny shrinks everything for a seconds-long plumbing check.
SCALES = {
    "cpu": ["model.patch_size=[1,2,2]", "model.dim=128", "model.num_heads=4", "model.ffn_dim=256",
            "model.encoder_depth=1", "model.middle_depth=2", "model.decoder_depth=1", "model.softmax_every=3",
            "steps=600", "batch_size=32", "lr=5e-4", "warmup_steps=50", "log_every=25"],
    "tiny": ["data.size=32", "data.num_frames=5", "model.dim=64", "model.num_heads=2", "model.ffn_dim=64",
             "model.encoder_depth=1", "model.middle_depth=1", "model.decoder_depth=1", "model.softmax_every=3",
             "model.window_frames=1", "steps=10", "batch_size=8", "lr=5e-4", "warmup_steps=2", "log_every=1"],
}
# gpu: the shipped shapes-t2v model as configured (demo width, 1x1x1 patches: 320 tokens of 16 values) at a
# quarter of the shipped batch, so that several runs share one lent GPU (a run of this model is host-bound:
# docs/BENCHMARKS.md 1e), trained from scratch for a fixed step count; --stop-after bounds one call.
SCALES["gpu"] = ["batch_size=128", "steps=800", "lr=5e-4", "warmup_steps=100", "model.backend=sdpa",
                 "data.num_workers=2", "log_every=25"]
EVAL = {"cpu": {"prompts": 256, "steps": [1, 4], "seed": 0}, "gpu": {"prompts": 300, "steps": [1, 4], "seed": 0},
        "tiny": {"prompts": 4, "steps": [1, 4], "seed": 0}}


def _phases(drop: float, mva: bool, fm_ratio: float = 0.75, scm_ratio: float = 0.25) -> str:
    """App. C.1's two phases as a `phases=` override: `drop` for the first 80% of the steps, then dense;
    the second phase has the MVA share 0.25 (FM 0.5) when `mva`, else the first phase's shares."""
    second = (f'{{"until": 1.0, "drop_ratio": 0.0, "mva_ratio": 0.25, "fm_ratio": 0.5, "scm_ratio": 0.25}}' if mva
              else f'{{"until": 1.0, "drop_ratio": 0.0, "mva_ratio": 0.0, "fm_ratio": {fm_ratio}, '
                   f'"scm_ratio": {scm_ratio}}}')
    first = (f'{{"until": 0.8, "drop_ratio": {drop}, "mva_ratio": 0.0, "fm_ratio": {fm_ratio}, '
             f'"scm_ratio": {scm_ratio}}}')
    return f"phases=[{first}, {second}]"


# variant -> (config overrides on top of the scale's, sampler the evaluator uses)
VARIANTS: dict[str, tuple[list[str], str]] = {
    "pdg-sfm": (["flow.guidance=pdg", _phases(0.75, mva=True)], "solution"),
    "fm": (["flow.guidance=cfg", "flow.p_unguided=1.0", _phases(0.75, mva=False, fm_ratio=1.0, scm_ratio=0.0)],
           "ode"),
    "no-mva": (["flow.guidance=pdg", _phases(0.75, mva=False)], "solution"),
    "no-drop": (["flow.guidance=pdg", _phases(0.0, mva=True)], "solution"),
    "fm-no-drop": (["flow.guidance=cfg", "flow.p_unguided=1.0", _phases(0.0, mva=False, fm_ratio=1.0, scm_ratio=0.0)],
                   "ode"),
}
# (claim, variant expected better, variant compared against, kind, at equal NFE): "lower" = the first should
# have the lower 4-step probe-FD; "same" = the two should be within noise. Tab. 4 compares the objectives at
# the same 4 NFE, which for FM (Euler + CFG, 2 NFE a step) is 2 steps: a claim marked "at equal NFE" is
# judged against every row of the second variant with the first's 4-step NFE (main eval or `extra_evals`),
# and shown at equal steps too.
CLAIMS = [("PDG-SFM 4 steps beats FM 4 steps (Tab. 4)", "pdg-sfm", "fm", "lower", True),
          ("MVA lowers 4-step probe-FD (Tab. 2, Ours3 -> Ours4)", "pdg-sfm", "no-mva", "lower", False),
          ("75% drop within noise of no drop (Tab. 2, Ours1 -> Ours2)", "pdg-sfm", "no-drop", "same", False),
          ("75% drop within noise of no drop, FM objective (Tab. 2's Ours1 -> Ours2 as run)", "fm", "fm-no-drop",
           "same", False)]
ATTRS = [("color", "colour"), ("shape", "shape"), ("motion", "motion"), ("background", "bg"), ("all", "all")]


@dataclass(frozen=True)
class Plan:
    """What every run of one invocation shares (picklable: each GPU run gets it in a fresh process).

    scale: a key of SCALES; steps: the run length instead of the scale's (None: the scale's; the phase
    boundaries stay fractions of it); share_trunk: variants whose configs agree on every phase but the last
    train those phases once per seed (`trunk_groups`); deadline: `time.time()` at which every run of this
    invocation stops training and saves to resume (--stop-after), including runs started late (branches)."""
    scale: str
    runs_dir: str
    threads: int = 1
    steps: int | None = None
    share_trunk: bool = False
    deadline: float | None = None

    def seconds_left(self) -> float | None:
        """Training seconds a run starting now may take in this invocation (None: no bound)."""
        return None if self.deadline is None else max(self.deadline - time.time(), 0.0)

    def scale_overrides(self) -> list[str]:
        return [*SCALES[self.scale], *([f"steps={self.steps}"] if self.steps is not None else [])]

    def overrides(self, variant: str, seed: int) -> list[str]:
        """The full `key=value` override list of one run (also stored in its record)."""
        return [f"data.text_cache={ROOT / '.cache' / 'text'}", *self.scale_overrides(), *VARIANTS[variant][0],
                f"seed={seed}", "checkpoint_every=100000"]

    def setup(self) -> dict:
        """What every run of an output file shares; a rerun refuses a file written with another setup."""
        setup = {"base_config": BASE_CONFIG, "scale": self.scale, "scale_overrides": self.scale_overrides(),
                 "eval": EVAL[self.scale],
                 "variants": {name: {"overrides": o, "sampler": s} for name, (o, s) in VARIANTS.items()}}
        if self.share_trunk:        # absent when off: files written before the option still load
            setup["share_trunk"] = True
        return setup


def setup_of(scale: str) -> dict:
    """The setup of a plain run of `scale` (no step override, no shared trunks)."""
    return Plan(scale, runs_dir="").setup()


def trunk_groups(plan: Plan, variants: list[str]) -> list[list[str]]:
    """Groups (of 2 or more, in `variants` order) of the variants whose configs are equal but for the last
    phase: with the same seed they train the same steps up to it (init, data order and every draw are
    seeded by the step), so `--share-trunk` trains those steps once per seed and branches each variant
    from that checkpoint (e.g. pdg-sfm / no-mva, which differ only in App. C.1's dense + MVA phase)."""
    from eflow_core.config import load_train_config

    groups: dict[str, list[str]] = {}
    for variant in variants:
        config = load_train_config(BASE_CONFIG, plan.overrides(variant, 0)).to_dict()
        phases = config.pop("phases")
        if len(phases) > 1:
            groups.setdefault(json.dumps([config, phases[:-1]], sort_keys=True), []).append(variant)
    return [members for members in groups.values() if len(members) > 1]


def run_dir(plan: Plan, variant: str, seed: int) -> Path:
    return Path(plan.runs_dir) / f"{variant}-seed{seed}"


def trunk_dir(plan: Plan, members: list[str], seed: int) -> Path:
    return Path(plan.runs_dir) / f"trunk-{'+'.join(members)}-seed{seed}"


def _torch_on(gpu: str | None, threads: int):
    """torch for one run on CUDA device `gpu` (None: the CPU) with `threads` CPU threads. The device is
    chosen before this process first touches CUDA, so GPU runs each get a fresh process (`main`'s pool)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    import torch

    torch.set_num_threads(threads)
    return torch


def _phase_starts(history: list[dict]) -> list[dict]:
    """First step of each phase a call trained, and what it trained with (drop ratio, batch shares)."""
    phases = {}
    for row in history:
        phases.setdefault(row["phase"], {"phase": row["phase"], "first_step": row["step"] - 1,
                                         "drop_ratio": row["drop_ratio"], "n_fm": row.get("n_fm"),
                                         "n_scm": row.get("n_scm"), "n_mva": row.get("n_mva")})
    return [phases[k] for k in sorted(phases)]


def _trainer(plan: Plan, variant: str, seed: int, out: Path, gpu: str | None):
    """(Trainer for one variant x seed writing to `out`, its config); refuses a folder of another config."""
    from eflow_core.config import load_train_config
    from eflow_core.train import Trainer

    config = load_train_config(BASE_CONFIG, plan.overrides(variant, seed))
    saved = out / "config.json"
    if saved.exists() and json.loads(saved.read_text()) != json.loads(json.dumps(config.to_dict())):
        raise ValueError(f"{out} holds a run with another config; give another --runs-dir or delete it")
    return Trainer(config, out, cpu=gpu is None, progress=False), config


def train_trunk(plan: Plan, members: list[str], seed: int, gpu: str | None = None) -> dict:
    """Train the steps `members` share (every phase but the last; `members[0]`'s config) into `trunk_dir`.
    Returns {"kind": "trunk", "trunk": members, "seed", "steps", "done", "phases", ...}; "done" is False
    when --stop-after stopped it first."""
    _torch_on(gpu, plan.threads)
    from eflow_core.train import phase_at

    out = trunk_dir(plan, members, seed)
    start = time.perf_counter()
    trainer, config = _trainer(plan, members[0], seed, out, gpu)
    last = len(config.phases) - 1
    boundary = next(step for step in range(config.steps + 1) if phase_at(config, step)[0] == last)
    history = trainer.fit(stop_at=boundary, stop_after=plan.seconds_left())
    train_s = trainer.train_seconds + time.perf_counter() - start     # earlier calls of a resumed trunk too
    return {"kind": "trunk", "trunk": members, "seed": seed, "dir": str(out), "steps": boundary,
            "done": trainer.step >= boundary, "step": trainer.step, "phases": _phase_starts(history),
            "train_seconds": round(train_s, 1), "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}


def _branch_from(trunk: dict, out: Path) -> None:
    """Start `out` from the trunk's checkpoint (weights, EMA, optimizer, schedule, step) unless it has one."""
    if (out / "checkpoint" / "state.json").exists():
        return
    source = Path(trunk["dir"])
    state = json.loads((source / "checkpoint" / "state.json").read_text())
    if state["step"] != trunk["steps"]:
        raise ValueError(f"trunk {source} is at step {state['step']}, not its end {trunk['steps']}")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source / "checkpoint", out / "checkpoint.tmp", dirs_exist_ok=True)
    if (source / "metrics.csv").exists():
        shutil.copy2(source / "metrics.csv", out / "metrics.csv")
    (out / "checkpoint.tmp").rename(out / "checkpoint")


def run_one(plan: Plan, variant: str, seed: int, trunk: dict | None = None, gpu: str | None = None) -> dict:
    """Train (or resume) one variant x seed, evaluate its EMA weights; returns the JSON record.

    trunk: a finished `train_trunk` record this run branches from (its steps are not trained again).
    gpu: the CUDA device index this run trains and evaluates on (None: the CPU; see `_torch_on`).
    A run stopped by plan.deadline saves its checkpoint and returns {"unfinished": True, "step", "steps"}
    instead of a record (the next invocation resumes it)."""
    _torch_on(gpu, plan.threads)
    out = run_dir(plan, variant, seed)
    if trunk is not None:
        _branch_from(trunk, out)
    start = time.perf_counter()
    trainer, config = _trainer(plan, variant, seed, out, gpu)
    history = trainer.fit(stop_after=plan.seconds_left())
    train_s = trainer.train_seconds + time.perf_counter() - start     # earlier calls of a resumed run too
    device_name = trainer.run_record["device"]
    if trainer.step < config.steps:
        return {"unfinished": True, "variant": variant, "seed": seed, "step": trainer.step, "steps": config.steps}
    tail = [row["loss"] for row in history[-50:]]
    del trainer

    start = time.perf_counter()
    results = _evaluate_run(out, plan.scale, VARIANTS[variant][1], None, tuple(EVAL[plan.scale]["steps"]), gpu)
    eval_s = time.perf_counter() - start
    record = {"variant": variant, "seed": seed, "run_dir": str(out), "overrides": plan.overrides(variant, seed),
              "sampler": VARIANTS[variant][1], "config": json.loads((out / "config.json").read_text()),
              "device": device_name, "trained_steps": config.steps, "resumed_steps": config.steps - len(history),
              "phases": _phase_starts(history),
              "final_loss_mean": statistics.fmean(tail) if tail else None,
              "train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1), "eval": results,
              "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    if trunk is not None:   # train_seconds counts the trunk's too (its checkpoint carries them)
        record["trunk"] = {key: trunk[key] for key in ("trunk", "dir", "steps", "phases")}
    return record


def _evaluate_run(run_dir: Path, scale: str, sampler: str, guidance: float | None, steps: tuple[int, ...],
                  gpu: str | None) -> dict:
    """`evaluate()` of a training folder's EMA weights on the scale's prompts (eval seed fixed)."""
    from eflow_core.metrics.evaluate import evaluate
    from eflow_core.pipeline import EFlowPipeline

    pipe = EFlowPipeline.from_pretrained(run_dir, device="cpu" if gpu is None else "cuda",
                                         text_cache=ROOT / ".cache" / "text")
    spec = EVAL[scale]
    return evaluate(pipe, steps=steps, num_prompts=spec["prompts"], seed=spec["seed"], guidance=guidance,
                    sampler=sampler, progress=False)


def parse_extra(spec: str) -> tuple[str, str, float | None, tuple[int, ...]]:
    """`--extra VARIANT:SAMPLER:GUIDANCE:STEPS` (GUIDANCE a number or "default", STEPS e.g. 1,2) -> a tuple."""
    parts = spec.split(":")
    if len(parts) != 4:
        raise ValueError(f"--extra takes VARIANT:SAMPLER:GUIDANCE:STEPS such as fm:ode:default:2, not {spec!r}")
    variant, sampler, guidance, steps = parts
    if variant not in VARIANTS or sampler not in ("solution", "ode"):
        raise ValueError(f"--extra {spec!r}: variant one of {list(VARIANTS)}, sampler solution or ode")
    try:
        scale_value = None if guidance == "default" else float(guidance)
        step_counts = tuple(int(k) for k in steps.split(","))
    except ValueError:
        raise ValueError(f"--extra {spec!r}: GUIDANCE is a number or 'default', STEPS integers") from None
    return variant, sampler, scale_value, step_counts


def evaluate_again(plan: Plan, variant: str, seed: int, sampler: str, guidance: float | None,
                   steps: tuple[int, ...], gpu: str | None = None) -> dict:
    """One `--extra` evaluation of a finished run (another sampler, guidance or step counts); its record."""
    torch = _torch_on(gpu, plan.threads)
    start = time.perf_counter()
    results = _evaluate_run(run_dir(plan, variant, seed), plan.scale, sampler, guidance, steps, gpu)
    return {"variant": variant, "seed": seed, "spec": [sampler, guidance, list(steps)], "eval": results,
            "device": torch.cuda.get_device_name() if gpu is not None else "cpu",
            "eval_seconds": round(time.perf_counter() - start, 1), "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}


# ------------------------------------------------------------------------------------------ output
def load_results(path: Path, setup: dict) -> dict:
    """The output file's content, or a fresh one; refuse one written with a different setup. Variants
    added to VARIANTS since the file was written are allowed (its own variants must be unchanged)."""
    if not path.exists():
        return {"setup": setup, "runs": []}
    data = json.loads(path.read_text())
    old = data.get("setup", {})
    same_rest = {k: v for k, v in old.items() if k != "variants"} == {k: v for k, v in setup.items() if k != "variants"}
    same_variants = all(setup["variants"].get(name) == spec for name, spec in old.get("variants", {}).items())
    if not (same_rest and same_variants):
        raise ValueError(f"{path} holds runs of a different setup (scale, overrides, eval or a variant's "
                         f"definition); give another --out or delete it")
    data["setup"] = setup
    return data


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(data: dict) -> dict:
    """{variant: {steps: {"nfe", "probe_fd": [per seed], attr: [per seed], "seeds": [...]}}} from the runs."""
    out: dict = {}
    for rec in sorted(data["runs"], key=lambda r: (r["variant"], r["seed"])):
        for row in rec["eval"]["rows"]:
            cell = out.setdefault(rec["variant"], {}).setdefault(row["steps"], {"nfe": row["nfe"], "seeds": [],
                                                                                 "probe_fd": []})
            cell["seeds"].append(rec["seed"])
            cell["probe_fd"].append(row["probe_fd"])
            for attr, _ in ATTRS:
                cell.setdefault(attr, []).append(row["adherence"][attr])
    return out


def config_mismatches(data: dict) -> list[str]:
    """Runs whose resolved config differs from the variant's first run in more than the seed (the base
    preset may change between runs of one output file: those runs would not be comparable)."""
    first, problems = {}, []
    for rec in data["runs"]:
        config = {k: v for k, v in rec["config"].items() if k != "seed"}
        ref = first.setdefault(rec["variant"], (rec["seed"], config))
        if config != ref[1]:
            problems.append(f"{rec['variant']} seed {rec['seed']} trained with another config than seed {ref[0]}")
    return problems


def _claim_line(text: str, a: str, b: str, kind: str, fd_a: dict[int, float], fd_b: dict[int, float]) -> str:
    """One claim: {seed: 4-step probe-FD} of variant a against b; gap against the seed spread, paired diffs."""
    (ma, sa), (mb, sb) = _mean_std(list(fd_a.values())), _mean_std(list(fd_b.values()))
    diffs = [fd - fd_b[seed] for seed, fd in fd_a.items() if seed in fd_b]
    gap, spread = ma - mb, sa + sb
    if min(len(diffs), len(fd_a), len(fd_b)) < 2:
        verdict = ("lower" if gap < 0 else "not lower") + "; one seed: no spread to compare with"
    elif kind == "lower":
        verdict = ("direction holds" if gap < 0 else "direction does NOT hold") + (
            ", gap exceeds the seed spread" if abs(gap) > spread else ", within the seed spread")
    else:
        verdict = "within the seed spread (holds)" if abs(gap) <= spread else "gap exceeds the seed spread"
    paired = ""
    if len(diffs) > 1:      # same seed = same initialisation and data order: paired differences
        md, sdev = _mean_std(diffs)
        t = md / (sdev / len(diffs) ** 0.5) if sdev > 0 else float("inf")
        paired = (f", paired {md:+.1f} ± {sdev:.1f} (t = {t:+.1f}, {sum(d < 0 for d in diffs)}/{len(diffs)} "
                  f"seeds lower)")
    return (f"{text}: {a} {ma:.1f} ± {sa:.1f} vs {b} {mb:.1f} ± {sb:.1f}; gap {gap:+.1f}, spread "
            f"(sum of stds) {spread:.1f}; per-seed {a} - {b}: [{', '.join(f'{d:+.1f}' for d in diffs)}]"
            f"{paired} -> {verdict}")


def eval_groups(data: dict) -> dict:
    """{(variant, sampler, guidance): {(steps, nfe): {seed: row}}} over the main evals and `extra_evals`."""
    groups: dict = {}
    for rec in [*data["runs"], *data.get("extra_evals", [])]:
        ev = rec["eval"]
        cells = groups.setdefault((rec["variant"], ev["sampler"], ev["guidance"]), {})
        for row in ev["rows"]:
            cells.setdefault((row["steps"], row["nfe"]), {})[rec["seed"]] = row
    return groups


def format_extra(data: dict) -> list[str]:
    """The `extra_evals` table: every (variant, sampler, guidance, steps) with probe-FD per seed."""
    if not data.get("extra_evals"):
        return []
    lines = ["", "every sampler x guidance setting with extra evaluations "
                 "(same runs, prompts and noise; main rows included):",
             "variant  sampler   guid  steps NFE  probe-FD mean ± std [per seed]        shape      bg"]
    extra_keys = {(r["variant"], r["eval"]["sampler"], r["eval"]["guidance"]) for r in data["extra_evals"]}
    for (variant, sampler, guidance), cells in sorted(eval_groups(data).items(), key=lambda kv: str(kv[0])):
        if (variant, sampler, guidance) not in extra_keys:
            continue
        for (steps, nfe), by_seed in sorted(cells.items()):
            seeds = sorted(by_seed)
            m, sd = _mean_std([by_seed[k]["probe_fd"] for k in seeds])
            per_seed = ", ".join(f"{by_seed[k]['probe_fd']:.1f}" for k in seeds)
            shape = statistics.fmean(by_seed[k]["adherence"]["shape"] for k in seeds)
            bg = statistics.fmean(by_seed[k]["adherence"]["background"] for k in seeds)
            lines.append(f"{variant:8s} {sampler:8s} {guidance:5.1f} {steps:5d} {nfe:3d}  "
                         f"{m:7.1f} ± {sd:5.1f} [{per_seed}]".ljust(72) + f"{100 * shape:5.1f}%  {100 * bg:5.1f}%")
    return lines


def format_report(data: dict) -> str:
    """The per-variant table (mean ± std [per seed]) and the three claims against the seed spread."""
    summary = summarise(data)
    if not summary:
        return "(no finished runs)"
    lines = ["variant  steps NFE  probe-FD mean ± std [per seed]       " +
             "  ".join(f"{short:>6s}" for _, short in ATTRS) + "   (adherence, mean over seeds)"]
    for variant in [v for v in VARIANTS if v in summary]:
        for steps, cell in sorted(summary[variant].items()):
            m, s = _mean_std(cell["probe_fd"])
            per_seed = ", ".join(f"{v:.1f}" for v in cell["probe_fd"])
            adher = "  ".join(f"{100 * statistics.fmean(cell[a]):5.1f}%" for a, _ in ATTRS)
            lines.append(f"{variant:8s} {steps:5d} {cell['nfe']:3d}  {m:7.1f} ± {s:5.1f} [{per_seed}]".ljust(60)
                         + adher)
    floors = sorted({round(r["eval"]["real_fd_floor"], 3) for r in data["runs"]})
    lines.append(f"real-vs-real probe-FD floor: {', '.join(f'{f:.2f}' for f in floors)} "
                 f"({data['runs'][0]['eval']['num_prompts']} prompts, eval seed {data['runs'][0]['eval']['seed']})")
    lines.append("adherence per seed (4 steps): " + "; ".join(
        f"{v} " + " ".join(f"{short} [{', '.join(f'{100 * x:.0f}' for x in summary[v][4][a])}]" for a, short in ATTRS)
        for v in VARIANTS if v in summary and 4 in summary[v]))
    for problem in config_mismatches(data):
        lines.append(f"WARNING: {problem}")
    for members, steps in sorted({(tuple(t["trunk"]), t["steps"]) for t in data.get("trunks", [])}):
        lines.append(f"{' and '.join(members)} share their first {steps} steps per seed (one trunk, --share-trunk): "
                     f"their paired differences come from the last phase alone")
    lines.append("")
    for text, a, b, kind, fd_a, fd_b in claim_comparisons(data):
        lines.append(text if fd_a is None else _claim_line(text, a, b, kind, fd_a, fd_b))
    lines.extend(format_extra(data))
    return "\n".join(lines)


def claim_comparisons(data: dict) -> list[tuple]:
    """Every comparison the claims make: (text, a, b, kind, {seed: a's 4-step probe-FD}, {seed: b's}), the
    two dicts None (and the text saying why) when not measured. A claim at equal NFE gives one comparison
    per row of b with a's 4-step NFE (main eval or `extra_evals`), then the one at equal steps."""
    summary = summarise(data)
    out = []
    for text, a, b, kind, equal_nfe in CLAIMS:
        if a not in summary or b not in summary or 4 not in summary[a] or 4 not in summary[b]:
            out.append((f"{text}: not measured ({a} or {b} missing)", a, b, kind, None, None))
            continue
        fd = {v: dict(zip(summary[v][4]["seeds"], summary[v][4]["probe_fd"])) for v in (a, b)}
        if equal_nfe:       # a's 4-step rows against every b row of the same NFE
            nfe_a = summary[a][4]["nfe"]
            matched = [(key, {seed: row["probe_fd"] for seed, row in cells[(steps, nfe)].items()})
                       for key, cells in eval_groups(data).items() if key[0] == b
                       for steps, nfe in sorted(cells) if nfe == nfe_a]
            if not matched:
                out.append((f"{text}, at equal NFE ({nfe_a}): not measured ({b} has no {nfe_a}-NFE row: --extra)",
                            a, b, kind, None, None))
            for (_, sampler, guidance), fd_b in matched:
                out.append((f"{text}, at equal NFE ({nfe_a}; {b} {sampler}, guidance {guidance:g})",
                            a, b, kind, fd[a], fd_b))
            text = f"{text}, at equal steps ({b} {summary[b][4]['nfe']} NFE)"
        out.append((text, a, b, kind, fd[a], fd[b]))
    return out


def write_figure(data: dict, path: Path, plotlyjs: str = "inline") -> str:
    """The measured claims as a plotly HTML page: per comparison, each seed's probe-FD of both variants
    joined by a line (the pairing), the means ± std beside them and the real-vs-real floor dashed."""
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        return "plotly not installed: figure skipped"
    measured = [c for c in claim_comparisons(data) if c[4] is not None]
    if not measured:
        return "no claim measured: figure skipped"
    columns = min(len(measured), 3)
    rows = -(-len(measured) // columns)
    titles = [_wrap(text, 48) for text, *_ in measured]
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=titles, vertical_spacing=0.22)
    floor = statistics.fmean(r["eval"]["real_fd_floor"] for r in data["runs"])
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    for i, (_, a, b, _, fd_a, fd_b) in enumerate(measured):
        row, col = i // columns + 1, i % columns + 1
        for j, seed in enumerate(sorted(set(fd_a) & set(fd_b))):
            fig.add_trace(go.Scatter(x=[a, b], y=[fd_a[seed], fd_b[seed]], mode="lines+markers",
                                     name=f"seed {seed}", legendgroup=f"seed {seed}", showlegend=i == 0,
                                     line=dict(color=palette[j % len(palette)], width=1)), row=row, col=col)
        for variant, fd in ((a, fd_a), (b, fd_b)):
            mean, std = _mean_std(list(fd.values()))
            fig.add_trace(go.Scatter(x=[variant], y=[mean], mode="markers", name="mean ± std",
                                     legendgroup="mean", showlegend=i == 0 and variant == a,
                                     marker=dict(color="black", symbol="diamond", size=11),
                                     error_y=dict(type="data", array=[std])), row=row, col=col)
        fig.add_hline(y=floor, line_dash="dot", line_color="gray", row=row, col=col)
    fig.update_yaxes(title_text="4-step probe-FD (lower is better)", rangemode="tozero", col=1)
    config = data["runs"][0]["config"]
    shared = ", arms branched from one trunk per seed" if data["setup"].get("share_trunk") else ""
    fig.update_layout(title=dict(text=f"Paper claims, {data['setup']['scale']} scale: {config['steps']} steps at batch "
                                      f"{config['batch_size']}{shared}<br>dotted: real-vs-real probe-FD floor "
                                      f"{floor:.2f}", font=dict(size=15)),
                      template="plotly_white", height=420 * rows + 60, width=max(440 * columns, 720),
                      margin=dict(t=130))
    fig.write_html(str(path), include_plotlyjs=True if plotlyjs == "inline" else "cdn")
    return str(path)


def _wrap(text: str, width: int) -> str:
    """Plotly titles do not wrap: break `text` into <br>-joined lines of at most `width` characters."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "<br>".join([*lines, line])


# --------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON file of the records (appended to run by run; resumable)")
    p.add_argument("--runs-dir", default="/tmp/ablations", help="training folders, one per variant x seed")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {list(VARIANTS)}")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process (1: in this one)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--scale", choices=["cpu", "gpu"], default="cpu",
                   help="cpu: the 1.5M-parameter model of the 2026-11-23 runs; gpu: the shipped model at batch 128")
    p.add_argument("--tiny", action="store_true", help="seconds-long plumbing check (tests), not numbers")
    p.add_argument("--gpus", default=None,
                   help="CUDA device indices for the runs, e.g. 0,1 (repeat one to give it more runs: 1,1,0); "
                        "each run trains and evaluates on its own GPU in its own process")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per run instead of the scale's (phase boundaries stay fractions of it)")
    p.add_argument("--share-trunk", action="store_true",
                   help="train the steps that variants share (configs equal but for the last phase: pdg-sfm and "
                        "no-mva) once per seed and branch each from that checkpoint; paired arms, less compute")
    p.add_argument("--stop-after", type=float, default=None,
                   help="seconds after this invocation starts at which every run stops training (runs started "
                        "later too: a trunk's branches); unfinished runs save and resume on a rerun")
    p.add_argument("--extra", action="append", default=[], metavar="VARIANT:SAMPLER:GUIDANCE:STEPS",
                   help="evaluate the finished runs of VARIANT (--seeds) again, e.g. fm:ode:default:2 (FM at 4 NFE); "
                        "repeatable; records go to the file's extra_evals")
    p.add_argument("--report", action="store_true", help="print the table of --out and exit")
    p.add_argument("--figure", default=None, metavar="HTML",
                   help="also write the claims as a plotly page here (per-seed pairs, means, the floor)")
    p.add_argument("--plotlyjs", default="inline", choices=["inline", "cdn"],
                   help="plotly.js inside the page (works offline) or from its CDN (a 10 KB page)")
    return p


def main(argv: list[str] | None = None) -> int:
    from eflow_core.checkpoint import atomic_write_json

    args = build_parser().parse_args(argv)
    plan = Plan("tiny" if args.tiny else args.scale, args.runs_dir, args.threads, args.steps, args.share_trunk,
                None if args.stop_after is None else time.time() + args.stop_after)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"error: unknown variants {unknown}; choose from {list(VARIANTS)}", file=sys.stderr)
        return 2
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else []
        if any(not g.isdigit() for g in gpus):
            raise ValueError(f"--gpus takes CUDA device indices such as 0,1, not {args.gpus!r}")
        if args.steps is not None and args.steps < 1:
            raise ValueError(f"--steps must be a positive step count, not {args.steps}")
        extras = [parse_extra(spec) for spec in args.extra]
        out = Path(args.out)
        data = load_results(out, plan.setup())
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.report:
        print(format_report(data))
        if args.figure:
            print(write_figure(data, Path(args.figure), args.plotlyjs))
        return 0
    data.setdefault("machine", {"platform": platform.platform(), "processor": platform.processor(),
                                "cpus": os.cpu_count(), "jobs": args.jobs, "threads_per_run": args.threads,
                                "gpus": gpus})
    data.setdefault("commands", []).append(command_line("benchmarks.ablations", argv))   # every invocation that trained
    done = {(r["variant"], r["seed"]) for r in data["runs"]}
    todo = [(v, s) for s in seeds for v in variants if (v, s) not in done]
    for v, s in sorted(done):
        print(f"skip {v} seed {s}: finished in {out}")
    groups = trunk_groups(plan, variants) if plan.share_trunk else []
    branched = {v for members in groups for v in members}
    trunks = {(tuple(t["trunk"]), t["seed"]): t for t in data.get("trunks", [])}     # finished trunks
    start = time.perf_counter()

    failed, unfinished = [], []

    def arms(trunk: dict) -> list[tuple[str, object, tuple]]:
        """The run calls of a finished trunk's variants still to do for its seed."""
        return [(f"{v} seed {trunk['seed']}", run_one, (plan, v, trunk["seed"], trunk))
                for v in trunk["trunk"] if (v, trunk["seed"]) in todo]

    def collect(label: str, result) -> list[tuple[str, object, tuple]]:
        """result: a zero-argument callable giving a run's record, a trunk's record (kind "trunk"), an
        `--extra` record (it has "spec"), or {"unfinished": ...} for a run --stop-after stopped (or raising
        what the call raised). Returns the calls it makes possible: a finished trunk's branches."""
        try:
            rec = result()
        except Exception as err:        # any failure: the other runs go on and keep their records
            failed.append(label)
            where = f"\n{err.__cause__}" if err.__cause__ else ""      # a worker's traceback
            print(f"error: {label} failed: {type(err).__name__}: {err}{where}", file=sys.stderr, flush=True)
            return []
        if rec.get("unfinished") or (rec.get("kind") == "trunk" and not rec["done"]):
            unfinished.append(label)
            print(f"stopped {label} at step {rec['step']} of {rec['steps']} (--stop-after): "
                  f"rerun the same command to resume it", flush=True)
            return []
        if rec.get("kind") == "trunk":
            data.setdefault("trunks", []).append(rec)
            atomic_write_json(out, data)
            print(f"done {label}: {rec['steps']} steps, train {rec['train_seconds']:.0f}s; branching "
                  f"{', '.join(rec['trunk'])} [{time.perf_counter() - start:.0f}s]", flush=True)
            return arms(rec)
        (data.setdefault("extra_evals", []) if "spec" in rec else data["runs"]).append(rec)
        atomic_write_json(out, data)
        fd = ", ".join(f"{r['steps']} steps {r['probe_fd']:.1f}" for r in rec["eval"]["rows"])
        took = (f"eval {rec['eval_seconds']:.0f}s" if "spec" in rec
                else f"train {rec['train_seconds']:.0f}s, eval {rec['eval_seconds']:.0f}s")
        print(f"done {label}: {took}, probe-FD {fd} [{time.perf_counter() - start:.0f}s]", flush=True)
        return []

    def execute(calls: list[tuple[str, object, tuple]]) -> None:
        """calls: [(label, function, positional args)] (the GPU goes as `gpu=`), plus the calls `collect`
        adds. In this process when --jobs 1 and no GPU, else one fresh process per call (it picks its GPU
        before touching CUDA), at most --jobs at a time, each started on the GPU of --gpus with the fewest
        running calls per listing (`--gpus 1,1,0`: GPU 1 takes two for GPU 0's one)."""
        queue = list(calls)
        if args.jobs <= 1 and not gpus:
            while queue:
                label, fn, fn_args = queue.pop(0)
                queue.extend(collect(label, lambda: fn(*fn_args, gpu=None)))
            return
        weight = {g: gpus.count(g) for g in gpus}
        running = dict.fromkeys(weight, 0)
        with ProcessPoolExecutor(max_workers=max(args.jobs, 1), mp_context=get_context("spawn"),
                                 max_tasks_per_child=1) as pool:
            pending: dict = {}
            while queue or pending:
                while queue and len(pending) < max(args.jobs, 1):
                    label, fn, fn_args = queue.pop(0)
                    gpu = min(weight, key=lambda g: running[g] / weight[g]) if gpus else None
                    if gpu is not None:
                        running[gpu] += 1
                    pending[pool.submit(fn, *fn_args, gpu=gpu)] = (label, gpu)
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    label, gpu = pending.pop(future)
                    if gpu is not None:
                        running[gpu] -= 1
                    queue.extend(collect(label, future.result))

    out.parent.mkdir(parents=True, exist_ok=True)
    calls = [(f"{v} seed {s}", run_one, (plan, v, s)) for v, s in todo if v not in branched]
    for members in groups:
        for s in seeds:
            if not any((v, s) in todo for v in members):
                continue
            trunk = trunks.get((tuple(members), s))
            calls += (arms(trunk) if trunk else
                      [(f"trunk of {'+'.join(members)} seed {s}", train_trunk, (plan, members, s))])
    execute(calls)
    finished_runs = {(r["variant"], r["seed"]) for r in data["runs"]}
    evaluated = {(r["variant"], r["seed"], json.dumps(r["spec"])) for r in data.get("extra_evals", [])}
    execute([(f"extra evaluation {[sampler, guidance, list(steps)]} of {v} seed {s}", evaluate_again,
              (plan, v, s, sampler, guidance, steps))
             for v, sampler, guidance, steps in extras for s in seeds
             if (v, s) in finished_runs and (v, s, json.dumps([sampler, guidance, list(steps)])) not in evaluated])
    print(format_report(data))
    if args.figure:
        print(write_figure(data, Path(args.figure), args.plotlyjs))
    if unfinished:      # `collect` writes on each finished record; this keeps the command of a call that
        atomic_write_json(out, data)        # only left checkpoints (its steps count in the next record)
        print(f"{len(unfinished)} run(s) unfinished: rerun the same command to resume them")
    return 1 if failed else (3 if unfinished else 0)


if __name__ == "__main__":
    sys.exit(main())
