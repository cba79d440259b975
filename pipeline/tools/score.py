"""`lincir score`: the official metrics of a prediction file, printed as one JSON object.

    lincir score cirr --root datasets/CIRR --split val \\
        --predictions recall.json --subset-predictions recall_subset.json
    python -m pipeline.tools.score circo --root datasets/CIRCO --predictions submission_val.json

Prediction formats are those of each benchmark module (official where one exists).
Bad input is answered with one message on stderr and exit status 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.core.errors import one_line
from pipeline.evaluation.benchmarks import BENCHMARKS, load_benchmark

HELP = "score a prediction file with a benchmark's official metrics (percent, as JSON)"
DECIMALS = 4  # of a percent: finer than one query in the largest split (CIRR val: 1 of 4,181 = 0.0239 %)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmark", choices=BENCHMARKS.names(), help="which benchmark")
    parser.add_argument("--root", type=Path, required=True, help="the benchmark's dataset root (official layout)")
    parser.add_argument("--split", default="val", help="annotation split with ground truths (default: val)")
    parser.add_argument("--predictions", type=Path, required=True, help="the prediction file")
    parser.add_argument(
        "--subset-predictions", type=Path, help="CIRR only: the recall_subset file (top 3 of each group)"
    )
    parser.add_argument(
        "--groups", nargs="+", help="FashionIQ categories or GeneCIS tasks to score (default: all)"
    )


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("score", help=HELP, description=HELP)
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    bench = load_benchmark(args.benchmark, args.root, args.split, groups=args.groups)
    rankings, candidate_rankings = bench.read_predictions(args.predictions, args.subset_predictions)
    # the official evaluator's numbers, then its breakdown (CIRCO: mAP@10 per semantic aspect)
    scores = {**bench.score(rankings, candidate_rankings), **bench.breakdown(rankings, candidate_rankings)}
    print(json.dumps({name: round(v, DECIMALS) for name, v in scores.items()}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.score", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return one_line(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
