"""Class-activation maps (CAMs) of the frozen CLIP's image tower for a text.

Masked image-text textual inversion (arXiv 2406.18836) masks the image region of a noun by
thresholding a CAM of the frozen CLIP at tau (pipeline/methods/masked_inversion.py). How well
a CAM finds the world's objects is measured by `lincir cam` (pipeline/tools/cam.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.core.errors import PipelineError
from pipeline.core.registry import Registry

CAM = Registry("class-activation map")
TRUE_MASK_LEVEL = 128  # the oracle mask is soft coverage 0..255: a pixel is the object when half covered


def block_input(visual: torch.nn.Module, images: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs open_clip's VisionTransformer and returns its latents and the tokens entering
    `transformer.resblocks[block]`, batch first [B, 1 + patches, width], as the leaf that
    gradients are taken for: the weights stay untouched."""
    return _run_with_leaf(visual, visual.transformer.resblocks[block], images)


def _run_with_leaf(visual: torch.nn.Module, module: torch.nn.Module, images: torch.Tensor):
    """The tower's latents and the input of `module`, detached and made a leaf that requires grad."""
    captured = []

    def hook(module, args):
        tokens = args[0].detach().requires_grad_(True)
        captured.append(tokens)
        return (tokens, *args[1:])

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.enable_grad():
            latents = visual(images)
    finally:
        handle.remove()
    return latents, captured[0]


def batch_first(visual: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return tokens if visual.transformer.batch_first else tokens.transpose(0, 1)


def vit_map(visual, images):
    """ViT: the patch tokens entering the last residual block (the class token dropped)."""
    latents, tokens = block_input(visual, images, -1)
    return latents, tokens, lambda t: batch_first(visual, t)[:, 1:], visual.grid_size


def resnet_map(visual, images):
    """ModifiedResNet (CLIP's RN towers): the feature map entering its last stage, as in Grad-CAM's
    own ResNet experiments; at the world's 64 pixels a 4 x 4 grid, the ViT's patch grid."""
    latents, features = _run_with_leaf(visual, visual.layer4, images)
    return latents, features, lambda t: t.flatten(2).transpose(1, 2), tuple(features.shape[-2:])


FEATURE_MAPS = {"VisionTransformer": vit_map, "ModifiedResNet": resnet_map}  # by open_clip's tower class


def feature_map(visual: torch.nn.Module, images: torch.Tensor):
    """(latents, the leaf the gradients are taken for, how it reads as [B, cells, channels], the grid)."""
    kind = type(visual).__name__
    if kind not in FEATURE_MAPS:
        raise PipelineError(f"Grad-CAM reads open_clip image towers of the kinds {sorted(FEATURE_MAPS)}, "
                            f"not {kind}: use another backbone, or masked_inversion.mask: oracle")
    return FEATURE_MAPS[kind](visual, images)


def to_image(patch_maps: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """[B, patches] -> [B, H, W]: the patch grid upsampled bilinearly, each map min-max scaled
    to [0, 1] (a flat map becomes zero: it points nowhere)."""
    maps = F.interpolate(patch_maps.reshape(-1, 1, *grid), size=size, mode="bilinear", align_corners=False)[:, 0]
    low = maps.flatten(1).min(1).values[:, None, None]
    high = maps.flatten(1).max(1).values[:, None, None]
    return (maps - low) / (high - low).clamp_min(1e-12)


@CAM.register("gradcam")
def gradcam(model: torch.nn.Module, images: torch.Tensor, text_latents: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017) of cosine(image latent, text latent) on the image
    tower's last spatial features (`feature_map`): [B, H, W] in [0, 1].

    Weights w_c are the cell-mean gradients, cam = relu(sum_c w_c A_pc). Each image's score
    depends on its own features only, so one backward pass of the summed scores gives every
    image's gradients."""
    latents, leaf, cells, grid = feature_map(model.visual, images)
    with torch.enable_grad():
        scores = F.cosine_similarity(latents, text_latents.to(latents), dim=-1)
        (grads,) = torch.autograd.grad(scores.sum(), leaf)
    activations, grads = cells(leaf.detach()), cells(grads)
    weights = grads.mean(1, keepdim=True)
    cam = F.relu((weights * activations).sum(-1))
    return to_image(cam, grid, images.shape[-2:])


def mask_from_cam(cam: torch.Tensor, tau: float) -> torch.Tensor:
    return cam >= tau
