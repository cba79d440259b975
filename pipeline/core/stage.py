"""What every stage script shares: its paths from the dvc.yaml command line, exactly the params it
declares, the device, and errors as one line.

A stage script declares PARAMS, the params.yaml keys that dvc.yaml lists for it (a section, a
`section.key`, or `${key}` for a section named by another param, as in dvc.yaml), and UNTRACKED,
those it reads although they change no output (worker counts, batch sizes of pure functions), which
dvc.yaml leaves out on purpose. Its `main` sees params.yaml cut down to these keys, so a param read
but not declared is an error in the first run, and tests/test_dvc_deps.py checks that dvc.yaml
lists PARAMS and nothing else.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.core import exact
from pipeline.core.errors import PipelineError, one_line
from pipeline.core.params import load_params, lookup

ROOT = Path(__file__).resolve().parents[2]
exact.pin_environment()  # every stage script imports this module before torch computes anything
REFERENCE = re.compile(r"\$\{([^}]+)\}")


def arguments(doc: str | None, key: str | None = None, **paths: str) -> argparse.ArgumentParser:
    """A parser for a stage script: its docstring, `key` (a dvc.yaml `foreach` stage's `${key}`,
    e.g. the benchmark name) when given its help, and one required `--name PATH` per keyword."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if key:
        parser.add_argument("key", help=key)
    for name, help in paths.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=Path, required=True, help=help)
    return parser


def run(main: Callable[[dict, argparse.Namespace], None], params: Sequence[str] | None, untracked: Sequence[str] = (),
        parser: argparse.ArgumentParser | None = None) -> None:
    """Parses the command line, then calls `main(declared params, args)` behind the error boundary;
    `params` None: the whole of params.yaml (the params stage)."""
    args = (parser or arguments(None)).parse_args()
    variables = {"key": args.key} if "key" in args else {}

    def call() -> None:
        exact.pin_threads()
        everything = load_params()
        main(everything if params is None else declared(everything, [*params, *untracked], variables), args)

    sys.exit(one_line(call))


def resolve(key: str, params: dict, variables: dict | None = None) -> str:
    """`benchmarks.${key}` -> `benchmarks.world_dev` (a foreach stage's key) and `${method}` -> `lincir`
    (a param's value), as DVC interpolates dvc.yaml."""
    variables = variables or {}
    return REFERENCE.sub(lambda m: str(variables[m.group(1)] if m.group(1) in variables
                                       else lookup(params, m.group(1))), key)


def declared(params: dict, keys: Sequence[str], variables: dict | None = None) -> dict:
    """params.yaml cut down to `keys`: what a stage may read."""
    out: dict = {}
    for key in keys:
        key = resolve(key, params, variables)
        value = lookup(params, key)
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def fresh(folder: Path) -> Path:
    """An empty `folder`: a stage's outputs are rebuilt whole (DVC removes them too, a run by hand may not)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def require(path: Path, stage: str) -> None:
    if not path.exists():
        raise PipelineError(f"{path} not found: run the {stage} stage first (dvc repro {stage})")


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 'es' if noun.endswith('s') else 's'}"


def where(executor, n_process: int) -> str:
    """What a progress bar says runs the work: this machine's processes or the Ray cluster."""
    return f"ray at {executor.address}" if executor.kind == "ray" else plural(n_process, "process")


def device() -> str:
    import torch  # here, not at the top: ingest and keywords never need torch's 600 MB

    return "cuda" if torch.cuda.is_available() else "cpu"


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
