"""Pic2Word (Saito et al., CVPR 2023): phi trained on images only.

For a batch of image latents v: the text latent of "a photo of $" with $ = phi(v) is
contrasted with v (symmetric InfoNCE over the batch, at the frozen CLIP's own logit scale,
as the official code does). No captions, no keywords, no noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.errors import PipelineError, quoted
from pipeline.core.placeholder import PLACEHOLDER
from pipeline.methods import METHODS, Method, Run
from pipeline.text_encoder import encode
from pipeline.train import Objective, fit, new_phi


@dataclass
class Pic2WordConfig:
    """params.yaml `pic2word`."""

    prompt: str = "a photo of $"  # the text whose latent is contrasted with the image

    def check(self) -> None:
        check_prompt("pic2word.prompt", self.prompt)


def check_prompt(name: str, prompt: str, fields: int = 0) -> None:
    if prompt.count(PLACEHOLDER) != 1 or prompt.count("{}") != fields:
        what = f"one {PLACEHOLDER!r}" + (f" and {fields} '{{}}'" if fields else " and no '{}'")
        raise PipelineError(f"params.yaml: {name} must hold {what}; not {quoted(prompt)}")


def contrastive(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of a matches row i of b, against every other row of the batch."""
    logits = scale * F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T
    labels = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def image_latents(run: Run) -> torch.Tensor:
    """The latents of the pairs' images (data/pairs/latents.npy), as phi reads them (unnormalised)."""
    return torch.from_numpy(np.load(run.pairs / "latents.npy").astype(np.float32)).to(run.device)


def prompt_ids(run: Run, prompts: list[str]) -> torch.Tensor:
    return run.backbone.tokenizer(prompts).long().to(run.device)


def logit_scale(run: Run) -> torch.Tensor:
    return run.backbone.model.logit_scale.detach().exp().float()


def train(run: Run):
    v = image_latents(run)
    ids = prompt_ids(run, [run.config.prompt])
    scale = logit_scale(run)

    def loss(phi, idx, gen):
        batch = v[torch.as_tensor(idx, device=run.device)]
        z = encode(run.tower, ids.expand(len(idx), -1), phi(batch), truncate=run.cfg.truncate)
        return contrastive(z, batch, scale)

    return fit(new_phi(run.tower, run.embed_dim, run.cfg, run.device), Objective(len(v), loss, name="Pic2Word"),
               run.cfg, device=run.device, checkpoint=run.checkpoint, fingerprint=run.fingerprint, log=run.log,
               validation=run.validation)


METHODS.register("pic2word")(Method(Pic2WordConfig, train, reads=("pairs: image latents",), images=True))
