"""dvc.yaml's params cannot drift from the code: each stage script declares PARAMS (what dvc.yaml
lists) and UNTRACKED (read, but changing no output); dvc.yaml must list exactly PARAMS, and every
param the script reads must be declared, every declared one read. At run time the script sees
params.yaml cut down to PARAMS + UNTRACKED (pipeline/core/stage.py), so a read that this static
check missed still fails in the first run."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# library functions a stage hands `params` to, and what they read of it
READERS = {"train_config": ["train"], "method_config": ["method", "${method}", "noise"],
           "from_params": ["benchmarks.*"], "check_dev": ["benchmarks.*"]}


def declared_lists(source: str) -> dict[str, list[str] | None]:
    """PARAMS and UNTRACKED of a stage script (module-level literals)."""
    out: dict[str, list[str] | None] = {"PARAMS": [], "UNTRACKED": []}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in out:
                out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def reads(source: str) -> set[str]:
    """The params a script reads: params["a"]["b"], params.get("a"), section(params, "a"),
    value(params, "a.b", ...), and what the READERS it calls read."""
    found = set()
    tree = ast.parse(source)
    inner_subscripts = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Subscript)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and id(node) not in inner_subscripts:
            keys, inner = [], node
            while isinstance(inner, ast.Subscript) and isinstance(inner.slice, ast.Constant):
                keys.insert(0, inner.slice.value)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id == "params" and keys:
                found.add(".".join(keys))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            args = node.args
            if isinstance(func, ast.Attribute) and func.attr == "get" and isinstance(func.value, ast.Name) \
                    and func.value.id == "params" and args and isinstance(args[0], ast.Constant):
                found.add(args[0].value)
            elif name in ("section", "value") and len(args) > 1 and isinstance(args[0], ast.Name) \
                    and args[0].id == "params" and isinstance(args[1], ast.Constant):
                found.add(args[1].value)
            elif name in READERS and args and isinstance(args[0], ast.Name) and args[0].id == "params":
                found.update(READERS[name])
    return found


def drift(source: str, dvc_params: list[str] | None, params_yaml: dict) -> list[str]:
    """Every way a stage's dvc.yaml params and its code disagree, as messages; [] when they agree."""
    lists = declared_lists(source)
    declared, untracked = lists["PARAMS"], lists["UNTRACKED"] or []
    if declared is None:  # reads params.yaml whole, as a file dep
        return [] if dvc_params is None else ["PARAMS is None (params.yaml as a file) but dvc.yaml lists params"]
    problems = []
    if sorted(dvc_params or []) != sorted(declared):
        problems.append(f"dvc.yaml params {sorted(dvc_params or [])} != the script's PARAMS {sorted(declared)}")
    known = [*declared, *untracked]

    def covered(read: str) -> bool:
        if read.endswith(".*"):
            return any(k.startswith(read[:-2] + ".") or k == read[:-2] for k in known)
        if read in known or any(read.startswith(k + ".") for k in known):
            return True
        section = params_yaml.get(read)  # a whole section read, declared key by key
        return isinstance(section, dict) and all(f"{read}.{key}" in known for key in section)

    def used(key: str) -> bool:
        return any(key == r or key.startswith(r.removesuffix("*").rstrip(".") + ".") or r.startswith(key + ".")
                   for r in reads_)

    reads_ = reads(source)
    problems += [f"reads {r!r}, which neither PARAMS nor UNTRACKED declares" for r in sorted(reads_) if not covered(r)]
    problems += [f"declares {k!r}, which it never reads" for k in known if not used(k)]
    return problems


def stage_specs() -> list[tuple[str, Path, list[str] | None]]:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    out = []
    for name, stage in spec["stages"].items():
        stage = stage.get("do", stage)
        out.append((name, ROOT / stage["cmd"].split()[1], stage.get("params")))
    return out


PARAMS_YAML = yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("name,script,dvc_params", stage_specs(), ids=[s[0] for s in stage_specs()])
def test_dvc_yaml_params_are_what_the_script_reads(name, script, dvc_params):
    assert drift(script.read_text(), dvc_params, PARAMS_YAML) == [], name


STAGE = '''
PARAMS = ["geometry", "lincir.noise_scale"]

def main(params, args):
    cfg = typed(GeometryConfig, params["geometry"], "geometry")
    scale = value(params, "lincir.noise_scale", float)
'''


def test_a_constructed_drift_is_found():
    assert drift(STAGE, ["geometry", "lincir.noise_scale"], PARAMS_YAML) == []
    # a param read but not declared (in the script, so in dvc.yaml)
    read_more = STAGE.replace('float)', 'float)\n    steps = params["train"]["steps"]')
    assert drift(read_more, ["geometry", "lincir.noise_scale"], PARAMS_YAML) == [
        "reads 'train.steps', which neither PARAMS nor UNTRACKED declares"]
    # dvc.yaml lists a method's section that the script does not declare
    assert drift(STAGE, ["geometry", "lincir.noise_scale", "${method}"], PARAMS_YAML)[0].startswith("dvc.yaml params")
    # declared in both but never read
    unread = STAGE.replace('"lincir.noise_scale"]', '"lincir.noise_scale", "${method}"]')
    assert drift(unread, ["geometry", "lincir.noise_scale", "${method}"], PARAMS_YAML) == [
        "declares '${method}', which it never reads"]
    # a whole section read where only some of its keys are declared
    partial = STAGE.replace('"geometry",', '"geometry.seed",')
    assert "reads 'geometry'" in drift(partial, ["geometry.seed", "lincir.noise_scale"], PARAMS_YAML)[0]


def test_only_the_train_stage_depends_on_a_method_section():
    for name, _, dvc_params in stage_specs():
        methods = {p for p in dvc_params or [] if p.split(".")[0] in ("${method}", "lincir", "pic2word", "searle",
                                                                        "masked_inversion")}
        if name == "train":
            assert methods == {"${method}"}
        elif name == "geometry":
            assert methods == {"lincir.noise_scale"}  # Tab. 1: the gap at LinCIR's noise scale
        else:
            assert not methods, name


def test_a_stage_sees_only_what_it_declares(tmp_path, monkeypatch):
    from pipeline.core.errors import PipelineError
    from pipeline.core.params import section, typed
    from pipeline.core.stage import declared
    from pipeline.training.loop import TrainConfig

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    view = declared(params, ["train.steps", "benchmarks.${train.validate_on}", "${method}"])
    assert view == {"train": {"steps": params["train"]["steps"]},
                    "benchmarks": {"world_dev": params["benchmarks"]["world_dev"]},
                    params["method"]: params[params["method"]]}
    with pytest.raises(PipelineError, match="train.batch_size is missing"):  # never a silent default
        typed(TrainConfig, section(view, "train"), "train")
    assert declared(params, ["benchmarks.${key}"], {"key": "world_cirr"}) == {
        "benchmarks": {"world_cirr": params["benchmarks"]["world_cirr"]}}
