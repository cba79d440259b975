"""A small world to search in, built in seconds: world images (pipeline.data.world.render) of every
shape x colour, a lincir-world-vit backbone whose image tower is aligned to its text tower in
closed form, and a phi constructed (not learned) to map an image latent to its shape's word.

Why constructed: training the world backbone and phi takes minutes on a CPU. Here the
visual projection is fitted by ridge regression so that an image's latent is the text
feature of "a photo of {shape} that is {colour}", and phi (the `official` MLP, its GELUs
run where they are linear) maps a latent to the token embedding of its shape. LinCIR's
composed query "a photo of $ that is blue" with $ = phi(a red circle) is then the text of
the blue circles: it finds them only if the index, phi, the placeholder swap and the
ranking all work; without the reference (text only) the shape is unknown.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.core import io
from pipeline.data.world.attributes import COLOURS, SHAPES, Thing
from pipeline.data.world.render import render
from pipeline.model import backbone as backbones
from pipeline.model.phi import build_phi, save_phi

RENDERS = 2  # images of each shape x colour
LIFT = 10.0  # phi's hidden units run at GELU(x + LIFT) = x + LIFT: the MLP is linear there


def thing_path(shape: str, colour: str, i: int) -> str:
    return f"{shape}/{colour}-{i}.png"  # a folder per shape: indexing is recursive


def write_images(folder: Path) -> list[tuple[str, Thing]]:
    rng = np.random.default_rng(0)
    out = []
    for shape in SHAPES:
        for colour in COLOURS:
            for i in range(RENDERS):
                thing = Thing(shape, colour, "large", "center", "white")
                path = folder / thing_path(shape, colour, i)
                path.parent.mkdir(parents=True, exist_ok=True)
                render(thing, 64, rng).save(path)
                out.append((thing_path(shape, colour, i), thing))
    return out


def _ridge(x: torch.Tensor, y: torch.Tensor, lam: float = 1e-3) -> torch.Tensor:
    return torch.linalg.solve(x.T @ x + lam * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)


@torch.no_grad()
def build(workdir: Path) -> dict:
    """Images under workdir/photos, backbone.json + weights, phi.pt; returns their paths."""
    photos = workdir / "photos"
    things = write_images(photos)
    torch.manual_seed(0)
    backbone = backbones.freeze(backbones.create("lincir-world-vit", None))
    model, tok = backbone.model, backbone.tokenizer
    images = torch.stack([backbone.preprocess(_open(photos / p)) for p, _ in things]).double()
    model.double()
    model.visual.proj = None  # the tower's pooled features
    pooled = model.encode_image(images)
    texts = model.encode_text(tok([f"a photo of {t.shape} that is {t.colour}" for _, t in things]))
    model.visual.proj = nn.Parameter(_ridge(pooled, texts))
    model.float()
    weights = workdir / "backbone" / "aligned.pt"
    io.save_checkpoint(model, weights)
    identity = {"model": "lincir-world-vit", "pretrained": str(weights), "sha256": io.file_sha256(weights)}
    (workdir / "backbone" / "backbone.json").write_text(json.dumps(identity))

    latents = model.encode_image(images.float()).double()
    words = model.token_embedding.weight[[tok([t.shape])[0][1] for _, t in things]].double()
    phi = linear_phi(_ridge(latents, words).T.float())
    config = {"variant": "official", "embed_dim": 128, "token_width": 128, "dropout": 0.5}
    save_phi(phi, config, workdir / "phi.pt")
    return {"photos": photos, "backbone": workdir / "backbone" / "backbone.json", "phi": workdir / "phi.pt",
            "things": dict(things), "phi_module": phi}


def linear_phi(m: torch.Tensor) -> nn.Module:
    """The official phi computing z -> m z: Linear(d, 4d) lifts z by LIFT, where GELU is the
    identity (to float precision), the middle Linear passes it on, the last one applies m and
    removes the lift."""
    w, d = m.shape
    phi = build_phi("official", d, w, 0.5).eval()
    first, middle, last = phi[0], phi[3], phi[6]
    for layer in (first, middle, last):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    first.weight[:d] = torch.eye(d)
    first.bias[:] = LIFT
    middle.weight[:] = torch.eye(4 * d)
    last.weight[:, :d] = m
    last.bias[:] = -LIFT * m.sum(dim=1)
    return phi


def _open(path: Path):
    from PIL import Image

    return Image.open(path).convert("RGB")


def queries():
    """Every shape x colour as the reference, asked for another colour: (reference, condition, ground truths)."""
    for n, (shape, colour) in enumerate((s, c) for s in SHAPES for c in COLOURS):
        new = [c for c in COLOURS if c != colour][n % 5]
        yield thing_path(shape, colour, 0), f"is {new}", {thing_path(shape, new, i) for i in range(RENDERS)}
