"""GeneCIS (Vaze et al., CVPR 2023): conditional similarity over a small per-query gallery.

Layout read, under `root` (LinCIR's JSON form of the official pickles):
  {task}.json         task: change_object focus_object change_attribute focus_attribute
  val2017/<id:012d>.jpg   COCO val2017, object tasks (`val_image_id`)
  VG_100K/<image_id>.jpg  Visual Genome, attribute tasks (`image_id` + `instance_bbox` [x,y,w,h])

There is one evaluation split, "val", and no global gallery: each query ranks its
candidates, `[target] + gallery` in the official order (target first; the official code
scores "is index 0 in the top K"). An image listed twice in one candidate set (one object
query has its target again in the gallery) is kept once: identical images tie, and a
ranking by name cannot tell the copies apart.

Attribute-task images are crops: the box grown by 0.7 of its size towards the top-left,
clipped to the image, then padded to a square with black (`crop_to_box`, as the official
VAWDataset.load_cropped_image does it).

Condition text: the `condition` word, as is. Metrics: R@1/2/3 per task (`R@1/focus_object`,
...) and their unweighted mean over tasks (`R@1`, `R@2`, `R@3`).

Prediction file (ours; GeneCIS has no evaluation server): each query's top 3 candidates,
  {"<task>-<n>": [3 image names]}   n = the entry's index in {task}.json
Image names: "coco-<val_image_id>" and "vg-<image_id>-<x>_<y>_<w>_<h>" (one per crop).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.data.images import ImageSource
from pipeline.evaluation import metrics
from pipeline.evaluation.benchmarks.base import (
    Benchmark,
    Query,
    Rankings,
    annotation_list,
    entry_field,
)

KS = (1, 2, 3)


def _coco_image(root: Path, item: Any, path: Path, index: int) -> tuple[str, ImageSource]:
    image_id = int(entry_field(item, "val_image_id", path, index))
    return f"coco-{image_id}", ImageSource(root / "val2017" / f"{image_id:012d}.jpg")


def _vg_crop(root: Path, item: Any, path: Path, index: int) -> tuple[str, ImageSource]:
    image_id = int(entry_field(item, "image_id", path, index))
    box = entry_field(item, "instance_bbox", path, index)
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        raise PipelineError(f"{path}: entry {index}: instance_bbox should be [x, y, w, h], is {box!r}")
    name = f"vg-{image_id}-" + "_".join(str(v) for v in box)
    return name, ImageSource(root / "VG_100K" / f"{image_id}.jpg", box=tuple(float(v) for v in box))


# How each task names its images; the table is the registry of tasks.
TASKS: dict[str, Callable[[Path, Any, Path, int], tuple[str, ImageSource]]] = {
    "change_attribute": _vg_crop,
    "focus_attribute": _vg_crop,
    "change_object": _coco_image,
    "focus_object": _coco_image,
}


class GeneCIS(Benchmark):
    def alone(self, query: Query) -> GeneCIS:
        return replace(self, queries=[query], extra={**self.extra, "tasks": [query.group]})

    def score(self, rankings: Rankings | None = None, candidate_rankings: Rankings | None = None) -> dict[str, float]:
        self.require_targets()
        ranked = dict(zip((q.id for q in self.queries), self.ranked(candidate_rankings, "candidate rankings")))
        per_task = {}
        for task in self.extra["tasks"]:
            queries = [q for q in self.queries if q.group == task]
            recalls = metrics.mean_recall_at_k([ranked[q.id] for q in queries], [q.targets[0] for q in queries], KS)
            per_task[task] = {f"R@{k}": recalls[k] for k in KS}
        flat = {f"{key}/{task}": value for task, m in per_task.items() for key, value in m.items()}
        return {**metrics.mean_over_groups(per_task), **flat}


def read_genecis(root: Path, split: str = "val", groups: Sequence[str] = tuple(TASKS)) -> GeneCIS:
    root = Path(root)
    if split != "val":
        raise PipelineError(f"GeneCIS has one evaluation split, 'val'; got {split!r}")
    unknown = [g for g in groups if g not in TASKS]
    if unknown or not groups:
        raise PipelineError(f"GeneCIS tasks are {', '.join(TASKS)}; got {list(groups)}")
    missing = [str(root / f"{task}.json") for task in groups if not (root / f"{task}.json").is_file()]
    if missing:
        raise PipelineError(
            f"GeneCIS task files not found: {', '.join(missing)}; "
            "select the tasks you have with `groups` (--groups)"
        )
    images: dict[str, ImageSource] = {}
    queries: list[Query] = []
    for task in groups:
        path = root / f"{task}.json"
        image_of = TASKS[task]
        for i, entry in enumerate(annotation_list(path, f"GeneCIS {task}")):
            gallery = entry_field(entry, "gallery", path, i)
            if not isinstance(gallery, list):
                raise PipelineError(f"{path}: entry {i}: gallery should be a list")
            items = [entry_field(entry, key, path, i) for key in ("reference", "target")] + gallery
            named = [image_of(root, item, path, i) for item in items]
            images.update(named)
            names = [name for name, _ in named]
            queries.append(
                Query(
                    id=f"{task}-{i}",
                    reference=names[0],
                    captions=(entry_field(entry, "condition", path, i),),
                    targets=(names[1],),
                    candidates=tuple(dict.fromkeys(names[1:])),  # target first; a repeated image once
                    group=task,
                )
            )
    return GeneCIS(
        name="genecis",
        split=split,
        images=images,
        gallery=[],
        queries=queries,
        depth=0,
        candidate_depth=3,
        extra={"tasks": list(groups)},
    )
