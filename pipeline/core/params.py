"""Reading params.yaml: plain dicts, as DVC writes them (`dvc exp run -S a.b=c`)."""
from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.core.errors import PipelineError


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found: run stages from the repository root (dvc repro does)")
    with open(path) as f:
        return yaml.safe_load(f)


def section(params: dict, name: str) -> dict:
    if name not in params:
        raise PipelineError(f"params.yaml has no section {name!r}")
    return params[name]
