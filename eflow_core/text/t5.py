"""T5 (or mT5 / UMT5, as Wan uses) encoder from a local folder through transformers; nothing is downloaded."""
from __future__ import annotations

from pathlib import Path

import torch

from .base import HFTextEncoder


class T5Encoder(HFTextEncoder):
    """Encoder stack of a T5-family checkpoint folder: tokens (B, L, d_model), pooled (B, d_model)."""

    def __init__(self, path: str | Path, max_length: int = 128, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        import transformers
        from transformers import AutoConfig, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no T5 model at {path}: expected a local folder with config.json, weights and a tokenizer")
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        cls = {"mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}.get(config.model_type, "T5EncoderModel")
        model = getattr(transformers, cls).from_pretrained(str(path), local_files_only=True, torch_dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        super().__init__(model, tokenizer, name=f"t5:{path.name}", max_length=max_length, device=device)
