"""Composed queries -> query features -> rankings of a benchmark's images.

Every method of answering a query is one entry of METHODS: LinCIR itself (the pseudo-token
`a photo of $ that {condition}`, `$` = phi(reference image latent)) and the zero-shot
baselines that every run reports next to it (phi with random initialisation, text only,
reference image only, and the normalised average of the two).
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.benchmarks.base import Benchmark, Query
from pipeline.gallery import normalise
from pipeline.core.errors import PipelineError, quoted
from pipeline.core.params import at_least
from pipeline.core.placeholder import PLACEHOLDER
from pipeline.core.registry import Registry
from pipeline.text_encoder import TextTower, encode, text_tower

METHODS = Registry("retrieval method")


@dataclass
class QueryContext:
    tower: TextTower
    tokenizer: object
    latents: np.ndarray  # unnormalised image latents of every benchmark image, rows as in `row`
    row: dict[str, int]
    template: str  # e.g. "a photo of $ that {}"
    phis: dict[str, torch.nn.Module]  # "trained", "random"
    normalize_image_latent: bool = False  # the official code's --l2_normalize; off as in training
    device: str = "cpu"
    batch_size: int = 256


def query_context(backbone, names: list[str], latents: np.ndarray, phis: dict[str, torch.nn.Module], *,
                  template: str, normalize_image_latent: bool, device: str) -> QueryContext:
    """The context to answer queries with `backbone` (a pipeline.backbone.Backbone), given the
    latents of the benchmark's images `names` (rows in that order)."""
    return QueryContext(tower=text_tower(backbone.model, backbone.tokenizer), tokenizer=backbone.tokenizer,
                        latents=latents, row={n: i for i, n in enumerate(names)}, template=template, phis=phis,
                        normalize_image_latent=normalize_image_latent, device=device)


def _per_caption(queries: list[Query]) -> tuple[list[str], np.ndarray]:
    """Flattens every query's captions; `owner[i]` is the query of caption i."""
    texts = [c for q in queries for c in q.captions]
    owner = np.repeat(np.arange(len(queries)), [len(q.captions) for q in queries])
    return texts, owner


def _mean_by_owner(features: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Averages the normalised features of each query's captions (FashionIQ's two orders)."""
    out = np.zeros((n, features.shape[1]), np.float32)
    np.add.at(out, owner, normalise(features))
    return normalise(out)


@torch.no_grad()
def encode_texts(ctx: QueryContext, texts: list[str], pseudo: torch.Tensor | None = None) -> np.ndarray:
    out = []
    for i in range(0, len(texts), ctx.batch_size):
        ids = ctx.tokenizer(texts[i:i + ctx.batch_size]).to(ctx.device)
        p = None if pseudo is None else pseudo[i:i + ctx.batch_size]
        out.append(encode(ctx.tower, ids, p).float().cpu())
    return torch.cat(out).numpy()


def _reference_latents(ctx: QueryContext, queries: list[Query]) -> np.ndarray:
    return ctx.latents[[ctx.row[q.reference] for q in queries]]


@torch.no_grad()
def composed_queries(ctx: QueryContext, references: np.ndarray, texts: list[str], phi: torch.nn.Module) -> np.ndarray:
    """Features [N, d], not normalised, of `template.format(text)` with `$` = phi(reference latent),
    one query a row: the LinCIR query of a benchmark and of `lincir search` alike."""
    z = torch.from_numpy(references).to(ctx.device)
    if ctx.normalize_image_latent:
        z = F.normalize(z, dim=-1)
    pseudo = phi(z)
    prompts = [ctx.template.format(t) for t in texts]
    return encode_texts(ctx, prompts, pseudo)


def pseudo_token_queries(ctx: QueryContext, queries: list[Query], phi: torch.nn.Module) -> np.ndarray:
    texts, owner = _per_caption(queries)
    features = composed_queries(ctx, _reference_latents(ctx, queries)[owner], texts, phi)
    return _mean_by_owner(features, owner, len(queries))


def text_queries(ctx: QueryContext, queries: list[Query]) -> np.ndarray:
    texts, owner = _per_caption(queries)
    return _mean_by_owner(encode_texts(ctx, texts), owner, len(queries))


METHODS.register("lincir")(lambda ctx, queries: pseudo_token_queries(ctx, queries, ctx.phis["trained"]))
METHODS.register("phi_random")(lambda ctx, queries: pseudo_token_queries(ctx, queries, ctx.phis["random"]))
METHODS.register("text_only")(text_queries)
METHODS.register("image_only")(lambda ctx, queries: normalise(_reference_latents(ctx, queries)))
METHODS.register("image_text_average")(
    lambda ctx, queries: normalise(normalise(_reference_latents(ctx, queries)) + text_queries(ctx, queries)))


def rank(bench: Benchmark, query_features: np.ndarray, indexes: dict, names: list[str], latents: np.ndarray,
         ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Top-`depth` names of each query's gallery (reference removed where the benchmark says
    so), and each query's own candidate set fully ranked."""
    rankings, candidate_rankings = {}, {}
    groups = np.array([q.group if bench.galleries else "" for q in bench.queries])
    for group, index in indexes.items():
        rows = np.flatnonzero(groups == group)
        k = min(bench.depth + int(bench.exclude_reference), index.ntotal)
        _, found = index.search(query_features[rows].astype(np.float32), k)
        for r, hits in zip(rows, found):
            q = bench.queries[r]
            ranked = [names[i] for i in hits if i >= 0 and not (bench.exclude_reference and names[i] == q.reference)]
            rankings[q.id] = ranked[:bench.depth]
    row_of = {n: i for i, n in enumerate(names)}
    for q, f in zip(bench.queries, query_features):
        if q.candidates:
            sims = normalise(latents[[row_of[c] for c in q.candidates]]) @ f
            candidate_rankings[q.id] = [q.candidates[i] for i in np.argsort(-sims, kind="stable")]
    return rankings, candidate_rankings


def answer(bench: Benchmark, ctx: QueryContext, indexes: dict, names: list[str], method: str = "lincir",
           ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Rankings of every query of `bench` by `method`: what evaluate scores and submit writes."""
    return rank(bench, METHODS.get(method)(ctx, bench.queries), indexes, names, ctx.latents)


@dataclass
class EvaluateConfig:
    """params.yaml `evaluate` (stages/evaluate.py)."""

    template: str = f"a photo of {PLACEHOLDER} that {{}}"
    methods: list[str] = field(default_factory=lambda: ["lincir"])
    normalize_image_latent: bool = False
    grid_queries: int = 6
    grid_top_k: int = 5

    def check(self) -> None:
        check_template(self.template)
        for method in self.methods:
            METHODS.get(method)
        at_least("evaluate.grid_queries", self.grid_queries, 0)
        at_least("evaluate.grid_top_k", self.grid_top_k, 1)


def check_template(template: str) -> None:
    """The query prompt needs one placeholder for phi's token and one `{}` for the condition."""
    fields = [f for _, f, spec, conv in string.Formatter().parse(template) if f is not None] \
        if _parses(template) else None
    if fields != [""] or template.count(PLACEHOLDER) != 1:
        raise PipelineError(f"params.yaml: evaluate.template must hold exactly one {PLACEHOLDER!r} (phi's token) and "
                            f"one '{{}}' (the condition), e.g. 'a photo of $ that {{}}'; not {quoted(template)}")


def _parses(template: str) -> bool:
    try:
        template.format("x")
        return True
    except (ValueError, IndexError, KeyError):
        return False
