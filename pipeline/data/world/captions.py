"""Natural-language descriptions of Things, in many phrasings.

`caption` describes an image (image captions and the text-only corpus) the way alt-text
does: it names only some of what is shown, in varied length and order, sometimes mentions
the clutter around the object, and sometimes adds words no picture shows.
`condition` describes how a target differs from a reference (the relative captions of
the composed-retrieval benchmarks). Both draw word order, synonyms, articles and the
optional "a photo of" at random, so no template is a shortcut.
"""
from __future__ import annotations

import re

import numpy as np

from pipeline.data.world.attributes import VALUES, Thing

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
    "line": ["line", "stripe", "stroke"],
    "ring": ["ring", "hoop", "loop"],
}
PREFIXES = ["", "", "a photo of ", "an image of ", "a picture of ", "a rendering of "]
# how often a caption names each attribute. A caption that leaves most out fits several images of
# a contrastive batch, which CLIP's loss counts as negatives: the backbone then learns only what
# captions name most (docs/world_backbone.md)
MENTION = {"shape": 0.95, "colour": 0.9, "size": 0.8, "position": 0.8, "background": 0.8, "clutter": 0.3}
GENERIC = ["shape", "object", "figure", "thing"]  # the noun when the shape is not named
# words of alt-text and prompts that no picture of this world shows
STYLE = ["stock photo", "clip art", "vector illustration", "digital art", "flat design", "minimalist art",
         "for kids", "my favourite", "free download", "wallpaper", "logo idea", "simple icon", "hd", "trending"]
COUNTS = {1: "a", 2: "two", 3: "three"}


def say(rng: np.random.Generator, word: str) -> str:
    options = SYNONYMS.get(word, [word])
    return options[rng.integers(len(options))]


def article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _bg(rng: np.random.Generator, t: Thing) -> str:
    b = say(rng, t.background)
    forms = [f"on a {b} background", f"with a {b} background", f"against a {b} backdrop", f"over {b}"]
    return forms[rng.integers(len(forms))]


def _clutter(rng: np.random.Generator, clutter: tuple[str, ...]) -> str:
    kind = clutter[rng.integers(len(clutter))]
    n = clutter.count(kind)
    word = say(rng, kind)
    if n > 1 and rng.random() < 0.4:
        return f"among some {word}s"
    return f"next to {COUNTS[n]} {word}{'s' if n > 1 else ''}"


def caption(t: Thing, rng: np.random.Generator, clutter: tuple[str, ...] = ()) -> str:
    """One caption of an image showing `t` and the distractors `clutter` (kinds, possibly repeated)."""
    said = {f: rng.random() < p for f, p in MENTION.items()}
    noun = say(rng, t.shape) if said["shape"] else GENERIC[rng.integers(len(GENERIC))]
    words = [say(rng, t.size)] * said["size"] + [say(rng, t.colour)] * said["colour"] + [noun]
    thing = article(" ".join(words))
    tail = [say(rng, t.position)] * said["position"] + [_bg(rng, t)] * said["background"]
    if said["clutter"] and clutter:
        tail.append(_clutter(rng, clutter))
    tail = [tail[i] for i in rng.permutation(len(tail))]
    templates = [f"{thing} {' '.join(tail)}", f"there is {thing} {' '.join(tail)}", f"{thing}, {', '.join(tail)}"]
    if tail:
        templates.append(f"{tail[0]}, {thing} {' '.join(tail[1:])}")
    text = templates[rng.integers(len(templates))].strip().rstrip(",")
    if text.startswith("a ") or text.startswith("an "):  # "a photo of on the left, ..." is not English
        text = PREFIXES[rng.integers(len(PREFIXES))] + text
    if rng.random() < 0.3:
        style = STYLE[rng.integers(len(STYLE))]
        text = f"{text}, {style}" if rng.random() < 0.7 else f"{style}: {text}"
    return text


def _words(field: str) -> dict[str, str]:
    """Every phrase a caption may use for a value of `field`, mapped to that value."""
    return {w: v for v in VALUES[field] for w in SYNONYMS.get(v, [v])}


def swap(text: str, field: str, rng: np.random.Generator) -> str | None:
    """`text` with the value of `field` it names replaced by another value of that field, or None where it
    names none: a hard negative caption (NegCLIP, Yuksekgonul et al., ICLR 2023). Read off the words, so it
    works on any caption of this world, including one given to the wrong image."""
    words = _words(field)
    found = re.search(r"\b(" + "|".join(sorted(words, key=len, reverse=True)) + r")\b", text)
    if found is None:
        return None
    others = [v for v in VALUES[field] if v != words[found[1]]]
    new = say(rng, others[rng.integers(len(others))])
    text = text[:found.start()] + new + text[found.end():]
    return re.sub(r"\b(an?) (\w+)", lambda m: article(m[2]), text)  # "an orange" -> "a red"


def describe(t: Thing) -> str:
    """The full description of `t`, every attribute named once in one fixed phrasing: the prompt of
    zero-shot classification among all the world's combinations (the backbone stage's metric)."""
    return f"a photo of a {t.size} {t.colour} {t.shape} {SYNONYMS[t.position][0]} on a {t.background} background"


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
