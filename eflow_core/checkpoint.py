"""Checkpoints on disk: safetensors written atomically (temp file + fsync + rename), with a manifest of
sizes and hashes so that a truncated or corrupt file is refused with one clear sentence.

Training directory layout (`python -m eflow_core train --output DIR`):
    DIR/config.json                 the TrainConfig
    DIR/checkpoint/model.safetensors, ema.safetensors, optimizer.safetensors, state.json
    DIR/metrics.csv                 one row per logged step
Inference directory layout (shipped under checkpoints/NAME/):
    NAME/model.safetensors          EMA weights (fp16 is fine)
    NAME/model_card.json            {"config": TrainConfig dict, "world", "steps", "command", "eval", ...}
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says why in one sentence."""


def _fsync_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _fsync_replace(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)      # no half-written temp file left behind
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> dict:
    """Save a flat dict of tensors as safetensors atomically; returns {"bytes", "sha256"} for a manifest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
    info = file_fingerprint(Path(tmp))
    _fsync_replace(Path(tmp), path)
    return info


def file_fingerprint(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def load_tensors(path: Path, expected: dict | None = None) -> dict[str, torch.Tensor]:
    """Load safetensors, checking size and hash against a manifest entry when given."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    if expected is not None:
        actual = path.stat().st_size
        if actual != expected["bytes"]:
            raise CheckpointError(f"checkpoint file {path} is truncated or damaged "
                                  f"({actual} bytes on disk, {expected['bytes']} written)")
        if file_fingerprint(path)["sha256"] != expected["sha256"]:
            raise CheckpointError(f"checkpoint file {path} is corrupt (its hash differs from the one written)")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises several kinds on a damaged header
        raise CheckpointError(f"checkpoint file {path} cannot be read ({err})") from None


def flatten_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """torch optimizer state_dict -> (flat tensors, JSON-able rest) for safetensors."""
    tensors, scalars = {}, {}
    for pid, entries in state_dict["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(rest["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}
