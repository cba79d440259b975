"""phi: the projection from the joint embedding space (d) to one token embedding (w).

`paper` is §4.1 of the paper: LayerNorm -> Linear(d,4d) -> GELU -> Linear(4d,4d) -> GELU
-> Linear(4d,w) -> LayerNorm, dropout after each GELU. `official` is the released code's
(and checkpoints') variant: the same without the two LayerNorms.
"""
from __future__ import annotations

import torch
from torch import nn

from pipeline.core.registry import Registry

PHI = Registry("phi variant")


def _mlp(d: int, w: int, dropout: float) -> list[nn.Module]:
    return [nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(4 * d, 4 * d), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(4 * d, w)]


@PHI.register("paper")
def paper(d: int, w: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.LayerNorm(d), *_mlp(d, w, dropout), nn.LayerNorm(w))


@PHI.register("official")
def official(d: int, w: int, dropout: float) -> nn.Module:
    return nn.Sequential(*_mlp(d, w, dropout))


def build_phi(variant: str, embed_dim: int, token_width: int, dropout: float) -> nn.Module:
    return PHI.get(variant)(embed_dim, token_width, dropout)


def save_phi(phi: nn.Module, config: dict, path) -> None:
    from pipeline.backbone import save_checkpoint  # one atomic writer for every checkpoint

    save_checkpoint(phi, path, extra={"config": config})


def load_phi(path, device: str = "cpu") -> nn.Module:
    ckpt = torch.load(path, map_location=device, weights_only=True)
    c = ckpt["config"]
    phi = build_phi(c["variant"], c["embed_dim"], c["token_width"], c["dropout"]).to(device)
    phi.load_state_dict(ckpt["state_dict"])
    return phi.eval()
