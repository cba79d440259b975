"""Pic2Word (Saito et al., CVPR 2023): phi trained on images only.

For a batch of image latents v: the text latent of "a photo of $" with $ = phi(v) is
contrasted with v (symmetric InfoNCE over the batch, at the frozen CLIP's own logit scale,
as the official code does). No captions, no keywords, no noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.methods.base import METHODS, Method, Run
from pipeline.methods.common import check_prompt, contrastive, image_latents, logit_scale, prompt_ids
from pipeline.model.text_encoder import encode
from pipeline.training.loop import Objective, fit, new_phi


@dataclass
class Pic2WordConfig:
    """params.yaml `pic2word`."""

    prompt: str = "a photo of $"  # the text whose latent is contrasted with the image

    def check(self) -> None:
        check_prompt("pic2word.prompt", self.prompt)


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
