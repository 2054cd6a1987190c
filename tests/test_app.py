"""`python app.py` as a user starts it: a real server in a subprocess, driven through gradio_client,
raw HTTP and a headless browser.

One server for the module (started in an empty working directory with its own TMPDIR, so the last test
can check that the app wrote nothing outside the temp folder it owns and removed that folder at exit).
It serves the shipped `shapes-t2v` when checkpoints/ has it, else an untrained stand-in of that preset.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from eflow_core.data.video import read_video
from studio.standin import shipped_or_standin

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
PROMPT = "a red circle moving right on a black background"
COLD_START_LIMIT_S = 30.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _expected_frames(checkpoint: str) -> int:
    from eflow_core.checkpoint import resolve_model_path

    card = json.loads((resolve_model_path(checkpoint) / "model_card.json").read_text())
    return int(card["config"]["data"]["num_frames"])


class Server:
    """A running `python app.py` subprocess and what the tests learned about it."""

    def __init__(self, checkpoint: str, workdir: Path):
        self.checkpoint, self.port = checkpoint, _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.cwd, self.tmp, self.downloads = workdir / "cwd", workdir / "tmp", workdir / "downloads"
        for d in (self.cwd, self.tmp, self.downloads):
            d.mkdir()
        self.log_path = workdir / "server.log"
        env = {**os.environ, "TMPDIR": str(self.tmp), "PYTHONUNBUFFERED": "1"}
        # one torch thread: as fast for this small model, and immune to OpenMP spin-waits when the test
        # machine is oversubscribed (two threads on a busy 2-core box ran 25x slower, measured)
        env.setdefault("OMP_NUM_THREADS", "1")
        self.started = time.perf_counter()
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(self.port),
                                      "--checkpoint", checkpoint], cwd=self.cwd, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.cold_start_s: float | None = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_up(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"app.py exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        pytest.fail(f"app.py did not answer within {timeout:.0f} s:\n{self.output()[-3000:]}")

    def client(self):
        from gradio_client import Client

        return Client(self.url, verbose=False, download_files=str(self.downloads))

    def workdir_from_log(self) -> Path:
        match = re.search(r"files in (\S+)", self.output())
        assert match, self.output()
        return Path(match.group(1))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    checkpoint = shipped_or_standin(tmp_path_factory.mktemp("standin-t2v"))
    srv = Server(checkpoint, tmp_path_factory.mktemp("app"))
    try:
        srv.wait_until_up()
        srv.first_result = srv.client().predict(PROMPT, 4, 4.0, 0, api_name="/generate")
        srv.cold_start_s = time.perf_counter() - srv.started
        print(f"\ncold start to first video: {srv.cold_start_s:.1f} s")
        yield srv
    finally:
        srv.stop()


def _call_raw(server: Server, data: list) -> tuple[str, str]:
    """POST /gradio_api/call/generate with a raw JSON body (NaN literals allowed); returns (event, data)."""
    body = json.dumps({"data": data}).encode()          # json writes NaN / Infinity as bare literals
    request = urllib.request.Request(server.url + "gradio_api/call/generate", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        event_id = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(server.url + f"gradio_api/call/generate/{event_id}", timeout=120) as response:
        text = response.read().decode()
    events = re.findall(r"event: (\w+)\ndata: (.*)", text)
    assert events, text
    return events[-1]


# ---------------------------------------------------------------- API
def test_cold_start_to_first_video(server):
    assert server.cold_start_s is not None
    assert server.cold_start_s < COLD_START_LIMIT_S, f"cold start took {server.cold_start_s:.1f} s"


def test_generate_returns_mp4_and_latency_readout(server):
    video_path, readout = server.first_result
    assert Path(video_path).suffix == ".mp4"
    frames = read_video(video_path)
    assert frames.shape[0] == _expected_frames(server.checkpoint)
    assert frames.dtype == np.uint8 and frames.shape[-1] == 3
    for word in ("NFE 4", "tokens", "text encoding", "step 4", "decode", "total", "device"):
        assert word in readout, readout
    with open(video_path, "rb") as f:
        assert b"ftyp" in f.read(64)                      # an mp4 container


@pytest.mark.parametrize("args, message", [
    (("", 4, 4.0, 0), "prompt is empty"),
    (("   ", 4, 4.0, 0), "prompt is empty"),
    (("x" * 400, 4, 4.0, 0), "characters long"),
    ((PROMPT, 0, 4.0, 0), "steps must"),
    ((PROMPT, 99, 4.0, 0), "steps must"),
    ((PROMPT, 2.5, 4.0, 0), "steps must"),
    ((PROMPT, 4, 1e12, 0), "guidance must"),
    ((PROMPT, 4, -3.0, 0), "guidance must"),
    ((PROMPT, 4, 4.0, -1), "seed must"),
])
def test_bad_inputs_get_one_sentence_errors(server, args, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as err:
        server.client().predict(*args, api_name="/generate")
    assert message in str(err.value) and "Traceback" not in str(err.value)


@pytest.mark.parametrize("guidance", [float("nan"), float("inf")])
def test_non_finite_numbers_are_refused(server, guidance):
    event, data = _call_raw(server, [PROMPT, 4, guidance, 0])
    assert event == "error"
    assert "guidance must be a finite number" in json.loads(data)["error"]
    event, data = _call_raw(server, [PROMPT, float("nan"), 4.0, 0])
    assert event == "error" and "steps must be" in json.loads(data)["error"]


def test_server_still_answers_after_errors(server):
    video_path, readout = server.client().predict(PROMPT, 1, 4.0, 5, api_name="/generate")
    assert read_video(video_path).shape[0] == _expected_frames(server.checkpoint)
    assert "NFE 1" in readout


def test_eight_concurrent_calls_and_determinism(server):
    client = server.client()
    seeds = [7, 7, 7, 7, 8, 8, 9, 9]
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(client.predict, PROMPT, 2, 4.0, seed, api_name="/generate") for seed in seeds]
        results = [f.result(timeout=300) for f in futures]
    videos = [read_video(path) for path, _ in results]
    assert all(v.shape[0] == _expected_frames(server.checkpoint) for v in videos)
    assert all("NFE 2" in readout for _, readout in results)
    for i in (1, 2, 3):
        assert np.array_equal(videos[0], videos[i]), "the same seed gave a different video"
    assert np.array_equal(videos[4], videos[5]) and np.array_equal(videos[6], videos[7])
    assert not np.array_equal(videos[0], videos[4]), "different seeds gave the same video"


# ---------------------------------------------------------------- browser
def test_browser_generates_a_video(server):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; CI's .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (requirements-dev.txt)")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "studio-generate.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server.url, wait_until="load", timeout=60_000)
            page.get_by_role("button", name="Generate", exact=True).click(timeout=60_000)
            video = page.wait_for_selector("#video-out video[src]", timeout=120_000)
            src = video.get_attribute("src")
            assert src and ".mp4" in src
            page.wait_for_function("document.querySelector('#video-out video').readyState >= 2", timeout=30_000)
            page.wait_for_timeout(800)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000


# ---------------------------------------------------------------- command line and shutdown
def test_bad_checkpoint_exits_with_one_sentence(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "app.py"), "--checkpoint", str(tmp_path / "nope"),
                          "--port", str(_free_port())], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: no model at")
    assert "Traceback" not in out.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("eflow-studio-")]   # temp folder removed


def test_shutdown_removes_the_app_folder_and_writes_nothing_else(server):
    """Runs last in this module: stops the shared server (SIGTERM) and checks what it left behind."""
    workdir = server.workdir_from_log()
    assert workdir.is_dir() and workdir.parent == server.tmp
    gradio_cache = workdir / "gradio"
    assert gradio_cache.is_dir() and any(gradio_cache.rglob("*.mp4")), "gradio's cache is not inside the app folder"
    assert server.stop() == 0, server.output()[-2000:]
    assert not workdir.exists(), "the app's temp folder is still there after SIGTERM"
    assert list(server.tmp.iterdir()) == [], f"left in TMPDIR: {list(server.tmp.iterdir())}"
    assert list(server.cwd.iterdir()) == [], f"written to the working directory: {list(server.cwd.iterdir())}"
    shutil.rmtree(server.downloads, ignore_errors=True)


def test_command_line_defaults():
    import app
    from eflow_core.pipeline import DEFAULT_MODEL

    args = app.parse_args([])
    assert (args.host, args.port, args.checkpoint, args.device, args.share) == \
        ("127.0.0.1", 7860, DEFAULT_MODEL, None, False)
    assert app.parse_args(["--share", "--port", "9000"]).share is True


def test_busy_port_exits_with_one_sentence(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, str(REPO / "app.py"), "--port", str(port)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert out.returncode == 2 and "pick another port" in out.stderr and "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("device, message", [("nonsense", "is not a torch device"), ("cuda", "CUDA")])
def test_bad_device_exits_with_one_sentence(tmp_path, device, message):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = subprocess.run([sys.executable, str(REPO / "app.py"), "--device", device, "--port", str(_free_port())],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "TMPDIR": str(tmp_path)})
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
