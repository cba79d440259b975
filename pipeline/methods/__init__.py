"""Zero-shot CIR methods that train a phi the `evaluate` stage scores unchanged, by name
(params.yaml `method`, read by stages/train.py; each method's own params are the section
named after it).

    lincir            language only: Self-Masking Projection on the caption corpus (pipeline/train.py)
    pic2word          images only: "a photo of $" contrasted with the image (Saito et al., CVPR 2023)
    searle            per-image optimisation-based inversion (OTI), then phi distilled (Baldrati et al., ICCV 2023)
    masked_inversion  image-caption pairs, one noun masked in image and text (arXiv 2406.18836)

docs/methods/ has a page per method: what it trains on, what its paper says, what was chosen
where the paper is silent.

Every method trains the same phi architecture (`train.phi_variant`) with the shared loop
`pipeline.train.fit`, its steps, batch size, optimiser, seed and validation from `train`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from pipeline.core.registry import Registry
from pipeline.train import TrainConfig, Validation


@dataclass
class Run:
    """What the train stage hands a method: the frozen backbone, the shared training config,
    the method's own typed config, where the prepared data is, and where to log and resume."""

    backbone: object  # pipeline.backbone.Backbone
    tower: object  # pipeline.text_encoder.TextTower
    embed_dim: int
    cfg: TrainConfig
    config: object  # the method's dataclass, from its params.yaml section
    device: str
    checkpoint: Path
    fingerprint: str = ""
    tokens: Path = Path("data/tokens")  # the corpus's token arrays (tokens stage)
    pairs: Path = Path("data/pairs")  # image-caption pairs, their keywords and image latents (pairs stage)
    pair_tokens: Path = Path("data/pair_tokens")  # the pairs' captions as token arrays (pair_tokens stage)
    out: Path = Path("data/train")  # where phi goes; a method may write what it drew there too
    log: Callable[[int, dict], None] = lambda step, values: None
    validation: Validation | None = None


@dataclass(frozen=True)
class Method:
    config: type  # dataclass of the method's params section (`method: <name>` reads section <name>)
    train: Callable[[Run], torch.nn.Module]
    reads: tuple[str, ...] = field(default=())  # prepared data it trains on, for the docs and errors
    images: bool = False  # trains on image latents (their cost counts in `lincir perf methods`)


METHODS: Registry[Method] = Registry("method")

from pipeline.methods import lincir, masked_inversion, pic2word, searle  # noqa: E402,F401  (register themselves)


def method_config(params: dict) -> tuple[str, Method, object]:
    """(name, Method, its typed config) of params.yaml's `method`, from the section named after it."""
    from pipeline.core.params import section, typed

    name = params.get("method", "lincir")
    method = METHODS.get(name)
    return name, method, typed(method.config, section(params, name), name)
