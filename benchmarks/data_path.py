"""The training data path (issue 24): how many batches a second the DataLoader delivers to the device,
against the resident set (`data.resident=true`, eflow_core/data/resident.py), for one config.

The captured `shapes-t2v` step at batch 512 needs about 12 batches a second on an H100 (docs/BENCHMARKS.md
§1i). Each row delivers batches on the device as the trainer's loop receives them:
- `loader`: the trainer's DataLoader (workers, pinned memory), each float32 batch copied to the device;
- `resident`: `ResidentSet.batch` on the set rendered once (its build time is reported apart).
First it checks that resident batches are the loader's batches quantized to 8 bits (within 1/255).

    python -m benchmarks.data_path --config shapes-t2v --batch 512 --workers 14 --out $OUT/data_path.json
    python -m benchmarks.data_path --config shapes-t2v --batch 64 --workers 2 --batches 5 \\
        data.num_samples=2000 --out /tmp/data_path.json               # CPU
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks import command_line
from eflow_core.config import load_train_config
from eflow_core.data import collate, make_dataset, training_loader
from eflow_core.data.resident import ResidentSet, dequantize, quantize
from eflow_core.train import StepBatches
from eflow_core.transfer import to_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_rate(dataset, sampler, workers: int, device: torch.device, batches: int) -> dict:
    """Batches/s of the trainer's DataLoader, each batch's video on `device`, after the workers' first
    batches (their start-up) are past."""
    loader = training_loader(dataset, sampler, workers, device)
    warmup = max(workers, 1)
    times = []
    start = time.perf_counter()
    for k, batch in enumerate(loader):
        to_device(batch["video"], device)
        _sync(device)
        now = time.perf_counter()
        if k >= warmup:
            times.append(now - start)
        start = now
        if len(times) == batches:
            break
    return {"batches_per_s": 1 / statistics.mean(times), "timed_batches": len(times), "warmup_batches": warmup}


def resident_rate(resident: ResidentSet, sampler, device: torch.device, batches: int) -> dict:
    """Batches/s of `resident.batch` over the same step indices (host work and device indexing)."""
    steps = iter(sampler)
    for _ in range(3):
        resident.batch(next(steps))
    indices = [next(steps) for _ in range(batches)]
    _sync(device)
    start = time.perf_counter()
    for step in indices:
        resident.batch(step)
    _sync(device)
    return {"batches_per_s": batches / (time.perf_counter() - start), "timed_batches": batches}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="shapes-t2v")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--workers", type=int, default=14)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per row")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = load_train_config(args.config, args.overrides)
    dataset = make_dataset(config.data, split="train")

    def sampler():
        return StepBatches(len(dataset), args.batch, 0, 1, config.seed, 0, 10**9)

    start = time.perf_counter()
    resident = ResidentSet(dataset, device, num_workers=args.workers)
    _sync(device)
    build_s = time.perf_counter() - start

    check = next(iter(sampler()))[:16]
    expected = collate([dataset[i] for i in check])["video"]
    got = resident.batch(check)["video"].cpu()
    error = (got - expected).abs().max().item()
    # CUDA divides by a scalar through its reciprocal, so dequantize may differ from the host's in the last
    # bit (seen on an H100): compare with an ulp-sized slack
    if not torch.allclose(got, dequantize(quantize(expected)), rtol=0, atol=1e-6) or error > 1 / 255 + 1e-6:
        raise SystemExit(f"resident batches differ from the loader's beyond 8-bit rounding (max error {error:.2e})")

    rows = {"loader": loader_rate(dataset, sampler(), args.workers, device, args.batches),
            "resident": resident_rate(resident, sampler(), device, args.batches)}
    for row in rows.values():
        row["clips_per_s"] = row["batches_per_s"] * args.batch
    print(f"{len(dataset)} clips of {tuple(resident.video.shape[1:])}; resident build {build_s:.1f} s, "
          f"{resident.video.numel() / 2**30:.2f} GiB; resident = loader within 1/255 (max error {error:.2e})")
    print(f"{'path':>9} {'batches/s':>10} {'clips/s':>10}")
    for name, row in rows.items():
        print(f"{name:>9} {row['batches_per_s']:>10.2f} {row['clips_per_s']:>10.0f}")
    result = {"date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name(device) if device.type == "cuda"
              else "cpu", "command": command_line("benchmarks.data_path", argv),
              "config": args.config, "overrides": args.overrides, "batch": args.batch, "workers": args.workers,
              "clips": len(dataset), "resident_build_s": build_s, "resident_gib": resident.video.numel() / 2**30,
              "max_error": error, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
