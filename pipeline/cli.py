"""`lincir`: the project's command line. Each subcommand lives in its own module and
registers itself with `add_parser(subparsers)`; the pipeline itself runs with `dvc repro`."""
from __future__ import annotations

import argparse
import sys

from pipeline import perf, score, submit
from pipeline.search import commands as search

COMMANDS = [score, submit, perf, search]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lincir",
        description="LinCIR pipeline tools. The pipeline itself runs with `dvc repro` (see README.md).")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
