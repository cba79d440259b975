"""Zero-shot CIR methods that train a phi the `evaluate` stage scores unchanged, by name
(params.yaml `method`, read by stages/train.py; each method's own params are the section
named after it).

    lincir            language only: Self-Masking Projection on the caption corpus
    pic2word          images only: "a photo of $" contrasted with the image (Saito et al., CVPR 2023)
    searle            per-image optimisation-based inversion (OTI), then phi distilled (Baldrati et al., ICCV 2023)
    masked_inversion  image-caption pairs, one noun masked in image and text (arXiv 2406.18836)

docs/methods/ has a page per method: what it trains on, what its paper says, what was chosen
where the paper is silent.

Every method trains phi with the shared loop `pipeline.training.loop.fit`, its steps, batch
size, seed and validation from `train`. phi's architecture and optimiser are the method's
authors' (`train.recipe: authors`) or LinCIR's for every method (`controlled`):
pipeline/training/recipe.py. The registry is in `base`; the modules below register themselves
on import.
"""
from pipeline.methods import lincir, masked_inversion, pic2word, searle  # noqa: F401  (register themselves)
from pipeline.methods.base import METHODS, Method, Run, method_config, phi_recipe

__all__ = ["METHODS", "Method", "Run", "method_config", "phi_recipe"]
