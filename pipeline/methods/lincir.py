"""LinCIR (arXiv 2312.01998): phi trained on language only with Self-Masking Projection (SMP).

For a batch of captions c with keyword-masked copies m (each masked span is one `$`):
    z_c  = E_text(c)                       frozen; computed once and cached by default
    z'   = z_c + noise_scale * n           n from the `noise` registry (pipeline/model/noise.py)
    e    = phi(z')                         one pseudo-token a caption
    z^_c = E_text(m with every `$` -> e)   m: the SUPERVISION kind, keyword-masked c by default
    loss = MSE(z^_c, z_c)                  only phi learns

Its knobs: the top-level `noise`, the `lincir` section (noise_scale, supervision) and the
`masking` section, which shapes the token arrays it reads. The loop is the one every method
shares (pipeline/training/loop.py).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.errors import PipelineError
from pipeline.core.params import at_least
from pipeline.core.placeholder import PLACEHOLDER
from pipeline.core.registry import Registry
from pipeline.data.tokens import load as load_tokens
from pipeline.methods.base import METHODS, Method, Run
from pipeline.model.noise import NOISE, add_noise
from pipeline.model.text_encoder import TextTower, encode
from pipeline.training.batches import Dist, rows, text_latents
from pipeline.training.loop import Objective, TrainConfig, Validation, fit, new_phi


@dataclass(frozen=True)
class Supervision:
    """What phi learns from (paper Tab. 7): the token array the masked side of the loss encodes,
    made from the keyword-masked captions, and whether phi reads the caption's own latent z_c
    or the latent of the image the caption describes (image-caption pairs, data/pairs)."""

    masked: Callable[[np.ndarray, Callable], np.ndarray]  # (masked token array, tokenizer) -> token array
    from_images: bool = False


def keyword_masked(masked: np.ndarray, tokenizer) -> np.ndarray:
    """Each caption with its keyword spans replaced by $ (LinCIR's Self-Masking Projection)."""
    return masked


def photo_of(masked: np.ndarray, tokenizer) -> np.ndarray:
    """The fixed prompt "a photo of $" for every caption, the target text of Pic2Word and SEARLE."""
    row = tokenizer([f"a photo of {PLACEHOLDER}"]).numpy()[0].astype(masked.dtype)
    return np.broadcast_to(row[:masked.shape[1]], masked.shape)


SUPERVISION: Registry[Supervision] = Registry("supervision")
SUPERVISION.register("smp")(Supervision(keyword_masked))
SUPERVISION.register("photo_of")(Supervision(photo_of))
SUPERVISION.register("image_latent")(Supervision(keyword_masked, from_images=True))


@dataclass
class LincirConfig:
    """params.yaml `lincir`, with the top-level `noise`."""

    noise: str = "unif_gaussian"
    noise_scale: float = 1.0  # z' = z_c + noise_scale * n
    supervision: str = "smp"  # SUPERVISION: what phi learns from (paper Tab. 7)

    def check(self) -> None:
        NOISE.get(self.noise), SUPERVISION.get(self.supervision)  # before any work
        at_least("lincir.noise_scale", self.noise_scale, 0)


def smp_loss(tower: TextTower, phi: torch.nn.Module, masked_ids: torch.Tensor, z_c: torch.Tensor,
             lincir: LincirConfig, gen: torch.Generator, truncate: bool = True,
             source: torch.Tensor | None = None) -> torch.Tensor:
    """The SMP objective of one batch: MSE between E(masked caption with $ = phi(z_c + noise)) and z_c.
    With `source` (image latents of the captions' images), phi reads source + noise instead."""
    pseudo = phi(add_noise(z_c if source is None else source, lincir.noise, lincir.noise_scale, gen))
    return F.mse_loss(encode(tower, masked_ids, pseudo, truncate=truncate).float(), z_c)


def smp_objective(tower: TextTower, ids, masked, cfg: TrainConfig, lincir: LincirConfig, device: str, part: Dist,
                  lengths: np.ndarray | None = None, sources: np.ndarray | None = None) -> Objective:
    """LinCIR's objective over the captions: `smp_loss` with z_c cached once (cfg.cache_targets)."""
    dtype = cfg.autocast_dtype(device)
    if device == "cuda":  # the token arrays fit on the GPU: no host copies in the loop
        ids, masked = (torch.from_numpy(np.asarray(a).astype(np.int32)).to(device) for a in (ids, masked))
    targets = text_latents(tower, ids, 4 * cfg.batch_size, device, dtype, cfg.truncate, part) \
        if cfg.cache_targets else None
    step_loss = torch.compile(smp_loss, dynamic=True) if cfg.compile else smp_loss

    def loss(model, idx, gen):
        if targets is not None:
            z_c = targets[torch.as_tensor(idx, device=device)]
        else:
            with torch.no_grad():
                z_c = encode(tower, rows(ids, idx, device), truncate=cfg.truncate).float()
        source = None if sources is None else torch.from_numpy(np.asarray(sources[idx], np.float32)).to(device)
        return step_loss(tower, model, rows(masked, idx, device), z_c, lincir, gen, cfg.truncate, source)

    return Objective(len(ids), loss, lengths)


def train_phi(tower: TextTower, embed_dim: int, ids, masked, cfg: TrainConfig, lincir: LincirConfig | None = None, *,
              device: str, checkpoint: Path, fingerprint: str = "", lengths: np.ndarray | None = None,
              log: Callable[[int, dict], None] = lambda step, values: None,
              validation: Validation | None = None, sources: np.ndarray | None = None) -> torch.nn.Module:
    """LinCIR: phi trained with SMP. ids/masked: [N, C] token arrays (numpy, memmap or tensors);
    lengths: masked tokens a row (for bucketing); sources: [N, d] latents phi reads instead of
    z_c (image latents of the captions' images), or None."""
    lincir = lincir or LincirConfig()
    cfg.check()
    lincir.check()
    objective = smp_objective(tower, ids, masked, cfg, lincir, device, Dist.from_env(device), lengths, sources)
    return fit(new_phi(tower, embed_dim, cfg, device), objective, cfg, device=device, checkpoint=checkpoint,
               fingerprint=fingerprint, log=log, validation=validation)


def token_dir(run: Run) -> Path:
    # image_latent learns from image-caption pairs: their captions' tokens, phi reading the image latents
    return run.pair_tokens if SUPERVISION.get(run.config.supervision).from_images else run.tokens


def train(run: Run) -> torch.nn.Module:
    supervision = SUPERVISION.get(run.config.supervision)
    tokens = load_tokens(token_dir(run))
    if tokens.placeholder_id != run.tower.placeholder_id:
        raise PipelineError(f"{token_dir(run)}/meta.json placeholder {tokens.placeholder_id} differs from the "
                            f"backbone tokenizer's {run.tower.placeholder_id}: re-run the tokens stage")
    sources = np.load(run.pairs / "latents.npy")[np.load(run.pairs / "image_of.npy")] \
        if supervision.from_images else None
    masked = supervision.masked(tokens.masked, run.backbone.tokenizer)
    return train_phi(run.tower, run.embed_dim, tokens.ids, masked, run.cfg, run.config, device=run.device,
                     checkpoint=run.checkpoint, fingerprint=run.fingerprint, lengths=tokens.lengths[:, 1],
                     log=run.log, validation=run.validation, sources=sources)


METHODS.register("lincir")(Method(LincirConfig, train, reads=("tokens", "pairs (supervision: image_latent)"),
                                  top_level=("noise",)))
