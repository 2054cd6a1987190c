"""EFlow Studio: `python app.py` serves the web studio on http://127.0.0.1:7860 with the shipped model.

    python app.py [--host 127.0.0.1] [--port 7860] [--checkpoint shapes-t2v | FOLDER] [--device cpu|cuda]
                  [--share]

Loads the model before the page goes up (no network, no GPU needed), so the first video comes fast.
Everything the app writes (videos, GIFs, Gradio's upload/cache files) lives in one temp folder that
it creates at start and removes at exit (also on Ctrl-C and SIGTERM).
"""
from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path


DEFAULT_CHECKPOINT = "shapes-t2v"    # = eflow_core.pipeline.DEFAULT_MODEL (not imported yet: see make_workdir)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="EFlow Studio: few-step video generation in the browser.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to serve on (default 127.0.0.1; "
                                                            "0.0.0.0 exposes it to your network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                        help=f"a shipped model name or a checkpoint folder (default {DEFAULT_CHECKPOINT})")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available)")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model's blocks, so their small kernels fuse (meant for GPUs; "
                             "the first generation of each size compiles; its speed-up for the shipped model is "
                             "not measured yet; off by default)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="generations run at once (default 1 on CPU, 4 on GPU)")
    return parser.parse_args(argv)


def make_workdir() -> Path:
    """The app-owned temp folder (removed at exit) with Gradio's and torch's caches inside it.

    Call before importing gradio or torch: both read these variables when they are imported.
    """
    workdir = Path(tempfile.mkdtemp(prefix="eflow-studio-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(workdir / "torchinductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(workdir / "triton"))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")     # no phoning home; no network needed
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # SIGTERM (e.g. from a process manager) ends through sys.exit, so atexit removes the folder
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return workdir


def port_problem(host: str, port: int) -> str | None:
    """None if (host, port) can be served, else one sentence saying why not (checked before the model loads)."""
    import socket

    if not 0 < port < 65536:
        return f"port {port} is not a valid port number (1-65535)"
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as err:
        return f"cannot serve on {host}:{port} ({err.strerror or err}); pick another port with --port"
    return None


def device_problem(device: str | None) -> str | None:
    """None if torch can use `device` (None = automatic), else one sentence saying why not."""
    if device is None:
        return None
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        return f"--device {device!r} is not a torch device; use cpu or cuda (cuda:1 for the second GPU)"
    if kind == "cuda" and not torch.cuda.is_available():
        return f"--device {device} was asked for, but torch sees no CUDA GPU here; use --device cpu"
    if kind == "mps" and not torch.backends.mps.is_available():
        return f"--device {device} was asked for, but this machine has no usable Apple GPU; use --device cpu"
    return None


def fail(message: str) -> int:
    """Print one sentence a person can act on (no traceback) and return the exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = port_problem(args.host, args.port)
    if problem:
        return fail(problem)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workdir = make_workdir()
    problem = device_problem(args.device)
    if problem:
        return fail(problem)

    from concurrent.futures import ThreadPoolExecutor

    from eflow_core.pipeline import PipelineError
    from studio.registry import ModelRegistry, model_key
    from studio.service import StudioService
    from studio.storage import OutputStore

    try:
        model_key(args.checkpoint)                       # a bad path fails here, before anything slow
    except PipelineError as err:
        return fail(str(err))
    service = StudioService(ModelRegistry(device=args.device, compile=args.compile), OutputStore(workdir / "outputs"), args.checkpoint)
    with ThreadPoolExecutor(max_workers=1) as pool:      # load the model while gradio imports
        loading = pool.submit(service.model, args.checkpoint)
        from studio.callbacks import Callbacks
        from studio.layout import CSS, THEME, build_demo
        try:
            entry = loading.result()
        except PipelineError as err:
            return fail(str(err))
    service.default_model = entry.key

    demo = build_demo(Callbacks(service), entry)
    concurrency = args.concurrency or (4 if entry.pipe.device.type == "cuda" else 1)  # CPU: no thread thrash
    if args.compile and concurrency > 1:     # torch.compile is not thread-safe while it compiles a new shape
        print(f"--compile: serving one generation at a time (not {concurrency})", flush=True)
        concurrency = 1
    demo.queue(default_concurrency_limit=concurrency, max_size=64)
    print(f"EFlow Studio: model {entry.name} on {entry.pipe.device}, {concurrency} generation(s) at a time, "
          f"files in {workdir}", flush=True)
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=args.share, theme=THEME, css=CSS,
                    show_error=False, allowed_paths=[str(workdir)], footer_links=["api", "gradio"])
    except OSError as err:                               # the port was taken while the model loaded
        return fail(f"cannot serve on {args.host}:{args.port} ({err}); pick another port with --port")
    return 0


if __name__ == "__main__":
    sys.exit(main())
