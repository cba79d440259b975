"""SEARLE (Baldrati et al., ICCV 2023): optimisation-based textual inversion (OTI) of every
training image, then phi distilled from the inverted tokens.

OTI: for each image latent v, a token w is optimised so that E("a photo of $", $ = w) points
at v (cosine), plus a regulariser that keeps w behaving like a word: E(phrase with $ = w)
close to E(phrase with the image's concept), where the concept is the image's zero-shot class
among a concept vocabulary. SEARLE writes its phrases with GPT; with no language model here
the phrases are fixed templates (`phrases`) and the vocabulary is the most frequent nouns of
the pairs' captions. Distillation: phi(v) is pulled to w (cosine) and told apart from the
other images' tokens (InfoNCE over the batch).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.core.params import at_least
from pipeline.data.pairs import caption_nouns
from pipeline.methods.base import METHODS, Method, Run
from pipeline.methods.common import check_prompt, contrastive, image_latents, prompt_ids
from pipeline.model.text_encoder import encode
from pipeline.training.batches import text_latents
from pipeline.training.loop import Objective, fit, new_phi


@dataclass
class SearleConfig:
    """params.yaml `searle`."""

    prompt: str = "a photo of $"
    oti_steps: int = 150  # optimisation steps an image (the official code: 350)
    oti_lr: float = 0.02
    oti_weight_decay: float = 0.01
    concept_weight: float = 0.5  # weight of the concept regulariser (SEARLE's GPT loss weight)
    concepts: int = 100  # vocabulary: the most frequent nouns of the pairs' captions
    phrases: list[str] = field(default_factory=lambda: [
        "a photo of {}", "a photo of {} in a picture", "a photo of {} on a plain background",
        "a photo of {} next to another thing", "a close-up photo of {}", "a rendering of {}"])
    distill_temperature: float = 0.25  # of the InfoNCE between phi(v) and the OTI tokens

    def check(self) -> None:
        check_prompt("searle.prompt", self.prompt)
        for i, phrase in enumerate(self.phrases):
            check_prompt(f"searle.phrases[{i}]", phrase.replace("{}", "$", 1), 0)
        for name in ("oti_steps", "concepts"):
            at_least(f"searle.{name}", getattr(self, name), 1)
        for name in ("oti_lr", "distill_temperature"):
            at_least(f"searle.{name}", getattr(self, name), 1e-12)
        for name in ("oti_weight_decay", "concept_weight"):
            at_least(f"searle.{name}", getattr(self, name), 0)


def vocabulary(run: Run) -> list[str]:
    texts, spans = caption_nouns(run.pairs)
    counts = Counter(t[a:b].lower() for t, s in zip(texts, spans) for a, b in s)
    return [word for word, _ in counts.most_common(run.config.concepts)]


@torch.no_grad()
def concept_of(run: Run, v: torch.Tensor, concepts: list[str]) -> torch.Tensor:
    """Each image's zero-shot class: the concept whose "a photo of <concept>" is nearest."""
    z = text_latents(run.tower, prompt_ids(run, [run.config.prompt.replace("$", c) for c in concepts]),
                     256, run.device, None)
    return (F.normalize(v, dim=-1) @ F.normalize(z, dim=-1).T).argmax(dim=1)


def oti(run: Run, v: torch.Tensor, concepts: list[str]) -> torch.Tensor:
    """[N, w] the inverted token of every image, optimised a batch of images at a time."""
    c = run.config
    concept = concept_of(run, v, concepts)
    phrase_ids = prompt_ids(run, [p.format("$") for p in c.phrases])
    with torch.no_grad():  # [phrases, concepts, d]: every phrase with every concept, encoded once
        phrase_latents = torch.stack([text_latents(run.tower, prompt_ids(run, [p.format(w) for w in concepts]),
                                                   256, run.device, None) for p in c.phrases])
    ids = prompt_ids(run, [c.prompt])
    scale = run.tower.module.token_embedding.weight.std().item()
    gen = torch.Generator(run.device).manual_seed(run.cfg.seed)
    out = []
    for lo in tqdm(range(0, len(v), run.cfg.batch_size), desc="SEARLE OTI", unit="batch"):
        batch, which = v[lo:lo + run.cfg.batch_size], concept[lo:lo + run.cfg.batch_size]
        w = (torch.randn(len(batch), run.tower.width, generator=gen, device=run.device) * scale).requires_grad_()
        opt = torch.optim.AdamW([w], lr=c.oti_lr, weight_decay=c.oti_weight_decay)
        for _ in range(c.oti_steps):
            phrase = torch.randint(len(c.phrases), (len(batch),), generator=gen, device=run.device)
            z = encode(run.tower, ids.expand(len(batch), -1), w, truncate=run.cfg.truncate)
            zp = encode(run.tower, phrase_ids[phrase], w, truncate=run.cfg.truncate)
            loss = (1 - F.cosine_similarity(z, batch)).mean() \
                + c.concept_weight * (1 - F.cosine_similarity(zp, phrase_latents[phrase, which])).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out.append(w.detach())
    return torch.cat(out)


def train(run: Run):
    v = image_latents(run)
    tokens = oti(run, v, vocabulary(run))
    temperature = run.config.distill_temperature

    def loss(phi, idx, gen):
        i = torch.as_tensor(idx, device=run.device)
        p, w = phi(v[i]), tokens[i]
        return (1 - F.cosine_similarity(p.float(), w)).mean() + contrastive(p, w, 1 / temperature)

    return fit(new_phi(run.tower, run.embed_dim, run.cfg, run.device), Objective(len(v), loss, name="SEARLE"),
               run.cfg, device=run.device, checkpoint=run.checkpoint, fingerprint=run.fingerprint, log=run.log,
               validation=run.validation)


METHODS.register("searle")(Method(SearleConfig, train, reads=("pairs: image latents, captions' nouns",), images=True))
