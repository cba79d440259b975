"""The paired bootstrap behind RESULTS.md's intervals, on constructed per-query scores whose
difference is known."""
import numpy as np
import pytest

from pipeline.tools.experiments.stats import at_floor, paired_difference


def hits(rng, n, p):
    return 100.0 * (rng.random(n) < p)


def test_the_same_rankings_differ_by_zero():
    rng = np.random.default_rng(0)
    a = {s: hits(rng, 400, 0.4) for s in range(3)}
    d = paired_difference(a, {s: v.copy() for s, v in a.items()})
    assert (d.mean, d.low, d.high, d.verdict, d.seeds) == (0.0, 0.0, 0.0, "≈", 3)


def test_a_clear_difference_is_found_and_its_interval_holds_it():
    rng = np.random.default_rng(1)
    b = {s: hits(rng, 400, 0.3) for s in range(3)}
    a = {s: np.maximum(v, hits(rng, 400, 0.3)) for s, v in b.items()}  # a finds every b hit and ~21 % more
    d = paired_difference(a, b)
    true = np.mean([a[s] - b[s] for s in range(3)])
    assert d.verdict == ">" and d.low > 10 and d.low <= true <= d.high
    assert paired_difference(b, a).verdict == "<"


def test_noise_alone_is_level():
    """Two settings with the same hit rate, drawn independently: the interval holds zero."""
    rng = np.random.default_rng(2)
    a = {s: hits(rng, 400, 0.4) for s in range(3)}
    b = {s: hits(rng, 400, 0.4) for s in range(3)}
    d = paired_difference(a, b)
    assert d.low < 0 < d.high and d.verdict == "≈"


def test_pairing_matters():
    """Two settings that differ on a few queries only: unpaired, the spread of the queries would
    hide it; paired, every draw sees the same queries in both, so the interval is tight."""
    rng = np.random.default_rng(3)
    b = {0: 100.0 * (rng.random(400) < 0.5)}
    a = {0: b[0].copy()}
    misses = np.flatnonzero(b[0] == 0)[:20]
    a[0][misses] = 100.0  # a also finds 20 of b's misses: +5 points
    d = paired_difference(a, b)
    assert d.mean == pytest.approx(5.0) and d.verdict == ">" and d.high - d.low < 6


def test_only_common_seeds_are_paired_and_a_floor_is_not_judged():
    assert paired_difference({0: [1.0]}, {1: [1.0]}) is None
    assert at_floor([0.25, 1.0, 0.0]) and not at_floor([0.5, 42.0])
