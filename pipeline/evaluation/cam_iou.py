"""How well a class-activation map of the frozen backbone finds the world's objects (`lincir cam`).

The world renderer knows each object's true mask (pipeline/data/world/render.py), so a CAM
(pipeline/model/cam.py) is scored against it: IoU of the CAM thresholded at tau with the true
mask, against a mask of the same area placed at random (chance).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch
from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.data.images import mask_file
from pipeline.evaluation.metrics import iou
from pipeline.model.backbone import Backbone
from pipeline.model.cam import CAM, TRUE_MASK_LEVEL, mask_from_cam

PROMPT = "a photo of a {}"


def random_mask_like(mask: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Chance: each mask [..., H, W] shifted by a random offset with wrap-around, so it keeps
    its area and shape at a random place."""
    h, w = mask.shape[-2:]
    flat = mask.reshape(-1, h, w)
    shifts = rng.integers(0, [h, w], size=(len(flat), 2))
    moved = [m.roll((int(dy), int(dx)), dims=(0, 1)) for m, (dy, dx) in zip(flat, shifts)]
    return torch.stack(moved).reshape(mask.shape)


def read_true_masks(paths: list[Path]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("L")) >= TRUE_MASK_LEVEL) for p in paths])


@torch.no_grad()
def cam_iou(backbone: Backbone, image_paths: list[Path], mask_paths: list[Path], prompts: list[str],
            taus: list[float], batch_size: int = 64, cam: str = "gradcam", seed: int = 0,
            device: str = "cpu") -> list[dict]:
    """Mean IoU with the true masks of the CAM thresholded at each tau, and of a random mask
    of the same area (chance): one row {tau, iou, random_iou} per tau."""
    if not len(image_paths) == len(mask_paths) == len(prompts):
        raise PipelineError(f"cam_iou: {len(image_paths)} images, {len(mask_paths)} masks and {len(prompts)} "
                            f"prompts; one of each per image")
    make_cam, rng = CAM.get(cam), np.random.default_rng(seed)
    model = backbone.model
    ious = {tau: ([], []) for tau in taus}
    for start in range(0, len(image_paths), batch_size):
        stop = start + batch_size
        images = torch.stack([backbone.preprocess(Image.open(p).convert("RGB")) for p in image_paths[start:stop]])
        truth = read_true_masks(mask_paths[start:stop])
        if truth.shape[-2:] != images.shape[-2:]:
            raise PipelineError(f"masks are {tuple(truth.shape[-2:])} but the model sees {tuple(images.shape[-2:])} "
                                f"images: CAMs are compared in the model's input frame")
        texts = model.encode_text(backbone.tokenizer(prompts[start:stop]).to(device))
        maps = make_cam(model, images.to(device), texts).cpu()
        for tau, (found, chance) in ious.items():
            predicted = mask_from_cam(maps, tau)
            found.append(iou(predicted, truth))
            chance.append(iou(random_mask_like(predicted, rng), truth))
    return [{"tau": tau, "iou": torch.cat(found).mean().item(), "random_iou": torch.cat(chance).mean().item()}
            for tau, (found, chance) in ious.items()]


def world_items(world: Path, split: str, n: int) -> tuple[list[Path], list[Path], list[str]]:
    """The first `n` pairs images of `split`, their true masks and the prompt naming their shape."""
    pairs = pl.read_parquet(world / "pairs.parquet").filter(pl.col("split") == split).head(n)
    if pairs.is_empty():
        raise PipelineError(f"{world / 'pairs.parquet'} has no {split!r} images")
    masks = [world / mask_file(f) for f in pairs["file"]]
    if not masks[0].is_file():
        raise PipelineError(f"{masks[0]} not found: this world has no object masks; generate it again "
                            f"(dvc repro world)")
    return [world / f for f in pairs["file"]], masks, [PROMPT.format(s) for s in pairs["shape"]]
