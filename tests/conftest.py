"""Fixtures the test modules share: the world backbone at random initialisation (and its files), a
tiny generated world, the search world's photos and index, and runners that calls a stage script in this process.

Helpers that are not fixtures live in plain modules beside this file (search_world.py,
placeholder_images.py) and are imported by name: `import search_world`.
"""
from __future__ import annotations

import json
import os
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
# The tests compare runs on one machine, never with the committed dvc.lock: they skip the pinned
# kernels (pipeline/core/exact.py: MKL's portable path is 2-3x slower), which tests/test_exact.py
# checks in fresh processes. Set before any test module imports pipeline.
os.environ.setdefault("LINCIR_EXACT", "0")


@pytest.fixture(scope="session")
def world_backbone():
    """lincir-world-vit with seed-0 random weights, frozen: what every model test runs on."""
    from pipeline.model import backbone

    torch.manual_seed(0)
    return backbone.freeze(backbone.create("lincir-world-vit", None))


@pytest.fixture(scope="session")
def tower(world_backbone):
    """(TextTower, joint width, tokenizer) of the world backbone."""
    from pipeline.model.backbone import embed_dim
    from pipeline.model.text_encoder import text_tower

    return text_tower(world_backbone.model, world_backbone.tokenizer), embed_dim(world_backbone), \
        world_backbone.tokenizer


@pytest.fixture(scope="session")
def write_backbone():
    """write_backbone(folder, model="lincir-world-vit") -> the backbone.json of random weights saved there,
    as the backbone stage records a backbone."""
    from pipeline.core import io
    from pipeline.model import backbone

    def write(folder: Path, model: str = "lincir-world-vit", weights=None) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "weights.pt"
        io.save_checkpoint(weights if weights is not None else backbone.create(model, None).model, path)
        identity = folder / "backbone.json"
        identity.write_text(json.dumps({"model": model, "pretrained": str(path), "sha256": io.file_sha256(path)}))
        return identity

    return write


@pytest.fixture(scope="session")
def random_run(write_backbone):
    """random_run(workdir, benchmarks, queries=("trained_phi",)): what the embed/evaluate stages and
    `lincir submit` read, in `workdir`: params.yaml (the repository's `embed`, `evaluate`, `executor` and
    `method` with these `benchmarks`), a random-weight lincir-world-vit backbone recorded as the backbone stage
    records it, and a random phi (as phi.pt and phi_init.pt)."""
    from pipeline.core.params import load_params
    from pipeline.model.backbone import create, embed_dim
    from pipeline.model.phi import build_phi, save_phi
    from pipeline.model.text_encoder import text_tower

    def write(workdir: Path, benchmarks: dict, queries=("trained_phi",), embed_batch_size: int = 64) -> None:
        torch.manual_seed(0)
        backbone = create("lincir-world-vit", None)
        write_backbone(workdir / "data" / "backbone", weights=backbone.model)
        config = {"variant": "paper", "embed_dim": embed_dim(backbone),
                  "token_width": text_tower(backbone.model, backbone.tokenizer).width, "dropout": 0.5}
        for name in ("phi.pt", "phi_init.pt"):
            save_phi(build_phi(**config), config, workdir / "data" / "train" / name)
        params = load_params(ROOT / "params.yaml")
        params = {"method": params["method"], "benchmarks": benchmarks, "executor": params["executor"],
                  "embed": {**params["embed"], "batch_size": embed_batch_size},
                  "evaluate": {**params["evaluate"], "queries": list(queries)}}
        (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    return write


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A generated world of a few dozen images (pipeline.data.world), with object masks."""
    from pipeline.data.world import WorldConfig, generate

    out = tmp_path_factory.mktemp("world")
    counts = generate(WorldConfig(seed=3, train_images=40, heldout_images=10, gallery_images=150,
                                  corpus_captions=300, circo_queries=25, cirr_queries=15, dev_queries=8), out)
    return out, counts


@pytest.fixture(scope="session")
def photo_index(tmp_path_factory):
    """The search world (tests/search_world.py), indexed (flat) at <tmp>/photos.index and opened."""
    import search_world

    from pipeline.tools.search import index
    from pipeline.tools.search.query import open_index

    w = search_world.build(tmp_path_factory.mktemp("search"))
    w["index"] = w["photos"].parent / "photos.index"
    index.update(w["photos"], w["index"], backbone_file=w["backbone"], phi=w["phi"], kind="flat")
    w["searcher"] = open_index(w["index"])
    return w


def dvc_command(stage: str, params: dict, key: str | None = None) -> list[str]:
    """The stage's command line from dvc.yaml (`stage` or `stage@key`), interpolated as DVC does."""
    name, _, at = stage.partition("@")
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][name]
    cmd = spec.get("do", spec)["cmd"]
    variables = {"key": key or at}

    def value(m):
        if m.group(1) in variables:
            return variables[m.group(1)]
        node = params
        for part in m.group(1).split("."):
            node = node[part]
        return str(node)

    return shlex.split(re.sub(r"\$\{([^}]+)\}", value, cmd))


def run_stage(workdir: Path, stage: str, *extra: str) -> int:
    """The stage (`name` or `name@key`) run with dvc.yaml's command line in `workdir` (params.yaml
    there), in this process, as `python stages/...` would: its exit status. In-process because a
    fresh interpreter per stage imports torch and open_clip again (seconds each)."""
    params = yaml.safe_load((workdir / "params.yaml").read_text()) or {}
    argv = dvc_command(stage, params)[1:]
    script = ROOT / argv[0]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        patch.setattr(sys, "argv", [str(script), *argv[1:], *extra])
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as done:
            return done.code
    return 0


@pytest.fixture(scope="session")
def stage():
    """stage(workdir, "pairs") -> exit status: run_stage as a fixture (module-scoped fixtures use it)."""
    return run_stage


@pytest.fixture
def stage_cli(capsys):
    """stage_cli(workdir, "ingest") -> (exit status, stderr)."""

    def call(workdir: Path, stage: str, *extra: str) -> tuple[int, str]:
        capsys.readouterr()
        code = run_stage(workdir, stage, *extra)
        return code, capsys.readouterr().err

    return call
