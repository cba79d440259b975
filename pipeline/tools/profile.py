"""`lincir profile FILE`: a params profile (part of a params.yaml, such as params-paper.yaml: the
paper's setting on real data, docs/real-data.md) written into params.yaml.

    lincir profile params-paper.yaml --dry-run    what would change
    lincir profile params-paper.yaml              write it (git checkout params.yaml undoes it)

Every key of the profile must already be in params.yaml, except new entries of `benchmarks`;
mappings merge key by key and any other value (a list included) replaces the old one. params.yaml
keeps its comments and order (a ruamel.yaml round trip, as `dvc exp run -S` writes it). The merged
params pass the params stage's checks (stages/params.py) before anything is written.
"""
from __future__ import annotations

import argparse
import io
import runpy
import tempfile
from pathlib import Path

from pipeline.core.errors import PipelineError, quoted
from pipeline.core.stage import ROOT

HELP = "apply a params profile (e.g. params-paper.yaml: the paper's setting on real data) to params.yaml"
OPEN = ("benchmarks",)  # mappings whose new entries a profile may add


def yaml_round_trip():
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments, order and flow style kept
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a line
    yaml.indent(mapping=2, sequence=4, offset=2)  # params.yaml's own layout
    return yaml


def read(path: Path, yaml) -> dict:
    if not path.is_file():
        raise PipelineError(f"{path} not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"))
    except Exception as e:  # ruamel's errors have no common base class worth naming
        raise PipelineError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path} must be a mapping of params.yaml sections")
    return data


def merge(base: dict, profile: dict, where: str = "") -> list[str]:
    """Writes `profile` into `base` in place; returns one line per changed value."""
    changes = []
    for key, value in profile.items():
        name = f"{where}{key}"
        if key not in base and where.rstrip(".") not in OPEN:
            raise PipelineError(f"the profile sets {name}, which params.yaml does not have (docs/params.md lists "
                                f"every key)")
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            changes += merge(base[key], value, f"{name}.")
        elif key not in base or base[key] != value:
            changes.append(f"{name}: {quoted(plain(base.get(key)))} -> {quoted(plain(value))}")
            base[key] = value
    return changes


def plain(value):
    """ruamel's commented containers as plain ones, for messages."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def check(params: dict) -> None:
    """The params stage's checks on `params` (stages/params.py), without writing its output anywhere."""
    script = runpy.run_path(str(ROOT / "stages" / "params.py"), run_name="lincir_profile_check")
    with tempfile.TemporaryDirectory() as tmp:
        script["main"](plain(params), argparse.Namespace(out=Path(tmp) / "checked"))


def apply(profile: Path, params_file: Path, dry_run: bool = False) -> list[str]:
    yaml = yaml_round_trip()
    params = read(params_file, yaml)
    changes = merge(params, read(profile, yaml))
    check(params)
    if not dry_run and changes:
        out = io.StringIO()
        yaml.dump(params, out)
        params_file.write_text(out.getvalue(), encoding="utf-8")
    return changes


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("profile", help=HELP, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path, help="the profile, e.g. params-paper.yaml")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="the params file to change (default: params.yaml)")
    parser.add_argument("--dry-run", action="store_true", help="print what would change, write nothing")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    changes = apply(args.profile, args.params, args.dry_run)
    print("\n".join(changes) if changes else f"{args.params} already has every value of {args.profile}")
    if changes:
        print(f"{len(changes)} values {'would change' if args.dry_run else 'changed'} in {args.params}; "
              f"every param passed the params stage's checks")
    return 0
