"""Deterministic synthetic inputs for `lincir perf`: CC3M-like captions, token arrays, images.

Captions are real-looking English (CC3M style: "actor walks on the red carpet at the
premiere") composed from a small vocabulary, so spaCy tags them as it tags real captions;
word counts follow a clipped log-normal with CC3M's mean (~10 words, ~13 CLIP tokens with
SOT and EOT). The same (seed, n) always gives the same captions, in chunks of any size.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

CC3M_MEAN_WORDS = 10.0
CC3M_MEAN_TOKENS = 13.0  # CLIP BPE tokens of a CC3M caption, SOT and EOT included
SIGMA = 0.42  # log-normal spread: most captions 5 to 20 words, a few past 30

DETS = ["a", "the", "the", "a", "two", "three", "some", "this", "an old", "a young", "several", "many"]
ADJS = ["red", "old", "small", "large", "young", "beautiful", "wooden", "white", "black", "green", "modern",
        "ancient", "empty", "busy", "happy", "traditional", "colorful", "tall", "little", "golden", "blue",
        "quiet", "famous", "local", "sunny", "snowy", "rustic", "bright", "dark", "elegant", "vintage", "tiny",
        "huge", "wild", "cute", "abstract", "festive", "cozy", "historic", "urban", "rural", "tropical",
        "frozen", "crowded", "narrow", "wide", "shiny", "soft", "stone", "glass"]
NOUNS = ["dog", "man", "woman", "person", "actor", "house", "street", "city", "car", "tree", "beach", "mountain",
         "river", "building", "cat", "girl", "boy", "table", "flower", "garden", "bridge", "church", "market",
         "horse", "bird", "boat", "field", "forest", "kitchen", "room", "window", "road", "sky", "lake", "team",
         "player", "football", "wedding", "dress", "chair", "village", "castle", "island", "train", "station",
         "restaurant", "cake", "coffee", "book", "guitar", "stage", "crowd", "couple", "child", "family",
         "student", "artist", "painting", "sculpture", "tower", "park", "bench", "fountain", "harbor", "sunset",
         "valley", "waterfall", "desert", "farm", "barn", "cow", "sheep", "fish", "pizza", "bicycle",
         "motorcycle", "airplane", "umbrella", "hat", "shirt", "jacket", "shoes", "bag", "lamp", "sofa",
         "bedroom", "office", "computer", "phone", "camera", "teacher", "doctor", "soldier", "police", "athlete",
         "singer", "dancer", "musician", "politician", "celebrity", "model", "tourist", "chef"]
VERBS = ["walks", "sits", "stands", "runs", "plays", "poses", "looks", "rests", "waits", "smiles", "is shown",
         "is seen", "attends", "holds", "performs", "arrives", "works", "relaxes", "dances", "sings", "speaks",
         "jumps", "drives", "rides", "eats", "reads", "celebrates", "climbs", "swims", "sleeps"]
PREPS = ["on", "in", "near", "under", "beside", "behind", "at", "across", "along", "inside", "over", "by",
         "with", "during", "around", "from", "into", "next to", "in front of", "on top of"]
OPENERS = ["view of", "illustration of", "portrait of", "close up of", "aerial view of", "photo of",
           "image of", "silhouette of", "vector illustration of", "detail of"]
TAILS = ["at sunset", "in the evening", "during the day", "in winter", "in summer", "at night", "in the rain",
         "on a sunny day", "in autumn", "in the morning"]


def sample_lengths(n: int, rng: np.random.Generator, mean: float, lo: int, hi: int) -> np.ndarray:
    """Integers from a log-normal with the given mean (before rounding), clipped to [lo, hi]."""
    mu = math.log(mean) - SIGMA ** 2 / 2
    return np.clip(np.rint(rng.lognormal(mu, SIGMA, n)), lo, hi).astype(np.int64)


def sample_token_lengths(n: int, seed: int = 0, context_length: int = 77) -> np.ndarray:
    """Tokens a caption, SOT and EOT included, distributed like CC3M (mean ~13)."""
    return sample_lengths(n, np.random.default_rng([seed, 13]), CC3M_MEAN_TOKENS, 4, context_length)


class _Words:
    """Draws from a pre-drawn block of random numbers (one numpy call a chunk, not a call a word)."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.u = rng.random(size).tolist()
        self.at = 0

    def uniform(self) -> float:
        self.at += 1
        if self.at >= len(self.u):
            self.at = 0
        return self.u[self.at]

    def pick(self, words: list[str]) -> str:
        return words[int(self.uniform() * len(words))]


def _noun_phrase(w: _Words) -> list[str]:
    words = [w.pick(DETS)] if w.uniform() < 0.75 else []
    r = w.uniform()
    adjectives = 0 if r < 0.45 else 1 if r < 0.85 else 2
    words += [w.pick(ADJS) for _ in range(adjectives)]
    words.append(w.pick(NOUNS))
    if w.uniform() < 0.08:
        words.append(w.pick(NOUNS))  # compound: "football player", "city street"
    if words[0] == "a" and words[1][0] in "aeiou":
        words[0] = "an"
    return words


def _comma(words: list[str], w: _Words) -> str:
    if w.uniform() < 0.5:
        words[-1] += ","
    return ""


def caption(target: int, w: _Words) -> str:
    """One caption of about `target` words."""
    r = w.uniform()
    if r < 0.15:
        words = w.pick(OPENERS).split() + _noun_phrase(w)
    else:
        words = _noun_phrase(w)
        if r < 0.85:
            words += w.pick(VERBS).split()
    while len(words) < target:
        r = w.uniform()
        if r < 0.6:
            words += w.pick(PREPS).split() + _noun_phrase(w)
        elif r < 0.72:
            words += w.pick(TAILS).split()
        elif r < 0.86:
            words += [_comma(words, w) + "and", *_noun_phrase(w)]
        else:
            words += [_comma(words, w) + "and", *w.pick(VERBS).split()]
    if w.uniform() < 0.1:
        words[-1] += "."
    return " ".join(words)


BLOCK = 10_000  # captions drawn from one random stream: chunking never changes them


def captions(n: int, seed: int = 0, chunk: int = 100_000) -> Iterator[list[str]]:
    """`n` captions in lists of at most `chunk`; the same (seed, n) gives the same captions whatever
    the chunk size, and a larger n only appends captions."""
    out: list[str] = []
    for first in range(0, n, BLOCK):
        size = min(BLOCK, n - first)
        rng = np.random.default_rng([seed, first])
        # phrases are added until the target is reached: captions end ~1.2 words past it on average
        targets = sample_lengths(size, rng, CC3M_MEAN_WORDS - 1.2, 2, 40).tolist()
        w = _Words(rng, 64 * size + 1)
        out += [caption(t, w) for t in targets]
        while len(out) >= chunk:
            yield out[:chunk]
            out = out[chunk:]
    if out:
        yield out


def caption_list(n: int, seed: int = 0) -> list[str]:
    return [c for chunk in captions(n, seed) for c in chunk]


def write_corpus(path: Path, n: int, seed: int = 0) -> Path:
    """A .txt caption source of `n` captions (one a line), written in chunks: bounded memory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for chunk in captions(n, seed):
            f.write("\n".join(chunk) + "\n")
    return path


def token_arrays(n: int, sot: int, eot: int, placeholder: int, seed: int = 0, context_length: int = 77,
                 vocab: int = 49406) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ids, masked: uint16 [n, C] in open_clip's layout (SOT ... EOT, 0 padding), lengths like CC3M's;
    each masked row has 1 to 4 spans of 1-2 word tokens each replaced by one placeholder.
    Returns ids, masked and the masked rows' lengths (what training buckets by)."""
    rng = np.random.default_rng([seed, 77])
    lengths = sample_token_lengths(n, seed, context_length)
    ids = np.zeros((n, context_length), np.uint16)
    masked = np.zeros((n, context_length), np.uint16)
    masked_lengths = np.zeros(n, np.int64)
    words = rng.integers(300, vocab, (n, context_length))
    words[words == placeholder] += 1
    for i, length in enumerate(lengths.tolist()):
        content = words[i, :length - 2].tolist()
        ids[i, :length] = [sot, *content, eot]
        k = int(rng.integers(1, 5))
        starts = sorted(rng.choice(len(content), size=min(k, len(content)), replace=False).tolist())
        out, at = [], 0
        for s in starts:
            if s < at:
                continue
            out += content[at:s] + [placeholder]
            at = s + (2 if rng.random() < 0.3 else 1)
        out += content[at:]
        masked[i, :len(out) + 2] = [sot, *out, eot]
        masked_lengths[i] = len(out) + 2
    return ids, masked, masked_lengths


def write_images(folder: Path, n: int, seed: int = 0, size: tuple[int, int] = (640, 480)) -> list[Path]:
    """`n` JPEGs of COCO's typical size: smooth colour fields with shapes (decoding costs what a photo's does)."""
    from PIL import Image, ImageDraw

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 640])
    paths = []
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        a = rng.random(9).astype(np.float32)
        pixels = np.stack([127 + 100 * np.sin(xx * a[c] / 40 + yy * a[c + 3] / 50 + 6 * a[c + 6]) for c in range(3)], -1)
        pixels += rng.normal(0, 12, pixels.shape).astype(np.float32)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x, y = int(rng.integers(0, w - 100)), int(rng.integers(0, h - 100))
            draw.ellipse([x, y, x + int(rng.integers(30, 200)), y + int(rng.integers(30, 200))],
                         fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        path = folder / f"{i:06d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths
