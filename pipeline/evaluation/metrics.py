"""Every metric of the pipeline, in one module: retrieval metrics as pure functions on rankings,
and the measures of latents and masks (the modality gap and its cones, zero-shot image<->text
retrieval, mask IoU).

A ranking is a sequence of image names (or ids), best first. Benchmarks only choose which
ranking and which ground truths go in; the formulas live here once:

- recall@K: 1 if the single target is among the first K, else 0 (CIRR R@K on the gallery
  ranking and subset R@K on the group ranking, FashionIQ R@10/50, GeneCIS R@1/2/3, CIRCO R@K
  on its one `target_img_id`);
- CIRCO AP@K = sum_{i<=K} P@i * rel_i / min(K, #ground truths), with P@i the precision of the
  first i names, exactly as CIRCO's official `evaluation.py` computes it.

Retrieval means are returned in percent, as every benchmark reports them. The geometry follows
Liang et al., "Mind the Gap" (NeurIPS 2022) and LinCIR Tab. 1: every function takes raw latents
and l2-normalises them itself, as the paper measures them.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Hashable, Iterable, Sequence, Sized
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor


def recall_at_k(ranking: Sequence[Hashable], target: Hashable, k: int) -> float:
    """1.0 if `target` is among the first k names of `ranking`, else 0.0."""
    return float(target in ranking[:k])


def average_precision_at_k(ranking: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    """CIRCO's AP@k over all ground truths `relevant`.

    A ranking shorter than k simply has no more hits; rankings are validated to hold no
    duplicates, where the official code would count a repeated ground truth twice.
    """
    relevant = set(relevant)
    if not relevant:
        raise ValueError("AP@k needs at least one ground truth")
    hits = 0
    total = 0.0
    for i, name in enumerate(ranking[:k], start=1):
        if name in relevant:
            hits += 1
            total += hits / i  # P@i, counted only where rel_i = 1
    return total / min(len(relevant), k)


def mean_recall_at_k(
    rankings: Sequence[Sequence[Hashable]], targets: Sequence[Hashable], ks: Iterable[int]
) -> dict[int, float]:
    """Percent of queries whose target is in the top k, for each k."""
    _same_length(rankings, targets)
    return {k: _percent(recall_at_k(r, t, k) for r, t in zip(rankings, targets)) for k in ks}


def mean_average_precision_at_k(
    rankings: Sequence[Sequence[Hashable]], relevant: Sequence[Collection[Hashable]], ks: Iterable[int]
) -> dict[int, float]:
    """CIRCO mAP@k in percent: the mean over queries of AP@k, for each k."""
    _same_length(rankings, relevant)
    return {k: _percent(average_precision_at_k(r, g, k) for r, g in zip(rankings, relevant)) for k in ks}


def mean_by_label(values: Sequence[float], labels: Sequence[Iterable[str]]) -> dict[str, float]:
    """Mean of `values` per label, where each value may carry several labels (CIRCO's semantic
    aspects), in percent. Labels appear in order of first use; a label no value carries is
    simply absent (the official script would print nan for it)."""
    _same_length(values, labels)
    per_label: dict[str, list[float]] = defaultdict(list)
    for value, names in zip(values, labels):
        for name in names:
            per_label[name].append(value)
    return {name: _percent(v) for name, v in per_label.items()}


def mean_over_groups(per_group: dict[str, dict[str, float]]) -> dict[str, float]:
    """Unweighted mean across groups, metric by metric: FashionIQ's average over categories and
    GeneCIS's average over tasks, as SEARLE/LinCIR average them (not weighted by query count)."""
    if not per_group:
        raise ValueError("no groups to average")
    keys = next(iter(per_group.values())).keys()
    return {key: sum(m[key] for m in per_group.values()) / len(per_group) for key in keys}


def _percent(values: Iterable[float]) -> float:
    values = list(values)
    if not values:
        raise ValueError("a mean over no queries")
    return 100.0 * sum(values) / len(values)


def _same_length(a: Sized, b: Sized) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} rankings but {len(b)} ground truths")


# Latents and masks (torch tensors; torch is imported only by these, so `lincir score` stays light)

def modality_gap(a: Tensor, b: Tensor) -> float:
    """Distance between the centroids of the l2-normalised rows of `a` and of `b`."""
    import torch.nn.functional as F

    return (F.normalize(a.float(), dim=-1).mean(0) - F.normalize(b.float(), dim=-1).mean(0)).norm().item()


def matched_cosine(a: Tensor, b: Tensor) -> float:
    """Mean cosine of row i of `a` with row i of `b` (an image with its own caption)."""
    import torch.nn.functional as F

    return F.cosine_similarity(a.float(), b.float(), dim=-1).mean().item()


def pairwise_cosine(a: Tensor) -> float:
    """Mean cosine between two different rows of `a`: high when the modality lies in a narrow cone."""
    import torch.nn.functional as F

    x = F.normalize(a.float(), dim=-1)
    n = len(x)
    total = x.sum(0).pow(2).sum() - n  # sum over all pairs i != j of x_i . x_j, without the n x n matrix
    return (total / (n * (n - 1))).item()


def retrieval_recall(image_features: Tensor, text_features: Tensor, same: Tensor,
                     ks=(1, 5)) -> dict[str, float]:
    """Zero-shot image<->text retrieval in percent. `same[i, j]` marks text j as a correct
    answer for image i (several images can share one description)."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        sim = F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
        out = {}
        for name, s, rel in (("image_to_text", sim, same), ("text_to_image", sim.T, same.T)):
            order = s.argsort(dim=1, descending=True)
            hits = torch.gather(rel, 1, order)
            for k in ks:
                out[f"{name}_R@{k}"] = 100.0 * hits[:, :k].any(dim=1).float().mean().item()
    return out


def iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of bool masks [..., H, W], per mask; two empty masks agree (1)."""
    import torch

    inter = (a & b).flatten(-2).sum(-1).float()
    union = (a | b).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def zero_shot_classes(image_latents: Tensor, class_latents: Tensor) -> list[int]:
    """Each image's class in zero-shot classification: the class whose text latent is nearest in cosine."""
    import torch.nn.functional as F

    sims = F.normalize(image_latents.float(), dim=-1) @ F.normalize(class_latents.float(), dim=-1).T
    return sims.argmax(dim=1).tolist()


def attribute_accuracy(predicted: Sequence[Sequence[Hashable]], truth: Sequence[Sequence[Hashable]],
                       fields: Sequence[str]) -> dict[str, float]:
    """Percent of items whose predicted attributes are all right (`all`) and, per field, whose field is."""
    _same_length(predicted, truth)
    out = {"all": _percent(tuple(p) == tuple(t) for p, t in zip(predicted, truth))}
    for i, field in enumerate(fields):
        out[field] = _percent(p[i] == t[i] for p, t in zip(predicted, truth))
    return out
