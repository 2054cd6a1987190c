"""End-to-end diffusion latency at the paper's shapes (issue 9; paper Fig. 4b, Sec. 5.3).

The `1.5B` preset in bf16 on a 480p x 81-frame latent (21 x 60 x 104 after a 4x8x8 VAE, 2x2 patches:
32,760 tokens), 512 text tokens of width 4096 projected in. Times the diffusion part only (no text
encoder, no VAE, as the paper does): EFlow's Algorithm 2 at 1, 2, 4 steps, and the peer in the same
run: the same network with softmax attention in every block, 50 Euler steps with classical CFG
(2 NFE each). Random weights: speed does not depend on them.

    python -m benchmarks.inference                  # on a GPU; writes $OUT/inference.json
    python -m benchmarks.inference --tiny --device cpu   # plumbing check on the CPU (tests)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time


import torch


from benchmarks.timing import device_times
from eflow_core.conditioning import TextCondition
from eflow_core.config import MODEL_PRESETS, FlowConfig
from eflow_core.flow import SolutionFlow
from eflow_core.model.dit import VideoDiT


def build(preset: str, attention: str, device, dtype, compile_blocks: bool, in_channels: int, text_dim: int):
    config = MODEL_PRESETS[preset].replace(attention=attention, in_channels=in_channels, text_dim=text_dim)
    with torch.device(device):
        model = VideoDiT(config)
    model = model.to(dtype).eval().requires_grad_(False)
    return model.compile_blocks(dynamic=False) if compile_blocks else model


def time_softmax_peer(preset: str, noise: torch.Tensor, cond: TextCondition, steps: int, compile_blocks: bool,
                      guidance: float = 4.0) -> float:
    """Seconds of the peer's sample, timed once after a 2-step warm-up (and compile): the same network with
    softmax attention in every block, `steps` Euler steps of flow matching with classical CFG (2 NFE each).
    noise: (1, C, T, H, W) latent noise; cond: its text condition (1, L, text_dim)."""
    device = noise.device
    peer = build(preset, "softmax", device, noise.dtype, compile_blocks, noise.shape[1], cond.tokens.shape[-1])
    flow = SolutionFlow(peer, FlowConfig(guidance="cfg"))
    with torch.no_grad():
        device_times(lambda: flow.sample_ode(noise, cond, 2, guidance, cfg=True), device, 1)   # warm-up
        return device_times(lambda: flow.sample_ode(noise, cond, steps, guidance, cfg=True), device, 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="1.5B")
    parser.add_argument("--latent", default="21,60,104", help="latent T,H,W")
    parser.add_argument("--text-tokens", type=int, default=512)
    parser.add_argument("--steps", default="1,2,4")
    parser.add_argument("--peer-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", choices=["none", "blocks", "both"], default="both")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny preset and latent: a CPU plumbing check")
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "inference.json"))
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.tiny:
        args.preset, args.latent, args.text_tokens, args.peer_steps, args.repeats = "tiny", "4,8,8", 8, 3, 2
        args.compile = "none"
    t, h, w = (int(x) for x in args.latent.split(","))
    text_dim = 4096 if not args.tiny else 16
    channels = 16 if not args.tiny else 4
    torch.manual_seed(0)
    noise = torch.randn(1, channels, t, h, w, device=device, dtype=dtype)
    cond = TextCondition(torch.randn(1, args.text_tokens, text_dim, device=device, dtype=dtype),
                         torch.ones(1, args.text_tokens, dtype=torch.bool, device=device))
    steps_list = [int(s) for s in args.steps.split(",")]
    rows, info = [], {"preset": args.preset, "latent": [t, h, w], "text_tokens": args.text_tokens,
                      "dtype": str(dtype), "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                      "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}

    def save() -> None:                  # after every row: a run cut short keeps what it measured
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=2)

    compile_modes = {"none": [False], "blocks": [True], "both": [False, True]}[args.compile]
    for compiled in compile_modes:
        model = build(args.preset, "glga", device, dtype, compiled, channels, text_dim)
        grid = model.token_grid((t, h, w))
        info["tokens"] = grid[0] * grid[1] * grid[2]
        info["params"] = sum(p.numel() for p in model.parameters())
        flow = SolutionFlow(model, FlowConfig())
        with torch.no_grad():
            for steps in steps_list:
                generator = torch.Generator(device).manual_seed(0)
                run = lambda: flow.sample(noise, cond, steps, 4.0, generator=generator)
                method = "EFlow GLGA, Algorithm 2" + (" + compile" if compiled else "")
                try:
                    device_times(run, device, 2)                                       # warm-up (and compile)
                    times = device_times(run, device, args.repeats)
                except Exception as err:                                        # keep the peer's row
                    print(f"{method} steps={steps}: failed: {type(err).__name__}: {err}", flush=True)
                    continue
                rows.append({"method": method, "steps": steps, "nfe": steps, "median_s": statistics.median(times),
                             "all_s": times})
                print(f"{rows[-1]['method']:40s} steps={steps:2d} NFE={steps:3d} {rows[-1]['median_s']:8.3f} s",
                      flush=True)
                save()
        del model, flow
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if not args.skip_peer:
        peer_time = time_softmax_peer(args.preset, noise, cond, args.peer_steps, args.compile != "none")
        rows.append({"method": "softmax + FM, Euler + CFG", "steps": args.peer_steps, "nfe": 2 * args.peer_steps,
                     "median_s": peer_time, "all_s": [peer_time]})
        print(f"{rows[-1]['method']:40s} steps={args.peer_steps:2d} NFE={2 * args.peer_steps:3d} "
              f"{peer_time:8.3f} s", flush=True)
        for row in rows:
            row["speedup_vs_peer"] = peer_time / row["median_s"]

    print(f"\n{info['preset']} ({info.get('params', 0) / 1e9:.2f}B params), {info.get('tokens')} tokens, "
          f"{info['device']}, torch {info['torch']}")
    print(f"{'method':40s} {'steps':>5s} {'NFE':>4s} {'latency':>9s} {'vs peer':>8s}")
    for row in rows:
        print(f"{row['method']:40s} {row['steps']:5d} {row['nfe']:4d} {row['median_s']:8.3f}s "
              f"{row.get('speedup_vs_peer', float('nan')):7.1f}x")
    save()


if __name__ == "__main__":
    main()
