"""LinCIR (arXiv 2312.01998): phi trained on language only with Self-Masking Projection.

Its knobs are `noise`, `masking` and `train` (noise_scale, supervision, ...): LinCIR is the
pipeline's default, and its `lincir` params section is empty.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.methods import METHODS, Method, Run
from pipeline.tokens import load as load_tokens
from pipeline.train import SUPERVISION, train_phi


@dataclass
class LincirConfig:
    """params.yaml `lincir`: nothing beyond `noise`, `masking` and `train`."""


def token_dir(run: Run):
    # image_latent learns from image-caption pairs: their captions' tokens, phi reading the image latents
    return run.pair_tokens if SUPERVISION.get(run.cfg.supervision).from_images else run.tokens


def train(run: Run):
    supervision = SUPERVISION.get(run.cfg.supervision)
    tokens = load_tokens(token_dir(run))
    if tokens.placeholder_id != run.tower.placeholder_id:
        raise PipelineError(f"{token_dir(run)}/meta.json placeholder {tokens.placeholder_id} differs from the "
                            f"backbone tokenizer's {run.tower.placeholder_id}: re-run the tokens stage")
    sources = np.load(run.pairs / "latents.npy")[np.load(run.pairs / "image_of.npy")] \
        if supervision.from_images else None
    masked = supervision.masked(tokens.masked, run.backbone.tokenizer)
    return train_phi(run.tower, run.embed_dim, tokens.ids, masked, run.cfg, device=run.device,
                     checkpoint=run.checkpoint, fingerprint=run.fingerprint, lengths=tokens.lengths[:, 1],
                     log=run.log, validation=run.validation, sources=sources)


METHODS.register("lincir")(Method(LincirConfig, train, reads=("tokens", "pairs (supervision: image_latent)")))
