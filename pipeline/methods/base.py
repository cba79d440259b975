"""What a zero-shot CIR method is to the train stage: a config dataclass, a `train(run)` that
returns phi, and the recipe its authors build and optimise phi with, registered by name in
METHODS."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.core.params import section, typed
from pipeline.core.registry import Registry
from pipeline.training.loop import TrainConfig, Validation
from pipeline.training.recipe import RECIPES, Recipe, shared


@dataclass
class Run:
    """What the train stage hands a method: the frozen backbone, the shared training config,
    the method's own typed config, where the prepared data is, and where to log and resume."""

    backbone: object  # pipeline.model.backbone.Backbone
    tower: object  # pipeline.model.text_encoder.TextTower
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
    recipe: Recipe | None = None  # phi's architecture and optimiser (`phi_recipe`); None: LinCIR's, `train`'s


@dataclass(frozen=True)
class Method:
    config: type  # dataclass of the method's params section (`method: <name>` reads section <name>)
    train: Callable[[Run], torch.nn.Module]
    reads: tuple[str, ...] = field(default=())  # prepared data it trains on, for the docs and errors
    images: bool = False  # trains on image latents (their cost counts in `lincir perf methods`)
    top_level: tuple[str, ...] = ()  # top-level params.yaml keys merged into its config (LinCIR: noise)
    # (its config, train's) -> the recipe of its official code; LinCIR's is train's own
    recipe: Callable[[object, TrainConfig], Recipe] = field(default=lambda config, cfg: shared(cfg))


METHODS: Registry[Method] = Registry("method")


def method_config(params: dict, name: str | None = None) -> tuple[str, Method, object]:
    """(name, Method, its typed config) of params.yaml's `method` (or `name`), from the section named
    after it and the top-level params the method reads (LinCIR's `noise`)."""
    name = name or params.get("method", "lincir")
    method = METHODS.get(name)
    values = section(params, name)
    return name, method, typed(method.config, {**values, **{key: params.get(key) for key in method.top_level}}, name)


def phi_recipe(method: Method, config, cfg: TrainConfig) -> Recipe:
    """The recipe phi is trained with: the method's own, or LinCIR's for every method
    (`train.recipe: controlled`)."""
    return RECIPES.get(cfg.recipe)(method.recipe(config, cfg), cfg)
