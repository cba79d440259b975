"""Paired comparisons of two settings on the same queries: the difference of their means, with a 95 %
interval from a paired bootstrap over queries, combined over seeds, and the verdict it allows.

Each setting has per-query scores for each seed (the evaluate stage's per_query.json, kept per
experiment by `lincir ablate run`). Seed i of one setting is paired with seed i of the other; the
statistic is the mean over seeds and queries of the difference; a bootstrap draw resamples the
queries with replacement, the same draw for every seed, so each query stays paired with itself.
Seed-to-seed spread enters through the mean over seeds, not through the interval: RESULTS.md shows
it beside (mean ± std over seeds).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DRAWS = 2000
LEVEL = 0.95
FLOOR = 5.0  # percent: a metric whose cells all stay below this is shown but judged on nothing


@dataclass(frozen=True)
class Difference:
    mean: float
    low: float
    high: float
    seeds: int

    @property
    def verdict(self) -> str:
        """'>' or '<' where the interval excludes zero, '≈' where it holds it."""
        return ">" if self.low > 0 else "<" if self.high < 0 else "≈"


def paired_difference(a: dict[int, np.ndarray], b: dict[int, np.ndarray], draws: int = DRAWS, seed: int = 0,
                      level: float = LEVEL) -> Difference | None:
    """a, b: {seed: per-query scores}, the same queries in the same order. None without a common seed."""
    common = sorted(set(a) & set(b))
    if not common:
        return None
    d = np.stack([np.asarray(a[s], float) - np.asarray(b[s], float) for s in common])  # [seeds, queries]
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, d.shape[1], size=(draws, d.shape[1]))
    boots = d[:, draw].mean(axis=(0, 2))
    low, high = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return Difference(float(d.mean()), float(low), float(high), len(common))


def at_floor(cells: list[float]) -> bool:
    """A metric is judged only where some setting lifts it off the floor."""
    return max(cells, default=0.0) < FLOOR
