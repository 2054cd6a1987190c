"""An untrained stand-in checkpoint, for developing and testing the studio before a trained model ships.

    python -m studio.standin OUT_DIR [--preset shapes-t2v]

writes OUT_DIR/model.safetensors and OUT_DIR/model_card.json in the shipped-model layout that
`eflow_core.checkpoint` describes (card = {"config": TrainConfig.to_dict(), "world": ..., ...}), so
`EFlowPipeline.from_pretrained(OUT_DIR)` and `python app.py --checkpoint OUT_DIR` load it. The
network has its initial (random, adaLN-Zero) weights: videos come out plain, but every code path
(text or class conditioning, both samplers, gate capture) runs exactly as with a trained model.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

SHIPPED_CARD = "model_card.json"


def write_standin_checkpoint(folder: str | Path, preset: str = "shapes-t2v", seed: int = 0,
                             model_overrides: dict | None = None) -> Path:
    """Build `TRAIN_PRESETS[preset]`'s VideoDiT with random weights and save it as a checkpoint folder.

    `model_overrides` replaces ModelConfig fields (e.g. {"text_dim": 384} turns the unconditional `tiny`
    preset into a text model). Class-conditional models get class names "class 0", "class 1", ... in the
    card. Returns the folder.
    """
    import torch

    from eflow_core.checkpoint import atomic_save_tensors, atomic_write_json
    from eflow_core.config import TRAIN_PRESETS, TrainConfig
    from eflow_core.model.dit import VideoDiT

    if preset not in TRAIN_PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose from {sorted(TRAIN_PRESETS)}")
    config = TrainConfig.from_dict(dataclasses.asdict(TRAIN_PRESETS[preset]))
    if model_overrides:
        config.model = config.model.replace(**model_overrides)
    torch.manual_seed(seed)
    model = VideoDiT(config.model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(folder / "model.safetensors", model.state_dict())
    card = {
        "config": config.to_dict(),
        "world": config.data.kind,
        "steps": 0,
        "command": f"python -m studio.standin {folder} --preset {preset}",
        "description": f"untrained stand-in for {preset} (random weights; for development and tests)",
        "standin": True,
    }
    if config.model.num_classes:
        card["classes"] = [f"class {i}" for i in range(config.model.num_classes)]
    atomic_write_json(folder / SHIPPED_CARD, card)
    return folder


def shipped_or_standin(folder: str | Path, name: str = "shapes-t2v") -> str:
    """The shipped model `name` when it is in checkpoints/, else a stand-in written to `folder` (its path)."""
    from eflow_core.checkpoint import shipped_models

    if name in shipped_models():
        return name
    card = Path(folder) / SHIPPED_CARD
    if not card.is_file() or json.loads(card.read_text()).get("config") is None:
        write_standin_checkpoint(folder, preset=name)
    return str(folder)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write model.safetensors and model_card.json into")
    parser.add_argument("--preset", default="shapes-t2v", help="a TRAIN_PRESETS name (default shapes-t2v)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_standin_checkpoint(args.out, args.preset, args.seed))


if __name__ == "__main__":
    main()
