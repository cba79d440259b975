"""The frozen text tower, with pseudo-tokens and exact truncation.

`encode(tower, ids, pseudo)` is open_clip's `encode_text` with two changes:
- every placeholder position's token embedding is replaced by that row's pseudo-token
  (phi's output): SMP in training, the composed query at inference;
- the batch is cut after its longest EOT. CLIP text towers use a causal mask and pool at
  EOT, so later positions never influence the output: dropping them is exact (to float
  rounding) and removes most of the FLOPs on short captions (tests/test_text_encoder.py).
  On a GPU the cut is rounded up to a multiple of CUDA_LENGTH_MULTIPLE: a few shapes, each met
  again and again, instead of a new one for every length. cuDNN's attention builds a plan for
  each new shape, which made every step of a short run ~10x slower on an H200 (BENCHMARKS.md);
  rounding up keeps the result exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.core.errors import PipelineError

CUDA_LENGTH_MULTIPLE = 8


@dataclass
class TextTower:
    """The parts of an open_clip model's text tower that `encode` runs."""

    module: nn.Module  # holds token_embedding, positional_embedding, transformer, ln_final, text_projection
    placeholder_id: int
    eot_id: int | None  # None: EOT is the largest id (open_clip's "argmax" pooling)
    causal: bool

    @property
    def width(self) -> int:
        return self.module.token_embedding.weight.shape[1]


def text_tower(model: nn.Module, tokenizer) -> TextTower:
    module = getattr(model, "text", model)  # CustomTextCLIP keeps the tower in .text
    pool = getattr(module, "text_pool_type", "argmax")
    if pool not in ("argmax", "eos") or not hasattr(module, "token_embedding"):
        raise PipelineError(f"text pooling {pool!r} of this open_clip model is not supported: "
                            "LinCIR needs a tower that pools at the EOT token (argmax or eos)")
    ids = tokenizer(["$"])[0].tolist()
    sot_eot = {ids[0], max(ids)}
    placeholder = [i for i in ids if i not in sot_eot and i != 0]
    if len(placeholder) != 1:
        raise PipelineError(f"the tokenizer splits '$' into {placeholder}: it needs one placeholder token")
    eot = getattr(module, "text_eos_id", None) if pool == "eos" else None
    return TextTower(module, placeholder[0], eot, getattr(module, "attn_mask", None) is not None)


def eot_positions(tower: TextTower, ids: torch.Tensor) -> torch.Tensor:
    if tower.eot_id is None:
        return ids.argmax(dim=-1)
    return (ids == tower.eot_id).int().argmax(dim=-1)


def encode(tower: TextTower, ids: torch.Tensor, pseudo: torch.Tensor | None = None, truncate: bool = True) -> torch.Tensor:
    """ids [B, C] token ids; pseudo [B, w] one pseudo-token a row (or None). Returns [B, d], not normalised."""
    m = tower.module
    eot = eot_positions(tower, ids)
    length = ids.shape[1]
    if truncate and tower.causal:
        multiple = CUDA_LENGTH_MULTIPLE if ids.is_cuda else 1
        length = min(length, -(-(int(eot.max()) + 1) // multiple) * multiple)
    ids = ids[:, :length]
    x = m.token_embedding(ids)
    if pseudo is not None:
        x = torch.where((ids == tower.placeholder_id).unsqueeze(-1), pseudo.unsqueeze(1).to(x.dtype), x)
    x = x + m.positional_embedding[:length].to(x.dtype)
    mask = m.attn_mask[:length, :length] if tower.causal else None
    x = m.transformer(x, attn_mask=mask)
    x = m.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), eot]
    proj = m.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj

