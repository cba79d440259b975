"""The geometry of a joint embedding space: the modality gap and the cones (Liang et al.,
"Mind the Gap", NeurIPS 2022; LinCIR Tab. 1 and Fig. B.2), with the measures themselves in
pipeline/evaluation/metrics.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.core.params import at_least
from pipeline.core.registry import Registry
from pipeline.evaluation.metrics import matched_cosine, modality_gap, pairwise_cosine


@dataclass
class GeometryConfig:
    """params.yaml `geometry`, read by stages/geometry.py."""

    seed: int = 0  # the noise drawn on the held-out caption latents
    bins: int = 40  # of the noise-norm histograms

    def check(self) -> None:
        at_least("geometry.bins", self.bins, 1)
        at_least("geometry.seed", self.seed, 0)


def geometry(images: torch.Tensor, texts: torch.Tensor) -> dict[str, float]:
    """The four numbers of the modality-gap picture for paired image and caption latents."""
    return {"modality_gap": modality_gap(images, texts), "matched_cosine": matched_cosine(images, texts),
            "image_image_cosine": pairwise_cosine(images), "caption_caption_cosine": pairwise_cosine(texts)}


def noise_geometry(images: torch.Tensor, captions: torch.Tensor, kinds: Registry, scale: float, seed: int,
                   ) -> tuple[dict, dict[str, torch.Tensor]]:
    """The backbone's geometry and, for every noise kind of `kinds` (pipeline/model/noise.py NOISE), the
    gap and matched cosine of the images with z_c + scale * n (as phi training adds it, on unnormalised
    z_c), the fraction of the gap that closes, and E||scale * n|| / E||z_c||, the noise's regime
    (LinCIR Tab. 1 and Fig. B.2: with ViT-L's 768 dimensions U·N has E||n|| = 13.9); and each noise."""
    gen = torch.Generator().manual_seed(seed)
    noise = {kind: scale * kinds.get(kind)(captions, gen) for kind in kinds.names()}
    gap, norm = modality_gap(images, captions), captions.norm(dim=-1).mean().item()
    metrics = {"backbone": {**geometry(images, captions), "caption_latent_norm": norm},
               "noise": {kind: {"modality_gap": modality_gap(images, captions + n),
                                "gap_closed": 1 - modality_gap(images, captions + n) / gap,
                                "matched_cosine": matched_cosine(images, captions + n),
                                "norm_ratio": n.norm(dim=-1).mean().item() / norm}  # E||n|| / E||z_c||: the regime
                         for kind, n in noise.items()}}
    return metrics, noise


def norm_histogram(norms: dict[str, torch.Tensor], bins: int) -> str:
    """CSV of one histogram per named set of vector norms on shared bins (Fig. B.2). The bins end at
    the 99th percentile of all norms (heavy tails would squash the rest); the last bin holds the tail."""
    top = np.percentile(torch.cat(list(norms.values())).numpy(), 99)
    edges = np.linspace(0, top, bins + 1)
    counts = {k: np.histogram(np.minimum(v.numpy(), top), bins=edges)[0] for k, v in norms.items()}
    rows = [",".join(["norm", *counts])]
    rows += [",".join([f"{(lo + hi) / 2:.4f}", *(str(c[i]) for c in counts.values())])
             for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))]
    return "\n".join(rows) + "\n"
