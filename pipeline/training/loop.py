"""The training loop every method shares (nanoGPT-style: one readable function, `fit`).

A method hands `fit` an Objective: how many training rows it has and the loss of a batch of
them (LinCIR's SMP in pipeline/methods/lincir.py; the others beside it), and the Recipe phi is
built and optimised with (pipeline/training/recipe.py; LinCIR's, from `train`, by default).
`fit` runs AdamW on phi for `train.steps` batches, logs the loss, scores phi on the dev benchmark
and keeps the best, and saves a resumable state every `checkpoint_every` steps.

Speed without changing the result: bf16 autocast and fused AdamW on GPU, batches bucketed
by length, data parallel over GPUs when started with torchrun (DDP). Every step's randomness
(batch order, noise, dropout) is derived from (seed, step), so a run resumed from a
checkpoint continues exactly as if it had never stopped.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from pipeline.core.errors import PipelineError, quoted
from pipeline.core.params import at_least, below, section, typed
from pipeline.model.phi import PHI, build_phi
from pipeline.model.text_encoder import TextTower
from pipeline.training.batches import PRECISIONS, Dist, autocast, batch_indices
from pipeline.training.recipe import RECIPES, Recipe, assign_lr, shared
from pipeline.training.resume import resumable, save_training_state


@dataclass
class TrainConfig:
    steps: int = 4000
    batch_size: int = 512  # global: split across processes under torchrun
    lr: float = 1e-4
    weight_decay: float = 0.01
    phi_variant: str = "paper"
    dropout: float = 0.5
    seed: int = 0
    cache_targets: bool = True  # z_c of every caption computed once instead of every step
    truncate: bool = True  # cut each batch after its longest EOT (exact)
    bucket_by_length: bool = True  # batches of captions of similar length: less padding
    precision: str = "auto"  # auto: bf16 on GPU, fp32 on CPU; or fp32, bf16, fp16
    compile: bool = False  # torch.compile the text tower + phi step
    checkpoint_every: int = 200
    log_every: int = 10  # steps between logged points (reading the loss waits for the GPU)
    validate_every: int = 50  # score phi on the dev benchmark every N steps and keep the best; 0: off
    validate_on: str = "world_dev"  # the dev benchmark's name in params.yaml `benchmarks` (stages/train.py)
    validate_metric: str = "R@50"  # the paper selects by CIRR dev R@1; on the world R@1 is a query or two
    patience: int = 4  # validations without a better score before training stops (early stopping); 0: never
    recipe: str = "authors"  # RECIPES: each method's own phi and optimiser, or LinCIR's for every method

    def check(self) -> None:
        PHI.get(self.phi_variant), RECIPES.get(self.recipe)  # before any work
        if self.precision != "auto" and self.precision not in PRECISIONS:
            raise PipelineError(f"unknown train.precision {quoted(self.precision)}; valid: auto, {', '.join(PRECISIONS)}")
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            at_least(f"train.{name}", getattr(self, name), 1)
        for name in ("seed", "validate_every", "patience"):
            at_least(f"train.{name}", getattr(self, name), 0)
        if self.validate_every and not self.validate_on:
            raise PipelineError("params.yaml: train.validate_every needs train.validate_on, a benchmark name")
        if self.patience and not self.validate_every:
            raise PipelineError("params.yaml: train.patience (early stopping) needs train.validate_every > 0")
        for name in ("weight_decay", "dropout"):
            at_least(f"train.{name}", getattr(self, name), 0)
        below("train.dropout", self.dropout, 1)
        if self.lr <= 0:
            raise PipelineError(f"params.yaml: train.lr must be positive, not {self.lr!r}")

    def autocast_dtype(self, device: str):
        return PRECISIONS[("bf16" if device == "cuda" else "fp32") if self.precision == "auto" else self.precision]


def train_config(params: dict) -> TrainConfig:
    """params.yaml `train`, typed and checked."""
    return typed(TrainConfig, section(params, "train"), "train")


@dataclass
class Validation:
    """Scores phi on a dev benchmark every `every` steps and at the last one; train_phi then
    returns the best phi (the paper keeps the checkpoint with the best CIRR dev R@1) and
    records here where it was."""

    score: Callable[[torch.nn.Module], float]
    every: int
    best_step: int = -1  # steps trained by the best phi
    best_score: float = float("-inf")
    best_state: dict | None = None

    def due(self, done: int, steps: int) -> bool:
        return done % self.every == 0 or done == steps

    def exhausted(self, done: int, patience: int) -> bool:
        """`patience` validations in a row without a better score (0: never): training stops there."""
        return patience > 0 and done - self.best_step >= patience * self.every

    @torch.no_grad()
    def check(self, phi: torch.nn.Module, done: int) -> float:
        phi.eval()
        value = float(self.score(phi))
        phi.train()
        if value > self.best_score:  # ties keep the earlier, shorter-trained phi
            self.best_step, self.best_score = done, value
            self.best_state = {k: v.detach().clone() for k, v in phi.state_dict().items()}
        return value


def new_phi(tower: TextTower, embed_dim: int, cfg: TrainConfig, device: str,
            recipe: Recipe | None = None) -> torch.nn.Module:
    """phi at its seeded initialisation, of the recipe's architecture (LinCIR's: `train`'s)."""
    recipe = recipe or shared(cfg)
    torch.manual_seed(cfg.seed)
    return build_phi(recipe.phi, embed_dim, tower.width, recipe.dropout, recipe.hidden).to(device)


@dataclass
class Objective:
    """What `fit` trains phi on: `rows` training rows (captions, or images) and the loss of the
    batch of rows `idx`, `loss(model, idx, gen)`; `gen` draws the step's noise. LinCIR's is
    `smp_objective`; the other methods' are in pipeline/methods/."""

    rows: int
    loss: Callable[[torch.nn.Module, np.ndarray, torch.Generator], torch.Tensor]
    lengths: np.ndarray | None = None  # tokens a row, to bucket batches by length; None: no bucketing
    name: str = "SMP"


def fit(phi: torch.nn.Module, objective: Objective, cfg: TrainConfig, *, device: str, checkpoint: Path,
        fingerprint: str = "", log: Callable[[int, dict], None] = lambda step, values: None,
        validation: Validation | None = None, recipe: Recipe | None = None) -> torch.nn.Module:
    """The training loop every method shares: AdamW on phi for cfg.steps batches of the objective's
    rows, with the recipe's settings and schedule (LinCIR's, `train`'s, when None). Returns phi
    (unwrapped, in eval mode), the best one on `validation` when given.
    `log(step, {"loss": ...})` sees every logged point once, those of a resumed run's earlier
    part first (they are in the checkpoint); validation scores come as {"val_<metric>": ...}."""
    cfg.check()
    part = Dist.from_env(device)
    dtype = cfg.autocast_dtype(device)
    recipe = recipe or shared(cfg)
    opt = recipe.optimizer(phi, fused=device == "cuda")  # fused: one kernel for the whole AdamW update
    start, history = 0, []
    state = resumable(checkpoint, cfg, fingerprint, device)
    if state:
        phi.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        start, history = state["step"], state["history"]
        if validation and state.get("best"):
            validation.best_step, validation.best_score, validation.best_state = state["best"]
        print(f"resuming phi training at step {start} from {checkpoint}")
        for step, values in history:
            log(step, values)
    model = torch.nn.parallel.DistributedDataParallel(phi) if part.world > 1 else phi
    bucket = objective.lengths if cfg.bucket_by_length else None
    phi.train()
    if part.rank == 0 and cfg.checkpoint_every < cfg.steps:
        # a killed process cannot say this afterwards (DVC only reports `exited with -9`)
        print(f"phi training saves its state to {checkpoint} every {cfg.checkpoint_every} steps: if this run is "
              "stopped or killed, `dvc repro` (or `make repro`) resumes it from there", flush=True)
    bar = tqdm(range(start, cfg.steps), desc=f"phi training ({objective.name})", unit="step", initial=start,
               total=cfg.steps, disable=part.rank > 0)
    for step in bar:
        idx = batch_indices(objective.rows, cfg.batch_size, cfg.seed, step, bucket)[part.rank::part.world]
        seed = (cfg.seed * 1_000_003 + step) * 64 + part.rank
        gen = torch.Generator(device).manual_seed(seed)  # noise
        torch.manual_seed(seed)  # dropout
        with autocast(device, dtype):
            loss = objective.loss(model, idx, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        assign_lr(opt, recipe.lr_at(step, cfg.steps))
        opt.step()
        stop = False
        if part.rank == 0:
            if step % cfg.log_every == 0 or step + 1 == cfg.steps:
                # only the loss is logged: a wall-clock rate would make DVC-tracked files differ run to run
                values = {"loss": finite_loss(loss.item(), step, cfg)}
                history.append((step, values))
                log(step, values)
                bar.set_postfix(loss=f"{values['loss']:.4f}")
            if validation and validation.due(step + 1, cfg.steps):
                values = {f"val_{cfg.validate_metric}": validation.check(phi, step + 1)}
                history.append((step, values))
                log(step, values)
                stop = validation.exhausted(step + 1, cfg.patience)
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                best = (validation.best_step, validation.best_score, validation.best_state) if validation else None
                try:
                    save_training_state(phi, opt, step + 1, cfg, fingerprint, checkpoint, history, best)
                except (PipelineError, OSError) as e:  # a checkpoint only saves time: train on without it
                    tqdm.write(f"warning: no checkpoint at step {step + 1}: {e}")
        if cfg.patience and part.world > 1:  # every process stops at the same step
            flag = torch.tensor([float(stop)], device=device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        if stop:
            if part.rank == 0:
                print(f"early stop after step {step + 1}: val_{cfg.validate_metric} has not improved on "
                      f"{validation.best_score:.4g} (step {validation.best_step}) for {cfg.patience} validations")
            break
    if validation and validation.best_state is not None and part.rank == 0:
        phi.load_state_dict(validation.best_state)
    bad = [name for name, p in phi.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise PipelineError(f"phi training diverged: {', '.join(bad[:4])} hold NaN or inf at the end of training; "
                            f"lower train.lr (now {cfg.lr:g})")
    return phi.eval()


def finite_loss(value: float, step: int, cfg: TrainConfig) -> float:
    """The loss, or an error once it is NaN or inf: phi's weights are then NaN too, and every later
    step and the phi saved would be worthless (evaluate would rank every image alike)."""
    if not np.isfinite(value):
        raise PipelineError(f"phi training diverged: the loss is {value} at step {step}; lower train.lr "
                            f"(now {cfg.lr:g}) or check the inputs")
    return value
