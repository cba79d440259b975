"""Training phi with Self-Masking Projection (SMP), the whole method in one loop.

For a batch of captions c with keyword-masked copies m (each masked span is one `$`):
    z_c  = E_text(c)                       frozen; computed once and cached by default
    z'   = z_c + noise_scale * n           n from the `noise` registry
    e    = phi(z')                         one pseudo-token a caption
    z^_c = E_text(m with every `$` -> e)   m: the SUPERVISION kind, keyword-masked c by default
    loss = MSE(z^_c, z_c)                  only phi learns

Speed without changing the result: each batch is cut after its longest EOT (exact, see
text_encoder.py), z_c is cached, batches are bucketed by length so little padding is
computed, bf16 autocast and fused AdamW on GPU, token arrays on the GPU, optional
torch.compile, and data parallel over GPUs when started with torchrun (DDP).

Every step's randomness (batch order, noise, dropout) is derived from (seed, step), so
a run resumed from a checkpoint continues exactly as if it had never stopped.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.core.errors import PipelineError, quoted
from pipeline.core.params import at_least, below, section, typed
from pipeline.core.placeholder import PLACEHOLDER
from pipeline.core.registry import Registry
from pipeline.noise import NOISE, add_noise
from pipeline.phi import PHI, build_phi
from pipeline.text_encoder import TextTower, encode

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

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
class TrainConfig:
    steps: int = 1000
    batch_size: int = 512  # global: split across processes under torchrun
    lr: float = 1e-4
    weight_decay: float = 0.01
    noise: str = "unif_gaussian"
    noise_scale: float = 1.0
    phi_variant: str = "paper"
    dropout: float = 0.5
    seed: int = 0
    cache_targets: bool = True  # z_c of every caption computed once instead of every step
    truncate: bool = True  # cut each batch after its longest EOT (exact)
    bucket_by_length: bool = True  # batches of captions of similar length: less padding
    precision: str = "auto"  # auto: bf16 on GPU, fp32 on CPU; or fp32, bf16, fp16
    compile: bool = False  # torch.compile the text tower + phi step
    checkpoint_every: int = 250
    log_every: int = 10  # steps between logged points (reading the loss waits for the GPU)
    validate_every: int = 0  # score phi on the dev benchmark every N steps and keep the best; 0: off
    validate_on: str = ""  # the dev benchmark's name in params.yaml `benchmarks` (stages/train.py)
    validate_metric: str = "R@1"  # the paper selects by CIRR dev R@1
    supervision: str = "smp"  # SUPERVISION: what phi learns from (paper Tab. 7)

    def check(self) -> None:
        NOISE.get(self.noise), PHI.get(self.phi_variant), SUPERVISION.get(self.supervision)  # before any work
        if self.precision != "auto" and self.precision not in PRECISIONS:
            raise PipelineError(f"unknown train.precision {quoted(self.precision)}; valid: auto, {', '.join(PRECISIONS)}")
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            at_least(f"train.{name}", getattr(self, name), 1)
        for name in ("seed", "validate_every"):
            at_least(f"train.{name}", getattr(self, name), 0)
        if self.validate_every and not self.validate_on:
            raise PipelineError("params.yaml: train.validate_every needs train.validate_on, a benchmark name")
        for name in ("weight_decay", "noise_scale", "dropout"):
            at_least(f"train.{name}", getattr(self, name), 0)
        below("train.dropout", self.dropout, 1)
        if self.lr <= 0:
            raise PipelineError(f"params.yaml: train.lr must be positive, not {self.lr!r}")

    def autocast_dtype(self, device: str):
        return PRECISIONS[("bf16" if device == "cuda" else "fp32") if self.precision == "auto" else self.precision]


def train_config(params: dict) -> TrainConfig:
    """params.yaml `train`, with the top-level `noise`, typed and checked."""
    return typed(TrainConfig, {**section(params, "train"), "noise": params.get("noise")}, "train")


@lru_cache(maxsize=2)
def _epoch_batches(n: int, batch_size: int, seed: int, epoch: int, lengths_key: bytes | None) -> np.ndarray:
    """[batches per epoch, batch_size] row numbers; each caption once per epoch."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    per_epoch = max(1, n // batch_size)
    if lengths_key is not None:
        # bucket: sort windows of 64 batches by length, then shuffle the order of the batches
        lengths = np.frombuffer(lengths_key, dtype=np.int32)
        window = 64 * batch_size
        order = np.concatenate([w[np.argsort(lengths[w], kind="stable")] for w in np.split(order, range(window, n, window))])
        batches = order[:per_epoch * batch_size].reshape(per_epoch, -1)
        return batches[rng.permutation(per_epoch)]
    return order[:per_epoch * batch_size].reshape(per_epoch, -1)


def batch_indices(n: int, batch_size: int, seed: int, step: int, lengths: np.ndarray | None = None) -> np.ndarray:
    """The rows of global batch `step`: computable for any step, so a resumed run continues exactly."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    key = None if lengths is None else np.ascontiguousarray(lengths, dtype=np.int32).tobytes()
    return _epoch_batches(n, min(batch_size, n), seed, epoch, key)[k]


@dataclass
class Dist:
    """This process's place under torchrun; rank 0 of 1 otherwise."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, device: str) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device == "cuda" else "gloo")
        return cls(int(os.environ.get("RANK", "0")), world)


@torch.no_grad()
def text_latents(tower: TextTower, ids, batch_size: int, device: str, dtype, truncate: bool = True,
                 part: Dist = Dist()) -> torch.Tensor:
    """z_c of every row, fp32 [N, d]; under DDP each process encodes its share, then all gather."""
    n = len(ids)
    share = -(-n // part.world)
    lo, hi = min(n, part.rank * share), min(n, (part.rank + 1) * share)
    out = []
    for i in tqdm(range(lo, hi, batch_size), desc="caching z_c", unit="batch", disable=part.rank > 0):
        with _autocast(device, dtype):
            out.append(encode(tower, _rows(ids, slice(i, min(hi, i + batch_size)), device), truncate=truncate).float())
    mine = torch.cat(out) if out else torch.zeros(0, device=device)
    if part.world == 1:
        return mine
    pieces = [torch.zeros((min(n, (r + 1) * share) - min(n, r * share), mine.shape[1]), device=device)
              for r in range(part.world)]
    dist.all_gather(pieces, mine)
    return torch.cat(pieces)


def _autocast(device: str, dtype):
    return torch.autocast(device, dtype=dtype) if dtype is not None else nullcontext()


def _rows(tokens, idx, device: str) -> torch.Tensor:
    """Token rows as int64 on `device`, from a numpy (memmap) array or a tensor already there."""
    if isinstance(tokens, torch.Tensor):
        return tokens[torch.as_tensor(idx, device=tokens.device) if not isinstance(idx, slice) else idx].long()
    return torch.from_numpy(np.asarray(tokens[idx]).astype(np.int64)).to(device, non_blocking=True)


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

    @torch.no_grad()
    def check(self, phi: torch.nn.Module, done: int) -> float:
        phi.eval()
        value = float(self.score(phi))
        phi.train()
        if value > self.best_score:  # ties keep the earlier, shorter-trained phi
            self.best_step, self.best_score = done, value
            self.best_state = {k: v.detach().clone() for k, v in phi.state_dict().items()}
        return value


def new_phi(tower: TextTower, embed_dim: int, cfg: TrainConfig, device: str) -> torch.nn.Module:
    torch.manual_seed(cfg.seed)
    return build_phi(cfg.phi_variant, embed_dim, tower.width, cfg.dropout).to(device)


def smp_loss(tower: TextTower, phi: torch.nn.Module, masked_ids: torch.Tensor, z_c: torch.Tensor, cfg: TrainConfig,
             gen: torch.Generator, source: torch.Tensor | None = None) -> torch.Tensor:
    """The SMP objective of one batch: MSE between E(masked caption with $ = phi(z_c + noise)) and z_c.
    With `source` (image latents of the captions' images), phi reads source + noise instead."""
    pseudo = phi(add_noise(z_c if source is None else source, cfg.noise, cfg.noise_scale, gen))
    return F.mse_loss(encode(tower, masked_ids, pseudo, truncate=cfg.truncate).float(), z_c)


@dataclass
class Objective:
    """What `fit` trains phi on: `rows` training rows (captions, or images) and the loss of the
    batch of rows `idx`, `loss(model, idx, gen)`; `gen` draws the step's noise. LinCIR's is
    `smp_objective`; the other methods' are in pipeline/methods/."""

    rows: int
    loss: Callable[[torch.nn.Module, np.ndarray, torch.Generator], torch.Tensor]
    lengths: np.ndarray | None = None  # tokens a row, to bucket batches by length; None: no bucketing
    name: str = "SMP"


def smp_objective(tower: TextTower, ids, masked, cfg: TrainConfig, device: str, part: "Dist",
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
                z_c = encode(tower, _rows(ids, idx, device), truncate=cfg.truncate).float()
        source = None if sources is None else torch.from_numpy(np.asarray(sources[idx], np.float32)).to(device)
        return step_loss(tower, model, _rows(masked, idx, device), z_c, cfg, gen, source)

    return Objective(len(ids), loss, lengths)


def train_phi(tower: TextTower, embed_dim: int, ids, masked, cfg: TrainConfig, *, device: str, checkpoint: Path,
              fingerprint: str = "", lengths: np.ndarray | None = None,
              log: Callable[[int, dict], None] = lambda step, values: None,
              validation: Validation | None = None, sources: np.ndarray | None = None) -> torch.nn.Module:
    """LinCIR: phi trained with SMP. ids/masked: [N, C] token arrays (numpy, memmap or tensors);
    lengths: masked tokens a row (for bucketing); sources: [N, d] latents phi reads instead of
    z_c (image latents of the captions' images), or None."""
    cfg.check()
    objective = smp_objective(tower, ids, masked, cfg, device, Dist.from_env(device), lengths, sources)
    return fit(new_phi(tower, embed_dim, cfg, device), objective, cfg, device=device, checkpoint=checkpoint,
               fingerprint=fingerprint, log=log, validation=validation)


def fit(phi: torch.nn.Module, objective: Objective, cfg: TrainConfig, *, device: str, checkpoint: Path,
        fingerprint: str = "", log: Callable[[int, dict], None] = lambda step, values: None,
        validation: Validation | None = None) -> torch.nn.Module:
    """The training loop every method shares: AdamW on phi for cfg.steps batches of the objective's
    rows. Returns phi (unwrapped, in eval mode), the best one on `validation` when given.
    `log(step, {"loss": ...})` sees every logged point once, those of a resumed run's earlier
    part first (they are in the checkpoint); validation scores come as {"val_<metric>": ...}."""
    cfg.check()
    part = Dist.from_env(device)
    dtype = cfg.autocast_dtype(device)
    fused = device == "cuda"  # one kernel for the whole AdamW update
    opt = torch.optim.AdamW(phi.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
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
    bar = tqdm(range(start, cfg.steps), desc=f"phi training ({objective.name})", unit="step", initial=start,
               total=cfg.steps, disable=part.rank > 0)
    for step in bar:
        idx = batch_indices(objective.rows, cfg.batch_size, cfg.seed, step, bucket)[part.rank::part.world]
        seed = (cfg.seed * 1_000_003 + step) * 64 + part.rank
        gen = torch.Generator(device).manual_seed(seed)  # noise
        torch.manual_seed(seed)  # dropout
        with _autocast(device, dtype):
            loss = objective.loss(model, idx, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if part.rank > 0:
            continue
        if step % cfg.log_every == 0 or step + 1 == cfg.steps:
            # only the loss is logged: a wall-clock rate would make DVC-tracked files differ run to run
            values = {"loss": loss.item()}
            history.append((step, values))
            log(step, values)
            bar.set_postfix(loss=f"{values['loss']:.4f}")
        if validation and validation.due(step + 1, cfg.steps):
            values = {f"val_{cfg.validate_metric}": validation.check(phi, step + 1)}
            history.append((step, values))
            log(step, values)
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            best = (validation.best_step, validation.best_score, validation.best_state) if validation else None
            save_training_state(phi, opt, step + 1, cfg, fingerprint, checkpoint, history, best)
    if validation and validation.best_state is not None and part.rank == 0:
        phi.load_state_dict(validation.best_state)
    return phi.eval()


def resumable(checkpoint: Path, cfg: TrainConfig, fingerprint: str, device: str = "cpu") -> dict | None:
    """The saved state of a killed run, if `checkpoint` is from a run of this config on these inputs
    with this code (the fingerprint). An unreadable checkpoint is ignored with a warning: it only
    saves time, and training from step 0 gives the same phi."""
    if not Path(checkpoint).is_file():
        return None
    try:
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        match = state["config"] == asdict(cfg) and state["fingerprint"] == fingerprint
        if match and not 0 < state["step"] < cfg.steps:
            raise ValueError(f"step {state['step']} is outside 1..{cfg.steps - 1}")
    except Exception as e:  # noqa: BLE001  (torch raises many kinds for a damaged file)
        print(f"warning: ignoring the unreadable checkpoint {checkpoint} ({type(e).__name__}: {str(e)[:200]}); "
              f"training from step 0")
        return None
    return state if match else None


def save_training_state(phi, opt, step: int, cfg: TrainConfig, fingerprint: str, path: Path,
                        history: list, best: tuple | None = None) -> None:
    from pipeline.backbone import save_checkpoint

    save_checkpoint(phi, path, extra={"optimizer": opt.state_dict(), "step": step, "config": asdict(cfg),
                                      "fingerprint": fingerprint, "history": history, "best": best})
