"""`lincir ablate`: the paper's ablations as DVC experiments, and RESULTS.md from them.

    lincir ablate run --seeds 3          one `dvc exp run` per cell, skipping finished ones
    lincir ablate run --groups method controlled
                                         the zero-shot CIR methods side by side (pipeline/methods/), as
                                         their authors built them and with LinCIR's phi and optimiser
    lincir ablate report                 RESULTS.md + docs/results.png from `dvc exp show --json`
    lincir ablate run --part 1/2         every second cell from the first: a grid shared by two clones
                                         or machines (each runs its part; report reads them together)
    lincir ablate report --rev A --rev B the experiments derived from these commits (a grid run in parts)

Each cell is an experiment named `<group>-<value>-s<seed>` (`noise-gaussian-s1`): a run that
is interrupted keeps the experiments it finished, and the next `run` skips them by name, also
after a new commit (DVC's run cache also restores stages that had finished inside the
interrupted one).
Commit your changes first: experiments are derived from the last commit. Every cell sets every
grid param (the others to their committed value), because `dvc exp run` leaves the previous
experiment's params in the workspace. An experiment that fails leaves the workspace as it was
before it (params.yaml as written, the outputs of dvc.lock checked out again). The train stage's
wall time of each experiment goes to logs/ablate_times.json (a wall time is no result for DVC to
cache), and `report` adds it. Files `report` reads (--show, --times) are checked: a malformed one
is one message naming it and the entry.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.core import io
from pipeline.core.arguments import integer
from pipeline.core.errors import PipelineError, quoted
from pipeline.core.io import write_text
from pipeline.tools.experiments.grid import GROUPS, METHODS, METRICS, NAME
from pipeline.tools.experiments.results import write_results

TRAIN_TIME = Path("logs/train.json")  # written by stages/train.py
TIMES = Path("logs/ablate_times.json")
EVALUATE = Path("data/evaluate")  # the evaluate stages' per_query.json, one folder a benchmark
PER_QUERY = Path("logs/ablate_per_query")
PARAMS = Path("params.yaml")


def grid_params() -> list[str]:
    """Every param some group sets, in a fixed order."""
    return list(dict.fromkeys(p for g in GROUPS.values() for p in (g.param, *g.seed_params, *dict(g.fixed),
                                                                  *(k for _, s in g.settings for k, _ in s))))


def cells(groups: list[str], seeds: int, base: dict[str, str]) -> list[tuple[str, list[str]]]:
    """(experiment name, `-S` overrides) for every cell of the grid, seed by seed, so that an
    interrupted run has every value of every group for its first seeds. `base` holds the
    committed value of each grid param; a cell overrides all of them."""
    out = []
    for seed in range(seeds):
        for g in groups:
            group = GROUPS[g]
            for value in group.values:
                values = {**base, **dict(group.fixed), **group.overrides(value),
                          **{p: str(seed) for p in group.seed_params}}
                out.append((f"{g}-{value}-s{seed}", [f"{p}={values[p]}" for p in grid_params()]))
    return out


def committed_params() -> dict[str, str]:
    """The last commit's value of every grid param (what a cell does not vary)."""
    import yaml

    done = subprocess.run(["git", "show", "HEAD:params.yaml"], capture_output=True, text=True)
    if done.returncode:
        raise PipelineError(f"cannot read the committed params.yaml: {done.stderr.strip()}")
    params, out = yaml.safe_load(done.stdout), {}
    for dotted in grid_params():
        node = params
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                raise PipelineError(f"params.yaml of the last commit has no {dotted}")
            node = node[key]
        out[dotted] = str(node)
    return out


def dvc(*args: str) -> str:
    # stage commands say `python`: this interpreter's, also when its environment is not activated
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True, env=env)
    if done.returncode:
        raise PipelineError(f"dvc {' '.join(args)} failed:\n{done.stderr.strip()[-2000:]}")
    return done.stdout


def finished() -> set[str]:
    """Experiment names at any commit: a cell runs once (`dvc exp remove` it to run it again),
    so a grid resumed after a commit adds no second copy of a cell that `report` would refuse."""
    return {line.strip() for line in dvc("exp", "list", "--all-commits", "--name-only").splitlines() if line.strip()}


def part(text: str) -> tuple[int, int]:
    """`K/N`: the K-th of N interleaved parts of the grid's cells (1 <= K <= N)."""
    k, sep, n = text.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise argparse.ArgumentTypeError(f"must be K/N with 1 <= K <= N (2/3: the second of three parts), not {text!r}")
    return int(k), int(n)


def run(args: argparse.Namespace) -> int:
    todo = cells(args.groups, args.seeds, committed_params())
    k, n = args.part
    todo = todo[k - 1::n]  # interleaved, so that each part has every group's first seeds early
    done = finished()
    left = [(name, o) for name, o in todo if name not in done]
    print(f"ablate: {len(todo)} experiments, {len(todo) - len(left)} already finished, {len(left)} to run")
    for i, (name, overrides) in enumerate(left, 1):
        print(f"[{i}/{len(left)}] dvc exp run -n {name} " + " ".join(f"-S {o}" for o in overrides), flush=True)
        if not args.dry_run:
            start = time.time()
            with restored_on_failure():
                dvc("exp", "run", "-n", name, *(a for o in overrides for a in ("-S", o)))
            record_train_time(name, start)
            keep_per_query(name)
            print(f"      {name} finished in {(time.time() - start) / 60:.1f} min", flush=True)
    return 0


@contextmanager
def restored_on_failure() -> Iterator[None]:
    """A failed (or interrupted) `dvc exp run` leaves params.yaml rewritten with the cell's values,
    and without its comments, and the outputs of the stages it ran removed: both are put back (the
    file as it was, the outputs as dvc.lock records them) before the error goes on."""
    saved = PARAMS.read_bytes() if PARAMS.is_file() else None
    try:
        yield
    except BaseException:
        if saved is not None:
            with io.atomic(PARAMS) as tmp:
                tmp.write_bytes(saved)
        try:
            dvc("checkout", "--force")
        except PipelineError as e:
            print(f"warning: params.yaml restored, but `dvc checkout --force` failed too: {e}", file=sys.stderr)
        raise


def record_train_time(name: str, start: float) -> None:
    """The train stage's wall time of experiment `name` into TIMES; none when the stage was
    restored from DVC's cache (its log is older than the experiment) or resumed a checkpoint."""
    if not TRAIN_TIME.is_file() or TRAIN_TIME.stat().st_mtime < start:
        return
    log = _read(TRAIN_TIME, "train stage log")
    if not isinstance(log, dict) or not _number(log.get("seconds")):
        raise PipelineError(f"{TRAIN_TIME}: expected the train stage's {{\"seconds\": ...}}, found {quoted(log)}")
    if log.get("resumed"):
        return
    times = read_times(TIMES) if TIMES.is_file() else {}
    times[name] = {"seconds": log["seconds"], "device": log.get("device")}
    io.write_json(TIMES, times, sort_keys=True)


def read_times(path: Path) -> dict[str, dict]:
    """The recorded train-stage times, {experiment: {"seconds": number, "device": ...}}, checked."""
    times = _read(path, "file of train-stage times")
    if not isinstance(times, dict):
        raise PipelineError(f"{path}: expected {{experiment: {{\"seconds\": ...}}}}, found {quoted(times)}")
    for name, t in times.items():
        if not isinstance(t, dict) or not _number(t.get("seconds")) or t["seconds"] < 0:
            raise PipelineError(f"{path}: {quoted(name)} is {quoted(t)}, not {{\"seconds\": a number of seconds}}")
    return times


def keep_per_query(name: str) -> None:
    """Each benchmark's per-query scores of experiment `name` (the workspace holds its outputs right after
    its run) into PER_QUERY/<name>/, for the paired intervals of `report`."""
    for source in sorted(EVALUATE.glob("*/per_query.json")):
        write_text(PER_QUERY / name / f"{source.parent.name}.json", source.read_text())


def train_times(path: Path) -> dict[str, dict[str, tuple[float, float, int]]]:
    """{group: {value: (mean, std, n)}} of the recorded train-stage seconds, over seeds."""
    if not path.is_file():
        return {}
    seen: dict = {}
    for name, t in read_times(path).items():
        m = NAME.fullmatch(name)
        if m and m["group"] in GROUPS:
            seen.setdefault(m["group"], {}).setdefault(m["value"], []).append(t["seconds"])
    return {g: {v: spread(s) for v, s in values.items()} for g, values in seen.items()}


def _read(path: Path, what: str):
    from pipeline.evaluation.benchmarks.base import read_json  # here: `lincir --help` needs none of it

    return read_json(path, what)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def spread(values: list[float]) -> tuple[float, float, int]:
    """(mean, std, n) over seeds; one seed has std 0."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def rows(show: list, source: str = "`dvc exp show --json`") -> list[dict]:
    """Every experiment of `dvc exp show --json` as {name, commit, metrics: {(bench, metric): value}};
    commit is the short hash of the commit the experiment derives from. What is not of that shape
    (a saved file edited by hand) is an error naming `source` and the entry."""
    out = []

    def shape(value, kind: type, where: str, what: str):
        if value is None:
            return kind()
        if not isinstance(value, kind):
            raise PipelineError(f"{source}: {where} is {quoted(value)}, not {what} as `dvc exp show --json` writes")
        return value

    def visit(node, commit: str | None, where: str) -> None:
        node = shape(node, dict, where, "an object")
        name = shape(node.get("name"), str, f"{where}.name", "a name") or None
        data = shape(node.get("data"), dict, f"{name or where}: data", "an object")
        metrics = {}
        for path, bench, metric in METRICS:
            files = shape(data.get("metrics"), dict, f"{name or where}: metrics", "an object")
            values = shape(shape(files.get(path), dict, f"{name or where}: {path}", "an object").get("data"), dict,
                           f"{name or where}: {path} data", "an object")
            scores = shape(values.get(bench), dict, f"{name or where}: {path} {bench}", "an object")
            if metric in scores:
                if not _number(scores[metric]):
                    raise PipelineError(f"{source}: {name or where}: {bench} {metric} is {quoted(scores[metric])}, "
                                        "not a number")
                metrics[(bench, metric)] = scores[metric]
        if name and metrics:
            out.append({"name": name, "commit": commit, "metrics": metrics})
        for i, exp in enumerate(shape(node.get("experiments"), list, f"{where}.experiments", "a list")):
            exp = shape(exp, dict, f"{where}.experiments[{i}]", "an object")
            for j, rev in enumerate(shape(exp.get("revs"), list, f"{where}.experiments[{i}].revs", "a list")):
                visit(rev, commit, f"{where}.experiments[{i}].revs[{j}]")

    for i, baseline in enumerate(shape(show, list, "the top level", "a list of commits")):
        rev = shape(baseline, dict, f"[{i}]", "an object").get("rev")
        if rev is not None and not isinstance(rev, str):
            raise PipelineError(f"{source}: [{i}].rev is {quoted(rev)}, not a commit")
        visit(baseline, None if rev in (None, "workspace") else rev[:7], f"[{i}]")
    return out


def grid_experiments(experiments: list[dict]) -> list[tuple[re.Match, dict]]:
    """The experiments named like a grid cell; the same cell at two commits is an error, not a
    silent pick (a grid re-run after a code change, reported with --all-commits or two --rev)."""
    seen: dict[str, dict] = {}
    for e in experiments:
        m = NAME.fullmatch(e["name"])
        if not m or m["group"] not in GROUPS:
            continue
        if e["name"] in seen and seen[e["name"]].get("commit") != e.get("commit"):
            raise PipelineError(f"experiment {e['name']} exists at commits {seen[e['name']].get('commit')} and "
                                f"{e.get('commit')}: pick the commits with --rev, or remove one "
                                "(`dvc exp remove <name> --rev <commit>`)")
        seen[e["name"]] = e
    return [(NAME.fullmatch(name), e) for name, e in seen.items()]


def summarise(experiments: list[dict]) -> dict:
    """{group: {value: {(bench, metric): (mean, std, n)}}} over the seeds of each cell."""
    seen: dict = {}
    for m, e in grid_experiments(experiments):
        cell = seen.setdefault(m["group"], {}).setdefault(m["value"], {})
        for key, value in e["metrics"].items():
            cell.setdefault(key, {})[int(m["seed"])] = value
    return {g: {v: {k: spread(list(s.values())) for k, s in cells_.items()} for v, cells_ in values.items()}
            for g, values in seen.items()}


def per_query_scores(experiments: list[dict], kept: Path = PER_QUERY) -> dict:
    """{group: {value: {(bench, metric): {seed: np.ndarray}}}}: the trained phi's per-query scores of each
    experiment that `run` kept (its row is the method's name), for the paired intervals of RESULTS.md."""
    import numpy as np

    out: dict = {}
    for m, e in grid_experiments(experiments):
        metrics: dict[str, list[str]] = {}
        for bench, metric in e["metrics"]:
            metrics.setdefault(bench, []).append(metric)
        for bench, names in metrics.items():
            path = kept / e["name"] / f"{bench}.json"
            if not path.is_file():
                continue
            scores = trained_row(path)
            for metric in names:
                values = scores.get(metric)
                if not isinstance(values, list) or not all(_number(v) for v in values):
                    raise PipelineError(f"{path}: no per-query {metric} of a trained phi (rows {{method: {{metric: "
                                        "[numbers]}}}} as the evaluate stage writes); run the experiment again")
                cell = out.setdefault(m["group"], {}).setdefault(m["value"], {}).setdefault((bench, metric), {})
                cell[int(m["seed"])] = np.asarray(values, float)
    return out


def trained_row(path: Path) -> dict:
    """The trained phi's row of a kept per_query.json ({metric: per-query scores}); {} where it has none."""
    data = _read(path, "per-query scores")
    rows = data.get("rows") if isinstance(data, dict) else None
    row = next((r for r in rows if r in METHODS), None) if isinstance(rows, dict) else None
    return rows[row] if row and isinstance(rows[row], dict) else {}


def commits(experiments: list[dict]) -> dict[str, list[str]]:
    """{group: the commits its experiments derive from}, for RESULTS.md to name."""
    out: dict[str, set] = {}
    for m, e in grid_experiments(experiments):
        out.setdefault(m["group"], set()).add(e.get("commit") or "workspace")
    return {g: sorted(c) for g, c in out.items()}


def report(args: argparse.Namespace) -> int:

    if args.show is None:
        which = ["--all-commits"] if args.all_commits else [a for rev in args.rev or [] for a in ("--rev", rev)]
        show, source = json.loads(dvc("exp", "show", "--json", *which)), "`dvc exp show --json`"
    else:
        show, source = _read(Path(args.show), "saved `dvc exp show --json`"), args.show
    experiments = rows(show, source)
    summary = summarise(experiments)
    if not summary:
        raise PipelineError("no finished ablation experiments found: run `lincir ablate run` first")
    write_results(summary, Path(args.out), Path(args.png), commits(experiments), train_times(Path(args.times)),
                  per_query_scores(experiments))
    print(f"wrote {args.out} and {args.png}")
    return 0


HELP = "queue the paper's ablations as DVC experiments, and build RESULTS.md from them"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("ablate", help=HELP, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", required=True)
    r = actions.add_parser("run", help="run every missing experiment of the grid, one after the other")
    r.add_argument("--groups", nargs="+", choices=list(GROUPS), default=list(GROUPS), help="which ablations")
    r.add_argument("--seeds", type=integer(1), default=3, help="seeds a cell (default 3: mean and std)")
    r.add_argument("--part", type=part, default=(1, 1), metavar="K/N",
                   help="run only every N-th cell, from the K-th: N clones or machines sharing one DVC cache "
                        "each run one part (default: all cells)")
    r.add_argument("--dry-run", action="store_true", help="print the dvc commands without running them")
    r.set_defaults(func=run)
    p = actions.add_parser("report", help="write RESULTS.md and its picture from the finished experiments")
    p.add_argument("--out", default="RESULTS.md",
                   help="the Markdown report: one table per ablation, mean ± std over seeds (default: RESULTS.md; its folder is created)")
    p.add_argument("--png", default="docs/results.png",
                   help="the same numbers as a bar chart, linked from the report (default: docs/results.png)")
    p.add_argument("--show", help="read this saved `dvc exp show --json` instead of asking dvc")
    p.add_argument("--times", default=str(TIMES), help=f"train-stage wall times that `run` recorded (default {TIMES})")
    p.add_argument("--rev", action="append", metavar="COMMIT",
                   help="experiments derived from this commit (repeat for several; default: the last commit's)")
    p.add_argument("--all-commits", action="store_true",
                   help="experiments derived from every commit (RESULTS.md names each group's commits)")
    p.set_defaults(func=report)
    return parser
