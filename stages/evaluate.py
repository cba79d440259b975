"""DVC stage `evaluate@<benchmark>`: composed queries answered with the trained phi (in the prompt of
the `method` that trained it, for this benchmark's kind: pipeline/evaluation/prompts.py, or
`evaluate.template` with `evaluate.prompt: template`) and by the zero-shot baselines, scored with
the benchmark's official metrics.

Writes <benchmark>.all.json ({query: {metric: percent}}; the trained phi's row is named after
`method`), <benchmark>.json (the trained phi's headline numbers, the DVC metric), each row's metrics
per query (per_query.json: what RESULTS.md's paired intervals resample) and a picture of a few
queries with the trained phi's top results.
"""
import numpy as np

from pipeline.core import stage
from pipeline.core.io import write_json
from pipeline.core.params import typed
from pipeline.evaluation import gallery
from pipeline.evaluation.benchmarks import from_params
from pipeline.evaluation.prompts import prompt_for
from pipeline.evaluation.queries import EvaluateConfig, answer, query_context
from pipeline.evaluation.visualize import query_grid
from pipeline.model import backbone as backbones
from pipeline.model.phi import load_phi

PARAMS = ["benchmarks.${key}", "evaluate", "method"]  # method: the trained phi's row name and its prompt


def main(params: dict, args) -> None:
    p = typed(EvaluateConfig, params["evaluate"], "evaluate")  # before any work
    bench = from_params(params, args.key)
    bench.require_targets()
    trained = params["method"]  # the method that trained phi names its row and gives its prompt
    prompt = prompt_for(p.prompt, trained, bench.name, p.template)
    print(f"{args.key}: {trained}'s phi queried with {prompt.template!r}"
          + (f" on condition texts {list(prompt.texts)}" if prompt.texts is not None else ""))
    device = stage.device()
    backbone = backbones.load(args.backbone, device)
    names, latents, indexes = gallery.load(args.gallery)
    # phi at its initialisation is queried like the trained phi: the baseline of the same query
    ctx = query_context(backbone, names, latents,
                        phis={"trained": load_phi(args.phi / "phi.pt", device),
                              "random": load_phi(args.phi / "phi_init.pt", device)},
                        template=prompt, normalize_image_latent=p.normalize_image_latent, device=device)
    metrics, per_query, trained_rankings = {}, {}, None
    for query in p.queries:
        rankings, candidate_rankings = answer(bench, ctx, indexes, names, query)
        scores = bench.score(rankings, candidate_rankings)
        row = trained if query == "trained_phi" else query
        metrics[row] = {**scores, **bench.breakdown(rankings, candidate_rankings)}
        per_query[row] = bench.per_query(rankings, candidate_rankings)
        if query == "trained_phi":
            trained_rankings = rankings or candidate_rankings
        print(f"{args.key} {row}: " + ", ".join(f"{k}={v:.2f}" for k, v in scores.items()))
    write_json(args.metrics / f"{args.key}.all.json", metrics)
    write_json(args.per_query / "per_query.json", {"queries": [q.id for q in bench.queries], "rows": per_query},
               indent=None)
    # the DVC metric, the trained phi's headline numbers: what `dvc exp show` and `dvc metrics diff` compare
    write_json(args.metrics / f"{args.key}.json",
               {args.key: {k: v for k, v in metrics.get(trained, {}).items() if "/" not in k}})
    if trained_rankings:
        pick = np.random.default_rng(0).choice(len(bench.queries), size=min(p.grid_queries, len(bench.queries)),
                                               replace=False)
        query_grid(bench, trained_rankings, [bench.queries[i].id for i in pick], p.grid_top_k,
                   f"{args.key}: phi of {trained}", args.plots / f"{args.key}_queries.png")


if __name__ == "__main__":
    stage.run(main, PARAMS, parser=stage.arguments(
        __doc__, "the benchmark's name in params.yaml", backbone="the backbone stage's backbone.json",
        phi="the train stage's folder (phi.pt, phi_init.pt)", gallery="the embed stage's folder",
        metrics="folder of the metrics files", per_query="folder of per_query.json (every row's metrics per query)",
        plots="folder of the query picture"))
