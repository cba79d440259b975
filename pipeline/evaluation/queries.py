"""Composed queries -> query features -> rankings of a benchmark's images.

Every way of answering a composed query is one entry of QUERIES: `trained_phi`, the query of
the phi that the train stage trained (its method's prompt for the benchmark's kind,
pipeline/evaluation/prompts.py: LinCIR's `a photo of $ that {condition}`, `$` = phi(reference
image latent)), and the zero-shot baselines every run reports next to it (phi at its random
initialisation, text only, reference image only, and the normalised average of the two).
"""
from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.errors import PipelineError, quoted
from pipeline.core.params import at_least
from pipeline.core.placeholder import PLACEHOLDER
from pipeline.core.registry import Registry
from pipeline.evaluation.benchmarks.base import Benchmark, Query
from pipeline.evaluation.gallery import load as load_gallery
from pipeline.evaluation.gallery import normalise
from pipeline.evaluation.prompts import PROMPTS, Prompt, picked
from pipeline.model.text_encoder import TextTower, encode, text_tower

QUERIES = Registry("query")
TEMPLATE = f"a photo of {PLACEHOLDER} that {{}}"  # LinCIR's query: $ = phi(reference), {} = the condition


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
    texts: tuple[int, ...] | None = None  # which condition texts phi's queries use (Prompt.texts); None: all


def query_context(backbone, names: list[str], latents: np.ndarray, phis: dict[str, torch.nn.Module], *,
                  template: str | Prompt, normalize_image_latent: bool, device: str) -> QueryContext:
    """The context to answer queries with `backbone` (a pipeline.model.backbone.Backbone), given the
    latents of the benchmark's images `names` (rows in that order); `template` is phi's prompt."""
    prompt = template if isinstance(template, Prompt) else Prompt(template)
    return QueryContext(tower=text_tower(backbone.model, backbone.tokenizer), tokenizer=backbone.tokenizer,
                        latents=latents, row={n: i for i, n in enumerate(names)}, template=prompt.template, phis=phis,
                        normalize_image_latent=normalize_image_latent, device=device, texts=prompt.texts)


def _per_caption(queries: list[Query], texts: tuple[int, ...] | None = None) -> tuple[list[str], np.ndarray]:
    """Flattens every query's captions (those `texts` names, Prompt.texts); `owner[i]` is the query of caption i."""
    chosen = [picked(q.captions, texts) for q in queries]
    owner = np.repeat(np.arange(len(queries)), [len(c) for c in chosen])
    return [c for cs in chosen for c in cs], owner


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
    z = torch.tensor(references, device=ctx.device)  # a copy: references may be rows of a read-only mapped file
    if ctx.normalize_image_latent:
        z = F.normalize(z, dim=-1)
    pseudo = phi(z)
    prompts = [ctx.template.format(t) for t in texts]
    return encode_texts(ctx, prompts, pseudo)


def pseudo_token_queries(ctx: QueryContext, queries: list[Query], phi: torch.nn.Module) -> np.ndarray:
    texts, owner = _per_caption(queries, ctx.texts)
    features = composed_queries(ctx, _reference_latents(ctx, queries)[owner], texts, phi)
    return _mean_by_owner(features, owner, len(queries))


def text_queries(ctx: QueryContext, queries: list[Query]) -> np.ndarray:
    texts, owner = _per_caption(queries)
    return _mean_by_owner(encode_texts(ctx, texts), owner, len(queries))


QUERIES.register("trained_phi")(lambda ctx, queries: pseudo_token_queries(ctx, queries, ctx.phis["trained"]))
QUERIES.register("phi_random")(lambda ctx, queries: pseudo_token_queries(ctx, queries, ctx.phis["random"]))
QUERIES.register("text_only")(text_queries)
QUERIES.register("image_only")(lambda ctx, queries: normalise(_reference_latents(ctx, queries)))
QUERIES.register("image_text_average")(
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


def answer(bench: Benchmark, ctx: QueryContext, indexes: dict, names: list[str], query: str = "trained_phi",
           ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Rankings of every query of `bench` answered by `query` (a QUERIES name): what evaluate scores and
    submit writes."""
    return rank(bench, QUERIES.get(query)(ctx, bench.queries), indexes, names, ctx.latents)


def phi_score(bench: Benchmark, backbone, gallery_dir, template: str | Prompt, metric: str, device: str,
              ) -> Callable[[torch.nn.Module], float]:
    """score(phi): `metric` of `bench` answered with phi's query (`template`, its prompt), exactly as
    the evaluate stage scores the trained phi: what the train stage selects phi by (`train.validate_*`)."""
    bench.require_targets()
    names, latents, indexes = load_gallery(gallery_dir)

    def score(phi: torch.nn.Module) -> float:
        ctx = query_context(backbone, names, latents, phis={"trained": phi}, template=template,
                            normalize_image_latent=False, device=device)
        scores = bench.score(*answer(bench, ctx, indexes, names, "trained_phi"))
        if metric not in scores:
            raise PipelineError(f"train.validate_metric {metric!r} is not a metric of {bench.name}; "
                                f"valid: {', '.join(scores)}")
        return scores[metric]

    return score


@dataclass
class EvaluateConfig:
    """params.yaml `evaluate` (stages/evaluate.py)."""

    template: str = TEMPLATE
    prompt: str = "method"  # PROMPTS: each method's official prompt per benchmark kind, or `template` for all
    queries: list[str] = field(default_factory=lambda: ["trained_phi", "phi_random", "text_only", "image_only",
                                                        "image_text_average"])
    normalize_image_latent: bool = False
    grid_queries: int = 6
    grid_top_k: int = 5

    def check(self) -> None:
        check_template(self.template)
        PROMPTS.get(self.prompt)
        for query in self.queries:
            QUERIES.get(query)
        at_least("evaluate.grid_queries", self.grid_queries, 0)
        at_least("evaluate.grid_top_k", self.grid_top_k, 1)


def check_template(template: str) -> str:
    """The query prompt needs one placeholder for phi's token and one `{}` for the condition."""
    fields = [f for _, f, spec, conv in string.Formatter().parse(template) if f is not None] \
        if _parses(template) else None
    if fields != [""] or template.count(PLACEHOLDER) != 1:
        raise PipelineError(f"params.yaml: evaluate.template must hold exactly one {PLACEHOLDER!r} (phi's token) and "
                            f"one '{{}}' (the condition), e.g. 'a photo of $ that {{}}'; not {quoted(template)}")
    return template


def _parses(template: str) -> bool:
    try:
        template.format("x")
        return True
    except (ValueError, IndexError, KeyError):
        return False
