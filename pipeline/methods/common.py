"""What the image-based methods share: their prompts, the contrastive losses, and the pairs'
image latents."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.errors import PipelineError, quoted
from pipeline.core.placeholder import PLACEHOLDER
from pipeline.methods.base import Run

# Nouns that name the picture, its style or a place in it rather than a thing shown: web
# alt-text is full of them ("stock photo", "vector illustration", "on the left"). Masked inversion
# draws no noun of them (no region to mask), SEARLE takes none as a concept.
SKIP_NOUNS = ("photo", "picture", "image", "rendering", "art", "illustration", "clip", "stock", "download",
              "wallpaper", "design", "icon", "vector", "logo", "idea", "side", "right", "left", "center", "centre",
              "middle", "background", "backdrop")


def check_prompt(name: str, prompt: str, fields: int = 0) -> None:
    if prompt.count(PLACEHOLDER) != 1 or prompt.count("{}") != fields:
        what = f"one {PLACEHOLDER!r}" + (f" and {fields} '{{}}'" if fields else " and no '{}'")
        raise PipelineError(f"params.yaml: {name} must hold {what}; not {quoted(prompt)}")


def contrastive(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of a matches row i of b, against every other row of the batch."""
    logits = scale * F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T
    labels = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SEARLE's distillation loss, after PALAVRA): the 2B rows of [a; b] against each
    other, row i's positive its pair in the other half, every other row (intra-modal ones too) a
    negative; the mean over the 2B rows of -log softmax at the positive."""
    z = F.normalize(torch.cat([a.float(), b.float()]), dim=-1)
    logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))  # a row is not its own negative
    n = len(a)
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(a.device)
    return F.cross_entropy(logits, positives)


def image_latents(run: Run) -> torch.Tensor:
    """The latents of the pairs' images (data/pairs/latents.npy), as phi reads them (unnormalised)."""
    return torch.from_numpy(np.load(run.pairs / "latents.npy").astype(np.float32)).to(run.device)


def prompt_ids(run: Run, prompts: list[str]) -> torch.Tensor:
    return run.backbone.tokenizer(prompts).long().to(run.device)


def logit_scale(run: Run) -> torch.Tensor:
    return run.backbone.model.logit_scale.detach().exp().float()
