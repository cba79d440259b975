"""What every stage script shares: params, the device, and errors as messages, not tracebacks."""
from __future__ import annotations

import errno
import hashlib
import json
import sys
from pathlib import Path
from typing import Callable

from pipeline.core.errors import PipelineError
from pipeline.core.params import load_params

ROOT = Path(__file__).resolve().parents[2]
# OS errors that are the machine's state, not a bug: answered with a message, not a traceback
FILE_SYSTEM_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                      errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                      errno.EPERM: "permission denied"}


def run(main: Callable[[dict], None]) -> None:
    """Calls `main(params)`; a PipelineError, a full disk or a denied write becomes one clear
    message and exit code 1."""
    try:
        main(load_params())
    except PipelineError as e:
        fail(str(e))
    except OSError as e:
        if e.errno not in FILE_SYSTEM_ERRORS:
            raise
        fail(f"{FILE_SYSTEM_ERRORS[e.errno]} ({e.filename or e.strerror}): free space or fix permissions, then re-run")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def device() -> str:
    import torch  # here, not at the top: ingest and keywords never need torch's 600 MB

    return "cuda" if torch.cuda.is_available() else "cpu"


def write_json(path: Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def code_fingerprint() -> str:
    """sha256 over the source of every project module this process has imported: a resumable
    state saved by other code (an edited noise.py, say) is not resumed."""
    h = hashlib.sha256()
    paths = (Path(m.__file__) for m in list(sys.modules.values()) if getattr(m, "__file__", None))
    files = sorted({p.resolve() for p in paths if p.is_absolute() and p.is_file()
                    and p.resolve().is_relative_to(ROOT) and ".venv" not in p.parts})
    main = Path(sys.argv[0]).resolve()
    for path in files + ([main] if main.is_file() and main.is_relative_to(ROOT) else []):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()
