"""How phi is built and optimised: its architecture and dropout, AdamW's settings and the
learning-rate schedule.

LinCIR's recipe is `train`'s (`shared`: train.phi_variant, dropout, lr, weight_decay; AdamW at a
constant rate). A method whose authors built phi otherwise gives its own (pipeline/methods/:
Pic2Word's IM2TEXT with warm-up and cosine decay). `train.recipe` picks (RECIPES): `authors`,
each method as its official code trains it, or `controlled`, every method with LinCIR's recipe,
so that two methods differ in their supervision alone.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipeline.core.registry import Registry


@dataclass(frozen=True)
class Recipe:
    phi: str  # a PHI architecture (pipeline/model/phi.py)
    dropout: float
    lr: float
    weight_decay: float
    hidden: int | None = None  # phi's hidden width; None: the architecture's own (4d; IM2TEXT 512)
    betas: tuple[float, float] = (0.9, 0.999)  # torch's AdamW defaults
    eps: float = 1e-8
    decay_all: bool = True  # weight decay on every parameter; False: none on biases and norm gains
    schedule: str = "constant"  # SCHEDULES
    warmup: float = 0.0  # the fraction of the steps the learning rate rises linearly over

    def phi_config(self, embed_dim: int, token_width: int) -> dict:
        """What save_phi records, so load_phi rebuilds this phi."""
        config = {"variant": self.phi, "embed_dim": embed_dim, "token_width": token_width, "dropout": self.dropout}
        return config if self.hidden is None else {**config, "hidden": self.hidden}

    def optimizer(self, phi: torch.nn.Module, fused: bool) -> torch.optim.AdamW:
        if self.decay_all:
            groups = phi.parameters()
        else:  # Pic2Word's rule: no decay on biases and normalisation gains (their tensors are 1-d)
            params = [p for p in phi.parameters() if p.requires_grad]
            groups = [{"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
                      {"params": [p for p in params if p.ndim >= 2], "weight_decay": self.weight_decay}]
        return torch.optim.AdamW(groups, lr=self.lr, betas=tuple(self.betas), eps=self.eps,
                                 weight_decay=self.weight_decay, fused=fused)

    def lr_at(self, step: int, steps: int) -> float | None:
        """The learning rate of `step` (0-based) of `steps`; None: constant, the optimiser's own."""
        return SCHEDULES.get(self.schedule)(self.lr, step, steps, round(self.warmup * steps))


def assign_lr(opt: torch.optim.Optimizer, lr: float | None) -> None:
    """Sets every group's learning rate for the next step; None leaves them as they are."""
    if lr is not None:
        for group in opt.param_groups:
            group["lr"] = lr


SCHEDULES: Registry[Callable[[float, int, int, int], float | None]] = Registry("learning-rate schedule")
SCHEDULES.register("constant")(lambda lr, step, steps, warmup: None)


@SCHEDULES.register("warmup_cosine")
def warmup_cosine(lr: float, step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then a half cosine to 0 at `steps` (Pic2Word's cosine_lr)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))) * lr


def shared(cfg) -> Recipe:
    """LinCIR's recipe, from params.yaml `train` (a TrainConfig)."""
    return Recipe(cfg.phi_variant, cfg.dropout, cfg.lr, cfg.weight_decay)


# train.recipe: (the method's own recipe, the TrainConfig) -> the recipe phi is trained with
RECIPES: Registry[Callable[[Recipe, object], Recipe]] = Registry("train.recipe")
RECIPES.register("authors")(lambda own, cfg: own)
RECIPES.register("controlled")(lambda own, cfg: shared(cfg))
