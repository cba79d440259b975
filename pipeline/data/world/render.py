"""Draws a Thing as a small RGB image among its clutter, with per-image jitter so equal
attributes never mean identical pixels (position, radius, rotation, colour shade, noise)."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from pipeline.data.world.attributes import BACKGROUNDS, COLOURS, Thing

SUPERSAMPLE = 4  # draw large, then downsample: smooth edges at 64 px
X_CENTRE = {"left": 0.25, "center": 0.5, "right": 0.75}
RADIUS = {"small": 0.15, "large": 0.23}  # fraction of the image side (docs/world_backbone.md: object size)


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def ring(n: int, radii: list[float], offset: float) -> list[tuple[float, float]]:
        pts = []
        for i in range(n * len(radii)):
            rr = radii[i % len(radii)]
            a = offset + angle + 2 * math.pi * i / (n * len(radii))
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts

    if kind == "triangle":
        return ring(3, [r * 1.15], -math.pi / 2)
    if kind == "star":
        return ring(5, [r * 1.2, r * 0.5], -math.pi / 2)
    if kind == "square":
        return ring(4, [r * 1.2], math.pi / 4)
    # cross: a plus sign made of 12 corners
    t = r * 0.38
    pts = [(-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r), (-t, r), (-t, t), (-r, t), (-r, -t), (-t, -t)]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _clutter(draw: ImageDraw.ImageDraw, kind: str, big: int, rng: np.random.Generator) -> None:
    """A thin line or ring of any object colour, anywhere: drawn first, so the main object covers it."""
    colour = tuple(int(v) for v in list(COLOURS.values())[rng.integers(len(COLOURS))])
    cx, cy = rng.uniform(0.1, 0.9, size=2) * big
    width = max(1, int(0.025 * big))
    if kind == "line":
        a, half = rng.uniform(0, math.pi), rng.uniform(0.08, 0.16) * big
        dx, dy = half * math.cos(a), half * math.sin(a)
        draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=colour, width=width)
    else:
        r = rng.uniform(0.04, 0.07) * big
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=width)


def render(thing: Thing, size: int, rng: np.random.Generator, clutter: tuple[str, ...] = ()) -> Image.Image:
    return render_with_mask(thing, size, rng, clutter)[0]


def render_with_mask(thing: Thing, size: int, rng: np.random.Generator,
                     clutter: tuple[str, ...] = ()) -> tuple[Image.Image, Image.Image]:
    """The image and the main object's soft coverage mask ('L', 0..255): the oracle a CAM is
    scored against. The mask is drawn with the image's geometry and downsampling and takes no
    draws from `rng`, so the image is the same with or without it."""
    big = size * SUPERSAMPLE
    bg = np.array(BACKGROUNDS[thing.background], dtype=np.int16) + rng.integers(-12, 13, size=3)
    img = Image.new("RGB", (big, big), tuple(int(v) for v in np.clip(bg, 0, 255)))
    mask = Image.new("L", (big, big), 0)
    draw, draw_mask = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    for kind in clutter:
        _clutter(draw, kind, big, rng)
    cx = (X_CENTRE[thing.position] + rng.uniform(-0.04, 0.04)) * big
    cy = (0.5 + rng.uniform(-0.12, 0.12)) * big
    r = RADIUS[thing.size] * big * rng.uniform(0.9, 1.1)
    colour = np.clip(np.array(COLOURS[thing.colour]) + rng.integers(-20, 21, size=3), 0, 255)
    fill = tuple(int(v) for v in colour)
    if thing.shape == "circle":
        box = [cx - r, cy - r, cx + r, cy + r]
        draw.ellipse(box, fill=fill)
        draw_mask.ellipse(box, fill=255)
    else:
        corners = _polygon(thing.shape, cx, cy, r, rng.uniform(-0.25, 0.25))
        draw.polygon(corners, fill=fill)
        draw_mask.polygon(corners, fill=255)
    img = img.resize((size, size), Image.LANCZOS)
    noise = rng.normal(0, 4, size=(size, size, 3))  # sensor-like noise
    image = Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    return image, mask.resize((size, size), Image.LANCZOS)
