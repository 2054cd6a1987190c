"""The one representation of a generation condition, shared by the model, the objectives and the trainer.

A condition is one of:
- `None`                                  unconditional model;
- a LongTensor of labels, shape (B,)      class-conditional; label -1 is the null condition;
- a `TextCondition`                       text-conditional: per-token states and a key mask.
  A row whose mask is all False is the null (empty) prompt; the model substitutes its learned null.

The objectives never look inside: they slice (`index_condition`), null out (`null_condition`) and
concatenate (`cat_conditions`) through these helpers, so any backbone that accepts the same three
forms works with `SolutionFlow`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch

from eflow_core.transfer import to_device

NULL_LABEL = -1


@dataclass
class TextCondition:
    tokens: torch.Tensor  # (B, L, D_text) float
    mask: torch.Tensor    # (B, L) bool, True = real token

    @property
    def is_null(self) -> torch.Tensor:
        """(B,) bool: rows with no real token."""
        return ~self.mask.any(dim=1)

    def __len__(self) -> int:
        return self.tokens.shape[0]


Condition = Union[None, torch.Tensor, TextCondition]


def index_condition(cond: Condition, index: torch.Tensor | slice) -> Condition:
    """Rows `index` of the batch."""
    if cond is None:
        return None
    if isinstance(cond, TextCondition):
        return TextCondition(cond.tokens[index], cond.mask[index])
    return cond[index]


def null_condition(cond: Condition, drop: torch.Tensor) -> Condition:
    """Replace rows where `drop` (B,) bool is True by the null condition."""
    if cond is None:
        return None
    if isinstance(cond, TextCondition):
        return TextCondition(cond.tokens, cond.mask & ~drop[:, None])
    return torch.where(drop, torch.full_like(cond, NULL_LABEL), cond)


def cat_conditions(conds: list[Condition]) -> Condition:
    """Concatenate along the batch; text conditions are right-padded to the longest."""
    if conds[0] is None:
        return None
    if isinstance(conds[0], TextCondition):
        length = max(c.tokens.shape[1] for c in conds)
        tokens, masks = [], []
        for c in conds:
            pad = length - c.tokens.shape[1]
            tokens.append(torch.nn.functional.pad(c.tokens, (0, 0, 0, pad)))
            masks.append(torch.nn.functional.pad(c.mask, (0, pad), value=False))
        return TextCondition(torch.cat(tokens), torch.cat(masks))
    return torch.cat(conds)


def condition_to(cond: Condition, device: torch.device | str, dtype: torch.dtype | None = None) -> Condition:
    """`cond` on `device`: labels (B,) or TextCondition tokens (B, L, dim) (in `dtype` when given) and
    mask (B, L). Host tensors reach a CUDA device without a host wait (`transfer.to_device`)."""
    if cond is None:
        return None
    if isinstance(cond, TextCondition):
        return TextCondition(to_device(cond.tokens, device).to(dtype or cond.tokens.dtype), to_device(cond.mask, device))
    return to_device(cond, device)


def encode_condition(text_encoder, prompts: list[str] | None, labels, device: torch.device | str,
                     dtype: torch.dtype | None = None) -> Condition:
    """The condition for a batch: prompts through `text_encoder` (text models; any object with
    `.encode(list[str]) -> TextCondition`), else labels (B,) int64 (class models), else None.
    Everything lands on `device` (text tokens in `dtype` when given)."""
    if text_encoder is not None:
        return condition_to(text_encoder.encode(list(prompts)), device, dtype)
    if labels is not None:
        return to_device(torch.tensor([int(x) for x in labels]), device)
    return None
