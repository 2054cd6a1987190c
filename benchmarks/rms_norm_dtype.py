"""RMSNorm under bf16 autocast: an fp32 weight on a bf16 input against the weight cast to bf16.

`F.rms_norm` has a fused kernel only when the input and the weight share a dtype. Under autocast the
activations are bf16 and the parameters fp32, so every RMSNorm of the model (q/k norms, GLGA's two
branch norms) takes the composite path: several elementwise kernels and fp32 temporaries. This script
measures what that costs at the ladder's 480p shape, forward and forward + backward, and the error of
each variant against an fp32 reference.

    python -m benchmarks.rms_norm_dtype                       # GPU; writes $OUT/rms_norm_dtype.json
    python -m benchmarks.rms_norm_dtype --device cpu --shape 2,12,1024,64
"""
from __future__ import annotations

import argparse
import json
import os
import statistics

import torch
import torch.nn.functional as F

from benchmarks.timing import device_times
from eflow_core.model.attention import RMS_EPS, rms_norm


def variants(x: torch.Tensor, weight: torch.Tensor) -> dict:
    """Each variant maps (x (..., D) bf16, weight (D,) fp32) -> (..., D) bf16: F.rms_norm as the model
    called it before 2026-12-08, and the model's `rms_norm` (weight cast to x's dtype)."""
    return {
        "fp32 weight (composite)": lambda: F.rms_norm(x, (x.shape[-1],), weight, RMS_EPS),
        "weight cast to bf16 (fused)": lambda: rms_norm(x, weight),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", default="4,12,32760,64", help="B,H,N,D (default: the 480p ladder, preset B)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "rms_norm_dtype.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    shape = tuple(int(s) for s in args.shape.split(","))
    torch.manual_seed(0)
    x = torch.randn(shape, device=device, dtype=torch.bfloat16, requires_grad=True)
    weight = (1 + 0.1 * torch.randn(shape[-1], device=device)).requires_grad_()
    grad = torch.randn_like(x)
    reference = F.rms_norm(x.float(), (shape[-1],), weight, RMS_EPS)

    rows = []
    for name, fn in variants(x, weight).items():
        out = fn()
        error = (out.float() - reference).abs().max().item()
        device_times(fn, device, 5)                                            # warm-up
        forward = device_times(fn, device, args.repeats)

        def step(fn=fn):
            x.grad = weight.grad = None
            fn().backward(grad)
        device_times(step, device, 5)                                          # warm-up
        both = device_times(step, device, args.repeats)
        rows.append({"variant": name, "forward_ms": 1e3 * statistics.median(forward),
                     "forward_backward_ms": 1e3 * statistics.median(both), "max_abs_error_vs_fp32": error})

    print(f"{'variant':30s} {'fwd ms':>8s} {'fwd+bwd ms':>11s} {'max |err|':>10s}   shape {shape}")
    for r in rows:
        print(f"{r['variant']:30s} {r['forward_ms']:8.3f} {r['forward_backward_ms']:11.3f} "
              f"{r['max_abs_error_vs_fp32']:10.2e}")
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "shape": shape, "rows": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
