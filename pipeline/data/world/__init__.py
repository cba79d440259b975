"""A deterministic synthetic world: images, captions, a caption corpus and two
composed-retrieval benchmarks in the official CIRCO and CIRR formats.

Ground truth is exact because the generator knows every image's attributes: the main
object's Thing; the clutter around it is never a shape, so no query can mean it.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
from tqdm import tqdm

from pipeline.core.errors import PipelineError
from pipeline.core.io import write_json
from pipeline.core.params import at_least, below
from pipeline.data.images import mask_file
from pipeline.data.world.attributes import CLUTTER, FIELDS, MAX_CLUTTER, VALUES, Thing, all_things
from pipeline.data.world.captions import caption, condition
from pipeline.data.world.render import render_with_mask

write_annotation = partial(write_json, indent=1, newline=False)  # the benchmarks' JSON files, compact

@dataclass
class WorldConfig:
    seed: int = 0
    image_size: int = 64
    train_images: int = 16000
    heldout_images: int = 500
    gallery_images: int = 1500
    corpus_captions: int = 30000
    circo_queries: int = 250
    cirr_queries: int = 400
    dev_queries: int = 400  # CIRR-format dev split on the same gallery: phi is selected on it, never on val
    captions_per_image: int = 5
    unseen_fraction: float = 0.1  # combinations that appear in the corpus but never as images
    mismatched_captions: float = 0.1  # training images whose captions belong to another image, as on the web

    def check(self) -> None:
        for name in ("train_images", "heldout_images", "gallery_images", "corpus_captions", "circo_queries",
                     "cirr_queries", "dev_queries", "captions_per_image"):
            at_least(f"world.{name}", getattr(self, name), 1)
        at_least("world.image_size", self.image_size, 16)
        for name in ("unseen_fraction", "mismatched_captions"):
            at_least(f"world.{name}", getattr(self, name), 0)
            below(f"world.{name}", getattr(self, name), 1)


def split_things(rng: np.random.Generator, unseen_fraction: float) -> tuple[list[Thing], list[Thing]]:
    things = all_things()
    order = rng.permutation(len(things))
    n_unseen = int(round(unseen_fraction * len(things)))
    return [things[i] for i in order[n_unseen:]], [things[i] for i in order[:n_unseen]]


def sample(rng: np.random.Generator, things: list[Thing], n: int) -> list[Thing]:
    return [things[i] for i in rng.integers(len(things), size=n)]


def changed(rng: np.random.Generator, ref: Thing) -> Thing:
    """`ref` with one (70%) or two (30%) attributes set to other values."""
    fields = rng.choice(FIELDS, size=1 if rng.random() < 0.7 else 2, replace=False)
    new = ref._asdict()
    for f in fields:
        others = [v for v in VALUES[f] if v != new[f]]
        new[f] = others[rng.integers(len(others))]
    return Thing(**new)


def describe_kept(ref: Thing, target: Thing) -> str:
    return ", ".join(f"{f} {getattr(ref, f)}" for f in FIELDS if getattr(ref, f) == getattr(target, f))


def sample_clutter(rng: np.random.Generator, n: int) -> list[tuple[str, ...]]:
    return [tuple(sorted(rng.choice(CLUTTER, size=rng.integers(MAX_CLUTTER + 1)).tolist())) for _ in range(n)]


def write_images(things: list[Thing], clutter: list[tuple[str, ...]], paths: list[Path], size: int,
                 rng: np.random.Generator, desc: str, masks: list[Path] | None = None) -> None:
    """`masks`, where given, are where each image's main-object mask goes (the oracle for CAMs)."""
    for thing, extra, path, mask_path in tqdm(list(zip(things, clutter, paths, masks or [None] * len(paths))),
                                              desc=desc, unit="img"):
        image, mask = render_with_mask(thing, size, rng, extra)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        if mask_path is not None:
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            mask.save(mask_path)


def circo_queries(rng, gallery: list[Thing], ids: list[int], n: int) -> list[dict]:
    where = defaultdict(list)
    for thing, i in zip(gallery, ids):
        where[thing].append(i)
    queries = []
    while len(queries) < n:
        r = int(rng.integers(len(gallery)))
        target = changed(rng, gallery[r])
        gt = where.get(target)
        if not gt:  # the target combination is not in the gallery: draw again
            continue
        queries.append({
            "id": len(queries),
            "reference_img_id": ids[r],
            "target_img_id": gt[int(rng.integers(len(gt)))],
            "relative_caption": condition(gallery[r], target, rng),
            "shared_concept": describe_kept(gallery[r], target),
            "gt_img_ids": sorted(gt),
            "semantic_aspects": [f for f in FIELDS if getattr(gallery[r], f) != getattr(target, f)],
        })
    return queries


def cirr_queries(rng, gallery: list[Thing], names: list[str], n: int, avoid: list[dict] = ()) -> list[dict]:
    """CIRR has one target per query: only targets unique in the gallery keep that exact.
    Reference-target pairs of the queries in `avoid` (another split's) are not drawn again."""
    taken = {(q["reference"], q["target_hard"]) for q in avoid}
    where = defaultdict(list)
    for thing, name in zip(gallery, names):
        where[thing].append(name)
    queries = []
    for _ in range(1000 * n):
        if len(queries) == n:
            break
        r = int(rng.integers(len(gallery)))
        target = changed(rng, gallery[r])
        if len(where.get(target, ())) != 1:
            continue
        t_name = where[target][0]
        if (names[r], t_name) in taken:
            continue
        # hard negatives for the 6-image group: share at least 3 attributes with the target
        near = [nm for th, nm in zip(gallery, names)
                if th != target and nm != names[r] and sum(a == b for a, b in zip(th, target)) >= 3]
        if len(near) < 4:
            continue
        members = [names[r], t_name, *rng.choice(near, size=4, replace=False).tolist()]
        members = [members[i] for i in rng.permutation(6)]
        taken.add((names[r], t_name))
        queries.append({
            "pairid": len(queries),
            "reference": names[r],
            "target_hard": t_name,
            "target_soft": {t_name: 1.0},
            "caption": condition(gallery[r], target, rng),
            "img_set": {"id": len(queries), "members": members,
                        "reference_rank": members.index(names[r]), "target_rank": members.index(t_name)},
        })
    if len(queries) < n:
        raise PipelineError(f"world: found only {len(queries)} of {n} CIRR-format queries with a unique target; "
                            f"ask for fewer queries (world.cirr_queries, world.dev_queries) or a larger gallery")
    return queries


def generate(cfg: WorldConfig, out: Path) -> dict:
    """Writes the whole world under `out`; returns counts for the stage's summary."""
    rng = np.random.default_rng(cfg.seed)
    seen, unseen = split_things(rng, cfg.unseen_fraction)

    # image-caption pairs the world backbone learns from, and held-out ones it is scored on
    pairs = []
    for split, n in (("train", cfg.train_images), ("heldout", cfg.heldout_images)):
        things, clutter = sample(rng, seen, n), sample_clutter(rng, n)
        paths = [out / "images" / split / f"{i:06d}.png" for i in range(n)]
        # a pair's mask is its own image's object, also where its captions are another image's
        write_images(things, clutter, paths, cfg.image_size, rng, f"world {split} images",
                     masks=[out / mask_file(p.relative_to(out)) for p in paths])
        captions = [[caption(t, rng, c) for _ in range(cfg.captions_per_image)] for t, c in zip(things, clutter)]
        if split == "train":  # held-out pairs stay clean: they measure the backbone
            wrong = np.flatnonzero(rng.random(n) < cfg.mismatched_captions)
            for i, j in zip(wrong, rng.integers(n, size=len(wrong))):
                captions[i] = captions[j]
        pairs += [{"file": str(p.relative_to(out)), "split": split, "captions": cs, "clutter": list(c), **t._asdict()}
                  for t, c, cs, p in zip(things, clutter, captions, paths)]
    pl.DataFrame(pairs).write_parquet(out / "pairs.parquet")

    # the text-only corpus phi is trained on: every combination, unseen ones included
    corpus = [caption(t, rng, c) for t, c in zip(sample(rng, seen + unseen, cfg.corpus_captions),
                                                 sample_clutter(rng, cfg.corpus_captions))]
    (out / "corpus.txt").write_text("\n".join(corpus) + "\n")

    # one gallery, written in both official layouts
    gallery, gallery_clutter = sample(rng, seen, cfg.gallery_images), sample_clutter(rng, cfg.gallery_images)
    coco_ids = [i + 1 for i in range(len(gallery))]
    cirr_names = [f"world-{i}" for i in range(len(gallery))]
    circo_root, cirr_root = out / "benchmarks" / "circo", out / "benchmarks" / "cirr"
    files = [f"{i:012d}.png" for i in coco_ids]
    write_images(gallery, gallery_clutter, [circo_root / "COCO2017_unlabeled" / "unlabeled2017" / f for f in files],
                 cfg.image_size, rng, "world gallery")
    for name, f in zip(cirr_names, files):  # same pixels in CIRR's layout
        dst = cirr_root / "dev" / f"{name}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes((circo_root / "COCO2017_unlabeled" / "unlabeled2017" / f).read_bytes())
    info = {"images": [{"id": i, "file_name": f} for i, f in zip(coco_ids, files)]}
    write_annotation(circo_root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json", info)
    circo = circo_queries(rng, gallery, coco_ids, cfg.circo_queries)
    write_annotation(circo_root / "annotations" / "val.json", circo)
    write_annotation(cirr_root / "cirr" / "image_splits" / "split.rc2.val.json",
                {n: f"./dev/{n}.png" for n in cirr_names})
    cirr = cirr_queries(rng, gallery, cirr_names, cfg.cirr_queries)
    write_annotation(cirr_root / "cirr" / "captions" / "cap.rc2.val.json", cirr)
    # the dev split phi is selected on (train.validate_on): other queries, same gallery
    dev = cirr_queries(rng, gallery, cirr_names, cfg.dev_queries, avoid=cirr)
    write_annotation(cirr_root / "cirr" / "image_splits" / "split.rc2.dev.json", {n: f"./dev/{n}.png" for n in cirr_names})
    write_annotation(cirr_root / "cirr" / "captions" / "cap.rc2.dev.json", dev)
    pl.DataFrame([{"coco_id": i, "cirr_name": n, **t._asdict()} for i, n, t in zip(coco_ids, cirr_names, gallery)]
                 ).write_parquet(out / "gallery.parquet")

    return {"train_images": cfg.train_images, "heldout_images": cfg.heldout_images,
            "masks": cfg.train_images + cfg.heldout_images,
            "gallery_images": len(gallery), "corpus_captions": len(corpus),
            "unseen_combinations": len(unseen), "circo_queries": len(circo), "cirr_queries": len(cirr), "dev_queries": len(dev),
            "circo_mean_ground_truths": float(np.mean([len(q["gt_img_ids"]) for q in circo]))}
