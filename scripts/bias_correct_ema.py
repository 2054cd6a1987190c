"""One-off repair of a shipped model trained before the EMA had a warm-up (2026-11-23 runs).

With a plain EMA (decay d, n updates) the shadow still holds d^n of the initial weights (0.999^822 = 44%
for shapes-t2v), which made its samples nearly the input noise. The initial weights are reproducible
(the trainer seeds torch, then builds the model on the CPU), so this removes them exactly:
corrected = (shadow - d^n theta_0) / (1 - d^n)  (eflow_core.flow.bias_corrected).

    python scripts/bias_correct_ema.py checkpoints/shapes-t2v
"""
import json
import sys
from pathlib import Path

import torch

from eflow_core.checkpoint import atomic_save_tensors, atomic_write_json, load_tensors
from eflow_core.config import TrainConfig
from eflow_core.flow import bias_corrected
from eflow_core.model.dit import VideoDiT

folder = Path(sys.argv[1])
card = json.loads((folder / "model_card.json").read_text())
if "ema_bias_correction" in card:
    sys.exit(f"{folder} is already corrected")
if "init_from" in card:   # its EMA started from earlier weights, not the seeded init: nothing to remove
    sys.exit(f"{folder} continued from {card['init_from']}; the correction applies to runs from a seeded init only")
config = TrainConfig.from_dict(card["config"])
torch.manual_seed(config.seed)                     # exactly as Trainer.__init__ builds the model
initial = VideoDiT(config.model).state_dict()
shadow = load_tensors(folder / "model.safetensors")
corrected = bias_corrected(shadow, initial, config.ema_decay, card["steps"])
atomic_save_tensors(folder / "model.safetensors", {k: v.to(torch.float16) for k, v in corrected.items()})
card["ema_bias_correction"] = {"decay": config.ema_decay, "updates": card["steps"],
                               "initial_weight_share": config.ema_decay ** card["steps"],
                               "script": "scripts/bias_correct_ema.py"}
atomic_write_json(folder / "model_card.json", card)
print(f"corrected {folder}: removed {config.ema_decay ** card['steps']:.1%} initial weights")
