"""A fresh install works and keeps working: our import names are our own, the locks pin every direct
requirement, and the installed package (`pip install -e .`) imports and runs from any folder."""
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
OUR_DISTRIBUTION = "eflow-studio"


def repo_top_level_names() -> set[str]:
    """Every name the repository puts at the top of an import path: its packages and its root modules."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    modules = {p.stem for p in ROOT.glob("*.py")}
    return packages | modules


def test_no_top_level_name_is_also_an_installed_distributions():
    """transformers >= 5.25 imports Hugging Face's `kernels`; a top-level `kernels/` here shadowed it. No
    name of ours may be a top-level module of any installed distribution (ours aside)."""
    names = repo_top_level_names()
    assert {"eflow_core", "studio", "app", "benchmarks"} <= names
    owners = importlib.metadata.packages_distributions()
    clashes = {name: sorted(set(owners[name]) - {OUR_DISTRIBUTION}) for name in names
               if set(owners.get(name, ())) - {OUR_DISTRIBUTION}}
    assert not clashes, f"top-level names shared with installed distributions: {clashes}"


def test_the_test_itself_catches_a_clash(monkeypatch):
    """The check above fails for the layout that broke installs: a top-level `kernels` package."""
    owners = importlib.metadata.packages_distributions()
    assert "kernels" in owners and "kernels" not in repo_top_level_names()
    monkeypatch.setattr(sys.modules[__name__], "repo_top_level_names", lambda: {"eflow_core", "studio", "app",
                                                                                "benchmarks", "kernels"})
    with pytest.raises(AssertionError, match="kernels"):
        test_no_top_level_name_is_also_an_installed_distributions()


_TRANSFORMERS_AND_KERNELS = r"""
import torch, transformers.modeling_utils, kernels as hub_kernels
from eflow_core import kernels
from eflow_core.kernels.reference import window_attention_reference
assert "site-packages" in hub_kernels.__file__, hub_kernels.__file__   # Hugging Face's, not ours
gen = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(1, 2, 40, 16, generator=gen) for _ in range(3))
pos = torch.arange(40)[None]
o = kernels.window_attention(q, k, v, pos, pos, 5)
ref = window_attention_reference(q, k, v, pos, pos, 5)
print(float((o - ref).abs().max() / ref.abs().max()))
"""


def test_transformers_and_our_kernels_in_one_process(tmp_path):
    """transformers.modeling_utils (which imports Hugging Face's `kernels`) and our window attention in one
    fresh process, started outside the clone, as a user's script would be."""
    proc = subprocess.run([sys.executable, "-c", _TRANSFORMERS_AND_KERNELS], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.split()[-1]) < 1e-5


def _pins(lock: Path) -> dict[str, list[Requirement]]:
    """name -> the lock's `name==version ; marker` lines (several where the lock forks by marker)."""
    pins: dict[str, list[Requirement]] = {}
    for line in lock.read_text().splitlines():
        if line and not line.startswith((" ", "#", "-")):
            req = Requirement(line)
            pins.setdefault(canonicalize_name(req.name), []).append(req)
    return pins


def _direct(requirements: Path) -> list[Requirement]:
    out = []
    for line in requirements.read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-r")):
            out.append(Requirement(line))
    return out


@pytest.mark.parametrize("requirements,lock", [("requirements.txt", "requirements.lock"),
                                               ("requirements-dev.txt", "requirements-dev.lock"),
                                               ("requirements.txt", "requirements-dev.lock")])
def test_every_direct_requirement_is_pinned_in_the_lock(requirements, lock):
    pins = _pins(ROOT / lock)
    for req in _direct(ROOT / requirements):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} ({requirements}) is not in {lock}: run `bash scripts/lock.sh`"
        for pin in pins[name]:
            (version,) = [s.version for s in pin.specifier]
            assert str(next(iter(pin.specifier))).startswith("=="), pin
            assert req.specifier.contains(version, prereleases=True), f"{lock} pins {pin}, {requirements} asks {req}"


def test_locks_agree_and_hold_transformers_with_its_kernels():
    app, dev = _pins(ROOT / "requirements.lock"), _pins(ROOT / "requirements-dev.lock")
    assert set(app) <= set(dev)
    for name, pins in app.items():
        assert [str(p.specifier) for p in pins] == [str(p.specifier) for p in dev[name]], name
    (transformers,) = dev["transformers"]
    major, minor = (int(x) for x in next(iter(transformers.specifier)).version.split(".")[:2])
    assert (major, minor) >= (5, 25)
    assert "kernels" in app and "kernels" in dev
    assert not [n for n in dev if n.startswith("nvidia-")], "CUDA libraries belong to torch's CUDA build"
    assert [str(p.specifier) for p in dev["torch"]] == ["==2.13.0"]


def test_installed_set_is_the_locked_set():
    """What this venv runs the tests with is what requirements-dev.lock pins (torch's local +cpu label
    aside): installs pin through the lock."""
    env_pins = {}
    for name, pins in _pins(ROOT / "requirements-dev.lock").items():
        for pin in pins:
            if pin.marker is None or pin.marker.evaluate():
                env_pins[name] = next(iter(pin.specifier)).version
    wrong = {}
    for name, version in env_pins.items():
        try:
            installed = importlib.metadata.version(name).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (installed, version)
    assert not wrong, f"installed vs locked: {wrong}; install with `pip install -r requirements-dev.lock -e .`"


def test_package_imports_and_cli_runs_from_another_folder(tmp_path):
    """`pip install -e .` makes the library, the kernels and the studio importable anywhere, and installs the
    `eflow` console script, the same CLI as `python -m eflow_core`."""
    code = "import eflow_core, eflow_core.kernels, studio.plots; print(eflow_core.__file__)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path(proc.stdout.strip()).resolve().is_relative_to(ROOT)
    eflow = Path(sys.executable).parent / "eflow"
    assert eflow.exists(), "no `eflow` console script: install with `pip install -e .`"
    outputs = [subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
               for cmd in ([str(eflow), "presets"], [sys.executable, "-m", "eflow_core", "presets"])]
    assert all(p.returncode == 0 for p in outputs), [p.stderr[-1000:] for p in outputs]
    assert outputs[0].stdout == outputs[1].stdout and "XXL" in outputs[0].stdout
    assert importlib.util.find_spec("eflow_core").origin.startswith(str(ROOT))


def test_codec_and_probe_training_are_cli_commands(tmp_path):
    """The autoencoder and the probe train through the CLI (`eflow train-codec`, `eflow train-probe`); their
    cards record the command; the library modules are no scripts."""
    from eflow_core.cli import main

    codec, probe = tmp_path / "codec", tmp_path / "probe"
    assert main(["train-codec", "--out", str(codec), "--steps", "2", "--batch-size", "1", "--frames", "5",
                 "--crop", "16", "--size", "32", "--pca-clips", "0", "--no-progress"]) == 0
    assert main(["train-probe", "--world", "shapes", "--steps", "2", "--batch-size", "2", "--eval-clips", "8",
                 "--out", str(probe)]) == 0
    import json

    assert json.loads((codec / "card.json").read_text())["command"].startswith("eflow train-codec --out ")
    assert json.loads((probe / "probe.json").read_text())["command"].startswith("eflow train-probe --world shapes")
    for module in ("eflow_core/codecs/train_ae.py", "eflow_core/metrics/probe.py"):
        text = (ROOT / module).read_text()
        assert "__main__" not in text and "argparse" not in text, module
