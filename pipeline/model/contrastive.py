"""Contrastive training of an open_clip model on image-caption pairs, with open_clip's
own CLIP loss. This is how the offline default backbone (`pretrained: world`) is made;
for real backbones the weights come from their authors instead."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from PIL import Image
from tqdm import tqdm

from pipeline.core.errors import PipelineError
from pipeline.core.params import at_least
from pipeline.data.world.captions import swap
from pipeline.model.text_encoder import encode, text_tower


@dataclass
class WorldTraining:
    """params.yaml `backbone.world_training`: the CLIP training of the world backbone."""

    steps: int = 1350
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.2
    seed: int = 0

    def check(self) -> None:
        for name in ("steps", "batch_size"):
            at_least(f"backbone.world_training.{name}", getattr(self, name), 1)
        at_least("backbone.world_training.weight_decay", self.weight_decay, 0)
        at_least("backbone.world_training.seed", self.seed, 0)
        if self.lr <= 0:
            raise PipelineError(f"params.yaml: backbone.world_training.lr must be positive, not {self.lr!r}")


def decayed(name: str, param: torch.Tensor) -> bool:
    """CLIP's and open_clip's training rule: weight decay on weight matrices only, never on gains,
    biases, norms or the temperature. Decaying the temperature pulls it towards 1 and the matched
    pairs' margins with it."""
    return not (param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name)


def equilibrium_norm(lr: float, weight_decay: float, numel: int) -> float:
    """The Frobenius norm at which AdamW's updates and its weight decay balance for a weight the loss sees
    only up to scale (Kosson, Messmer and Jaggi, "Rotational Equilibrium", ICML 2024): sqrt(lr·numel / 2wd)."""
    return math.sqrt(lr * numel / (2 * weight_decay))


def negclip_loss(image_features: torch.Tensor, texts: torch.Tensor, has_negative: torch.Tensor,
                 scale: torch.Tensor) -> torch.Tensor:
    """CLIP's loss where each image is also told apart from the batch's hard negative captions
    (Yuksekgonul et al., "When and why vision-language models behave like bags-of-words", ICLR 2023).
    texts [2B, d]: the B captions, then their B negatives; has_negative [B]: which negatives exist."""
    b = len(image_features)
    captions = texts[:b]
    logits = scale * image_features @ texts.T
    logits[:, b:] = logits[:, b:].masked_fill(~has_negative, float("-inf"))
    labels = torch.arange(b)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(scale * captions @ image_features.T, labels)) / 2


def hard_negatives(captions: list[list[str]], fields: list[str], tokenizer, seed: int) -> torch.Tensor:
    """Token ids [N, K, C] of one hard negative of each caption: the value of one of `fields` it names
    (drawn at random) swapped for another; all zeros where it names none of them."""
    rng = np.random.default_rng(seed)
    texts, known = [], []
    for text in (c for cs in captions for c in cs):
        negative = None
        for field in rng.permutation(fields):
            negative = swap(text, str(field), rng)
            if negative is not None:
                break
        texts.append(negative or "")
        known.append(negative is not None)
    ids = tokenizer(texts) * torch.tensor(known).unsqueeze(1)
    return ids.view(len(captions), len(captions[0]), -1)


def train_clip(model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor, *, steps: int, batch_size: int,
               lr: float, weight_decay: float, seed: int, tokenizer, draw=None,
               start_at_equilibrium: bool = True, negatives: torch.Tensor | None = None,
               channels_last: bool = True) -> list[float]:
    """images [N, 3, H, W] preprocessed; tokens [N, K, C]: K captions of each image, one drawn per step.
    `draw(gen, batch_size)` gives a batch's image indices (default: CLIP's uniform draw).
    `start_at_equilibrium`: text_projection starts at its equilibrium_norm instead of open_clip's draw.
    `negatives` [N, K, C]: a hard negative of each caption (all zeros: none), added to the captions each
    image is told apart from (NegCLIP's loss). `channels_last`: compute in that layout (the weights come back
    in torch's standard one either way)."""
    torch.manual_seed(seed)
    if start_at_equilibrium and weight_decay > 0:
        # CLIP's loss sees the caption latent z_c only normalised, so only the start and weight decay set its
        # scale, the scale the paper's noise is added at. A long CLIP run settles at this norm (and a 768-wide
        # text tower is drawn near it); the world's 64-wide one is drawn 2.5x above it, and a run of a
        # thousand steps would not get there (docs/world_backbone.md, "The latent's scale")
        with torch.no_grad():
            w = model.text_projection
            w.mul_(equilibrium_norm(lr, weight_decay, w.numel()) / w.norm())
    gen = np.random.default_rng(seed)
    model.train()
    # oneDNN's convolutions and batch norms: the image tower's pass 1.4x faster in channels-last layout
    # (BENCHMARKS.md, the development machine's CPU)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    named = list(model.named_parameters())
    opt = torch.optim.AdamW([{"params": [p for n, p in named if decayed(n, p)], "weight_decay": weight_decay},
                             {"params": [p for n, p in named if not decayed(n, p)], "weight_decay": 0.0}], lr=lr)
    tower = text_tower(model, tokenizer)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, cosine decay: CLIP's schedule
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    loss_fn = ClipLoss()
    losses = []
    bar = tqdm(range(steps), desc="backbone contrastive training", unit="step")
    for _ in bar:
        idx = torch.from_numpy(draw(gen, batch_size) if draw else gen.choice(len(images), size=batch_size, replace=False))
        pick = torch.from_numpy(gen.integers(tokens.shape[1], size=batch_size))
        batch = images[idx].contiguous(memory_format=layout)
        image_features = F.normalize(model.encode_image(batch), dim=-1)
        # the batch cut after its longest caption: exact (causal mask), most of the text tower's FLOPs saved
        if negatives is None:
            text_features = F.normalize(encode(tower, tokens[idx, pick]), dim=-1)
            loss = loss_fn(image_features, text_features, model.logit_scale.exp())
        else:
            both = F.normalize(encode(tower, torch.cat([tokens[idx, pick], negatives[idx, pick]])), dim=-1)
            loss = negclip_loss(image_features, both, negatives[idx, pick].any(dim=1), model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return losses


def world_pairs(world: Path, backbone, split: str) -> tuple[pl.DataFrame, torch.Tensor, torch.Tensor]:
    """The world's pairs of `split` as the backbone (a pipeline.model.backbone.Backbone) reads them:
    the table, images [N, 3, H, W] preprocessed, tokens [N, K, C] of their K captions."""
    pairs = pl.read_parquet(world / "pairs.parquet").filter(pl.col("split") == split)
    images = torch.stack([backbone.preprocess(Image.open(world / f).convert("RGB"))
                          for f in tqdm(pairs["file"], desc=f"loading {split} images", unit="img")])
    captions = pairs["captions"].to_list()
    tokens = backbone.tokenizer([c for cs in captions for c in cs]).view(len(captions), len(captions[0]), -1)
    return pairs, images, tokens
