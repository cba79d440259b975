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

from pipeline.benchmarks import Benchmark

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
