"""The index kind `ivfpq`: IVF with product quantisation under a memory budget, for collections whose
float32 latents (3 KB an image at 768 dimensions) do not fit in RAM.

As autofaiss does, the budget picks the parameters: the coarse lists are fixed by the collection's
size (~sqrt(n), a power of two; an HNSW quantiser assigns vectors to them from 4096 lists on, where
a flat one would compare every vector with every list), and the code is the most accurate rung of
CODES whose bytes a vector, with the lists' centroids, fit in the budget. A code is a 4-bit
fast-scan PQ (candidates, scanned in SIMD registers) re-ranked by an 8- or 4-bit scalar code of
the full vector (Refine): PQ alone ranked only ~0.5 of the exact top 10 on clustered latents at
192 bytes a vector (100k x 768), the re-ranked codes above 0.9 (BENCHMARKS.md). No OPQ rotation:
on those latents it moved recall@10 from 0.755 to 0.759 (PQ96 + SQ4, 100k x 768, 8 k and 10 k
candidates re-ranked) and took 330 s
to train against 1.3 s (FAISS trains it with 8-bit PQs), not worth its cost there; real latents,
less isotropic, might gain more (not measured).

The index is trained on a seeded sample (TRAIN_PER_LIST vectors a list) and filled shard by shard
(SHARD vectors normalised at a time, so no normalised copy of the collection is ever held); FAISS
encodes each shard on every core. Its search settings (lists probed, candidates re-ranked) are
saved in the file, so `lincir search` and `lincir serve` open it like any other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import PipelineError

DEFAULT_BUDGET_GB = 4.0  # `lincir index --memory`'s default, and the embed stage's
TRAIN_PER_LIST = 40  # k-means sample: FAISS warns below 39 points a centroid
SHARD = 100_000  # vectors normalised and added at a time
HNSW_QUANTISER_FROM = 4096  # lists from which an HNSW graph, not a flat scan, assigns vectors to lists
ID_BYTES = 16  # a vector's id in its IVF list and in the id map around the index
# rungs, most accurate first: (PQ sub-quantisers as a fraction of d, refine code or None)
# (2 dimensions a 4-bit sub-quantiser and 50 k candidates: recall@10 0.94 at 20k x 64 where 4 dimensions
# gave 0.80, or 0.39 with 10 k candidates)
CODES = [(1 / 2, "SQ8"), (1 / 4, "SQ8"), (1 / 4, "SQ4"), (1 / 2, None), (1 / 4, None), (1 / 8, None)]
PROBE_FRACTION = 8  # lists probed: nlist / 8, as the ivf kind
K_FACTOR = 50  # candidates re-ranked: 50 k, 500 short codes for a top 10, a small part of a search's cost


@dataclass(frozen=True)
class Plan:
    """An ivfpq index's parameters for n vectors of d dimensions."""

    n: int
    d: int
    nlist: int
    m: int  # PQ sub-quantisers, 4 bits each
    refine: str | None  # SQ8, SQ4 or none

    @property
    def factory(self) -> str:
        quantiser = f"IVF{self.nlist}_HNSW32" if self.nlist >= HNSW_QUANTISER_FROM else f"IVF{self.nlist}"
        return f"{quantiser},PQ{self.m}x4fs" + (f",Refine({self.refine})" if self.refine else "")

    @property
    def bytes_per_vector(self) -> float:
        refine = {"SQ8": self.d, "SQ4": self.d / 2, None: 0}[self.refine]
        return self.m / 2 + refine + ID_BYTES

    @property
    def fixed_bytes(self) -> int:
        """Centroids (and their HNSW graph)."""
        graph = self.nlist * 32 * 2 * 4 if self.nlist >= HNSW_QUANTISER_FROM else 0
        return self.nlist * self.d * 4 + graph

    @property
    def total_bytes(self) -> float:
        return self.fixed_bytes + self.n * self.bytes_per_vector


def lists(n: int) -> int:
    """~sqrt(n) lists, a power of two, each with at least TRAIN_PER_LIST vectors to train on."""
    return max(1, min(2 ** round(math.log2(max(1.0, math.sqrt(n)))), n // TRAIN_PER_LIST, 65536))


def plan(n: int, d: int, budget_bytes: float) -> Plan:
    """The most accurate rung of CODES that fits `budget_bytes`."""
    nlist = lists(n)
    for fraction, refine in CODES:
        m = max(2, 2 * round(d * fraction / 2))  # fast-scan codes need an even count
        while d % m:
            m -= 2
        candidate = Plan(n, d, nlist, m, refine)
        if candidate.total_bytes <= budget_bytes:
            return candidate
    smallest = Plan(n, d, nlist, m, None)
    raise PipelineError(f"{n:,} vectors of {d} dimensions need at least {smallest.total_bytes / 1e9:.2f} GB as an "
                        f"ivfpq index ({smallest.factory}); the memory budget is {budget_bytes / 1e9:.2f} GB: "
                        f"raise it")


def build(features: np.ndarray, ids: np.ndarray, budget_bytes: float, seed: int = 0, progress: bool = False):
    """The ivfpq index over the normalised rows `ids` of `features` (inner product), ids = row numbers."""
    import faiss
    from tqdm import tqdm

    from pipeline.evaluation.gallery import normalise

    n, d = len(ids), features.shape[1]
    p = plan(n, d, budget_bytes)
    index = faiss.IndexIDMap(faiss.index_factory(d, p.factory, faiss.METRIC_INNER_PRODUCT))
    sample = np.sort(np.random.default_rng(seed).choice(n, min(n, p.nlist * TRAIN_PER_LIST), replace=False))
    index.train(normalise(features[ids[sample]]).astype(np.float32, copy=False))
    inner = faiss.downcast_index(index.index)
    faiss.extract_index_ivf(inner).nprobe = max(1, p.nlist // PROBE_FRACTION)
    if p.refine:
        inner.k_factor = K_FACTOR
    for start in tqdm(range(0, n, SHARD), desc=f"filling {p.factory}", unit="shard", disable=not progress):
        part = ids[start:start + SHARD]
        index.add_with_ids(normalise(features[part]).astype(np.float32, copy=False), part.astype(np.int64))
    return index
