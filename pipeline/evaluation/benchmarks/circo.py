"""CIRCO (Baldrati et al., ICCV 2023): open-domain CIR over COCO 2017 unlabeled, many ground truths.

Layout read (as CIRCO's own dataset.py and SEARLE/LinCIR read it), under `root`:
  annotations/{split}.json                                   split: val | test
  COCO2017_unlabeled/annotations/image_info_unlabeled2017.json   the gallery, COCO format
  COCO2017_unlabeled/unlabeled2017/<file_name>                   the images

Image names are COCO ids as strings. The query text is `relative_caption` alone: the
official SEARLE/LinCIR prompts (`a photo of $ that {relative_caption}`) never use
`shared_concept`. The reference stays in the gallery, as in the official code.
Metrics (official evaluation.py): mAP@K over all `gt_img_ids`, R@K on `target_img_id`
(the first ground truth), mAP@10 per semantic aspect in `breakdown`.

Prediction file (official): `{"<query id>": [50 COCO ids]}`; ids may be ints or strings.
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

KS = (5, 10, 25, 50)
ASPECT_K = 10


class CIRCO(Benchmark):
    METRICS = (*(f"mAP@{k}" for k in KS), *(f"R@{k}" for k in KS))

    def score(self, rankings: Rankings, candidate_rankings: Rankings | None = None) -> dict[str, float]:
        self.require_targets()
        ranked = self.ranked(rankings, "rankings")
        maps = metrics.mean_average_precision_at_k(ranked, [q.targets for q in self.queries], KS)
        recalls = metrics.mean_recall_at_k(ranked, [q.targets[0] for q in self.queries], KS)
        return {**{f"mAP@{k}": maps[k] for k in KS}, **{f"R@{k}": recalls[k] for k in KS}}

    def breakdown(self, rankings: Rankings, candidate_rankings: Rankings | None = None) -> dict[str, float]:
        self.require_targets()
        ranked = self.ranked(rankings, "rankings")
        aps = [metrics.average_precision_at_k(r, q.targets, ASPECT_K) for r, q in zip(ranked, self.queries)]
        per_aspect = metrics.mean_by_label(aps, [q.aspects for q in self.queries])
        return {f"mAP@{ASPECT_K}/{aspect}": value for aspect, value in sorted(per_aspect.items())}

    def encode_name(self, name: str) -> int:
        return int(name)  # the official example submission lists COCO ids as ints


def read_circo(root: Path, split: str) -> CIRCO:
    root = Path(root)
    info_path = root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json"
    info = read_json(info_path, "CIRCO gallery list (COCO image_info_unlabeled2017.json)")
    entries = info.get("images") if isinstance(info, dict) else None
    if not isinstance(entries, list):
        raise PipelineError(f"{info_path}: expected COCO format {{'images': [{{'id', 'file_name'}}, ...]}}")
    image_dir = root / "COCO2017_unlabeled" / "unlabeled2017"
    images = {
        str(entry_field(e, "id", info_path, i)): ImageSource(inside(image_dir, entry_field(e, "file_name", info_path, i), info_path))
        for i, e in enumerate(entries)
    }

    path = root / "annotations" / f"{split}.json"
    queries = []
    for i, entry in enumerate(annotation_list(path, f"CIRCO {split} annotation")):
        query_id = str(entry_field(entry, "id", path, i))
        reference = str(entry_field(entry, "reference_img_id", path, i))
        targets: tuple[str, ...] = ()
        if "target_img_id" in entry:  # test queries have no ground truths
            target = str(entry["target_img_id"])
            gts = [str(g) for g in entry_field(entry, "gt_img_ids", path, i)]
            if target not in gts:
                raise PipelineError(f"{path}: query {query_id}: target_img_id {target} is not among its gt_img_ids")
            targets = (target, *(g for g in gts if g != target))  # R@K is on the target: it comes first
        unknown = [name for name in (reference, *targets) if name not in images]
        if unknown:
            raise PipelineError(f"{path}: query {query_id} names images not in {info_path}: {unknown}")
        queries.append(
            Query(
                id=query_id,
                reference=reference,
                captions=(entry_field(entry, "relative_caption", path, i),),
                targets=targets,
                aspects=tuple(entry.get("semantic_aspects", ())),
            )
        )
    return CIRCO(name="circo", split=split, images=images, gallery=list(images), queries=queries, depth=50)
