"""Maximal runs of flagged tokens: keyword spans (pipeline/data/keywords.py) and the spans
the masking strategies pick (pipeline/data/masking.py)."""
from __future__ import annotations

from collections.abc import Sequence


def runs(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive True flags, as [first, last] index pairs."""
    found, first = [], None
    for i, flag in enumerate(flags):
        if flag and first is None:
            first = i
        elif not flag and first is not None:
            found.append((first, i - 1))
            first = None
    if first is not None:
        found.append((first, len(flags) - 1))
    return found
