import json
from pathlib import Path

import pytest
import yaml
from placeholder_images import ANNOTATIONS, trimmed_root, write_circo_image_info, write_placeholder_images

from pipeline.evaluation import gallery
from pipeline.evaluation.benchmarks import load_benchmark

REPO = Path(__file__).resolve().parents[1]
QUERIES = 30  # of each annotation file
GENECIS_TASKS = ["change_object", "focus_object"]  # the GeneCIS files shipped in shared/
CIRCO_DISTRACTORS = range(1, 301)
BENCHMARKS = {  # name: (kind, annotation folder, groups)
    "cirr": ("cirr", "CIRR", None),
    "circo": ("circo", "CIRCO", None),
    "fashioniq": ("fashioniq", "FashionIQ", None),
    "genecis": ("genecis", "GeneCIS", GENECIS_TASKS),
}

pytestmark = pytest.mark.skipif(not ANNOTATIONS.is_dir(), reason=f"official annotations not found at {ANNOTATIONS}")


def _placeholder_root(kind: str, folder: str, groups, root: Path, store: Path):
    """A writable copy of an annotation folder cut to QUERIES queries, with a placeholder at every
    image path of its val split."""
    trimmed_root(kind, ANNOTATIONS / folder, root, QUERIES)
    if kind == "circo":
        write_circo_image_info(root, extra_ids=CIRCO_DISTRACTORS)
    bench = load_benchmark(kind, root, "val", groups)
    write_placeholder_images(bench, store)
    return bench


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, random_run, stage):
    """Runs embed@NAME then evaluate@NAME for every benchmark; returns (repo dir, benchmarks)."""
    base = tmp_path_factory.mktemp("real")
    benches, entries = {}, {}
    for name, (kind, folder, groups) in BENCHMARKS.items():
        root = base / folder
        benches[name] = _placeholder_root(kind, folder, groups, root, base / "store")
        entries[name] = {"kind": kind, "root": str(root), "split": "val", **({"groups": groups} if groups else {})}
    repo = base / "repo"
    random_run(repo, entries, embed_batch_size=1024)
    for name in BENCHMARKS:
        for step in ("embed", "evaluate"):
            assert stage(repo, f"{step}@{name}") == 0
    return repo, benches


def test_the_full_annotation_files_have_the_documented_sizes(tmp_path):
    """No model: the full val files, as shared/benchmark-annotations/README.md counts them."""
    cirr = load_benchmark("cirr", ANNOTATIONS / "CIRR", "val")
    assert len(cirr.queries) == 4181 and len(cirr.gallery) == 2297
    root = tmp_path / "CIRCO"
    root.mkdir()
    (root / "annotations").symlink_to(ANNOTATIONS / "CIRCO" / "annotations")
    write_circo_image_info(root)
    assert len(load_benchmark("circo", root, "val").queries) == 220
    fashion = load_benchmark("fashioniq", ANNOTATIONS / "FashionIQ", "val")
    assert {c: sum(q.group == c for q in fashion.queries) for c in ("dress", "shirt", "toptee")} == {
        "dress": 2017, "shirt": 2038, "toptee": 1961}
    assert {c: len(fashion.galleries[c]) for c in ("dress", "shirt", "toptee")} == {
        "dress": 3817, "shirt": 6346, "toptee": 5373}
    genecis = load_benchmark("genecis", ANNOTATIONS / "GeneCIS", "val", GENECIS_TASKS)
    assert {t: sum(q.group == t for q in genecis.queries) for t in GENECIS_TASKS} == {
        "change_object": 1960, "focus_object": 1960}


def _metrics(repo: Path, name: str) -> dict[str, float]:
    metrics = json.loads((repo / "metrics" / "evaluate" / f"{name}.all.json").read_text())
    assert list(metrics) == ["lincir"]  # the trained phi's row, named after the method
    values = metrics["lincir"]
    headline = json.loads((repo / "metrics" / "evaluate" / f"{name}.json").read_text())
    assert headline == {name: {k: v for k, v in values.items() if "/" not in k}}
    assert all(0 <= v <= 100 for v in values.values()), values
    return values


def _index_sizes(repo: Path, name: str) -> dict[str, int]:
    _, _, indexes = gallery.load(repo / "data" / "embed" / name)
    return {group: index.ntotal for group, index in indexes.items()}


# evaluate scores only when every query has a ranking (Benchmark.ranked), so each was answered
def test_cirr(pipeline_run):
    repo, benches = pipeline_run
    bench = benches["cirr"]
    assert len(bench.queries) == QUERIES
    assert _index_sizes(repo, "cirr") == {"": len(bench.gallery)} and len(bench.gallery) > 51  # a full top 50
    assert set(_metrics(repo, "cirr")) == {"R@1", "R@5", "R@10", "R@50", "subset_R@1", "subset_R@2", "subset_R@3"}


def test_circo(pipeline_run):
    repo, benches = pipeline_run
    bench = benches["circo"]
    assert len(bench.queries) == QUERIES
    assert _index_sizes(repo, "circo") == {"": len(bench.gallery)} and len(bench.gallery) > len(CIRCO_DISTRACTORS)
    aspects = {a for q in bench.queries for a in q.aspects}
    assert set(_metrics(repo, "circo")) == (
        {f"{m}@{k}" for m in ("mAP", "R") for k in (5, 10, 25, 50)} | {f"mAP@10/{a}" for a in aspects})


def test_fashioniq(pipeline_run):
    repo, benches = pipeline_run
    bench = benches["fashioniq"]
    assert {c: sum(q.group == c for q in bench.queries) for c in ("dress", "shirt", "toptee")} == dict.fromkeys(
        ("dress", "shirt", "toptee"), QUERIES)
    assert _index_sizes(repo, "fashioniq") == {c: len(bench.galleries[c]) for c in ("dress", "shirt", "toptee")}
    assert set(_metrics(repo, "fashioniq")) == (
        {"R@10", "R@50"} | {f"R@{k}/{c}" for k in (10, 50) for c in ("dress", "shirt", "toptee")})


def test_genecis(pipeline_run):
    repo, benches = pipeline_run
    assert {t: sum(q.group == t for q in benches["genecis"].queries) for t in GENECIS_TASKS} == dict.fromkeys(
        GENECIS_TASKS, QUERIES)
    assert _index_sizes(repo, "genecis") == {}  # each query ranks its own 10-15 candidates
    assert set(_metrics(repo, "genecis")) == (
        {"R@1", "R@2", "R@3"} | {f"R@{k}/{t}" for k in (1, 2, 3) for t in GENECIS_TASKS})


def test_missing_image_is_reported_before_any_model_work(tmp_path, stage_cli):
    bench = _placeholder_root("cirr", "CIRR", None, tmp_path / "CIRR", tmp_path / "store")
    gone = bench.images[bench.queries[0].reference].path
    gone.unlink()
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())
    params = {"benchmarks": {"cirr": {"kind": "cirr", "root": str(tmp_path / "CIRR"), "split": "val"}},
              "embed": defaults["embed"], "executor": defaults["executor"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code, err = stage_cli(tmp_path, "embed@cirr")  # no data/backbone here: any model work would fail otherwise
    assert code == 1 and err.startswith(f"error: cirr val: 1 of {len(bench.gallery)} image files are missing or "
                                        f"unreadable")
    assert f"{gone} (missing)" in err
