"""`lincir perf search`: per-query latency of `lincir search`'s FAISS indexes at scale."""
from __future__ import annotations

import argparse
import time

from pipeline.core.arguments import integer, number
from pipeline.evaluation.ivfpq import DEFAULT_BUDGET_GB
from pipeline.tools.perf.common import report

HELP = "search latency (p50/p95 ms per query), recall and memory of the index kinds on synthetic embeddings"
DESCRIPTION = f"""{HELP}.

Each index is built by pipeline.evaluation.gallery.build_index, as `lincir index --index KIND` builds
it (IVF: ~4 sqrt(n) lists searched with nprobe = lists / 8; HNSW32 with efSearch 128), over
--sizes synthetic latents of --dim dimensions in 1,000 Gaussian clusters (image latents are
clustered, not uniform). Queries are drawn from the same clusters and searched one at a
time (as `lincir search` and `lincir serve` do), after 5 warm-up queries; the time is the
FAISS search alone (encoding a query is the backbone's cost, the same for every index).
recall@k: the share of the exact top k that the index also returns (flat's, when flat is among
--kinds; else an exact scan in chunks of 100,000, which needs no second copy of the latents). ivfpq: sized by --memory-gb (pipeline/evaluation/ivfpq.py).
bytes/vector: the index's serialised size over n (what it holds in RAM); build peak: the most
resident memory the process gained while building it, sampled every 50 ms, over what it held before
(the latents themselves not counted)."""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("search", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=integer(1), nargs="+", default=[100_000], help="index sizes (default: 100000)")
    p.add_argument("--dim", type=integer(1), default=768, help="latent dimension (default: 768, ViT-L/14)")
    p.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw", "ivfpq"], help="index kinds (default: all)")
    p.add_argument("--memory-gb", type=number(0, above=True), default=DEFAULT_BUDGET_GB,
                   help=f"ivfpq's memory budget (default: {DEFAULT_BUDGET_GB:g}, lincir index --memory's)")
    p.add_argument("--queries", type=integer(1), default=200, help="timed queries per index (default: 200)")
    p.add_argument("-k", type=integer(1), default=20, help="results per query (default: 20)")
    p.add_argument("--threads", type=integer(1), help="FAISS threads (default: FAISS's, the cores available)")
    p.add_argument("--seed", type=integer(0), default=0)
    p.set_defaults(func=run)


def clustered(n: int, d: int, seed: int, clusters: int = 1000, chunk: int = 100_000):
    """[n, d] float32 latents around `clusters` centres (the same centres for every seed)."""
    import numpy as np

    centres = np.random.default_rng(12345).standard_normal((clusters, d), dtype=np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), np.float32)
    for start in range(0, n, chunk):  # in chunks: no float64 temporaries of the whole array
        m = min(chunk, n - start)
        out[start:start + m] = centres[rng.integers(0, clusters, m)]
        out[start:start + m] += 0.7 * rng.standard_normal((m, d), dtype=np.float32)
    return out


class PeakRSS:
    """The most resident memory this process gained inside the block, sampled every 50 ms."""

    def __enter__(self):
        import threading

        import psutil

        self.process, self.start, self.peak, self.done = psutil.Process(), 0, 0, threading.Event()
        self.start = self.peak = self.process.memory_info().rss
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def gained_gb(self) -> float:
        return (self.peak - self.start) / 1e9


def exact_top_k(latents, queries, k: int, chunk: int = 100_000):
    """Row numbers of the k best cosine matches of each query, scanned a chunk at a time."""
    import numpy as np

    from pipeline.evaluation.gallery import normalise

    best_scores = np.full((len(queries), 0), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(latents), chunk):
        scores = queries @ normalise(latents[start:start + chunk]).astype(np.float32).T
        scores = np.concatenate([best_scores, scores], axis=1)
        ids = np.concatenate([best_ids, np.broadcast_to(np.arange(start, start + scores.shape[1] - best_ids.shape[1]),
                                                        (len(queries), scores.shape[1] - best_ids.shape[1]))], axis=1)
        keep = np.argpartition(-scores, k - 1, axis=1)[:, :k] if scores.shape[1] > k else np.argsort(-scores, axis=1)
        best_scores, best_ids = np.take_along_axis(scores, keep, 1), np.take_along_axis(ids, keep, 1)
    return list(best_ids)


def run(args) -> int:
    import faiss
    import numpy as np

    from pipeline.evaluation.gallery import INDEX, build_index, normalise

    for kind in args.kinds:
        INDEX.get(kind)
    if args.kinds != ["flat"] and "flat" in args.kinds:
        args.kinds = ["flat", *(k for k in args.kinds if k != "flat")]  # the exact answers first
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    queries = normalise(clustered(args.queries + 5, args.dim, args.seed + 1)).astype(np.float32)
    rows, exact = [], {}
    for n in args.sizes:
        latents = clustered(n, args.dim, args.seed)
        for kind in args.kinds:
            start = time.perf_counter()
            with PeakRSS() as memory:
                index = build_index(latents, np.arange(n), kind, args.memory_gb)
            built = time.perf_counter() - start
            for q in queries[:5]:
                index.search(q[None], args.k)
            times, found = [], []
            for q in queries[5:]:
                start = time.perf_counter()
                _, ids = index.search(q[None], args.k)
                times.append(time.perf_counter() - start)
                found.append(ids[0])
            if kind == "flat":
                exact[n] = found
            elif n not in exact:
                exact[n] = exact_top_k(latents, queries[5:], args.k)
            recall = (float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(exact[n], found)]))
                      if n in exact else None)
            factory = INDEX.get(kind)(args.dim, n, args.memory_gb) if kind == "ivfpq" else INDEX.get(kind)(args.dim, n)
            rows.append({"path": f"{kind} @ {n:,}", "p50_ms": 1e3 * float(np.percentile(times, 50)),
                         "p95_ms": 1e3 * float(np.percentile(times, 95)), "build_s": built,
                         f"recall@{args.k}": recall, "bytes_per_vector": len(faiss.serialize_index(index)) / n,
                         "build_peak_gb": memory.gained_gb, "factory": factory})
            del index
        del latents
    by = {r["path"]: r for r in rows}
    n = args.sizes[-1]
    ratio = {f"{kind}_p50_speedup": by[f"flat @ {n:,}"]["p50_ms"] / by[f"{kind} @ {n:,}"]["p50_ms"]
             for kind in args.kinds if kind != "flat" and f"flat @ {n:,}" in by}
    setup = {"sizes": args.sizes, "dim": args.dim, "queries": args.queries, "k": args.k,
             "faiss": faiss.__version__, "threads": faiss.omp_get_max_threads(), "memory_gb": args.memory_gb}
    report("search", setup, ["p50_ms", "p95_ms", "build_s", f"recall@{args.k}", "bytes_per_vector", "build_peak_gb",
                             "factory"], rows, ratio,
           ratio_label=f"flat / approximate p50 at {n:,}")
    return 0
