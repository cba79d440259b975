"""The error type for bad input and bad params: stages and `lincir` print its message and
exit 1, never a traceback (pipeline/core/stage.py, pipeline/cli.py)."""

QUOTE_LIMIT = 80  # characters of a bad value an error message quotes


class PipelineError(ValueError):
    pass


def quoted(value, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)` cut to `limit` characters: a huge bad value never makes a huge message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
