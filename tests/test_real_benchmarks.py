"""Issue 3's acceptance test: the embed and evaluate stages, run as DVC runs them, on the
official annotations of all four benchmarks with a placeholder image for every image they
name, a random-weight lincir-world backbone and a random phi.

Query counts and gallery sizes are those of shared/benchmark-annotations/README.md; CIRCO's
gallery is the references, every ground truth and a few thousand distractor ids, listed in
the image_info_unlabeled2017.json this test writes.
"""
import json
import runpy
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import gallery
from pipeline.benchmarks import load_benchmark
from tests.placeholder_images import ANNOTATIONS, linked_root, write_circo_image_info, write_placeholder_images
from tests.test_submit import write_random_run

REPO = Path(__file__).resolve().parents[1]
GENECIS_TASKS = ["change_object", "focus_object"]  # the GeneCIS files shipped in shared/
CIRCO_DISTRACTORS = range(1, 2001)
BENCHMARKS = {  # name: (kind, annotation folder, groups)
    "cirr": ("cirr", "CIRR", None),
    "circo": ("circo", "CIRCO", None),
    "fashioniq": ("fashioniq", "FashionIQ", None),
    "genecis": ("genecis", "GeneCIS", GENECIS_TASKS),
}

pytestmark = pytest.mark.skipif(not ANNOTATIONS.is_dir(), reason=f"official annotations not found at {ANNOTATIONS}")


def _placeholder_root(kind: str, folder: str, groups, root: Path, store: Path):
    """A writable copy of an annotation folder (links) with a placeholder at every image path of its val split."""
    linked_root(ANNOTATIONS / folder, root)
    if kind == "circo":
        write_circo_image_info(root, extra_ids=CIRCO_DISTRACTORS)
    bench = load_benchmark(kind, root, "val", groups)
    write_placeholder_images(bench, store)
    return bench


def _stage(script: str, name: str, cwd: Path) -> None:
    """`python stages/<script> <name>` run in `cwd`, as DVC runs it, but in this process: a fresh
    interpreter per stage would import torch, open_clip and faiss eight times (~5 s each here)."""
    path = REPO / "stages" / script
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        patch.setattr(sys, "argv", [str(path), name])
        patch.setattr(sys, "path", list(sys.path))  # the stage prepends the repository root
        runpy.run_path(str(path), run_name="__main__")


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """Runs embed@NAME then evaluate@NAME for every benchmark; returns (repo dir, benchmarks)."""
    base = tmp_path_factory.mktemp("real")
    benches, entries = {}, {}
    for name, (kind, folder, groups) in BENCHMARKS.items():
        root = base / folder
        benches[name] = _placeholder_root(kind, folder, groups, root, base / "store")
        entries[name] = {"kind": kind, "root": str(root), "split": "val", **({"groups": groups} if groups else {})}
    repo = base / "repo"
    write_random_run(repo, entries, embed_batch_size=1024)
    for name in BENCHMARKS:
        for script in ("embed.py", "evaluate.py"):
            _stage(script, name, repo)
    return repo, benches


def _metrics(repo: Path, name: str) -> dict[str, float]:
    metrics = json.loads((repo / "metrics" / "evaluate" / f"{name}.all.json").read_text())
    assert list(metrics) == ["lincir"]
    values = metrics["lincir"]
    headline = json.loads((repo / "metrics" / "evaluate" / f"{name}.json").read_text())
    assert headline == {name: {k: v for k, v in values.items() if "/" not in k}}
    assert all(0 <= v <= 100 for v in values.values()), values
    return values


def _index_sizes(repo: Path, name: str) -> dict[str, int]:
    _, _, indexes = gallery.load(repo / "data" / "embed" / name)
    return {group: index.ntotal for group, index in indexes.items()}


# Query counts are those of the benchmarks the stages read; evaluate scores only when every
# query has a ranking (Benchmark.ranked), so each of them was answered.
def test_cirr(pipeline_run):
    repo, benches = pipeline_run
    assert len(benches["cirr"].queries) == 4181
    assert _index_sizes(repo, "cirr") == {"": 2297}
    assert set(_metrics(repo, "cirr")) == {"R@1", "R@5", "R@10", "R@50", "subset_R@1", "subset_R@2", "subset_R@3"}


def test_circo(pipeline_run):
    repo, benches = pipeline_run
    bench = benches["circo"]
    assert len(bench.queries) == 220
    assert _index_sizes(repo, "circo") == {"": len(bench.gallery)} and len(bench.gallery) > len(CIRCO_DISTRACTORS)
    aspects = {a for q in bench.queries for a in q.aspects}
    assert set(_metrics(repo, "circo")) == (
        {f"{m}@{k}" for m in ("mAP", "R") for k in (5, 10, 25, 50)} | {f"mAP@10/{a}" for a in aspects})


def test_fashioniq(pipeline_run):
    repo, benches = pipeline_run
    queries = {c: sum(q.group == c for q in benches["fashioniq"].queries) for c in ("dress", "shirt", "toptee")}
    assert queries == {"dress": 2017, "shirt": 2038, "toptee": 1961}
    assert _index_sizes(repo, "fashioniq") == {"dress": 3817, "shirt": 6346, "toptee": 5373}
    assert set(_metrics(repo, "fashioniq")) == (
        {"R@10", "R@50"} | {f"R@{k}/{c}" for k in (10, 50) for c in ("dress", "shirt", "toptee")})


def test_genecis(pipeline_run):
    repo, benches = pipeline_run
    assert {t: sum(q.group == t for q in benches["genecis"].queries) for t in GENECIS_TASKS} == {
        "change_object": 1960, "focus_object": 1960}
    assert _index_sizes(repo, "genecis") == {}  # each query ranks its own 10-15 candidates
    assert set(_metrics(repo, "genecis")) == (
        {"R@1", "R@2", "R@3"} | {f"R@{k}/{t}" for k in (1, 2, 3) for t in GENECIS_TASKS})


def test_missing_image_is_reported_before_any_model_work(tmp_path, capsys):
    bench = _placeholder_root("cirr", "CIRR", None, tmp_path / "CIRR", tmp_path / "store")
    gone = bench.images[bench.queries[0].reference].path
    gone.unlink()
    params = {"benchmarks": {"cirr": {"kind": "cirr", "root": str(tmp_path / "CIRR"), "split": "val"}},
              "embed": yaml.safe_load((REPO / "params.yaml").read_text())["embed"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit) as exit:  # no data/backbone here: any model work would fail otherwise
        _stage("embed.py", "cirr", tmp_path)
    err = capsys.readouterr().err
    assert exit.value.code == 1 and err.startswith("error: cirr val: 1 of 2297 image files are missing or unreadable")
    assert f"{gone} (missing)" in err
