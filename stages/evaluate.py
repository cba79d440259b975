"""DVC stage `evaluate@<benchmark>`: composed queries answered with the trained phi (LinCIR's
query, whichever `method` trained phi) and by the zero-shot baselines, scored with the
benchmark's official metrics.

Writes metrics/evaluate/<benchmark>.all.json ({method: {metric: percent}}; the trained phi's
row is named after `method`), <benchmark>.json (the trained phi's headline numbers, the DVC
metric) and plots/<benchmark>_queries.png (a few queries with the trained phi's top results).
"""
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from pipeline import backbone as B
from pipeline import gallery
from pipeline.benchmarks import from_params
from pipeline.core import stage
from pipeline.core.params import section, typed
from pipeline.phi import load_phi
from pipeline.retrieval import EvaluateConfig, answer, query_context
from pipeline.visualize import query_grid


def main(params: dict) -> None:
    name = sys.argv[1]
    p = typed(EvaluateConfig, section(params, "evaluate"), "evaluate")  # before any work
    bench = from_params(params, name)
    bench.require_targets()
    device = stage.device()
    backbone = B.load(Path("data/backbone/backbone.json"), device)
    names, latents, indexes = gallery.load(Path("data/embed") / name)
    ctx = query_context(backbone, names, latents,
                        phis={"trained": load_phi("data/train/phi.pt", device),
                              "random": load_phi("data/train/phi_init.pt", device)},
                        template=p.template, normalize_image_latent=p.normalize_image_latent, device=device)
    trained = params.get("method", "lincir")  # the method that trained phi names its row
    metrics, lincir_rankings = {}, None
    for method in p.methods:
        rankings, candidate_rankings = answer(bench, ctx, indexes, names, method)
        scores = bench.score(rankings, candidate_rankings)
        row = trained if method == "lincir" else method
        metrics[row] = {**scores, **bench.breakdown(rankings, candidate_rankings)}
        if method == "lincir":
            lincir_rankings = rankings or candidate_rankings
        print(f"{name} {row}: " + ", ".join(f"{k}={v:.2f}" for k, v in scores.items()))
    stage.write_json(Path("metrics/evaluate") / f"{name}.all.json", metrics)
    # the DVC metric, the trained phi's headline numbers: what `dvc exp show` and `dvc metrics diff` compare
    stage.write_json(Path("metrics/evaluate") / f"{name}.json",
                     {name: {k: v for k, v in metrics.get(trained, {}).items() if "/" not in k}})
    if lincir_rankings:
        pick = np.random.default_rng(0).choice(len(bench.queries), size=min(p.grid_queries, len(bench.queries)),
                                               replace=False)
        query_grid(bench, lincir_rankings, [bench.queries[i].id for i in pick], p.grid_top_k,
                   f"{name}: phi of {trained}", Path("plots") / f"{name}_queries.png")


if __name__ == "__main__":
    stage.run(main)
