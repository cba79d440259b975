"""The benchmarks by name, and the two things every caller does first with one.

    bench = load_benchmark("cirr", root=Path("datasets/CIRR"), split="val")
    check_images(bench)              # before any model work
    image = open_image(bench.images[name])

Readers live one per module (circo, cirr, fashioniq, genecis); `groups` selects FashionIQ
categories or GeneCIS tasks.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from pipeline.benchmarks.base import MAX_LISTED, Benchmark, ImageSource, Query
from pipeline.benchmarks.circo import read_circo
from pipeline.benchmarks.cirr import read_cirr
from pipeline.benchmarks.fashioniq import read_fashioniq
from pipeline.benchmarks.genecis import crop_to_box, read_genecis
from pipeline.core.errors import PipelineError
from pipeline.core.registry import Registry

__all__ = ["BENCHMARKS", "Benchmark", "ImageSource", "MissingImagesError", "Query",
           "check_images", "from_params", "load_benchmark", "open_image"]

BENCHMARKS: Registry[Callable[..., Benchmark]] = Registry("benchmark")
BENCHMARKS.register("circo")(read_circo)
BENCHMARKS.register("cirr")(read_cirr)
BENCHMARKS.register("fashioniq")(read_fashioniq)
BENCHMARKS.register("genecis")(read_genecis)

# Readers that take `groups`, and what a group is there.
GROUPED = {"fashioniq": "category", "genecis": "task"}


def load_benchmark(kind: str, root: Path, split: str, groups: Sequence[str] | None = None) -> Benchmark:
    """The benchmark `kind` read from its official layout under `root`.

    `groups` restricts FashionIQ to some categories or GeneCIS to some tasks (default: all).
    """
    reader = BENCHMARKS.get(kind)
    if groups is None:
        return reader(Path(root), split)
    if kind not in GROUPED:
        raise PipelineError(f"{kind} has no groups to select; only {', '.join(GROUPED)} do")
    return reader(Path(root), split, groups=tuple(groups))


def from_params(params: dict, name: str, split: str | None = None) -> Benchmark:
    """The benchmark `name` of params.yaml's `benchmarks` list, read from its root; its own
    split unless `split` is given (`lincir submit` reads the test split)."""
    if name not in params["benchmarks"]:
        raise PipelineError(f"no benchmark named {name!r} in params.yaml; names: {', '.join(params['benchmarks'])}")
    b = params["benchmarks"][name]
    return load_benchmark(b["kind"], Path(b["root"]), split or b["split"], b.get("groups"))


class MissingImagesError(PipelineError):
    """Images a benchmark needs that are absent or cannot be opened; `.problems` lists them all."""

    def __init__(self, message: str, problems: list[str]):
        super().__init__(message)
        self.problems = problems


def check_images(bench: Benchmark, workers: int = 8) -> None:
    """Raises MissingImagesError naming the missing or unreadable image files and their count.

    Each file must exist and its header must open with PIL (the pixels are decoded later,
    by the embed stage). Files are checked once even where several crops share one.
    """
    paths = sorted({source.path for source in bench.images.values()})
    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = [p for p in pool.map(_image_problem, paths) if p]
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise MissingImagesError(
            f"{bench.name} {bench.split}: {len(problems)} of {len(paths)} image files are missing or "
            f"unreadable:\n  {listed}{more}",
            problems,
        )


def _image_problem(path: Path) -> str | None:
    if not path.is_file():
        return f"{path} (missing)"
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018  (the header is parsed by open; touching it is the check)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return f"{path} (unreadable: {e})"
    return None


def open_image(source: ImageSource) -> Image.Image:
    """The pixels of one benchmark image: the file, cropped where the source has a box (boxes
    come from GeneCIS attribute tasks, whose official crop is dilated and padded to square)."""
    try:
        with Image.open(source.path) as image:
            image.load()
            return crop_to_box(image, source.box) if source.box else image.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise PipelineError(f"cannot read image {source.path}: {e}") from None
