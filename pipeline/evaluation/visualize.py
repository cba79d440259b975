"""A PNG grid of composed queries: reference, condition, top-k results, ground truths outlined."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import NamedTuple

from PIL import Image, ImageDraw, ImageFont

from pipeline.core.io import atomic
from pipeline.data.images import open_image, to_rgb
from pipeline.evaluation.benchmarks import Benchmark

CELL = 112
TEXT_W = 220
LABEL_LINE = 14  # pixels a line of a result's label takes
GREEN, GREY = (20, 170, 60), (200, 200, 200)


class Row(NamedTuple):
    reference: Image.Image | None  # None: a text-only query
    condition: str
    results: list[tuple[Image.Image, bool]]  # (image, is a ground truth), best first
    labels: tuple[str, ...] = ()  # written under each result, a line each "\n" (lincir search: score, path)


def query_grid(bench: Benchmark, rankings: dict[str, list[str]], query_ids: list[str], top_k: int, title: str,
               path: Path) -> None:
    by_id = {q.id: q for q in bench.queries}
    rows = [Row(thumb(open_image(bench.images[by_id[qid].reference])), " / ".join(by_id[qid].captions),
                [(thumb(open_image(bench.images[name])), name in by_id[qid].targets)
                 for name in rankings.get(qid, [])[:top_k]])
            for qid in query_ids]
    draw_grid(rows, top_k, f"{title}: left, the reference, then the condition, then the top {top_k} "
                           f"(green outline: a ground truth)", path)


def draw_grid(rows: list[Row], top_k: int, title: str, path: Path) -> None:
    font = ImageFont.load_default(size=13)
    small = ImageFont.load_default(size=11)
    head = 28
    lines = max((label.count("\n") + 1 for row in rows for label in row.labels), default=0)
    height = CELL + lines * LABEL_LINE  # a row: its pictures, then their labels
    grid = Image.new("RGB", (CELL + TEXT_W + top_k * CELL, head + len(rows) * height), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((6, 6), title, fill="black", font=font)
    for r, row in enumerate(rows):
        y = head + r * height
        if row.reference is not None:
            grid.paste(row.reference, (4, y + 4))
        condition = "\n".join(textwrap.wrap(row.condition, 28)[:6])
        draw.multiline_text((CELL + 6, y + 8), condition, fill="black", font=font)
        for c, (image, target) in enumerate(row.results[:top_k]):
            x = CELL + TEXT_W + c * CELL
            draw.rectangle([x, y, x + CELL - 1, y + CELL - 1], fill=GREEN if target else GREY)
            grid.paste(image, (x + 4, y + 4))
            for n, line in enumerate(row.labels[c].split("\n") if c < len(row.labels) else []):
                draw.text((x + 4, y + CELL + n * LABEL_LINE), fit(line, CELL - 8, small, draw), fill="black", font=small)
    with atomic(path) as tmp:  # the format from the real name: the temporary one ends in .tmp
        grid.save(tmp, format=Image.registered_extensions().get(Path(path).suffix.lower(), "PNG"))


def fit(text: str, width: int, font, draw: ImageDraw.ImageDraw) -> str:
    """`text`, its start cut to "…" where it is wider than `width` pixels: a path's file name stays."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("…" + text, font=font) > width:
        text = text[1:]
    return "…" + text


def thumb(image: Image.Image) -> Image.Image:
    """A grid cell's picture of `image`."""
    return to_rgb(image).resize((CELL - 8, CELL - 8))
