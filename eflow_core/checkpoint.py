"""Checkpoints on disk: the folder layouts, finding a model's folder, reading and writing them.

Safetensors are written atomically (temp file + fsync + rename), with a manifest of sizes and hashes so
that a truncated or corrupt file is refused with one clear sentence (`CheckpointError`).

Training directory layout (`python -m eflow_core train --output DIR`):
    DIR/config.json                 the TrainConfig
    DIR/checkpoint/model.safetensors, ema.safetensors, optimizer.safetensors, state.json
    DIR/checkpoint/sharded-<step>/, state.json   instead, for fsdp=true: model, optimizer and EMA shards written
                                    by every process through torch.distributed.checkpoint (`save_sharded_state`);
                                    state.json names the folder ("sharded") and holds step, scheduler, counters
    DIR/metrics.csv                 one row per logged step
    DIR/init.json                   the lineage of the weights it started from (config.init_from), if any
Inference directory layout (shipped under checkpoints/NAME/, written by `export_for_inference`):
    NAME/model.safetensors          EMA weights (fp16 is fine)
    NAME/model_card.json            {"config": TrainConfig dict, "world", "steps", "command", "eval", ...}

`resolve_model_path` turns a shipped name or a folder of either layout into the folder, `load_model_folder`
reads (config, card, EMA weights) from it; `load_init_weights` starts a model from them (init_from) and
`export_for_inference` turns a training directory into a shipped folder. Both read a sharded (fsdp) run's
EMA through `read_sharded_ema`, in one process, so `eflow export` converts it to the single file too.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from eflow_core.config import TrainConfig

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"     # the models that ship with the repo


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says why in one sentence."""


def _fsync_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` through a temporary file and a rename: readers see the old file or the new
    one, never a part. `durable=False` skips the fsync before the rename, for caches whose readers detect
    a damaged entry and rebuild it: an fsync per entry from many data workers can take seconds each."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if durable:
            _fsync_replace(Path(tmp), path)
        else:
            os.replace(tmp, path)
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
    groups = tensors_to_floats(state_dict["param_groups"])          # a tensor lr (capture)
    return tensors, {"param_groups": groups, "scalars": scalars}


def tensors_to_floats(value):
    """`value` (nested dicts / lists) with every one-element tensor as a float, for state.json: a
    captured step's learning rate is a device tensor, and so are the scheduler's base_lrs and _last_lr."""
    if torch.is_tensor(value):
        return float(value)
    if isinstance(value, dict):
        return {k: tensors_to_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(tensors_to_floats(v) for v in value)
    return value


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(rest["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


# ------------------------------------------------------------------------- sharded (FSDP) checkpoints
SHARDED_PREFIX = "sharded-"


def save_sharded_state(folder: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       ema_shadow: dict[str, torch.Tensor]) -> str:
    """Write a sharded model's training state with torch.distributed.checkpoint: every process writes its own
    shards of the weights, the AdamW state and the EMA shadow (DTensors) to folder/sharded-<step>.
    Call on every process. Returns the subfolder's name, for state.json: written after it, state.json
    names the last complete folder (`remove_stale_sharded` then deletes the older ones)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    name = f"{SHARDED_PREFIX}{step:08d}"
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state, "ema": ema_shadow},
             checkpoint_id=str(Path(folder) / name))
    return name


def load_sharded_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       ema_shadow: dict[str, torch.Tensor]) -> None:
    """Read `save_sharded_state`'s folder `path` into the sharded model, optimizer and EMA shadow (in place),
    each process reading the shards it holds. Call on every process; CheckpointError for a missing or
    unreadable folder."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    _require_sharded(path)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state, "ema": ema_shadow}
    try:
        dcp.load(state, checkpoint_id=str(path))
    except Exception as err:  # DCP wraps each process's failure in a CheckpointException
        raise CheckpointError(f"sharded checkpoint {path} cannot be read ({type(err).__name__}: {err})") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def read_sharded_ema(path: Path) -> dict[str, torch.Tensor]:
    """The EMA weights in `save_sharded_state`'s folder `path` as whole tensors on the CPU,
    {name: float32 tensor of the parameter's shape}, read in this one process (no process group needed):
    what `export_for_inference` and `init_from` take from an fsdp run."""
    import torch.distributed.checkpoint as dcp

    _require_sharded(path)
    entries = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    ema = {key[len("ema."):]: torch.empty(entry.size, dtype=entry.properties.dtype)
           for key, entry in entries.items() if key.startswith("ema.")}
    try:
        with warnings.catch_warnings():     # that no process group is used is the intent here
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load({"ema": ema}, checkpoint_id=str(path), no_dist=True)
    except Exception as err:
        raise CheckpointError(f"sharded checkpoint {path} cannot be read ({type(err).__name__}: {err})") from None
    return ema


def remove_stale_sharded(folder: Path, keep: str) -> None:
    """Delete the sharded-<step> subfolders of `folder` other than `keep` (the one state.json names)."""
    for path in Path(folder).glob(f"{SHARDED_PREFIX}*"):
        if path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


def _require_sharded(path: Path) -> None:
    if not (Path(path) / ".metadata").is_file():
        raise CheckpointError(f"sharded checkpoint {path} is missing or incomplete (it has no .metadata)")


# ---------------------------------------------------------------------------------- model folders
def shipped_models() -> list[str]:
    """Names of the models that ship in checkpoints/ (folders with a model card and weights)."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir()
                  if (p / "model_card.json").is_file() and (p / "model.safetensors").is_file())


def resolve_model_path(path_or_name: str | Path) -> Path:
    """A shipped name, a shipped folder, or a training output folder -> the folder; CheckpointError otherwise."""
    candidate = Path(path_or_name).expanduser()
    if not candidate.exists() and (SHIPPED_DIR / str(path_or_name)).exists():
        candidate = SHIPPED_DIR / str(path_or_name)
    if not candidate.exists():
        names = ", ".join(shipped_models()) or "none"
        raise CheckpointError(f"no model at {path_or_name!r}: give a checkpoint folder or a shipped name ({names})")
    if candidate.is_file():
        candidate = candidate.parent
    if not ((candidate / "model_card.json").is_file() or (candidate / "config.json").is_file()):
        raise CheckpointError(f"{candidate} is not an EFlow checkpoint (it has no model_card.json or config.json)")
    return candidate


def load_model_folder(folder: Path) -> tuple[TrainConfig, dict, dict[str, torch.Tensor]]:
    """(train config, model card, EMA weights {name: tensor of the parameter's shape}) from a shipped folder
    or a training output folder; CheckpointError when the folder cannot be used."""
    try:
        if (folder / "model_card.json").is_file():
            card = json.loads((folder / "model_card.json").read_text())
            weights = load_tensors(folder / "model.safetensors")
        else:
            card = {"config": json.loads((folder / "config.json").read_text())}
            state = json.loads((folder / "checkpoint" / "state.json").read_text())
            if "sharded" in state:      # an fsdp run: its EMA shards, joined here
                weights = read_sharded_ema(folder / "checkpoint" / state["sharded"])
            else:
                weights = load_tensors(folder / "checkpoint" / "ema.safetensors", state["manifest"]["ema.safetensors"])
            card.update(state.get("run", {}))     # command, device, date of the run (the lineage's record)
            card["steps"] = state["step"]
            card["world"] = card["config"]["data"]["kind"]
        config = TrainConfig.from_dict(card["config"])
    except (KeyError, TypeError, json.JSONDecodeError, FileNotFoundError) as err:
        raise CheckpointError(f"{folder} is not a usable EFlow checkpoint ({type(err).__name__}: {err})") from None
    return config, card, weights


def _run_record(card: dict) -> dict:
    """One entry of a model card's `runs` lineage: what the card says of the run that wrote it."""
    return {k: card[k] for k in ("steps", "command", "device", "date", "wall_time_s") if k in card}


def load_init_weights(model: torch.nn.Module, path_or_name: str) -> dict:
    """Load the weights of a shipped model or a training folder (its EMA) into `model` (config.init_from).

    Returns what the exported card needs to keep the lineage: {"init_from", "steps" (all steps behind
    those weights), "runs" (the earlier runs' records: steps, command, device, date, wall time)}.
    Raises CheckpointError for a folder that is not a model, ValueError when the shapes do not match
    the model being trained."""
    folder = resolve_model_path(path_or_name)
    _, card, weights = load_model_folder(folder)
    own = model.state_dict()
    mismatched = sorted(k for k in own if k not in weights or tuple(weights[k].shape) != tuple(own[k].shape))
    if mismatched or set(weights) - set(own):
        raise ValueError(f"init_from={path_or_name!r}: its weights do not fit this model "
                         f"(differing or missing: {mismatched[:5]}{' ...' if len(mismatched) > 5 else ''}); "
                         f"train with the same model config")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})
    steps = int(card.get("steps", 0))
    runs = list(card.get("runs") or [])
    if not runs:         # a card from before lineages, or a training folder: its own run is the last one
        own_run = _run_record(card)
        parent = folder / "init.json"      # a training folder that itself started from other weights
        if parent.exists():
            earlier = json.loads(parent.read_text())
            steps, runs = earlier["steps"] + steps, [*earlier["runs"], own_run]
        else:
            runs = [own_run]
    return {"init_from": str(path_or_name), "steps": steps, "runs": runs}


def export_for_inference(train_dir: str | Path, out_dir: str | Path, extra_card: dict | None = None,
                         dtype: torch.dtype = torch.float16) -> Path:
    """Turn a training directory into a shipped model: EMA weights in `dtype` + model_card.json. Returns `out_dir`."""
    train_dir, out_dir = Path(train_dir), Path(out_dir)
    _, card, ema = load_model_folder(train_dir)     # card: config, world, steps and the run's own record
    classes_path = train_dir / "classes.json"
    if classes_path.exists():
        card["classes"] = json.loads(classes_path.read_text())
    card.update(extra_card or {})
    atomic_save_tensors(out_dir / "model.safetensors", {k: v.to(dtype) for k, v in ema.items()})
    init_path = train_dir / "init.json"
    if init_path.exists():           # started from earlier weights: count their steps, keep their runs
        init = json.loads(init_path.read_text())
        this_run = _run_record(card)
        card.update(steps=init["steps"] + card["steps"], init_from=init["init_from"],
                    runs=[*init["runs"], this_run])
    atomic_write_json(out_dir / "model_card.json", card)
    return out_dir
