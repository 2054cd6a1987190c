"""The training-throughput ladder of the paper's Fig. 4a, every row measured in one run on one GPU
(issue 9). Same model size and video shape for all rows; each row adds one change to the one above:

    1 flow matching + softmax           (one forward/backward per sample)
    2 SoFlow + softmax                  (SCM share: extra no-grad pass; CFG: an unconditional full pass)
    3 + MVA                             (MVA share: two extra no-grad passes)
    4 + GLGA                            (GLGA in place of softmax, softmax every K blocks)
    5 + PDG                             (weak path in place of the unconditional full pass)
    6 + 75% token dropping              (middle stack on a quarter of the tokens)

Iterations/s and each row's ratio to row 2 (SoFlow + softmax), as in the paper.

    python -m benchmarks.train_ladder                    # GPU; writes $OUT/train_ladder.json
    python -m benchmarks.train_ladder --tiny --device cpu
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time


import torch


from benchmarks.timing import device_times
from eflow_core.config import MODEL_PRESETS, FlowConfig
from eflow_core.flow import SolutionFlow
from eflow_core.flow.solution_flow import split_batch
from eflow_core.model.dit import VideoDiT

LADDER = [
    ("flow matching + softmax", dict(attention="softmax"), dict(guidance="none", fm_ratio=1.0, scm_ratio=0.0), 0.0),
    ("SoFlow + softmax", dict(attention="softmax"), dict(guidance="cfg", fm_ratio=0.75, scm_ratio=0.25), 0.0),
    ("+ MVA", dict(attention="softmax"), dict(guidance="cfg", fm_ratio=0.5, scm_ratio=0.25, mva_ratio=0.25), 0.0),
    ("+ GLGA", dict(attention="glga"), dict(guidance="cfg", fm_ratio=0.5, scm_ratio=0.25, mva_ratio=0.25), 0.0),
    ("+ PDG", dict(attention="glga"), dict(guidance="pdg", fm_ratio=0.5, scm_ratio=0.25, mva_ratio=0.25), 0.0),
    ("+ 75% token dropping", dict(attention="glga"), dict(guidance="pdg", fm_ratio=0.5, scm_ratio=0.25,
                                                          mva_ratio=0.25), 0.75),
]


def measure(name, model_changes, flow_changes, drop_ratio, args, device) -> dict:
    flow_config = FlowConfig(**flow_changes)
    shares = split_batch(args.batch, flow_config.fm_ratio, flow_config.scm_ratio, flow_config.mva_ratio)
    missing = [term for term, ratio, n in zip(("FM", "SCM", "MVA"), (flow_config.fm_ratio, flow_config.scm_ratio,
                                                                   flow_config.mva_ratio), shares) if ratio > 0 and n == 0]
    if missing:                # the row would silently measure the row above it
        return {"row": name, "error": f"batch {args.batch} gives no sample to {', '.join(missing)} "
                                      f"(split {shares}); use a larger --batch"}
    config = MODEL_PRESETS[args.preset].replace(in_channels=16, num_classes=700, **model_changes)
    torch.manual_seed(0)
    with torch.device(device):
        model = VideoDiT(config)
    model.train()
    model.drop_ratio = drop_ratio
    flow = SolutionFlow(model, flow_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    t, h, w = args.latent
    x0 = torch.randn(args.batch, 16, t, h, w, device=device)
    labels = torch.randint(0, 700, (args.batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(i):
        with autocast:
            loss, _ = flow.loss(x0, labels, i)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    counter = iter(range(args.warmup + args.iters))
    for _ in range(args.warmup):
        step(next(counter))
    times = device_times(lambda: step(next(counter)), device, args.iters)
    seconds = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    del model, optimizer, flow
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return {"row": name, "it_per_s": 1.0 / seconds, "median_s": seconds, "all_s": times, "peak_gib": peak,
            "split_fm_scm_mva": list(shares)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="B")
    parser.add_argument("--latent", default="21,60,104",
                        help="latent T,H,W (default: 480p x 81 frames after a 4x8x8 VAE, 32,760 tokens)")
    parser.add_argument("--batch", type=int, default=4,
                        help="per step; at least 4, so the 0.5/0.25/0.25 split gives MVA a sample")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "train_ladder.json"))
    args = parser.parse_args()
    if args.tiny:
        args.preset, args.latent, args.batch, args.warmup, args.iters = "tiny", "4,8,8", 4, 1, 2
    args.latent = tuple(int(x) for x in str(args.latent).split(","))
    device = torch.device(args.device)

    rows = []
    for name, model_changes, flow_changes, drop in LADDER:
        try:
            rows.append(measure(name, model_changes, flow_changes, drop, args, device))
        except torch.OutOfMemoryError as err:
            rows.append({"row": name, "error": f"out of memory: {str(err).splitlines()[0]}"})
        print(rows[-1]["row"], {k: v for k, v in rows[-1].items() if k not in ("row", "all_s")}, flush=True)
        with open(args.out + ".partial", "w") as f:     # a run cut short keeps the rows it measured
            json.dump(rows, f, indent=2)
    base = next((r["it_per_s"] for r in rows if r["row"] == "SoFlow + softmax" and "it_per_s" in r), None)
    first = rows[0].get("it_per_s")
    grid = MODEL_PRESETS[args.preset].patch_size
    tokens = (args.latent[0] // grid[0]) * (args.latent[1] // grid[1]) * (args.latent[2] // grid[2])
    print(f"\npreset {args.preset}, latent {args.latent} ({tokens} tokens), batch {args.batch}, "
          f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}")
    print(f"{'row':28s} {'it/s':>8s} {'vs SoFlow':>10s} {'vs FM':>7s} {'peak GiB':>9s}")
    for r in rows:
        if "it_per_s" in r:
            r["vs_soflow_softmax"] = r["it_per_s"] / base if base else None
            r["vs_fm_softmax"] = r["it_per_s"] / first if first else None
            print(f"{r['row']:28s} {r['it_per_s']:8.3f} {r['vs_soflow_softmax'] or float('nan'):9.2f}x "
                  f"{r['vs_fm_softmax'] or float('nan'):6.2f}x {r['peak_gib']:9.1f}")
        else:
            print(f"{r['row']:28s} {r['error']}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"preset": args.preset, "latent": args.latent, "tokens": tokens, "batch": args.batch,
                   "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                   "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
