"""Noise added to caption latents during training: z' = z_c + scale * n (paper §3.2, Tab. 9).

The noise bridges the text/image modality gap: phi learns from text latents but is
applied to image latents at inference. Selected by the top-level param `noise`.
Every kind returns a tensor shaped like `z`, drawn from `gen` (reproducible).
"""
from __future__ import annotations

import torch

from pipeline.core.registry import Registry

NOISE = Registry("noise")


def _normal(z, gen):
    return torch.randn(z.shape, generator=gen, device=z.device, dtype=z.dtype)


def _uniform(z, gen, shape=None):
    return torch.rand(shape or z.shape, generator=gen, device=z.device, dtype=z.dtype)


@NOISE.register("unif_gaussian")
def unif_gaussian(z, gen):
    """LinCIR's default: n = u * g, u ~ Unif(0,1) one scalar per sample, g ~ N(0, I)."""
    return _uniform(z, gen, (z.shape[0], 1)) * _normal(z, gen)


@NOISE.register("gaussian")
def gaussian(z, gen):
    """n ~ N(0, I)."""
    return _normal(z, gen)


@NOISE.register("uniform")
def uniform(z, gen):
    """n ~ Unif(-1, 1) per element."""
    return 2 * _uniform(z, gen) - 1


@NOISE.register("none")
def none(z, gen):
    return torch.zeros_like(z)


@NOISE.register("student_t")
def student_t(z, gen):
    """Student's t with 3 degrees of freedom per element: heavier tails than N(0, I)."""
    df = 3
    chi2 = torch.randn((*z.shape, df), generator=gen, device=z.device, dtype=z.dtype).pow(2).sum(-1)
    return _normal(z, gen) / torch.sqrt(chi2 / df)


@NOISE.register("exponential")
def exponential(z, gen):
    """Exp(1) per element (non-negative, mean 1)."""
    return -torch.log1p(-_uniform(z, gen))


@NOISE.register("chi2")
def chi2(z, gen):
    """Chi-squared with 1 degree of freedom per element: g^2, g ~ N(0, 1)."""
    return _normal(z, gen) ** 2


def add_noise(z: torch.Tensor, kind: str, scale: float, gen: torch.Generator) -> torch.Tensor:
    return z + scale * NOISE.get(kind)(z, gen)
