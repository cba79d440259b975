"""SEARLE (Baldrati et al., ICCV 2023): optimisation-based textual inversion (OTI) of every
training image, then phi distilled from the inverted tokens (miccunifi/SEARLE).

Concepts (image_concepts_association.py): every concept word is embedded as the mean of its
normalised text latents over SEARLE's prompt templates; an image's concepts are the nearest
to its latent, best first.

OTI (oti_inversion.py), for each image latent v, a token w from N(0, 0.02^2), AdamW for
`oti_steps` steps on
    [ (1 - cos(E(template with $ = w), v))  +  concept_weight * (1 - cos(E(phrase with $ = w),
      E(phrase with the concept))) ] / (1 + concept_weight)
where each step draws, per image, one template and one concept of its `top_k` with one of its
phrases; the token kept is the exponential moving average of w (decay `ema_decay`).

Distillation (train_phi.py): phi(v) against the kept tokens w with NT-Xent over the joint
2B x 2B similarity matrix at `distill_temperature` (`nt_xent`), plus `phrase_weight` times the
phrase regulariser on phi's token (a concept drawn from the image's `distill_top_k`).

SEARLE's phrases are written by GPT-Neo for each of the Open Images classes; neither is here:
`phrases` are fixed templates and the concepts are the pairs' most frequent caption nouns
(docs/methods/searle.md says why and what else differs).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.core.errors import PipelineError, quoted
from pipeline.core.params import at_least, below
from pipeline.core.placeholder import PLACEHOLDER
from pipeline.data.pairs import caption_nouns
from pipeline.methods.base import METHODS, Method, Run
from pipeline.methods.common import SKIP_NOUNS, image_latents, nt_xent, prompt_ids
from pipeline.model.text_encoder import encode
from pipeline.training.batches import text_latents
from pipeline.training.loop import Objective, TrainConfig, fit, new_phi
from pipeline.training.recipe import Recipe

OTI_INIT_STD = 0.02  # oti_inversion.py: nn.init.normal_(std=0.02)

# SEARLE's get_templates() (src/utils.py), PALAVRA's: the OTI's cosine term and the concept ensemble
TEMPLATES = ["This is a photo of a {}", "This photo contains a {}", "A photo of a {}", "This is an illustration of a {}",
             "This illustration contains a {}", "An illustrations of a {}", "This is a sketch of a {}",
             "This sketch contains a {}", "A sketch of a {}", "This is a diagram of a {}", "This diagram contains a {}",
             "A diagram of a {}", "A {}", "We see a {}", "{}", "We see a {} in this photo", "We see a {} in this image",
             "We see a {} in this illustration", "We see a {} photo", "We see a {} image", "We see a {} illustration",
             "{} photo", "{} image", "{} illustration"]


@dataclass
class SearleConfig:
    """params.yaml `searle`."""

    templates: list[str] = field(default_factory=lambda: list(TEMPLATES))
    oti_steps: int = 350  # optimisation steps an image (oti_inversion.py)
    oti_lr: float = 0.02
    oti_weight_decay: float = 0.01
    concept_weight: float = 0.5  # OTI: the phrase regulariser's weight, the cosine term's is 1
    top_k: int = 15  # OTI: an image's nearest concepts its regulariser draws from
    ema_decay: float = 0.99  # OTI: the token kept is this moving average of the optimised one
    concepts: int = 100  # vocabulary: the most frequent nouns of the pairs' captions
    skip_nouns: list[str] = field(default_factory=lambda: list(SKIP_NOUNS))  # never concepts: not a thing shown
    phrases: list[str] = field(default_factory=lambda: [
        "a photo of {}", "a photo of {} in a picture", "a photo of {} on a plain background",
        "a photo of {} next to another thing", "a close-up photo of {}", "a rendering of {}"])
    distill_temperature: float = 0.25  # of the NT-Xent between phi(v) and the OTI tokens
    distill_weight: float = 1.0
    phrase_weight: float = 0.75  # distillation: the phrase regulariser on phi's token
    distill_top_k: int = 150  # distillation: an image's nearest concepts its regulariser draws from
    dropout: float = 0.5  # phi's (train_phi.py)
    lr: float = 1e-4  # phi's AdamW (train_phi.py)
    weight_decay: float = 0.01

    def check(self) -> None:
        for name in ("templates", "phrases"):
            texts = getattr(self, name)
            if not texts:
                raise PipelineError(f"params.yaml: searle.{name} must list at least one text")
            for i, text in enumerate(texts):
                if text.count("{}") != 1 or PLACEHOLDER in text:
                    raise PipelineError(f"params.yaml: searle.{name}[{i}] must hold one '{{}}' (the concept or the "
                                        f"token) and no {PLACEHOLDER!r}; not {quoted(text)}")
        for name in ("oti_steps", "concepts", "top_k", "distill_top_k"):
            at_least(f"searle.{name}", getattr(self, name), 1)
        for name in ("oti_lr", "distill_temperature", "lr"):
            at_least(f"searle.{name}", getattr(self, name), 1e-12)
        for name in ("oti_weight_decay", "concept_weight", "distill_weight", "phrase_weight", "weight_decay",
                     "ema_decay", "dropout"):
            at_least(f"searle.{name}", getattr(self, name), 0)
        below("searle.ema_decay", self.ema_decay, 1)
        below("searle.dropout", self.dropout, 1)


def recipe(c: SearleConfig, cfg: TrainConfig) -> Recipe:
    """train_phi.py: SEARLE's Phi (the `official` layout, hidden 4d), AdamW at a constant rate."""
    return Recipe("official", c.dropout, c.lr, c.weight_decay)


def vocabulary(run: Run) -> list[str]:
    texts, spans = caption_nouns(run.pairs)
    skip = {w.lower() for w in run.config.skip_nouns}
    counts = Counter(w for t, s in zip(texts, spans) for a, b in s if (w := t[a:b].lower()) not in skip)
    if not counts:
        raise PipelineError(f"{run.pairs}/keywords.parquet: no caption has a noun outside searle.skip_nouns, and "
                            "SEARLE's concepts are nouns")
    return [word for word, _ in counts.most_common(run.config.concepts)]


@torch.no_grad()
def nearest_concepts(run: Run, v: torch.Tensor, concepts: list[str]) -> torch.Tensor:
    """[N, min(k, concepts)] each image's concepts, nearest first, k the larger of the two top-ks:
    every concept embedded as the normalised mean of its normalised template latents."""
    templates = run.config.templates
    ids = prompt_ids(run, [t.format(f" {c} ") for c in concepts for t in templates])
    z = F.normalize(text_latents(run.tower, ids, 256, run.device, None), dim=-1).view(len(concepts), len(templates), -1)
    words = F.normalize(z.mean(dim=1), dim=-1)
    k = min(max(run.config.top_k, run.config.distill_top_k), len(concepts))
    return (F.normalize(v, dim=-1) @ words.T).topk(k, dim=1).indices


@torch.no_grad()
def phrase_latents(run: Run, concepts: list[str]) -> torch.Tensor:
    """[phrases, concepts, d]: every phrase with every concept, encoded once."""
    return torch.stack([text_latents(run.tower, prompt_ids(run, [p.format(w) for w in concepts]), 256, run.device, None)
                        for p in run.config.phrases])


def draw(ranked: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """One concept per row among the row's first k."""
    pick = torch.randint(min(k, ranked.shape[1]), (len(ranked),), generator=gen, device=ranked.device)
    return ranked[torch.arange(len(ranked), device=ranked.device), pick]


def ema_update(average: torch.Tensor, value: torch.Tensor, decay: float) -> torch.Tensor:
    """oti_inversion.py's moving average, updated after every optimiser step."""
    return decay * average + (1 - decay) * value


def phrase_loss(run: Run, token: torch.Tensor, concept: torch.Tensor, phrase_ids: torch.Tensor,
                phrases: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """1 - cos(E(phrase with $ = token), E(phrase with the concept)), one random phrase a row."""
    which = torch.randint(len(phrase_ids), (len(token),), generator=gen, device=token.device)
    z = encode(run.tower, phrase_ids[which], token, truncate=run.cfg.truncate)
    return (1 - F.cosine_similarity(z.float(), phrases[which, concept])).mean()


def oti(run: Run, v: torch.Tensor, ranked: torch.Tensor, phrases: torch.Tensor) -> torch.Tensor:
    """[N, w] the moving average of every image's inverted token, a batch of images at a time."""
    c = run.config
    template_ids = prompt_ids(run, [t.format(f" {PLACEHOLDER} ") for t in c.templates])
    phrase_ids = prompt_ids(run, [p.format(PLACEHOLDER) for p in c.phrases])
    gen = torch.Generator(run.device).manual_seed(run.cfg.seed)
    out = []
    for lo in tqdm(range(0, len(v), run.cfg.batch_size), desc="SEARLE OTI", unit="batch"):
        batch, near = v[lo:lo + run.cfg.batch_size], ranked[lo:lo + run.cfg.batch_size]
        w = (torch.randn(len(batch), run.tower.width, generator=gen, device=run.device) * OTI_INIT_STD).requires_grad_()
        average = w.detach().clone()
        opt = torch.optim.AdamW([w], lr=c.oti_lr, weight_decay=c.oti_weight_decay)
        for _ in range(c.oti_steps):
            template = torch.randint(len(template_ids), (len(batch),), generator=gen, device=run.device)
            z = encode(run.tower, template_ids[template], w, truncate=run.cfg.truncate)
            cosine = (1 - F.cosine_similarity(z.float(), batch)).mean()
            regulariser = phrase_loss(run, w, draw(near, c.top_k, gen), phrase_ids, phrases, gen)
            loss = (cosine + c.concept_weight * regulariser) / (1 + c.concept_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            average = ema_update(average, w.detach(), c.ema_decay)
        out.append(average)
    return torch.cat(out)


def train(run: Run):
    c = run.config
    v = image_latents(run)
    concepts = vocabulary(run)
    ranked = nearest_concepts(run, v, concepts)
    phrases = phrase_latents(run, concepts)
    tokens = oti(run, v, ranked, phrases)
    phrase_ids = prompt_ids(run, [p.format(PLACEHOLDER) for p in c.phrases])

    def loss(phi, idx, gen):
        i = torch.as_tensor(idx, device=run.device)
        p = phi(v[i])
        regulariser = phrase_loss(run, p, draw(ranked[i], c.distill_top_k, gen), phrase_ids, phrases, gen)
        return c.distill_weight * nt_xent(tokens[i], p, c.distill_temperature) + c.phrase_weight * regulariser

    return fit(new_phi(run.tower, run.embed_dim, run.cfg, run.device, run.recipe),
               Objective(len(v), loss, name="SEARLE"), run.cfg, device=run.device, checkpoint=run.checkpoint,
               fingerprint=run.fingerprint, log=run.log, validation=run.validation, recipe=run.recipe)


METHODS.register("searle")(Method(SearleConfig, train, reads=("pairs: image latents, captions' nouns",), images=True,
                                  recipe=recipe))
