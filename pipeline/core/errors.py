"""The error type for bad input and bad params, and the one boundary that turns it into a message:
stages (pipeline/core/stage.py) and `lincir` (pipeline/tools/cli.py) print one `error:` line and
exit 1, never a traceback."""
from __future__ import annotations

import errno
import sys
from collections.abc import Callable

QUOTE_LIMIT = 80  # characters of a bad value an error message quotes
MAX_LISTED = 10  # problems listed in one error message; the message always gives the total count
# OS errors that are the machine's state or a bad path, not a bug: (what happened, what to do)
FILE_SYSTEM_ERRORS = {
    errno.ENOSPC: ("the disk is full", "free space, then run again"),
    errno.EDQUOT: ("the disk quota is exceeded", "free space, then run again"),
    errno.EROFS: ("the file system is read-only", "write somewhere else"),
    errno.EACCES: ("permission denied", "fix the permissions or write somewhere else"),
    errno.EPERM: ("permission denied", "fix the permissions or write somewhere else"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "give another path"),
    errno.EISDIR: ("the path is a folder, not a file", "give the path of a file"),
    errno.ENAMETOOLONG: ("the file name is too long", "give a shorter path"),
}


class PipelineError(ValueError):
    pass


def quoted(value, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)` cut to `limit` characters: a huge bad value never makes a huge message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def one_line(run: Callable[[], int | None]) -> int:
    """Calls `run`; a PipelineError, a full disk, a denied write or a path through a file becomes one
    `error:` line on stderr and exit status 1. Anything else is a bug and keeps its traceback."""
    try:
        return run() or 0
    except PipelineError as e:
        return fail(str(e))
    except OSError as e:
        if e.errno not in FILE_SYSTEM_ERRORS:
            raise
        what, fix = FILE_SYSTEM_ERRORS[e.errno]
        return fail(f"{what} ({e.filename or e.strerror}): {fix}")


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1
