"""phi: the projection from the joint embedding space (d) to one token embedding (w).

One PHI entry per architecture, each built from the widths as its official code builds it:
- `paper`: LinCIR §4.1, LayerNorm -> Linear(d,4d) -> GELU -> Linear(4d,4d) -> GELU ->
  Linear(4d,w) -> LayerNorm, dropout after each GELU;
- `official`: the same without the two LayerNorms: navervision/lincir's code and released
  checkpoints, and miccunifi/SEARLE's `Phi` (src/phi.py builds this very layout);
- `pic2word`: Pic2Word's IM2TEXT (google-research/composed_image_retrieval, model/model.py):
  two blocks Linear -> Dropout -> ReLU of `hidden` units (512 by default, its `--middle_dim`),
  then Linear(hidden, w); its parameter names (`layers.0.0`, `fc_out`) are the official ones.
A checkpoint records its variant, widths and dropout (and `hidden` where the architecture
has a free one), so `load_phi` rebuilds any method's phi.

`load_phi` reads this pipeline's checkpoints ({"state_dict", "config"}) and the authors'
released ones (`lincir_large.pt` ...: {"Phi": state dict of `layers.0/3/6`}), telling them
apart by their keys (CHECKPOINT_FORMATS).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.core.io import save_checkpoint
from pipeline.core.registry import Registry

PHI = Registry("phi variant")


def _mlp(d: int, w: int, dropout: float, hidden: int) -> list[nn.Module]:
    return [nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, w)]


@PHI.register("paper")
def paper(d: int, w: int, dropout: float, hidden: int | None = None) -> nn.Module:
    return nn.Sequential(nn.LayerNorm(d), *_mlp(d, w, dropout, hidden or 4 * d), nn.LayerNorm(w))


@PHI.register("official")
def official(d: int, w: int, dropout: float, hidden: int | None = None) -> nn.Module:
    return nn.Sequential(*_mlp(d, w, dropout, hidden or 4 * d))


class IM2TEXT(nn.Module):
    """Pic2Word's mapping network: `layers` (Linear -> Dropout -> ReLU, twice), then `fc_out`."""

    def __init__(self, d: int, hidden: int, w: int, dropout: float, blocks: int = 2):
        super().__init__()
        widths = [d] + [hidden] * blocks
        self.layers = nn.Sequential(*(nn.Sequential(nn.Linear(a, b), nn.Dropout(dropout), nn.ReLU())
                                      for a, b in zip(widths, widths[1:])))
        self.fc_out = nn.Linear(hidden, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.layers(x))


PIC2WORD_HIDDEN = 512  # IM2TEXT's middle_dim, the default of Pic2Word's --middle_dim


@PHI.register("pic2word")
def pic2word(d: int, w: int, dropout: float, hidden: int | None = None) -> nn.Module:
    return IM2TEXT(d, hidden or PIC2WORD_HIDDEN, w, dropout)


def build_phi(variant: str, embed_dim: int, token_width: int, dropout: float, hidden: int | None = None) -> nn.Module:
    """phi of architecture `variant`; `hidden` None: the architecture's own width (4d, or 512)."""
    return PHI.get(variant)(embed_dim, token_width, dropout, hidden)


def save_phi(phi: nn.Module, config: dict, path) -> None:

    save_checkpoint(phi, path, extra={"config": config})


def _pipeline_format(ckpt: dict, path) -> tuple[dict, dict]:
    return ckpt["config"], ckpt["state_dict"]


def _authors_format(ckpt: dict, path) -> tuple[dict, dict]:
    """The released `{"Phi": layers.*}` of navervision/lincir: its Sequential has the same
    indices (0, 3, 6) as the `official` variant here, so only the `layers.` prefix goes."""
    state = {k.removeprefix("layers."): v for k, v in ckpt["Phi"].items()}
    expected = {f"{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")}
    if set(state) != expected:
        raise PipelineError(f"{path}: 'Phi' has keys {sorted(ckpt['Phi'])}; an authors' phi has "
                            f"layers.0/3/6.weight/bias")
    d, w, hidden = state["0.weight"].shape[1], state["6.weight"].shape[0], state["0.weight"].shape[0]
    if hidden != 4 * d:
        raise PipelineError(f"{path}: hidden width {hidden} is not 4 x the input width {d}, as phi here builds it")
    # dropout is inactive at inference; 0.5 is the authors' training value
    return {"variant": "official", "embed_dim": d, "token_width": w, "dropout": 0.5}, state


# a checkpoint's top-level key -> how to read it
CHECKPOINT_FORMATS = {"config": _pipeline_format, "Phi": _authors_format}


def read_phi_checkpoint(path) -> tuple[dict, dict]:
    """(config, state dict) of a phi checkpoint in either format; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"phi checkpoint {path} not found: train phi (dvc repro train) or pass another file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or one holding more than tensors
        raise PipelineError(f"{path} is not a readable phi checkpoint: {type(e).__name__}: {e}") from None
    for key, read in CHECKPOINT_FORMATS.items():
        if isinstance(ckpt, dict) and key in ckpt:
            return read(ckpt, path)
    found = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
    raise PipelineError(f"{path} is not a phi checkpoint of this pipeline ({{'state_dict', 'config'}}) nor of the "
                        f"authors ({{'Phi': ...}}); found {found}")


def load_phi(path, device: str = "cpu") -> nn.Module:
    c, state = read_phi_checkpoint(path)
    phi = build_phi(c["variant"], c["embed_dim"], c["token_width"], c["dropout"], c.get("hidden"))
    phi.load_state_dict(state)
    return phi.to(device).eval()


def widths(phi: nn.Module) -> tuple[int, int]:
    """(d, w): the joint-embedding width phi reads and the token width it writes."""
    linears = [m for m in phi.modules() if isinstance(m, nn.Linear)]
    return linears[0].in_features, linears[-1].out_features


def check_widths(phi: nn.Module, embed_dim: int, token_width: int, what: str) -> None:
    """Refuses a phi made for another backbone, naming both sides' widths."""
    d, w = widths(phi)
    if (d, w) != (embed_dim, token_width):
        raise PipelineError(f"{what} maps a {d}-d embedding to a {w}-wide token, but the backbone has a "
                            f"{embed_dim}-d joint embedding and a {token_width}-wide text transformer: "
                            "use the phi trained for this backbone")
