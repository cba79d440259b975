"""params-paper.yaml (the paper's setting on real data) checked offline against params.yaml, the params
stage's checks and DVC's own reading of dvc.yaml; and `lincir profile`, which applies it."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core.errors import PipelineError
from pipeline.tools import profile

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "params-paper.yaml"


@pytest.fixture
def params_copy(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path / "params.yaml"


def test_the_paper_profile_passes_every_check_of_params_yaml(params_copy):
    steps = yaml.safe_load(params_copy.read_text())["train"]["steps"]  # the world's default, before the profile
    changes = profile.apply(PAPER, params_copy)  # unknown keys, types, ranges, registry names: the params stage
    merged = yaml.safe_load(params_copy.read_text())
    assert merged["backbone"] == {**merged["backbone"], "model": "ViT-L-14-quickgelu", "pretrained": "openai"}
    assert [s.get("hf") for s in merged["ingest"]["sources"]] == ["google-research-datasets/conceptual_captions",
                                                                  "FredZhang7/stable-diffusion-prompts-2.47M"]
    assert {"circo", "cirr", "fashioniq", "genecis"} <= set(merged["benchmarks"])
    assert merged["benchmarks"][merged["train"]["validate_on"]] == {"kind": "cirr", "root": "datasets/CIRR",
                                                                    "split": "val"}
    # the paper's optimiser and phi are the defaults: the profile leaves them alone
    assert (merged["train"]["batch_size"], merged["train"]["lr"], merged["train"]["weight_decay"],
            merged["train"]["dropout"], merged["method"], merged["noise"]) == (512, 0.0001, 0.01, 0.5, "lincir",
                                                                               "unif_gaussian")
    assert len(changes) == 14 and f"train.steps: {steps} -> 20000" in changes


def test_dvc_reads_dvc_yaml_with_the_paper_profile(params_copy, tmp_path):
    """DVC resolves dvc.yaml's foreach and ${...} with the merged params: one embed and evaluate stage per
    benchmark, and the train stage's dev gallery is CIRR's."""
    from dvc.repo import Repo

    profile.apply(PAPER, params_copy)
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    with Repo(str(tmp_path)) as repo:
        stages = {s.name: s for s in repo.index.stages}
    for name in ("circo", "cirr", "fashioniq", "genecis"):
        assert {f"embed@{name}", f"evaluate@{name}"} <= set(stages)
        assert "datasets/" in str(stages[f"embed@{name}"].deps)
    assert "--dev-gallery data/embed/cirr " in stages["train"].cmd


def test_lincir_profile_keeps_comments_and_refuses_unknown_keys(params_copy, tmp_path, capsys):
    from pipeline.tools.cli import main

    before = params_copy.read_text()
    assert main(["profile", str(PAPER), "--params", str(params_copy), "--dry-run"]) == 0
    assert params_copy.read_text() == before and "14 values would change" in capsys.readouterr().out
    assert main(["profile", str(PAPER), "--params", str(params_copy)]) == 0
    after = params_copy.read_text()
    # every comment stays, but that of the replaced corpus source (flow lists come back on one line,
    # as `dvc exp run -S` writes them)
    comments = [line.split("#", 1)[1] for line in before.splitlines() if "#" in line and "corpus.txt" not in line]
    assert [c for c in comments if c not in after] == []
    assert "model: ViT-L-14-quickgelu" in after
    assert main(["profile", str(PAPER), "--params", str(params_copy)]) == 0  # again: nothing to change
    assert "already has every value" in capsys.readouterr().out

    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  stpes: 10\n")
    with pytest.raises(PipelineError, match="the profile sets train.stpes, which params.yaml does not have"):
        profile.apply(typo, params_copy)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: 0\n")
    with pytest.raises(PipelineError, match="train.steps must be at least 1"):
        profile.apply(bad, params_copy)
    assert params_copy.read_text() == after  # a refused profile writes nothing


def test_the_real_data_page_exists_and_the_readme_links_it():
    page = (REPO / "docs/real-data.md").read_text()
    assert "lincir profile params-paper.yaml" in page and "HF_HUB_OFFLINE" in page and "lincir_large.pt" in page
    assert "docs/real-data.md" in (REPO / "README.md").read_text()
