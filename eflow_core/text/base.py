"""Text-encoder interface and the shared Hugging Face implementation (per-token states + mask + pooled).

Conventions (see eflow_core/conditioning.py): `encode(texts)` -> TextCondition with tokens (B, L, D) float32
and mask (B, L) bool; an empty (or whitespace-only, or None) prompt gives an all-False mask row and zero
tokens — the null condition. `pooled(texts)` -> (B, D): masked mean of the token states, L2-normalised;
zeros for an empty prompt.
"""
from __future__ import annotations

import threading

import torch

from eflow_core.conditioning import TextCondition


def is_empty(text: str | None) -> bool:
    return text is None or not str(text).strip()


class TextEncoder:
    """Base: `name`, `dim`, `max_length`, `encode`, `pooled`, `encode_with_pooled`. Calls are serialised by a lock."""

    name: str = "text"
    dim: int = 0
    max_length: int = 64

    def __init__(self):
        self._lock = threading.RLock()

    def encode_with_pooled(self, texts: list[str]) -> tuple[TextCondition, torch.Tensor]:
        """texts (B) -> (TextCondition (B, L, dim) + (B, L) mask, pooled (B, dim))."""
        raise NotImplementedError

    def encode(self, texts: list[str]) -> TextCondition:
        """texts (B) -> TextCondition: tokens (B, L, dim) float32, mask (B, L) bool (all False = null prompt)."""
        return self.encode_with_pooled(texts)[0]

    def pooled(self, texts: list[str]) -> torch.Tensor:
        """texts (B) -> (B, dim) float32, L2-normalised; zeros for empty prompts."""
        return self.encode_with_pooled(texts)[1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, max_length={self.max_length})"


def masked_mean_pool(tokens: torch.Tensor, mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """tokens (B, L, D), mask (B, L) bool -> (B, D) mean over real tokens (zeros where none), optionally L2-normalised."""
    m = mask.to(tokens.dtype).unsqueeze(-1)
    pooled = (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)
    if normalize:
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
    return pooled


class HFTextEncoder(TextEncoder):
    """A transformers encoder + tokenizer: last hidden states as tokens, masked mean as pooled."""

    def __init__(self, model, tokenizer, name: str, max_length: int = 64, device: str | torch.device = "cpu"):
        super().__init__()
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.max_length = int(max_length)
        self.device = torch.device(device)
        self.dim = int(getattr(model.config, "hidden_size", None) or model.config.d_model)

    def encode_with_pooled(self, texts: list[str]) -> tuple[TextCondition, torch.Tensor]:
        """texts (B) -> (TextCondition tokens (B, L, dim) / mask (B, L), pooled (B, dim)); L <= max_length."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("encode needs at least one text")
        empty = torch.tensor([is_empty(t) for t in texts])
        clean = ["" if is_empty(t) else str(t) for t in texts]
        with self._lock, torch.no_grad():  # no_grad, not inference_mode: outputs may feed a trained network
            batch = self.tokenizer(clean, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt")
            ids = batch["input_ids"].to(self.device)
            attn = batch["attention_mask"].to(self.device)
            tokens = self.model(input_ids=ids, attention_mask=attn).last_hidden_state.float()
        mask = attn.bool() & ~empty.to(attn.device)[:, None]
        tokens = tokens * mask.unsqueeze(-1)
        return TextCondition(tokens, mask), masked_mean_pool(tokens, mask)
