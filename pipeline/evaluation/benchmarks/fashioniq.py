"""FashionIQ (Wu et al., CVPR 2021): fashion CIR in three categories, each its own gallery.

Layout read, under `root`:
  captions/cap.{category}.{split}.json       split: val | test (test has no target)
  image_splits/split.{category}.{split}.json the category's gallery
  images/<name>.png                           (<name>.jpg, as SEARLE/LinCIR name them, is
                                              used where the .png is absent)

One Benchmark holds the chosen categories; `Query.group` is the category and
`gallery_for(query)` that category's image split, so the evaluate stage ranks each query
against its own category like the official code, with no per-category loop of its own.
The reference stays in the gallery (SEARLE/LinCIR do not remove it).

Condition texts (SEARLE/LinCIR): each of the two relative captions stripped of
leading/trailing '.', '?', ',' and spaces, joined with " and " in both orders; the two
normalised features are averaged.

Metrics: R@10 and R@50 per category (`R@10/dress`, ...) and their unweighted mean over
categories (`R@10`, `R@50`), as SEARLE/LinCIR average them.

Prediction file (ours; FashionIQ has no evaluation server):
  {"<category>-<n>": [50 image names]}   n = the entry's index in cap.{category}.{split}.json
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.errors import PipelineError, quoted
from pipeline.data.images import ImageSource
from pipeline.evaluation import metrics
from pipeline.evaluation.benchmarks.base import (
    Benchmark,
    Query,
    Rankings,
    annotation_list,
    entry_field,
    inside,
    name_field,
)

CATEGORIES = ("dress", "shirt", "toptee")
KS = (10, 50)
STRIP = ".?, "  # the characters SEARLE/LinCIR strip from both ends of each caption


class FashionIQ(Benchmark):
    METRICS = tuple(f"R@{k}" for k in KS)
    GROUPS = CATEGORIES

    def score(self, rankings: Rankings, candidate_rankings: Rankings | None = None) -> dict[str, float]:
        self.require_targets()
        ranked = dict(zip((q.id for q in self.queries), self.ranked(rankings, "rankings")))
        per_category = {}
        for category in self.galleries:
            queries = [q for q in self.queries if q.group == category]
            recalls = metrics.mean_recall_at_k([ranked[q.id] for q in queries], [q.targets[0] for q in queries], KS)
            per_category[category] = {f"R@{k}": recalls[k] for k in KS}
        flat = {f"{key}/{category}": value for category, m in per_category.items() for key, value in m.items()}
        return {**metrics.mean_over_groups(per_category), **flat}


def condition_texts(captions: Sequence[str]) -> tuple[str, str]:
    """The two query texts of a FashionIQ pair of relative captions, as SEARLE/LinCIR form them."""
    first, second = (c.strip(STRIP) for c in captions)
    return f"{first} and {second}", f"{second} and {first}"


def image_file(name: str, present: set[str]) -> str:
    """`<name>.png`, or `<name>.jpg` where only that one is among the `present` file names."""
    png, jpg = f"{name}.png", f"{name}.jpg"
    return jpg if jpg in present and png not in present else png


def read_fashioniq(root: Path, split: str, groups: Sequence[str] = CATEGORIES) -> FashionIQ:
    root = Path(root)
    unknown = [g for g in groups if g not in CATEGORIES]
    if unknown or not groups:
        raise PipelineError(f"FashionIQ categories are {', '.join(CATEGORIES)}; got {list(groups)}")
    galleries: dict[str, list[str]] = {}
    queries: list[Query] = []
    for category in groups:
        split_path = root / "image_splits" / f"split.{category}.{split}.json"
        names = annotation_list(split_path, f"FashionIQ {category} {split} image split")
        bad = [(i, n) for i, n in enumerate(names) if not isinstance(n, str) or not n]
        if bad:  # str() would make null or {} an image named 'None' or '{}'
            raise PipelineError(f"{split_path}: entry {bad[0][0]} is {quoted(bad[0][1])}, not an image name "
                                f"({len(bad)} such entries)")
        galleries[category] = names
        path = root / "captions" / f"cap.{category}.{split}.json"
        for i, entry in enumerate(annotation_list(path, f"FashionIQ {category} {split} caption")):
            captions = entry_field(entry, "captions", path, i)
            if not (isinstance(captions, list) and len(captions) == 2 and all(isinstance(c, str) for c in captions)):
                raise PipelineError(f"{path}: entry {i} should have 2 captions, has {captions!r}")
            queries.append(
                Query(
                    id=f"{category}-{i}",
                    reference=name_field(entry, "candidate", path, i),
                    captions=condition_texts(captions),
                    targets=(name_field(entry, "target", path, i),) if "target" in entry else (),
                    group=category,
                )
            )
    gallery_sets = {category: set(names) for category, names in galleries.items()}
    for q in queries:
        if q.targets and q.targets[0] not in gallery_sets[q.group]:
            raise PipelineError(f"FashionIQ {split}: query {q.id}: target {q.targets[0]} is not in the {q.group} split")
    names = dict.fromkeys(n for gallery in galleries.values() for n in gallery)  # shirt/toptee share some
    image_dir = root / "images"
    present = set(os.listdir(image_dir)) if image_dir.is_dir() else set()
    return FashionIQ(
        name="fashioniq",
        split=split,
        images={name: ImageSource(inside(image_dir, image_file(name, present), root / "image_splits")) for name in names},
        gallery=list(names),
        galleries=galleries,
        queries=queries,
        depth=50,
    )
