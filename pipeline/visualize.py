"""A PNG grid of composed queries: reference, condition, top-k results, ground truths outlined."""
from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from pipeline.benchmarks import Benchmark, open_image, to_rgb

CELL = 112
TEXT_W = 220
GREEN, GREY = (20, 170, 60), (200, 200, 200)


def query_grid(bench: Benchmark, rankings: dict[str, list[str]], query_ids: list[str], top_k: int, title: str,
               path: Path) -> None:
    font = ImageFont.load_default(size=13)
    by_id = {q.id: q for q in bench.queries}
    head = 28
    grid = Image.new("RGB", (CELL + TEXT_W + top_k * CELL, head + len(query_ids) * CELL), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((6, 6), f"{title}: left, the reference, then the condition, then the top {top_k} "
                      f"(green outline: a ground truth)", fill="black", font=font)
    for r, qid in enumerate(query_ids):
        q, y = by_id[qid], head + r * CELL
        grid.paste(_thumb(bench, q.reference), (4, y + 4))
        condition = "\n".join(textwrap.wrap(" / ".join(q.captions), 28)[:6])
        draw.multiline_text((CELL + 6, y + 8), condition, fill="black", font=font)
        for c, name in enumerate(rankings.get(qid, [])[:top_k]):
            x = CELL + TEXT_W + c * CELL
            draw.rectangle([x, y, x + CELL - 1, y + CELL - 1], fill=GREEN if name in q.targets else GREY)
            grid.paste(_thumb(bench, name), (x + 4, y + 4))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


def _thumb(bench: Benchmark, name: str) -> Image.Image:
    return to_rgb(open_image(bench.images[name])).resize((CELL - 8, CELL - 8))
