"""Command-line arguments checked like params: argparse types that refuse a value out of range
with a message saying what the argument is for, and a parser whose errors are one `error:`
line and exit status 1, like every other bad input (pipeline/core/errors.py)."""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable


class Parser(argparse.ArgumentParser):
    """argparse's parser with errors as one line: `error: lincir index: argument --batch-size:
    must be at least 1, not 0 (see lincir index --help)`, exit status 1. Subcommands' parsers are
    of this class too (argparse makes them with the type of their parent)."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(1)


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """A whole number in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
        _in_range(value, low, high)
        return value

    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


def number(low: float, high: float | None = None, *, above: bool = False) -> Callable[[str], float]:
    """A finite number in [low, high] (`above`: strictly above `low`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
        if above and value <= low:
            raise argparse.ArgumentTypeError(f"must be above {low:g}, not {text}")
        _in_range(value, low, high)
        return value

    parse.__name__ = "number"
    return parse


def _in_range(value, low, high) -> None:
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
    if high is not None and value > high:
        raise argparse.ArgumentTypeError(f"must be at most {high}, not {value}")
