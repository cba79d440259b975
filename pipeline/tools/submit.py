"""`lincir submit`: a benchmark's test-server submission file(s) from the trained phi.

    lincir submit <name> --split test1 [--out DIR]

`<name>` is an entry of params.yaml's `benchmarks` (its kind and root; `--split` replaces
its split). Run from the repository root after `dvc repro`: the queries are answered by the
trained phi exactly as evaluate@<name> answers the val queries (the prompt of params.yaml's
`method` for the benchmark's kind, pipeline/evaluation/prompts.py), with the backbone the
backbone stage recorded, the phi the train stage wrote, and params `embed` and `evaluate`. The
split's images are embedded here: they are not those that embed@<name> indexed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.paths import BACKBONE, PHI

HELP = "write a benchmark's test-server submission file(s) with the trained phi"
EPILOG = f"""\
Reads params.yaml, {BACKBONE} and {PHI} from the current directory (the repository root,
after `dvc repro`). Writes, for split S of benchmark NAME:
  CIRR   DIR/NAME_S.json         {{"version": "rc2", "metric": "recall", "<pairid>": [50 names]}}
         DIR/NAME_S_subset.json  {{"version": "rc2", "metric": "recall_subset", "<pairid>": [3 names]}}
         upload both to the CIRR test server (test1)
  CIRCO  DIR/NAME_S.json         {{"<query id>": [50 COCO ids]}}, for the CIRCO evaluation server (test)
  FashionIQ and GeneCIS: DIR/NAME_S.json in the formats of docs/datasets.md
On a split with ground truths (val), `lincir score` scores the same files.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("submit", help=HELP, description=HELP, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", help="a benchmark name from params.yaml's `benchmarks` section")
    parser.add_argument("--split", required=True,
                        help="annotation split to answer: test1 (CIRR), test (CIRCO, FashionIQ), or val")
    parser.add_argument("--out", type=Path, default=Path("submissions"),
                        help="folder for the submission file(s) (default: submissions)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    written = submit(args.benchmark, args.split, args.out)
    print("\n".join(str(path) for path in written))
    return 0


def submit(name: str, split: str, out: Path) -> list[Path]:
    """Answers every query of `name`'s `split` with the trained phi; returns the files written."""
    # imported here, not at the top: the `lincir` command imports every subcommand, and
    # `lincir score` needs none of torch, open_clip or faiss
    from pipeline.core import stage
    from pipeline.core.params import load_params, section, typed, value
    from pipeline.evaluation import gallery
    from pipeline.evaluation.benchmarks import check_images, from_params
    from pipeline.evaluation.prompts import prompt_for
    from pipeline.evaluation.queries import EvaluateConfig, answer, query_context
    from pipeline.model import backbone as backbones
    from pipeline.model.phi import load_phi

    params = load_params()
    embed, evaluate = section(params, "embed"), typed(EvaluateConfig, section(params, "evaluate"), "evaluate")
    bench = from_params(params, name, split)
    check_images(bench)  # every missing image, before any model work
    if not PHI.is_file():
        raise PipelineError(f"{PHI} not found: train phi first (dvc repro train)")
    device = stage.device()
    backbone = backbones.load(BACKBONE, device)
    names, latents, indexes = gallery.embed_benchmark(
        bench, backbone.model, backbone.preprocess, batch_size=embed["batch_size"],
        num_workers=embed["num_workers"], index=embed["index"], device=device)
    prompt = prompt_for(evaluate.prompt, value(params, "method", str), bench.name, evaluate.template)
    ctx = query_context(backbone, names, latents, {"trained": load_phi(PHI, device)}, template=prompt,
                        normalize_image_latent=evaluate.normalize_image_latent, device=device)
    rankings, candidate_rankings = answer(bench, ctx, indexes, names, "trained_phi")
    path = out / f"{name}_{split}.json"
    # CIRR's second file: the top 3 within each query's group
    subset = out / f"{name}_{split}_subset.json" if bench.ranks_gallery and bench.candidate_depth else None
    bench.write_predictions(path, rankings, candidate_rankings, subset_path=subset)
    return [path, subset] if subset else [path]
