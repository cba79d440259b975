"""Self-Masking Projection's masking: which char spans of a caption become the placeholder.

A strategy is a function `(words, spans, rng, params) -> list of (start, end)` char spans:
`words` are the caption's spaCy tokens (Word: start, end, pos, alnum), `spans` its keyword
spans (keywords stage), `rng` a random.Random seeded from (masking.seed, caption id) so a
caption is masked the same way whatever the chunking, and `params` the `masking` section.

- all_keywords (paper, default): every keyword span;
- n_keywords: `masking.n` keyword spans drawn at random;
- random_token: one random word;
- non_keywords: every maximal run of words outside the keyword spans;
- nouns: every maximal run of NOUN/PROPN tokens.

Fallback (the official LinCIR code's): where a strategy selects nothing, one random word
is masked (kind `random_word`); where the caption has no word either (only punctuation or
emoji), the masked caption becomes `a photo of $` (kind `a_photo_of`). A word is a token
with a letter or a digit: punctuation and emoji are never masked alone, while a caption
in a script spaCy mis-tags (CJK comes out as PUNCT) still has words. The tokens stage
counts each kind, and adds a third one of its own (`truncated`, see pipeline/data/tokens.py).

Each masked span becomes ONE `$` with a space on both sides: `$` is a single BPE token,
but `$$` and `$,` are others.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from pipeline.core.errors import PipelineError
from pipeline.core.params import at_least, typed
from pipeline.core.placeholder import PLACEHOLDER
from pipeline.core.registry import Registry
from pipeline.core.spans import runs

FALLBACK_CAPTION = f"a photo of {PLACEHOLDER}"
NOUN_POS = {"NOUN", "PROPN"}
FALLBACK_KINDS = ("random_word", "a_photo_of")

Span = tuple[int, int]  # char offsets [start, end) into the caption


class Word(NamedTuple):
    start: int
    end: int
    pos: str  # spaCy universal POS
    alnum: bool  # has a letter or digit


Strategy = Callable[[Sequence[Word], Sequence[Span], random.Random, dict], list[Span]]
MASKING: Registry[Strategy] = Registry("masking strategy")


def words_of(text: str, starts: Sequence[int], ends: Sequence[int], pos: Sequence[str]) -> list[Word]:
    return [Word(s, e, p, _alnum(text[s:e])) for s, e, p in zip(starts, ends, pos)]


def _alnum(token: str) -> bool:
    return token.isalnum() or any(c.isalnum() for c in token)  # the first test settles most tokens


def word_runs(words: Sequence[Word], flags: Sequence[bool]) -> list[Span]:
    return [(words[a].start, words[b].end) for a, b in runs(flags)]


@MASKING.register("all_keywords")
def all_keywords(words, spans, rng, params) -> list[Span]:
    return list(spans)


@MASKING.register("n_keywords")
def n_keywords(words, spans, rng, params) -> list[Span]:
    return sorted(rng.sample(list(spans), min(int(params["n"]), len(spans))))


@MASKING.register("random_token")
def random_token(words, spans, rng, params) -> list[Span]:
    candidates = [(w.start, w.end) for w in words if w.alnum]
    return [rng.choice(candidates)] if candidates else []


@MASKING.register("non_keywords")
def non_keywords(words, spans, rng, params) -> list[Span]:
    def in_keyword(w: Word) -> bool:
        return any(s <= w.start and w.end <= e for s, e in spans)

    return word_runs(words, [w.alnum and not in_keyword(w) for w in words])


@MASKING.register("nouns")
def nouns(words, spans, rng, params) -> list[Span]:
    return word_runs(words, [w.pos in NOUN_POS for w in words])


def select(strategy: Strategy, words: Sequence[Word], spans: Sequence[Span], rng: random.Random,
           params: dict) -> tuple[list[Span], str | None]:
    """The spans to mask and the fallback kind taken (None where the strategy selected some)."""
    chosen = strategy(words, spans, rng, params)
    if chosen:
        return chosen, None
    chosen = random_token(words, spans, rng, params)
    return (chosen, "random_word") if chosen else ([], "a_photo_of")


def mask_text(text: str, spans: Sequence[Span]) -> str:
    """`text` with each span replaced by one space-separated placeholder; FALLBACK_CAPTION if no span."""
    if not spans:
        return FALLBACK_CAPTION
    pieces, at = [], 0
    for start, end in sorted(spans):
        pieces += [text[at:start], f" {PLACEHOLDER} "]
        at = end
    pieces.append(text[at:])
    return " ".join("".join(pieces).split())


def caption_rng(seed: int, caption_id: int) -> random.Random:
    # one stream per caption: the same masks whatever the chunk size or process count
    return random.Random(seed * 2**40 + caption_id)


@dataclass
class MaskingConfig:
    """params.yaml `masking` (stages/tokens.py)."""

    strategy: str = "all_keywords"
    n: int = 1  # spans kept by n_keywords
    seed: int = 0


def check_params(params: dict) -> Strategy:
    """The strategy that params `masking` selects; an unknown name is an error listing the valid ones."""
    cfg = typed(MaskingConfig, params, "masking")
    try:
        strategy = MASKING.get(cfg.strategy)
    except ValueError as e:
        raise PipelineError(f"params masking.strategy: {e}") from None
    if strategy is n_keywords:
        at_least("masking.n", cfg.n, 1)
    at_least("masking.seed", cfg.seed, 0)
    return strategy
