"""The geometry of a joint embedding space: the modality gap and the cones (Liang et al.,
"Mind the Gap", NeurIPS 2022; LinCIR Tab. 1 and Fig. B.2).

Every function takes raw latents and l2-normalises them itself, as the paper measures them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.core.params import at_least


@dataclass
class GeometryConfig:
    """params.yaml `geometry`, read by stages/geometry.py."""

    seed: int = 0  # the noise drawn on the held-out caption latents
    bins: int = 40  # of the noise-norm histograms

    def check(self) -> None:
        at_least("geometry.bins", self.bins, 1)
        at_least("geometry.seed", self.seed, 0)


@dataclass
class NoiseScale:
    """train.noise_scale, which the geometry stage reads too: z' = z_c + noise_scale * n."""

    noise_scale: float = 1.0

    def check(self) -> None:
        at_least("train.noise_scale", self.noise_scale, 0)


def modality_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Distance between the centroids of the l2-normalised rows of `a` and of `b`."""
    return (F.normalize(a.float(), dim=-1).mean(0) - F.normalize(b.float(), dim=-1).mean(0)).norm().item()


def matched_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine of row i of `a` with row i of `b` (an image with its own caption)."""
    return F.cosine_similarity(a.float(), b.float(), dim=-1).mean().item()


def pairwise_cosine(a: torch.Tensor) -> float:
    """Mean cosine between two different rows of `a`: high when the modality lies in a narrow cone."""
    x = F.normalize(a.float(), dim=-1)
    n = len(x)
    total = x.sum(0).pow(2).sum() - n  # sum over all pairs i != j of x_i . x_j, without the n x n matrix
    return (total / (n * (n - 1))).item()


def geometry(images: torch.Tensor, texts: torch.Tensor) -> dict[str, float]:
    """The four numbers of the modality-gap picture for paired image and caption latents."""
    return {"modality_gap": modality_gap(images, texts), "matched_cosine": matched_cosine(images, texts),
            "image_image_cosine": pairwise_cosine(images), "caption_caption_cosine": pairwise_cosine(texts)}
