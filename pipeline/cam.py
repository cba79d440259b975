"""Class-activation maps (CAMs) of the frozen CLIP's image tower for a text, scored against
the world's true object masks.

Masked image-text textual inversion (arXiv 2406.18836) masks the image region of a noun by
thresholding a CAM of the frozen CLIP at tau. The world renderer knows each object's true
mask (pipeline/world/render.py), so how well a CAM finds the object is measured here:
IoU of the thresholded CAM with the true mask, against a mask of the same area placed at
random (chance).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.backbone import Backbone, load
from pipeline.core.errors import PipelineError
from pipeline.core.masks import mask_file
from pipeline.core.registry import Registry

CAM = Registry("class-activation map")
TRUE_MASK_LEVEL = 128  # the oracle mask is soft coverage 0..255: a pixel is the object when half covered
PROMPT = "a photo of a {}"


def block_input(visual: torch.nn.Module, images: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs open_clip's VisionTransformer and returns its latents and the tokens entering
    `transformer.resblocks[block]`, batch first [B, 1 + patches, width], as the leaf that
    gradients are taken for: the weights stay untouched."""
    captured = []

    def hook(module, args):
        tokens = args[0].detach().requires_grad_(True)
        captured.append(tokens)
        return (tokens, *args[1:])

    handle = visual.transformer.resblocks[block].register_forward_pre_hook(hook)
    try:
        with torch.enable_grad():
            latents = visual(images)
    finally:
        handle.remove()
    return latents, captured[0]


def batch_first(visual: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return tokens if visual.transformer.batch_first else tokens.transpose(0, 1)


def to_image(patch_maps: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """[B, patches] -> [B, H, W]: the patch grid upsampled bilinearly, each map min-max scaled
    to [0, 1] (a flat map becomes zero: it points nowhere)."""
    maps = F.interpolate(patch_maps.reshape(-1, 1, *grid), size=size, mode="bilinear", align_corners=False)[:, 0]
    low = maps.flatten(1).min(1).values[:, None, None]
    high = maps.flatten(1).max(1).values[:, None, None]
    return (maps - low) / (high - low).clamp_min(1e-12)


@CAM.register("gradcam")
def gradcam(model: torch.nn.Module, images: torch.Tensor, text_latents: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017) of cosine(image latent, text latent) on the patch
    tokens entering the last residual block: [B, H, W] in [0, 1].

    Weights w_c are the patch-mean gradients, cam = relu(sum_c w_c A_pc); the class token is
    dropped. Each image's score depends on its own tokens only, so one backward pass of the
    summed scores gives every image's gradients."""
    visual = model.visual
    latents, tokens = block_input(visual, images, -1)
    with torch.enable_grad():
        scores = F.cosine_similarity(latents, text_latents.to(latents), dim=-1)
        (grads,) = torch.autograd.grad(scores.sum(), tokens)
    activations, grads = batch_first(visual, tokens.detach())[:, 1:], batch_first(visual, grads)[:, 1:]
    weights = grads.mean(1, keepdim=True)
    cam = F.relu((weights * activations).sum(-1))
    return to_image(cam, visual.grid_size, images.shape[-2:])


def mask_from_cam(cam: torch.Tensor, tau: float) -> torch.Tensor:
    return cam >= tau


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of bool masks [..., H, W], per mask; two empty masks agree (1)."""
    inter = (a & b).flatten(-2).sum(-1).float()
    union = (a | b).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


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


HELP = "how well a CAM of the frozen backbone finds the world's objects: IoU with the true masks, and chance"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("cam", help=HELP, description=HELP)
    parser.add_argument("--backbone", type=Path, default=Path("data/backbone/backbone.json"),
                        help="the backbone stage's identity file")
    parser.add_argument("--world", type=Path, default=Path("data/world"), help="the world, with its masks")
    parser.add_argument("--split", default="train", help="pairs split (default: train)")
    parser.add_argument("--images", type=int, default=300, help="how many images (default: 300)")
    parser.add_argument("--taus", type=float, nargs="+", default=[0.2, 0.3, 0.4], help="CAM thresholds")
    parser.add_argument("--cam", default="gradcam", choices=CAM.names())
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    images, masks, prompts = world_items(args.world, args.split, args.images)
    rows = cam_iou(load(args.backbone), images, masks, prompts, args.taus, args.batch_size, args.cam, args.seed)
    for row in rows:
        print(json.dumps({"cam": args.cam, "images": len(images), **row}))
    return 0
