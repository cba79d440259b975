"""`lincir perf`: each optimised path beside its reference path (pipeline/tools/perf/reference.py), on the
same inputs in one run; prints the throughput of both, their ratio, and one JSON line.

    lincir perf train --model ViT-B-32        phi training steps
    lincir perf methods --model ViT-B-32      training cost of LinCIR, Pic2Word, SEARLE, masked inversion
    lincir perf keywords --captions 20000     spaCy POS tagging
    lincir perf tokens --captions 20000       tokenizing captions and masked captions
    lincir perf embed --images 256            gallery image embedding
    lincir perf memory --captions 2000000     peak RSS of ingest -> keywords -> tokens
    lincir perf search --sizes 100000 1000000 per-query latency, recall and memory of the index kinds
    lincir perf executor                      keywords, tokens, embedding: local vs Ray on 1 and 2 nodes
    lincir perf gpu                           the GPU path in one call: correctness, training, embedding

One module per target (pipeline/tools/perf/<target>.py), each with add_parser(subparsers) and
run(args). Inputs are synthetic and seeded (pipeline/tools/perf/synthetic.py); results are
recorded in BENCHMARKS.md.
"""
from __future__ import annotations

import argparse

from pipeline.tools.perf import embed, executor, gpu, keywords, memory, methods, search, tokens, train

TARGETS = [train, methods, keywords, tokens, embed, memory, search, executor, gpu]
HELP = "throughput of the optimised paths against the reference implementation (see BENCHMARKS.md)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("perf", help=HELP, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    targets = parser.add_subparsers(dest="target", required=True, metavar="{" + ",".join(
        t.__name__.rsplit(".", 1)[1] for t in TARGETS) + "}")
    for target in TARGETS:
        target.add_parser(targets)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.perf")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["perf", *(argv if argv is not None else __import__("sys").argv[1:])])
    return args.func(args)
