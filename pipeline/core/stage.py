"""What every stage script shares: params, the device, and errors as messages, not tracebacks."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

from pipeline.core.errors import PipelineError
from pipeline.core.params import load_params


def run(main: Callable[[dict], None]) -> None:
    """Calls `main(params)`; a PipelineError becomes one clear message and exit code 1."""
    try:
        main(load_params())
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def device() -> str:
    import torch  # here, not at the top: ingest and keywords never need torch's 600 MB

    return "cuda" if torch.cuda.is_available() else "cpu"


def write_json(path: Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")

