"""The attributes of the synthetic world: one main object on a background, among clutter.

5 shapes x 6 colours x 2 sizes x 3 positions x 4 backgrounds = 720 combinations: enough
that a text condition matters, few enough that a tiny CLIP learns them on a CPU. The
clutter (thin lines and rings, never one of the shapes, always smaller than a small
object) is what pictures hold and captions seldom mention; the ground truth of every
benchmark is the main object's Thing alone, so it stays exact.
"""
from __future__ import annotations

import itertools
from typing import NamedTuple

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = {  # RGB; object colours never equal a background colour
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 215, 20),
    "purple": (140, 40, 180),
    "orange": (245, 130, 20),
}
SIZES = ("small", "large")
POSITIONS = ("left", "center", "right")
BACKGROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15), "gray": (128, 128, 128), "brown": (110, 70, 35)}

CLUTTER = ("line", "ring")  # distractor kinds
MAX_CLUTTER = 3  # distractors an image: 0 to 3

FIELDS = ("shape", "colour", "size", "position", "background")


class Thing(NamedTuple):
    """One image's content; the generator's ground truth."""

    shape: str
    colour: str
    size: str
    position: str
    background: str


def all_things() -> list[Thing]:
    return [Thing(*t) for t in itertools.product(SHAPES, COLOURS, SIZES, POSITIONS, BACKGROUNDS)]


VALUES = {"shape": SHAPES, "colour": tuple(COLOURS), "size": SIZES, "position": POSITIONS, "background": tuple(BACKGROUNDS)}
