"""End-to-end 480p latency beside diffusion-only, and an FP8 row (issue 26; paper Sec. 5.3).

The paper's configuration, random weights (speed does not depend on them), bf16, one run:
- text: a umT5-XXL-sized encoder (transformers `UMT5EncoderModel`: d_model 4096, 24 layers, 64 heads,
  d_kv 64, d_ff 10240, gated GELU, vocabulary 256,384: 5.7B parameters) over 512 tokens, built on the
  device;
- diffusion: the 1.5B preset with compiled blocks (benchmarks/inference.py's `build`), Algorithm 2 at
  4 steps, conditioned on the text encoder's output; latent 21 x 60 x 104 (32,760 tokens);
- VAE: diffusers `AutoencoderKLWan()` (the Wan2.1 VAE's default config) through `WanCodec`, decoding
  that latent to 81 frames at 480 x 832; eager in each memory layout (NCDHW and channels_last_3d,
  cuDNN benchmark mode on), then in the faster layout with k latent frames per decoder call
  (--vae-frames-per-call; diffusers calls it once per frame) and the relative L2 error against the
  frame-by-frame video, then the decoder compiled in the fastest eager setting (3 graphs: the first
  latent frame, the second call, and the rest, which share one). No tiling: the decode fits.
Rows, each the median of repeats after warm-up (CUDA events), in this order: text encoder; diffusion;
on CUDA, diffusion again on a copy of the model whose FFNs apply GELU as a kernel of its own (the
default runs it in the matmul epilogue, eflow_core/model/blocks.py `FeedForward`); VAE decode, eager,
per layout and per latent frames a call; end-to-end (text + diffusion + decode in one timed call, the
fastest eager setting); the FP8 diffusion row (`convert_linear_to_fp8` on a model of its own with the same
weights, compiled the same way) with the relative L2 error of its final latent against bf16 on the same
noise, condition and re-noising draws; a profile of one 4-step sample (benchmarks/step_profile: kernel
time by category, GPU busy / idle, per-step time and MFU from the network's FLOPs); the compiled VAE
decoder, and end-to-end again with it when it is faster; last, the peer of benchmarks/inference.py (the same
network with softmax attention, 50 Euler steps of flow matching with CFG: 100 NFE, timed once), which
each diffusion row is compared with (`speedup_vs_peer`). The zero-initialised layers (adaLN-Zero
modulation, GLGA gates, final layer) get random weights first: at zero every block is the identity and
the FP8 error would be 0 by construction. The JSON is rewritten after every row: a run cut short keeps
what it measured; --max-seconds starts no FP8, profile, VAE-compile or peer section past that time.

    # one H100 (diffusers is not in the image: carry its wheel, put it on PYTHONPATH first); about 5 min
    # (2026-12-07: 203 s without the peer, whose 100 NFE take about 50 s after its compile)
    python3 -m benchmarks.end_to_end --max-seconds 330 --out $OUT/end_to_end.json
    python -m benchmarks.end_to_end --tiny --device cpu       # plumbing check on the CPU (tests)
Trim with --skip-text, --skip-vae, --skip-fp8, --skip-profile, --skip-peer, --vae-layouts, --vae-compile none.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import time

import torch
import torch._dynamo
from torch import nn

from benchmarks import command_line
from benchmarks.inference import build, time_softmax_peer
from benchmarks.step_profile import network_flops, peak_bf16_tflops, profile_sample
from benchmarks.timing import device_times
from eflow_core.conditioning import TextCondition
from eflow_core.config import FlowConfig
from eflow_core.flow import SolutionFlow
from eflow_core.model.blocks import FeedForward
from eflow_core.model.fp8 import convert_linear_to_fp8, resolve_fp8_backend

UMT5_XXL = {"vocab_size": 256384, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
            "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32,
            "relative_attention_max_distance": 128, "dropout_rate": 0.0}
UMT5_TINY = {"vocab_size": 256, "d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 2, "num_heads": 4,
             "feed_forward_proj": "gated-gelu", "dropout_rate": 0.0}
WAN_TINY = {"base_dim": 8, "z_dim": 4, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_scales": [],
            "temperal_downsample": [False, True, True], "latents_mean": [0.0] * 4, "latents_std": [1.0] * 4}
REFERENCES = {"paper_end_to_end_s": 10.09, "paper_diffusion_s": 3.09,
              "turbodiffusion_end_to_end_s": 1.9,
              "turbodiffusion_note": "TurboDiffusion, Wan2.1-T2V-1.3B at 480p: W8A8 on one RTX 5090, not bf16 on an H100"}


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_text_encoder(tiny: bool, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A umT5-XXL-sized (or tiny) encoder with random weights, built and initialised on `device` in `dtype`."""
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device(device), default_dtype(dtype):
        model = UMT5EncoderModel(UMT5Config(**(UMT5_TINY if tiny else UMT5_XXL)))
    return model.to(dtype).eval().requires_grad_(False)


def build_vae(tiny: bool, device: torch.device, dtype: torch.dtype):
    """diffusers' AutoencoderKLWan (default config = Wan2.1's VAE; tiny for the CPU) wrapped in WanCodec."""
    try:
        from diffusers import AutoencoderKLWan
    except ImportError as err:
        raise SystemExit("benchmarks.end_to_end: the VAE rows need diffusers (AutoencoderKLWan), which is not "
                         "installed here. Put its wheel on PYTHONPATH, or pass --skip-vae.") from err
    from eflow_core.codecs.wan import WanCodec

    with torch.device(device):
        vae = AutoencoderKLWan(**(WAN_TINY if tiny else {}))
    return WanCodec(vae.to(dtype)).to(device)


def vae_decode_flops(tiny: bool, latent_shape: tuple[int, ...]) -> float:
    """FLOPs of one decode of a `latent_shape` latent (convolutions, attention), counted by torch's
    FlopCounterMode on the meta device: shapes only, nothing computed (Wan2.1 at 21 x 60 x 104: 275 T)."""
    from diffusers import AutoencoderKLWan
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        vae = AutoencoderKLWan(**(WAN_TINY if tiny else {}))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        vae.decode(torch.empty(latent_shape, device="meta"))
    return float(counter.get_total_flops())


def set_conv_layout(module: nn.Module, layout: str) -> None:
    """Conv weights in `layout` ("contiguous" or "channels_last_3d"; 2-D convs then channels_last). A conv
    runs channels-last when its input or its weight is, so the first conv turns the activations and the
    pads, norms, caches and concatenations after it keep their layout."""
    channels_last = layout == "channels_last_3d"
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.Conv2d)):
            fmt = (torch.channels_last_3d if isinstance(m, nn.Conv3d) else torch.channels_last) \
                if channels_last else torch.contiguous_format
            m.weight.data = m.weight.data.contiguous(memory_format=fmt)


def give_zero_layers_weights(model: nn.Module, seed: int = 0) -> int:
    """N(0, 0.25 / fan_in) weights for the Linear layers that VideoDiT initialises to zero; returns their count."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    count = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear) and not module.weight.any():
                w = torch.randn(module.weight.shape, generator=generator) * (0.5 / math.sqrt(module.in_features))
                module.weight.copy_(w)
                count += 1
    return count


def package_versions(*names: str) -> dict[str, str | None]:
    from importlib import metadata

    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="1.5B")
    parser.add_argument("--latent", default="21,60,104", help="latent T,H,W")
    parser.add_argument("--text-tokens", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of text, diffusion and FP8 rows")
    parser.add_argument("--vae-repeats", type=int, default=3, help="timed calls of the VAE and end-to-end rows")
    parser.add_argument("--compile", choices=["none", "blocks"], default="blocks", help="the DiT's")
    parser.add_argument("--vae-compile", choices=["none", "decoder"], default="decoder")
    parser.add_argument("--vae-layouts", default="contiguous,channels_last_3d")
    parser.add_argument("--vae-frames-per-call", default="4,10", type=lambda v: [int(x) for x in v.split(",") if x],
                        help="eager rows decoding k > 1 latent frames per decoder call, in the faster layout; the "
                             "fastest eager setting is the one compiled ('' for none)")
    parser.add_argument("--fp8-scaling", choices=["row", "tensor"], default="row")
    parser.add_argument("--fp8-backend", choices=["auto", "scaled_mm", "emulated"], default="auto")
    parser.add_argument("--fp8-fast-accum", action="store_true", help="_scaled_mm's use_fast_accum")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak for MFU (default: data sheet)")
    parser.add_argument("--ceiling-tflops", type=float, default=782.0,
                        help="measured bf16 matmul ceiling for the floor (issue 26: 766-798 on the H100)")
    parser.add_argument("--peer-steps", type=int, default=50, help="Euler + CFG steps of the softmax peer")
    for part in ("text", "vae", "fp8", "profile", "peer"):
        parser.add_argument(f"--skip-{part}", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="start no FP8, profile, VAE-compile or peer section after this many seconds of the run")
    parser.add_argument("--strict", action="store_true", help="raise on a failing row (on with --tiny)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny models and latent: a CPU plumbing check")
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "end_to_end.json"))
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    if args.tiny:
        args.preset, args.latent, args.text_tokens, args.repeats, args.vae_repeats = "tiny", "4,8,8", 8, 2, 1
        args.compile, args.vae_compile, args.strict, args.peer_steps = "none", "none", True, 3
    if cuda:
        torch.backends.cudnn.benchmark = True            # the VAE's 3-D convs: pick the fastest algorithm per shape
    t, h, w = (int(x) for x in args.latent.split(","))
    text_dim, channels = (16, 4) if args.tiny else (4096, 16)
    rows: list[dict] = []
    info = {"preset": args.preset, "latent": [t, h, w], "text_tokens": args.text_tokens, "steps": args.steps,
            "dtype": str(dtype), "device": torch.cuda.get_device_name(device) if cuda else "cpu",
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "compile": args.compile,
            "versions": package_versions("transformers", "diffusers", "triton"),
            "cudnn_benchmark": torch.backends.cudnn.benchmark, "command": command_line("benchmarks.end_to_end", argv)}
    result = {"info": info, "rows": rows, "references": REFERENCES}
    started = time.perf_counter()

    def in_time(section: str) -> bool:
        """False (and a note in the JSON) once --max-seconds have passed: the GPU call has a hard limit."""
        if args.max_seconds is None or time.perf_counter() - started < args.max_seconds:
            return True
        info.setdefault("skipped_for_time", []).append(section)
        print(f"{section}: skipped, past --max-seconds {args.max_seconds:.0f}", flush=True)
        return False

    def save() -> None:                      # after every row: a run cut short keeps what it measured
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)

    def measure(part: str, fn, warmup: int, repeats: int, **extra) -> dict | None:
        try:
            t0 = time.perf_counter()
            device_times(fn, device, 1)
            first = time.perf_counter() - t0                            # includes compile and autotuning
            device_times(fn, device, warmup - 1)
            times = device_times(fn, device, repeats)
        except Exception as err:                                        # keep the other rows
            if args.strict:
                raise
            rows.append({"part": part, "error": f"{type(err).__name__}: {str(err)[:500]}", **extra})
            print(f"{part}: failed: {rows[-1]['error']}", flush=True)
            save()
            return None
        rows.append({"part": part, "median_s": statistics.median(times), "all_s": times, "first_call_s": first,
                     **extra})
        print(f"{part:66s} {rows[-1]['median_s']:8.3f} s   (first call {first:.1f} s)", flush=True)
        save()
        return rows[-1]

    torch.manual_seed(0)
    noise = torch.randn(1, channels, t, h, w, device=device, dtype=dtype)
    ids = torch.randint(0, (UMT5_TINY if args.tiny else UMT5_XXL)["vocab_size"], (1, args.text_tokens), device=device)
    mask = torch.ones(1, args.text_tokens, dtype=torch.long, device=device)
    encoder = codec = reference = None

    def sampler(flow: SolutionFlow, condition: TextCondition):
        def sample() -> torch.Tensor:           # the same re-noising draws every call
            return flow.sample(noise, condition, args.steps, args.guidance,
                               generator=torch.Generator(device).manual_seed(0))
        return sample

    def end_to_end() -> torch.Tensor:
        condition = TextCondition(encoder(input_ids=ids, attention_mask=mask).last_hidden_state, mask.bool())
        return codec.decode(sampler(flow, condition)())

    with torch.no_grad():
        # ------------------------------------------------------------ text encoder
        if not args.skip_text:
            encoder = build_text_encoder(args.tiny, device, dtype)
            info["text_encoder_params"] = sum(p.numel() for p in encoder.parameters())
            encode = lambda: TextCondition(encoder(input_ids=ids, attention_mask=mask).last_hidden_state,
                                           mask.bool())
            size = "tiny umT5" if args.tiny else "umT5-XXL size"
            measure(f"text encoder ({size}, {args.text_tokens} tokens)", encode, 2, args.repeats)
            cond = encode()
        else:
            cond = TextCondition(torch.randn(1, args.text_tokens, text_dim, device=device, dtype=dtype), mask.bool())

        # ---------------------------------------------------------------- diffusion
        model = build(args.preset, "glga", device, dtype, args.compile == "blocks", channels, text_dim)
        info["zero_init_layers_given_weights"] = give_zero_layers_weights(model)
        info["dit_params"] = sum(p.numel() for p in model.parameters())
        grid = model.token_grid((t, h, w))
        info["tokens"] = grid[0] * grid[1] * grid[2]
        flops = network_flops(model.config, grid, args.text_tokens)
        info["flops_per_evaluation"] = flops
        peak = args.peak_tflops or (peak_bf16_tflops(info["device"]) if cuda else None)
        info["peak_bf16_tflops"] = peak
        flow = SolutionFlow(model, FlowConfig())
        diffuse = sampler(flow, cond)

        def copy_of_model(compiled: bool):
            """A model of its own with the same weights: its compiled blocks get graphs of their own."""
            copy = build(args.preset, "glga", device, dtype, compiled, channels, text_dim)
            copy.load_state_dict(model.state_dict())
            return copy

        compiled_note = ", compiled blocks" if args.compile == "blocks" else ""
        row = measure(f"diffusion, {args.steps} steps ({str(dtype)[6:]}{compiled_note})", diffuse, 2, args.repeats)
        if row:
            reference = diffuse().float()
            achieved = args.steps * flops["total"] / row["median_s"] / 1e12
            row.update(tflops=achieved, mfu=achieved / peak if peak else None,
                       floor_s=args.steps * flops["total"] / (args.ceiling_tflops * 1e12))
            save()
        if row and cuda:            # A/B of the FFN's GELU in the matmul epilogue (eflow_core/model/blocks.py)
            plain_model = copy_of_model(args.compile == "blocks")
            for module in plain_model.modules():
                if isinstance(module, FeedForward):
                    module.fuse_gelu = False
            plain_diffuse = sampler(SolutionFlow(plain_model, FlowConfig()), cond)
            plain = measure(f"diffusion, {args.steps} steps ({str(dtype)[6:]}{compiled_note}), FFN GELU unfused",
                            plain_diffuse, 2, args.repeats)
            if plain:
                plain["rel_l2_vs_fused_gelu"] = relative_l2(plain_diffuse(), reference)
                save()
            del plain_model, plain_diffuse
            torch.cuda.empty_cache()

        # ------------------------------------------------- VAE decode (eager), end to end
        if not args.skip_vae:
            codec = build_vae(args.tiny, device, dtype)
            info["vae_params"] = sum(p.numel() for p in codec.vae.parameters())
            latent = reference.to(dtype) if reference is not None else noise
            decode = lambda: codec.decode(latent)
            try:
                vae_flops = vae_decode_flops(args.tiny, tuple(latent.shape))
            except Exception:                                               # only the TFLOP/s column is lost
                if args.strict:
                    raise
                vae_flops = None
            info["vae_decode_flops"] = vae_flops
            vae_rows = []
            for layout in [x for x in args.vae_layouts.split(",") if x]:
                set_conv_layout(codec.vae, layout)
                vae_rows.append(measure(f"VAE decode, eager, {layout}", decode, 1, args.vae_repeats, layout=layout))
                if vae_rows[-1] and vae_flops:
                    vae_rows[-1]["tflops"] = vae_flops / vae_rows[-1]["median_s"] / 1e12
            info["video_shape"] = list(decode().shape)
            best = min((r for r in vae_rows if r), key=lambda r: r["median_s"], default=None)
            layout = best["layout"] if best else "contiguous"
            set_conv_layout(codec.vae, layout)
            # several latent frames per decoder call (eflow_core/codecs/wan.py): same video, fewer calls
            one_per_call = decode() if args.vae_frames_per_call else None
            for k in args.vae_frames_per_call:
                codec.latent_frames_per_call = k
                row = measure(f"VAE decode, eager, {layout}, {k} latent frames a call", decode, 1,
                              args.vae_repeats, layout=layout, latent_frames_per_call=k)
                if row:
                    row["rel_l2_vs_one_frame_per_call"] = relative_l2(decode(), one_per_call)
                    if vae_flops:
                        row["tflops"] = vae_flops / row["median_s"] / 1e12
                    vae_rows.append(row)
                    save()
                if cuda:
                    torch.cuda.empty_cache()
            del one_per_call
            best = min((r for r in vae_rows if r), key=lambda r: r["median_s"], default=None)
            codec.latent_frames_per_call = best.get("latent_frames_per_call", 1) if best else 1
            calls = f", {codec.latent_frames_per_call} latent frames a call" if codec.latent_frames_per_call > 1 else ""
            if encoder is not None:
                measure(f"end-to-end (text + diffusion + VAE decode eager, {layout}{calls})", end_to_end, 1,
                        args.vae_repeats, references=REFERENCES)

        # ---------------------------------------------------------------- FP8 row
        if not args.skip_fp8 and reference is not None and in_time("fp8"):
            backend, _, note = resolve_fp8_backend(args.fp8_backend, device)
            info["fp8"] = {"backend": backend, "note": note, "activation_scaling": args.fp8_scaling,
                           "fast_accum": args.fp8_fast_accum}
            for compiled in ([True, False] if args.compile == "blocks" else [False]):
                # dynamo's guards see Float8Linear where the bf16 blocks have nn.Linear
                fp8_model = copy_of_model(compiled)
                swapped = convert_linear_to_fp8(fp8_model, activation_scaling=args.fp8_scaling,
                                                backend=args.fp8_backend, fast_accum=args.fp8_fast_accum)
                info["fp8"]["swapped_layers"] = len(swapped)
                fp8_diffuse = sampler(SolutionFlow(fp8_model, FlowConfig()), cond)
                label = f"diffusion, {args.steps} steps, FP8 linears ({backend}{', compiled blocks' if compiled else ''})"
                row = measure(label, fp8_diffuse, 2, args.repeats, fp8_backend=backend)
                if row:
                    row["rel_l2_vs_bf16"] = relative_l2(fp8_diffuse(), reference)
                    row["tflops"] = args.steps * flops["total"] / row["median_s"] / 1e12
                    save()
                del fp8_model, fp8_diffuse
                if row:
                    break
            if cuda:
                torch.cuda.empty_cache()

        # ---------------------------------------------------------------- profile of one sample
        if not args.skip_profile and reference is not None and in_time("profile"):
            try:
                result["profile"] = profile_sample(flow, noise, cond, args.steps, args.guidance, device,
                                                   flops["total"], peak)
            except Exception as err:
                if args.strict:
                    raise
                result["profile"] = {"error": f"{type(err).__name__}: {str(err)[:500]}"}
            save()

        # ------------------------------------- VAE decoder compiled, end to end with it
        if codec is not None and args.vae_compile == "decoder" and in_time("vae compile"):
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 32)
            eager_decoder = codec.vae.decoder
            codec.vae.decoder = torch.compile(eager_decoder, dynamic=False)
            row = measure(f"VAE decode, compiled decoder, {layout}{calls}", decode, 2, args.vae_repeats,
                          layout=layout, latent_frames_per_call=codec.latent_frames_per_call)
            if row and vae_flops:
                row["tflops"] = vae_flops / row["median_s"] / 1e12
                save()
            if row and (best is None or row["median_s"] < best["median_s"]):
                if encoder is not None:
                    measure(f"end-to-end (text + diffusion + VAE decode compiled, {layout}{calls})", end_to_end, 1,
                            args.vae_repeats, references=REFERENCES)
            else:
                codec.vae.decoder = eager_decoder

        # ------------------------------------- the softmax peer, 50 Euler steps with CFG (100 NFE)
        if not args.skip_peer and in_time("peer"):
            if cuda:
                torch.cuda.empty_cache()
            try:
                peer_s = time_softmax_peer(args.preset, noise, cond, args.peer_steps, args.compile == "blocks",
                                           args.guidance)
            except Exception as err:
                if args.strict:
                    raise
                rows.append({"part": "softmax peer", "error": f"{type(err).__name__}: {str(err)[:500]}"})
            else:
                rows.append({"part": f"peer: softmax attention, flow matching, {args.peer_steps} Euler steps + CFG "
                                     f"({2 * args.peer_steps} NFE{compiled_note})", "median_s": peer_s,
                             "all_s": [peer_s], "nfe": 2 * args.peer_steps})
                for row in rows:
                    if row["part"].startswith("diffusion") and "median_s" in row:
                        row["speedup_vs_peer"] = peer_s / row["median_s"]
                print(f"{rows[-1]['part']:66s} {peer_s:8.3f} s", flush=True)
            save()

    info["sum_of_parts_s"] = sum_of_parts(rows)
    print_table(result)
    save()


def sum_of_parts(rows: list[dict]) -> float | None:
    """Text encoder + bf16 diffusion + the fastest VAE decode, from their own rows (None if one is missing)."""
    timed = [r for r in rows if "median_s" in r]
    text = next((r["median_s"] for r in timed if r["part"].startswith("text encoder")), None)
    diffusion = next((r["median_s"] for r in timed if r["part"].startswith("diffusion") and "FP8" not in r["part"]), None)
    vae = min((r["median_s"] for r in timed if r["part"].startswith("VAE decode")), default=None)
    return None if None in (text, diffusion, vae) else text + diffusion + vae


def print_table(result: dict) -> None:
    info, rows = result["info"], result["rows"]
    print(f"\n{info['preset']} ({info.get('dit_params', 0) / 1e9:.2f}B), {info.get('tokens')} tokens, "
          f"{info['device']}, torch {info['torch']}, {info['date']}")
    print(f"{'part':66s} {'latency':>9s}  note")
    for row in rows:
        if "median_s" not in row:
            print(f"{row['part']:66s} {'failed':>9s}  {row['error'][:80]}")
            continue
        note = ""
        if "floor_s" in row:
            mfu = f"MFU {100 * row['mfu']:.0f}%, " if row.get("mfu") is not None else ""
            note = (f"{mfu}{row['tflops']:.1f} TFLOP/s, floor {row['floor_s']:.3f} s at the ceiling; "
                    f"paper {result['references']['paper_diffusion_s']} s")
        if row["part"].startswith("VAE") and row.get("tflops"):
            note = f"{row['tflops']:.1f} TFLOP/s"
        if "rel_l2_vs_one_frame_per_call" in row:
            note += f"; rel. L2 vs one frame a call {row['rel_l2_vs_one_frame_per_call']:.1e}"
        if "rel_l2_vs_fused_gelu" in row:
            note = f"rel. L2 of its final latent vs the fused-GELU row: {row['rel_l2_vs_fused_gelu']:.4f}"
        if "rel_l2_vs_bf16" in row:
            note = f"rel. L2 of its final latent vs the unquantised row: {row['rel_l2_vs_bf16']:.4f}"
        if "speedup_vs_peer" in row:
            note += f"; {row['speedup_vs_peer']:.1f}x the peer"
        if row["part"].startswith("end-to-end"):
            ref = result["references"]
            note = (f"paper {ref['paper_end_to_end_s']} s (Sec. 5.3); TurboDiffusion {ref['turbodiffusion_end_to_end_s']}"
                    f" s (W8A8 on an RTX 5090, not comparable hardware or precision)")
        print(f"{row['part']:66s} {row['median_s']:8.3f}s  {note}")
    if info.get("sum_of_parts_s") is not None:
        print(f"{'sum of the parts (text + diffusion + fastest VAE decode)':66s} {info['sum_of_parts_s']:8.3f}s")
    profile = result.get("profile")
    if profile and "categories_ms" in profile:
        print("profile of one sample (ms):", ", ".join(f"{k} {v:.1f}" for k, v in profile["categories_ms"].items()))
        if profile.get("busy_ms") is not None:
            print(f"GPU busy {profile['busy_ms']:.1f} ms of {profile['wall_ms']:.1f} ms; idle (host gaps) "
                  f"{profile['idle_ms']:.1f} ms")
        if profile.get("step_mfu"):
            print("per-step MFU:", ", ".join(f"{100 * x:.0f}%" for x in profile["step_mfu"]))


if __name__ == "__main__":
    main()
