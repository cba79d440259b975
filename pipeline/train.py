"""Training phi with Self-Masking Projection (SMP), the whole method in one loop.

For a batch of captions c with keyword-masked copies m (each masked span is one `$`):
    z_c  = E_text(c)                       frozen; computed once and cached by default
    z'   = z_c + noise_scale * n           n from the `noise` registry
    e    = phi(z')                         one pseudo-token a caption
    z^_c = E_text(m with every `$` -> e)
    loss = MSE(z^_c, z_c)                  only phi learns

Every step's randomness (batch order, noise, dropout) is derived from (seed, step), so
a run resumed from a checkpoint continues exactly as if it had never stopped.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.noise import NOISE, add_noise
from pipeline.phi import PHI, build_phi
from pipeline.text_encoder import TextTower, encode


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 512
    lr: float = 1e-4
    weight_decay: float = 0.01
    noise: str = "unif_gaussian"
    noise_scale: float = 1.0
    phi_variant: str = "paper"
    dropout: float = 0.5
    seed: int = 0
    cache_targets: bool = True  # z_c of every caption computed once instead of every step
    checkpoint_every: int = 200

    def check(self) -> None:
        NOISE.get(self.noise), PHI.get(self.phi_variant)  # unknown names fail before any work


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Epoch-wise shuffling without replacement, computable for any step (for resuming)."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[k * batch_size:(k + 1) * batch_size]


@torch.no_grad()
def text_latents(tower: TextTower, ids: np.ndarray, batch_size: int, device: str) -> torch.Tensor:
    out = [encode(tower, torch.from_numpy(ids[i:i + batch_size].astype(np.int64)).to(device))
           for i in tqdm(range(0, len(ids), batch_size), desc="caching z_c", unit="batch")]
    return torch.cat(out)


def new_phi(tower: TextTower, embed_dim: int, cfg: TrainConfig, device: str) -> torch.nn.Module:
    torch.manual_seed(cfg.seed)
    return build_phi(cfg.phi_variant, embed_dim, tower.width, cfg.dropout).to(device)


def train_phi(tower: TextTower, embed_dim: int, ids: np.ndarray, masked: np.ndarray, cfg: TrainConfig, *,
              device: str, checkpoint: Path, fingerprint: str = "", log: Callable[[int, float], None] = lambda step, loss: None,
              ) -> torch.nn.Module:
    cfg.check()
    phi = new_phi(tower, embed_dim, cfg, device)
    opt = torch.optim.AdamW(phi.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        if state["config"] == asdict(cfg) and state["fingerprint"] == fingerprint:
            phi.load_state_dict(state["state_dict"])
            opt.load_state_dict(state["optimizer"])
            start = state["step"]
            print(f"resuming phi training at step {start} from {checkpoint}")
    targets = text_latents(tower, ids, 4 * cfg.batch_size, device) if cfg.cache_targets else None
    phi.train()
    bar = tqdm(range(start, cfg.steps), desc="phi training (SMP)", unit="step", initial=start, total=cfg.steps)
    for step in bar:
        idx = batch_indices(len(ids), cfg.batch_size, cfg.seed, step)
        masked_ids = torch.from_numpy(masked[idx].astype(np.int64)).to(device)
        if targets is not None:
            z_c = targets[torch.from_numpy(idx).to(device)]
        else:
            with torch.no_grad():
                z_c = encode(tower, torch.from_numpy(ids[idx].astype(np.int64)).to(device))
        gen = torch.Generator(device).manual_seed(cfg.seed * 1_000_003 + step)
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout
        pseudo = phi(add_noise(z_c, cfg.noise, cfg.noise_scale, gen))
        loss = F.mse_loss(encode(tower, masked_ids, pseudo), z_c)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log(step, loss.item())
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            save_training_state(phi, opt, step + 1, cfg, fingerprint, checkpoint)
    return phi.eval()


def save_training_state(phi, opt, step: int, cfg: TrainConfig, fingerprint: str, path: Path) -> None:
    from pipeline.backbone import save_checkpoint

    save_checkpoint(phi, path, extra={"optimizer": opt.state_dict(), "step": step, "config": asdict(cfg),
                                      "fingerprint": fingerprint})
