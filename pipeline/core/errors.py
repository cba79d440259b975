"""The error type for bad input and bad params, and the one boundary that turns it into a message:
stages (pipeline/core/stage.py) and `lincir` (pipeline/tools/cli.py) print one `error:` line and
exit 1, never a traceback."""
from __future__ import annotations

import errno
import sys
from collections.abc import Callable

QUOTE_LIMIT = 80  # characters of a bad value an error message quotes
MAX_LISTED = 10  # problems listed in one error message; the message always gives the total count
# OS errors that are the machine's state, not a bug: answered with a message, not a traceback
FILE_SYSTEM_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                      errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                      errno.EPERM: "permission denied"}


class PipelineError(ValueError):
    pass


def quoted(value, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)` cut to `limit` characters: a huge bad value never makes a huge message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def one_line(run: Callable[[], int | None]) -> int:
    """Calls `run`; a PipelineError, a full disk or a denied write becomes one `error:` line on
    stderr and exit status 1. Anything else is a bug and keeps its traceback."""
    try:
        return run() or 0
    except PipelineError as e:
        return fail(str(e))
    except OSError as e:
        if e.errno not in FILE_SYSTEM_ERRORS:
            raise
        return fail(f"{FILE_SYSTEM_ERRORS[e.errno]} ({e.filename or e.strerror}): free space or fix permissions, "
                    f"then run again")


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1
