"""What one training step computes on: which rows (seeded by step, bucketed by length), in which
precision, and under torchrun which share of them."""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from pipeline.model.text_encoder import TextTower, encode

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    def from_env(cls, device: str) -> Dist:
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
        with autocast(device, dtype):
            out.append(encode(tower, rows(ids, slice(i, min(hi, i + batch_size)), device), truncate=truncate).float())
    mine = torch.cat(out) if out else torch.zeros(0, device=device)
    if part.world == 1:
        return mine
    pieces = [torch.zeros((min(n, (r + 1) * share) - min(n, r * share), mine.shape[1]), device=device)
              for r in range(part.world)]
    dist.all_gather(pieces, mine)
    return torch.cat(pieces)


def autocast(device: str, dtype):
    return torch.autocast(device, dtype=dtype) if dtype is not None else nullcontext()


def rows(tokens, idx, device: str) -> torch.Tensor:
    """Token rows as int64 on `device`, from a numpy (memmap) array or a tensor already there."""
    if isinstance(tokens, torch.Tensor):
        return tokens[torch.as_tensor(idx, device=tokens.device) if not isinstance(idx, slice) else idx].long()
    return torch.from_numpy(np.asarray(tokens[idx]).astype(np.int64)).to(device, non_blocking=True)
