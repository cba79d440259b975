"""Pic2Word (Saito et al., CVPR 2023): phi trained on images only.

For a batch of image latents v (each image's latent drawn from its augmented views, data/pairs/
views.npy: random resized crops, pipeline/data/views.py): the text latent of "a photo of $" with
$ = phi(v) is contrasted with v (symmetric InfoNCE over the batch, at the frozen CLIP's own logit
scale, as the official trainer.py does). No captions, no keywords, no noise.

Its recipe (`train.recipe: authors`), from google-research/composed_image_retrieval: phi is
IM2TEXT (pipeline/model/phi.py `pic2word`: two Linear -> Dropout 0.1 -> ReLU blocks of 512,
then Linear to the token width); AdamW at lr 1e-4, weight decay 0.1 (none on biases), betas
(0.9, 0.98) and eps 1e-6 (its defaults for ViT-L/14); a linear warm-up, then cosine decay.
docs/methods/pic2word.md lists where this differs from the official code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.core.errors import PipelineError
from pipeline.core.params import at_least, below
from pipeline.methods.base import METHODS, Method, Run
from pipeline.methods.common import check_prompt, contrastive, image_latents, logit_scale, prompt_ids
from pipeline.model.text_encoder import encode
from pipeline.training.loop import Objective, TrainConfig, fit, new_phi
from pipeline.training.recipe import Recipe


@dataclass
class Pic2WordConfig:
    """params.yaml `pic2word`."""

    prompt: str = "a photo of $"  # the text whose latent is contrasted with the image
    hidden: int = 512  # IM2TEXT's width (--middle_dim)
    dropout: float = 0.1
    lr: float = 1e-4  # the official command line's
    weight_decay: float = 0.1  # the official command line's; none on biases
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])  # src/params.py for ViT-L/14
    eps: float = 1e-6
    warmup: float = 0.1  # the fraction of train.steps warmed up over (the official run: 10,000 steps)

    def check(self) -> None:
        check_prompt("pic2word.prompt", self.prompt)
        at_least("pic2word.hidden", self.hidden, 1)
        at_least("pic2word.dropout", self.dropout, 0)
        below("pic2word.dropout", self.dropout, 1)
        at_least("pic2word.lr", self.lr, 1e-12)
        at_least("pic2word.weight_decay", self.weight_decay, 0)
        at_least("pic2word.eps", self.eps, 1e-12)
        at_least("pic2word.warmup", self.warmup, 0)
        below("pic2word.warmup", self.warmup, 1)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise PipelineError(f"params.yaml: pic2word.betas must be two numbers in [0, 1), not {self.betas!r}")


def recipe(c: Pic2WordConfig, cfg: TrainConfig) -> Recipe:
    return Recipe("pic2word", c.dropout, c.lr, c.weight_decay, hidden=c.hidden, betas=tuple(c.betas), eps=c.eps,
                  decay_all=False, schedule="warmup_cosine", warmup=c.warmup)


def augmented_views(run: Run) -> torch.Tensor:
    """[images, views, d] the latents of each image's augmented views (the pairs stage's views.npy);
    with pairs.views: 0, each image's own latent as its one view."""
    views = np.load(run.pairs / "views.npy")
    if views.shape[1] == 0:
        return image_latents(run)[:, None]
    return torch.from_numpy(views.astype(np.float32)).to(run.device)


def train(run: Run):
    views = augmented_views(run)
    ids = prompt_ids(run, [run.config.prompt])
    scale = logit_scale(run)

    def loss(phi, idx, gen):
        i = torch.as_tensor(idx, device=run.device)
        view = torch.randint(views.shape[1], (len(i),), generator=gen, device=run.device)  # one view an image a step
        batch = views[i, view]
        z = encode(run.tower, ids.expand(len(idx), -1), phi(batch), truncate=run.cfg.truncate)
        return contrastive(z, batch, scale)

    return fit(new_phi(run.tower, run.embed_dim, run.cfg, run.device, run.recipe),
               Objective(len(views), loss, name="Pic2Word"), run.cfg, device=run.device, checkpoint=run.checkpoint,
               fingerprint=run.fingerprint, log=run.log, validation=run.validation, recipe=run.recipe)


METHODS.register("pic2word")(Method(Pic2WordConfig, train, reads=("pairs: augmented views' latents",), images=True,
                                    recipe=recipe))
