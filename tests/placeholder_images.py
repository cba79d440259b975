"""Benchmark roots for tests: the real annotation files, plus tiny placeholder images.

The official annotations (no images) sit read-only in shared/benchmark-annotations. A test
links them into a writable folder (`linked_root`), adds CIRCO's gallery list where needed
(`write_circo_image_info`), loads the benchmark, and writes one 8x8 placeholder per image
path the benchmark needs (`write_placeholder_images`): symlinks to one small file per suffix,
so a few thousand images cost milliseconds.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from pipeline.evaluation.benchmarks import Benchmark

ANNOTATIONS = Path(__file__).resolve().parents[2] / "shared" / "benchmark-annotations"
SIZE = 8


def linked_root(source: Path, destination: Path) -> Path:
    """`destination` holding a symlink to every entry of `source` (read-only folders stay shared)."""
    destination.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        (destination / entry.name).symlink_to(entry)
    return destination


def write_circo_image_info(root: Path, extra_ids: Iterable[int] = ()) -> list[int]:
    """Writes COCO2017_unlabeled/annotations/image_info_unlabeled2017.json listing every image
    CIRCO's annotation files name (references, ground truths) plus `extra_ids`; returns the ids."""
    ids: set[int] = set(extra_ids)
    for path in sorted((root / "annotations").glob("*.json")):
        for entry in json.loads(path.read_text()):
            ids.add(entry["reference_img_id"])
            ids.update(entry.get("gt_img_ids", ()))
    ordered = sorted(ids)
    info = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ordered]}
    target = root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(info))
    return ordered


def write_placeholder_images(bench: Benchmark, store: Path) -> int:
    """A placeholder at every image path of `bench` (a link to one tiny image per suffix kept
    in `store`); returns how many paths were written."""
    store.mkdir(parents=True, exist_ok=True)
    originals: dict[str, Path] = {}
    paths = sorted({source.path for source in bench.images.values()})
    for path in paths:
        suffix = path.suffix.lower()
        if suffix not in originals:
            originals[suffix] = store / f"placeholder{suffix}"
            Image.new("RGB", (SIZE, SIZE), (200, 120, 40)).save(originals[suffix])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(originals[suffix])
    return len(paths)


def _keep(path: Path, entries) -> None:
    path.unlink()  # a link into the shared folder: replaced by the trimmed file
    path.write_text(json.dumps(entries))


def trimmed_root(kind: str, source: Path, destination: Path, n: int) -> Path:
    """`linked_root`, with each val annotation file cut to its first `n` queries and the image lists
    to the images those queries name (and, for FashionIQ, `n` more gallery images a category):
    the official format, at a size a test embeds in seconds."""
    root = linked_root(source, destination)
    if kind == "cirr":
        (root / "cirr").unlink()
        cirr = linked_root(source / "cirr", root / "cirr")
        for sub in ("captions", "image_splits"):
            (cirr / sub).unlink()
            linked_root(source / "cirr" / sub, cirr / sub)
        queries = json.loads((cirr / "captions" / "cap.rc2.val.json").read_text())[:n]
        names = {name for q in queries for name in (q["reference"], q["target_hard"], *q["img_set"]["members"])}
        split = json.loads((cirr / "image_splits" / "split.rc2.val.json").read_text())
        _keep(cirr / "captions" / "cap.rc2.val.json", queries)
        _keep(cirr / "image_splits" / "split.rc2.val.json", {k: v for k, v in split.items() if k in names})
    elif kind == "circo":
        (root / "annotations").unlink()
        linked_root(source / "annotations", root / "annotations")
        _keep(root / "annotations" / "val.json", json.loads((root / "annotations" / "val.json").read_text())[:n])
    elif kind == "fashioniq":
        for sub in ("captions", "image_splits"):
            (root / sub).unlink()
            linked_root(source / sub, root / sub)
        for category in ("dress", "shirt", "toptee"):
            queries = json.loads((root / "captions" / f"cap.{category}.val.json").read_text())[:n]
            split = json.loads((root / "image_splits" / f"split.{category}.val.json").read_text())
            names = {name for q in queries for name in (q["candidate"], q["target"])}
            _keep(root / "captions" / f"cap.{category}.val.json", queries)
            _keep(root / "image_splits" / f"split.{category}.val.json",
                  [s for s in split if s in names] + [s for s in split if s not in names][:n])
    elif kind == "genecis":
        for path in root.glob("*.json"):
            _keep(path, json.loads(path.read_text())[:n])
    return root
