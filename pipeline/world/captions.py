"""Natural-language descriptions of Things, in many phrasings.

`caption` describes a whole Thing (image captions and the text-only corpus);
`condition` describes how a target differs from a reference (the relative captions of
the composed-retrieval benchmarks). Both draw word order, synonyms, articles and the
optional "a photo of" at random, so no template is a shortcut.
"""
from __future__ import annotations

import numpy as np

from pipeline.world.attributes import Thing

SYNONYMS = {
    "circle": ["circle", "disc", "round dot"],
    "square": ["square", "box"],
    "triangle": ["triangle"],
    "star": ["star"],
    "cross": ["cross", "plus sign"],
    "small": ["small", "tiny", "little"],
    "large": ["large", "big", "huge"],
    "left": ["on the left", "at the left side", "to the left"],
    "center": ["in the center", "in the middle", "at the centre"],
    "right": ["on the right", "at the right side", "to the right"],
    "gray": ["gray", "grey"],
}
PREFIXES = ["", "", "a photo of ", "an image of ", "a picture of ", "a rendering of "]


def say(rng: np.random.Generator, word: str) -> str:
    options = SYNONYMS.get(word, [word])
    return options[rng.integers(len(options))]


def _bg(rng: np.random.Generator, t: Thing) -> str:
    b = say(rng, t.background)
    forms = [f"on a {b} background", f"with a {b} background", f"against a {b} backdrop", f"over {b}"]
    return forms[rng.integers(len(forms))]


def caption(t: Thing, rng: np.random.Generator) -> str:
    shape, colour, size = say(rng, t.shape), say(rng, t.colour), say(rng, t.size)
    pos, bg = say(rng, t.position), _bg(rng, t)
    templates = [
        f"a {size} {colour} {shape} {pos} {bg}",
        f"a {colour} {shape} {pos}, {size}, {bg}",
        f"a {size} {shape} that is {colour}, {pos} {bg}",
        f"a {shape} that is {colour} and {size} {bg}, {pos}",
        f"{bg.split(' ', 1)[1]}: a {size} {colour} {shape} {pos}",
        f"there is a {colour} {shape} {pos} {bg}; it is {size}",
        f"a {size} {shape} in {colour} {pos} {bg}",
        f"{pos}, a {size} {colour} {shape} {bg}",
    ]
    text = templates[rng.integers(len(templates))]
    if not text.startswith("a "):  # "a photo of on the left, ..." is not English
        return text
    return PREFIXES[rng.integers(len(PREFIXES))] + text


# One phrasing list per attribute that can change; `{}` is the target's value.
CHANGE = {
    "shape": ["is a {}", "is a {} instead", "shows a {} rather than that shape", "has the shape of a {}"],
    "colour": ["is {}", "is {} instead", "is coloured {}", "has a {} colour", "is painted {}"],
    "size": ["is {}", "is {} instead", "looks {}", "has a {} size"],
    "position": ["is {}", "is moved {}", "sits {} instead", "appears {}"],
    "background": ["has a {} background", "has a {} background instead", "is on a {} background", "is against a {} backdrop"],
}


def _phrase(field: str, value: str, rng: np.random.Generator) -> str:
    forms = CHANGE[field]
    return forms[rng.integers(len(forms))].format(say(rng, value))


def condition(ref: Thing, target: Thing, rng: np.random.Generator) -> str:
    """A relative caption that turns `ref` into `target` (one or two changed attributes)."""
    changed = [f for f in Thing._fields if getattr(ref, f) != getattr(target, f)]
    if not 1 <= len(changed) <= 2:
        raise ValueError(f"a condition changes one or two attributes, not {changed}")
    parts = [_phrase(f, getattr(target, f), rng) for f in changed]
    if len(changed) == 1:
        return parts[0]
    if rng.random() < 0.3:  # name a kept attribute, as people do ("same shape but ...")
        kept = [f for f in Thing._fields if f not in changed and f in ("shape", "colour")]
        if kept:
            return f"same {kept[0]} but " + " and ".join(p.removeprefix("is ") for p in parts)
    return " and ".join(parts)
