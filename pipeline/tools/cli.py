"""`lincir`: the project's command line. Each subcommand lives in its own module and
registers itself with `add_parser(subparsers)`; the pipeline itself runs with `dvc repro`."""
from __future__ import annotations

import importlib.metadata
import sys

from pipeline.core import exact
from pipeline.core.arguments import Parser
from pipeline.core.errors import one_line
from pipeline.tools import cam, perf, profile, score, submit
from pipeline.tools.experiments import ablate
from pipeline.tools.search import commands as search

COMMANDS = [score, submit, profile, ablate, perf, search, cam]


def main(argv: list[str] | None = None) -> int:
    exact.pin_environment()  # the same kernels as the stages (lincir submit, index, search compute with torch)
    parser = Parser(
        prog="lincir",
        description="LinCIR pipeline tools. The pipeline itself runs with `dvc repro` (see README.md).")
    parser.add_argument("--version", action="version",
                        version=f"lincir {importlib.metadata.version('lincir-pipeline')}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    args = parser.parse_args(argv)
    try:
        return one_line(lambda: args.func(args))  # every command answers bad input the same way
    except KeyboardInterrupt:  # Ctrl-C is the user's choice, not a bug: no traceback
        print(f"lincir {args.command}: interrupted", file=sys.stderr)
        return 130  # the shell's status for a process ended by SIGINT


if __name__ == "__main__":
    sys.exit(main())
