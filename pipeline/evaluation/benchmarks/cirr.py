"""CIRR (Liu et al., ICCV 2021): composed retrieval over NLVR2 images.

Layout read (as SEARLE/LinCIR read it), under `root`:
  cirr/captions/cap.rc2.{split}.json       split: val | test1 (test1 has no target_hard)
  cirr/image_splits/split.rc2.{split}.json name -> "./dev/<name>.png", relative to root

The gallery is every image of the split; the reference is removed from its own ranking
(SEARLE/LinCIR validation and the test server). Subset R@K ranks the query's 6-image group
(`img_set.members`) minus the reference. Metrics use `target_hard` only (`target_soft` is
never scored by the official evaluation).

Prediction files (official test-server format, http://cirr.cecs.anu.edu.au):
  {"version": "rc2", "metric": "recall", "<pairid>": [50 names]}
  {"version": "rc2", "metric": "recall_subset", "<pairid>": [3 names]}
"""
from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.data.images import ImageSource
from pipeline.evaluation import metrics
from pipeline.evaluation.benchmarks.base import (
    Benchmark,
    Query,
    Rankings,
    annotation_list,
    entry_field,
    inside,
    read_json,
)

KS = (1, 5, 10, 50)
SUBSET_KS = (1, 2, 3)
VERSION = "rc2"


class CIRR(Benchmark):
    METRICS = (*(f"R@{k}" for k in KS), *(f"subset_R@{k}" for k in SUBSET_KS))

    def score(self, rankings: Rankings, candidate_rankings: Rankings | None = None) -> dict[str, float]:
        self.require_targets()
        targets = [q.targets[0] for q in self.queries]
        recalls = metrics.mean_recall_at_k(self.ranked(rankings, "rankings"), targets, KS)
        subset = metrics.mean_recall_at_k(self.ranked(candidate_rankings, "subset rankings"), targets, SUBSET_KS)
        return {**{f"R@{k}": recalls[k] for k in KS}, **{f"subset_R@{k}": subset[k] for k in SUBSET_KS}}

    def file_header(self, kind: str) -> dict[str, str]:
        return {"version": VERSION, "metric": "recall" if kind == "rankings" else "recall_subset"}


def read_cirr(root: Path, split: str) -> CIRR:
    root = Path(root)
    split_path = root / "cirr" / "image_splits" / f"split.rc2.{split}.json"
    relpaths = read_json(split_path, f"CIRR {split} image split")
    if not isinstance(relpaths, dict):
        raise PipelineError(f"{split_path}: expected a JSON object of image name -> relative path")
    images = {name: ImageSource(inside(root, relpath, split_path)) for name, relpath in relpaths.items()}

    path = root / "cirr" / "captions" / f"cap.rc2.{split}.json"
    queries = []
    for i, entry in enumerate(annotation_list(path, f"CIRR {split} caption")):
        reference = entry_field(entry, "reference", path, i)
        members = entry_field(entry_field(entry, "img_set", path, i), "members", path, i)
        query = Query(
            id=str(entry_field(entry, "pairid", path, i)),
            reference=reference,
            captions=(entry_field(entry, "caption", path, i),),
            targets=(entry["target_hard"],) if "target_hard" in entry else (),
            candidates=tuple(m for m in members if m != reference),
        )
        if query.targets and query.targets[0] not in query.candidates:
            raise PipelineError(f"{path}: pairid {query.id}: target_hard is not in its img_set members")
        queries.append(query)
    return CIRR(
        name="cirr",
        split=split,
        images=images,
        gallery=list(images),
        queries=queries,
        exclude_reference=True,
        depth=50,
        candidate_depth=3,
    )
