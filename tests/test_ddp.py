"""The multi-GPU path's CPU core: the same train_phi under two gloo processes (what torchrun
does with NCCL on GPUs) keeps phi identical on every rank."""
import os
import socket
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.methods.lincir import train_phi
from pipeline.model import backbone as backbones
from pipeline.model.text_encoder import text_tower
from pipeline.training.loop import TrainConfig, new_phi

CAPTIONS = ["a small red circle on the left", "a big blue star on a black background", "a tiny green cross",
            "a yellow square that is large"] * 8
MASKED = ["$ on $", "$ on $", "$", "$ that is $"] * 8


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    b = backbones.freeze(backbones.create("lincir-world-vit", None))
    tower = text_tower(b.model, b.tokenizer)
    ids = b.tokenizer(CAPTIONS).numpy().astype(np.uint16)
    masked = b.tokenizer(MASKED).numpy().astype(np.uint16)
    cfg = TrainConfig(steps=3, batch_size=16, lr=1e-3, checkpoint_every=100, log_every=1)
    init = new_phi(tower, backbones.embed_dim(b), cfg, "cpu")
    phi = train_phi(tower, backbones.embed_dim(b), ids, masked, cfg, device="cpu", checkpoint=Path(out) / f"ckpt{rank}.pt")
    torch.save({"init": flat(init), "trained": flat(phi)}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_training_keeps_phi_in_sync(tmp_path):
    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(a["trained"], b["trained"])  # gradients were averaged across the two processes
    assert not torch.allclose(a["trained"], a["init"])  # and phi did learn
    assert torch.isfinite(a["trained"]).all()
