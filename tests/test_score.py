"""`lincir score` on prediction files built from the real annotations, against the official
formulas written out here independently, plus the validation of bad prediction files."""
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from placeholder_images import ANNOTATIONS, linked_root, write_circo_image_info

from pipeline.evaluation.benchmarks import load_benchmark
from pipeline.tools.score import main

pytestmark = pytest.mark.skipif(
    not ANNOTATIONS.is_dir(), reason=f"official annotation files not found at {ANNOTATIONS}"
)
REPO = Path(__file__).resolve().parents[1]
PRINTED = 5e-5  # `lincir score` prints percent rounded to 4 decimals


def _load(path):
    return json.loads(Path(path).read_text())


def _ranking_with(target, pool, rng, depth=50, deepest=60):
    """`depth` names from `pool` with `target` at a random rank in 1..deepest (past depth: absent)."""
    ranking = [n for n in rng.sample(pool, depth + 2) if n != target][:depth]
    rank = rng.randint(1, deepest)
    if rank <= depth:
        ranking[rank - 1] = target
    return ranking


def _recall(rankings, targets, k):
    return 100 * np.mean([t in r[:k] for r, t in zip(rankings, targets)])


def _score(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


# ---- CIRR ------------------------------------------------------------------------------------
CIRR_CAPTIONS = ANNOTATIONS / "CIRR/cirr/captions/cap.rc2.val.json"


@pytest.fixture(scope="module")
def cirr_files(tmp_path_factory):
    rng = random.Random(1)
    entries = _load(CIRR_CAPTIONS)
    names = list(_load(ANNOTATIONS / "CIRR/cirr/image_splits/split.rc2.val.json"))
    recall = {"version": "rc2", "metric": "recall"}
    subset = {"version": "rc2", "metric": "recall_subset"}
    for e in entries:
        pool = [n for n in rng.sample(names, 60) if n != e["reference"]]
        recall[str(e["pairid"])] = _ranking_with(e["target_hard"], pool, rng)
        group = [m for m in e["img_set"]["members"] if m != e["reference"]]
        subset[str(e["pairid"])] = rng.sample(group, 3)
    folder = tmp_path_factory.mktemp("cirr_predictions")
    (folder / "recall.json").write_text(json.dumps(recall))
    (folder / "subset.json").write_text(json.dumps(subset))
    return folder, entries, recall, subset


def test_cirr_scores_match_the_official_definitions(cirr_files, capsys):
    folder, entries, recall, subset = cirr_files
    code, scores, err = _score(["cirr", "--root", ANNOTATIONS / "CIRR", "--predictions", folder / "recall.json",
                                "--subset-predictions", folder / "subset.json"], capsys)
    assert code == 0, err
    assert list(scores) == ["R@1", "R@5", "R@10", "R@50", "subset_R@1", "subset_R@2", "subset_R@3"]
    ids = [str(e["pairid"]) for e in entries]
    targets = [e["target_hard"] for e in entries]
    for k in (1, 5, 10, 50):
        assert scores[f"R@{k}"] == pytest.approx(_recall([recall[i] for i in ids], targets, k), abs=PRINTED)
    for k in (1, 2, 3):
        assert scores[f"subset_R@{k}"] == pytest.approx(_recall([subset[i] for i in ids], targets, k), abs=PRINTED)
    assert 0 < scores["R@1"] < scores["R@10"] < scores["R@50"] < 100


def _cirr_with(tmp_path, capsys, recall=None, subset=None, change=None, subset_file=True):
    """Scores CIRR val after `change` edits a copy of the good recall file."""
    recall = json.loads(json.dumps(recall))
    if change:
        change(recall)
    (tmp_path / "recall.json").write_text(json.dumps(recall))
    (tmp_path / "subset.json").write_text(json.dumps(subset))
    argv = ["cirr", "--root", ANNOTATIONS / "CIRR", "--predictions", tmp_path / "recall.json"]
    if subset_file:
        argv += ["--subset-predictions", tmp_path / "subset.json"]
    return _score(argv, capsys)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("12060"), "1 of 4181 queries missing: '12060'"),
        (lambda r: r.update({"99999999": r["12060"]}), "unknown query ids: '99999999'"),
        (lambda r: r["12060"].pop(), "query '12060': 49 names, expected 50"),
        (lambda r: r["12060"].__setitem__(1, r["12060"][0]), "query '12060': {first!r} appears twice (ranks 1 and 2)"),
        (lambda r: r["12060"].__setitem__(3, "dev-nope"), "query '12060': rank 4: 'dev-nope' is not an image"),
        (lambda r: r["12060"].__setitem__(0, "dev-244-0-img0"), "rank 1 is the query's own reference 'dev-244-0-img0'"),
        (lambda r: r["12060"].__setitem__(0, 3.5), "query '12060': rank 1 is 3.5, not an image name"),
        (lambda r: r.update({"metric": "recall_subset"}), "expected 'metric': 'recall', found 'recall_subset'"),
    ],
    ids=["missing", "unknown-id", "short", "duplicate", "unknown-image", "reference", "not-a-name", "header"],
)
def test_cirr_bad_prediction_files_name_the_query_and_problem(cirr_files, tmp_path, capsys, change, message):
    _, _, recall, subset = cirr_files
    code, _, err = _cirr_with(tmp_path, capsys, recall, subset, change)
    assert code == 1
    assert str(tmp_path / "recall.json") in err
    assert message.format(first=recall["12060"][0]) in err
    assert "Traceback" not in err


def test_cirr_subset_file_is_required_and_checked(cirr_files, tmp_path, capsys):
    _, _, recall, subset = cirr_files
    code, _, err = _cirr_with(tmp_path, capsys, recall, subset, subset_file=False)
    assert code == 1 and "needs its subset predictions file (--subset-predictions)" in err
    bad = dict(subset, **{"12060": subset["12060"][:2]})
    code, _, err = _cirr_with(tmp_path, capsys, recall, bad)
    assert code == 1 and "subset.json" in err and "query '12060': 2 names, expected 3" in err
    outside = dict(subset, **{"12060": [recall["12060"][i] for i in range(3)]})
    code, _, err = _cirr_with(tmp_path, capsys, recall, outside)
    assert code == 1 and "not an image this query is ranked against" in err


def test_cirr_writer_produces_server_files_that_read_back(tmp_path):
    bench = load_benchmark("cirr", ANNOTATIONS / "CIRR", "test1")
    rng = random.Random(2)
    rankings = {q.id: [n for n in rng.sample(bench.gallery, 80) if n != q.reference][:60] for q in bench.queries}
    candidates = {q.id: rng.sample(q.candidates, 5) for q in bench.queries}
    bench.write_predictions(tmp_path / "recall.json", rankings, candidates, subset_path=tmp_path / "subset.json")
    written = _load(tmp_path / "recall.json")
    assert written["version"] == "rc2" and written["metric"] == "recall"
    assert _load(tmp_path / "subset.json")["metric"] == "recall_subset"
    assert len(written) == 4148 + 2 and all(len(v) == 50 for k, v in written.items() if k not in ("version", "metric"))
    read, read_subset = bench.read_predictions(tmp_path / "recall.json", tmp_path / "subset.json")
    assert read == {k: v[:50] for k, v in rankings.items()}
    assert read_subset == {k: v[:3] for k, v in candidates.items()}


def test_test_split_has_nothing_to_score(cirr_files, tmp_path, capsys):
    code, _, err = _score(["cirr", "--root", ANNOTATIONS / "CIRR", "--split", "test1",
                           "--predictions", tmp_path / "absent.json"], capsys)
    assert code == 1 and "prediction file not found" in err
    bench = load_benchmark("cirr", ANNOTATIONS / "CIRR", "test1")
    with pytest.raises(ValueError, match="cirr test1 has no ground truths"):
        bench.score({}, {})


# ---- CIRCO -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def circo_root(tmp_path_factory):
    root = linked_root(ANNOTATIONS / "CIRCO", tmp_path_factory.mktemp("circo") / "CIRCO")
    example = _load(root / "submission_examples/submission_val.json")
    write_circo_image_info(root, extra_ids={i for ranking in example.values() for i in ranking} | set(range(1, 401)))
    return root


def _official_circo(predictions, annotations, ks=(5, 10, 25, 50)):
    """CIRCO evaluation.py's definitions, written out with numpy."""
    aps = {k: [] for k in ks}
    recalls = {k: [] for k in ks}
    aspect_aps = {}
    for entry in annotations:
        predicted = np.array(predictions[str(entry["id"])], dtype=int)
        labels = np.isin(predicted, entry["gt_img_ids"])
        precisions = np.cumsum(labels) * labels / np.arange(1, len(labels) + 1)
        for k in ks:
            aps[k].append(precisions[:k].sum() / min(len(entry["gt_img_ids"]), k))
            recalls[k].append((predicted[:k] == entry["target_img_id"]).sum())
        for aspect in entry["semantic_aspects"]:
            aspect_aps.setdefault(aspect, []).append(precisions[:10].sum() / min(len(entry["gt_img_ids"]), 10))
    scores = {f"mAP@{k}": 100 * np.mean(aps[k]) for k in ks} | {f"R@{k}": 100 * np.mean(recalls[k]) for k in ks}
    return scores, {f"mAP@10/{a}": 100 * np.mean(v) for a, v in aspect_aps.items()}


def test_circo_scores_match_the_official_evaluation(circo_root, tmp_path, capsys):
    rng = random.Random(3)
    annotations = _load(circo_root / "annotations/val.json")
    pool = list(range(1, 401))
    predictions = {}
    for i, entry in enumerate(annotations):
        ranking = rng.sample(pool, 50)
        for gt, rank in zip(entry["gt_img_ids"], rng.sample(range(70), len(entry["gt_img_ids"]))):
            if rank < 50:
                ranking[rank] = gt
        # ids as ints (the official example) and as strings (SEARLE/LinCIR's writer) both count
        predictions[str(entry["id"])] = ranking if i % 2 else [str(n) for n in ranking]
    (tmp_path / "predictions.json").write_text(json.dumps(predictions))
    code, scores, err = _score(["circo", "--root", circo_root, "--predictions", tmp_path / "predictions.json"], capsys)
    assert code == 0, err
    expected, expected_aspects = _official_circo(predictions, annotations)
    # the official evaluator's numbers first, then its mAP@10 per semantic aspect
    assert list(scores)[:8] == ["mAP@5", "mAP@10", "mAP@25", "mAP@50", "R@5", "R@10", "R@25", "R@50"]
    assert scores == pytest.approx({**expected, **{k: v for k, v in expected_aspects.items()}}, abs=PRINTED)
    assert 0 < scores["mAP@50"] < 100

    bench = load_benchmark("circo", circo_root, "val")
    rankings, _ = bench.read_predictions(tmp_path / "predictions.json")
    assert bench.breakdown(rankings) == pytest.approx(expected_aspects)
    assert len(expected_aspects) == 9


def test_circo_official_example_submission(circo_root, capsys):
    example = circo_root / "submission_examples/submission_val.json"
    code, scores, err = _score(["circo", "--root", circo_root, "--predictions", example], capsys)
    assert code == 0, err
    main_scores, aspects = _official_circo(_load(example), _load(circo_root / "annotations/val.json"))
    assert scores == pytest.approx({**main_scores, **aspects}, abs=PRINTED)

    assert all(round(v, 4) == v for v in scores.values()), scores  # no 0.10999999999999999


HEAVY = ("torch", "open_clip", "torchvision", "faiss", "spacy", "polars", "dvc")


def test_lincir_help_and_score_import_no_model_library(circo_root):
    """`lincir --help` and `lincir score` answer without importing torch and the like (seconds on a
    loaded machine): in a fresh interpreter, as the `lincir` script runs."""
    example = circo_root / "submission_examples/submission_val.json"
    code = f"""
import contextlib, io, json, sys
from pipeline.tools.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(["--help"])
    except SystemExit:
        pass
    for command in ("score", "submit", "profile", "ablate", "perf", "index", "search", "serve", "cam"):
        try:
            main([command, "--help"])
        except SystemExit:
            pass
help_only = sorted(m for m in {HEAVY!r} if m in sys.modules)
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["score", "circo", "--root", {str(circo_root)!r}, "--predictions", {str(example)!r}])
print(json.dumps({{"help": help_only, "score": sorted(m for m in {HEAVY!r} if m in sys.modules),
                  "code": code, "printed": out.getvalue()}}))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["help"] == [] and result["score"] == [], result
    assert result["code"] == 0 and json.loads(result["printed"])["mAP@5"] > 0

def test_circo_writer_writes_ints_in_the_official_form(circo_root, tmp_path):
    bench = load_benchmark("circo", circo_root, "test")
    rng = random.Random(4)
    rankings = {q.id: rng.sample(bench.gallery, 50) for q in bench.queries}
    bench.write_predictions(tmp_path / "test.json", rankings)
    written = _load(tmp_path / "test.json")
    assert set(written) == {str(i) for i in range(800)}
    assert written["0"] == [int(n) for n in rankings["0"]]
    with pytest.raises(ValueError, match="1 of 800 queries missing: '0'"):
        bench.write_predictions(tmp_path / "bad.json", {k: v for k, v in rankings.items() if k != "0"})


# ---- FashionIQ -------------------------------------------------------------------------------
def test_fashioniq_scores_per_category_and_their_mean(tmp_path, capsys):
    rng = random.Random(5)
    predictions, expected = {}, {}
    for category in ("dress", "shirt", "toptee"):
        gallery = _load(ANNOTATIONS / f"FashionIQ/image_splits/split.{category}.val.json")
        entries = _load(ANNOTATIONS / f"FashionIQ/captions/cap.{category}.val.json")
        rankings = [_ranking_with(e["target"], gallery, rng) for e in entries]
        predictions |= {f"{category}-{i}": r for i, r in enumerate(rankings)}
        for k in (10, 50):
            expected[f"R@{k}/{category}"] = _recall(rankings, [e["target"] for e in entries], k)
    for k in (10, 50):
        expected[f"R@{k}"] = np.mean([expected[f"R@{k}/{c}"] for c in ("dress", "shirt", "toptee")])
    (tmp_path / "fiq.json").write_text(json.dumps(predictions))
    argv = ["fashioniq", "--root", ANNOTATIONS / "FashionIQ", "--predictions", tmp_path / "fiq.json"]
    code, scores, err = _score(argv, capsys)
    assert code == 0, err
    assert scores == pytest.approx(expected, abs=PRINTED) and list(scores)[:2] == ["R@10", "R@50"]

    # a name from another category's gallery is refused
    dress_only = next(n for n in _load(ANNOTATIONS / "FashionIQ/image_splits/split.dress.val.json")
                      if n not in set(_load(ANNOTATIONS / "FashionIQ/image_splits/split.shirt.val.json")))
    predictions["shirt-0"] = [dress_only] + [n for n in predictions["shirt-0"] if n != dress_only][:49]
    (tmp_path / "fiq.json").write_text(json.dumps(predictions))
    code, _, err = _score(argv, capsys)
    assert code == 1 and f"query 'shirt-0': rank 1: '{dress_only}' is not an image" in err


# ---- GeneCIS ---------------------------------------------------------------------------------
def test_genecis_scores_per_task_and_their_mean(tmp_path, capsys):
    rng = random.Random(6)
    tasks = ("change_object", "focus_object")
    predictions, expected = {}, {}
    for task in tasks:
        entries = _load(ANNOTATIONS / f"GeneCIS/{task}.json")
        top3 = []
        for i, e in enumerate(entries):
            ids = dict.fromkeys([e["target"]["val_image_id"]] + [g["val_image_id"] for g in e["gallery"]])
            top3.append(rng.sample([f"coco-{n}" for n in ids], 3))
            predictions[f"{task}-{i}"] = top3[-1]
        for k in (1, 2, 3):
            expected[f"R@{k}/{task}"] = _recall(top3, [f"coco-{e['target']['val_image_id']}" for e in entries], k)
    for k in (1, 2, 3):
        expected[f"R@{k}"] = np.mean([expected[f"R@{k}/{t}"] for t in tasks])
    (tmp_path / "genecis.json").write_text(json.dumps(predictions))
    argv = ["genecis", "--root", ANNOTATIONS / "GeneCIS", "--predictions", tmp_path / "genecis.json",
            "--groups", *tasks]
    code, scores, err = _score(argv, capsys)
    assert code == 0, err
    assert scores == pytest.approx(expected, abs=PRINTED) and list(scores)[:3] == ["R@1", "R@2", "R@3"]
    assert 4 < scores["R@1"] < scores["R@3"] < 30  # a random order of 15 finds the target 1/15, 3/15 of the time


def test_python_dash_m_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.tools.score", "cirr", "--root", str(ANNOTATIONS / "CIRR"),
         "--predictions", str(tmp_path / "missing.json")],
        cwd=REPO, capture_output=True, text=True, env={"PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 1
    assert f"error: prediction file not found: {tmp_path / 'missing.json'}" in result.stderr


@pytest.mark.parametrize("content,message", [
    (b'{"version": "rc2", "metric": "recall", "1": [], "1": []}', "key '1' appears twice"),
    (b'{"version": "rc2", "metric": "recall", "caf\xe9": []}', "not UTF-8 text"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (None, "is a directory"),
])
def test_score_refuses_bad_files_with_a_message(cirr_files, tmp_path, capsys, content, message):
    path = tmp_path / "recall.json"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    code, _, err = _score(["cirr", "--root", ANNOTATIONS / "CIRR", "--predictions", path,
                           "--subset-predictions", cirr_files[0] / "subset.json"], capsys)
    assert code == 1 and message in err and err.startswith("error: ") and "Traceback" not in err


def test_a_huge_unknown_id_is_quoted_short(cirr_files, tmp_path, capsys):
    recall = json.loads((cirr_files[0] / "recall.json").read_text())
    recall["9" * 5_000_000] = []
    (tmp_path / "recall.json").write_text(json.dumps(recall))
    code, _, err = _score(["cirr", "--root", ANNOTATIONS / "CIRR", "--predictions", tmp_path / "recall.json",
                           "--subset-predictions", cirr_files[0] / "subset.json"], capsys)
    assert code == 1 and "1 unknown query ids" in err and len(err) < 2_000


def test_lincir_version(capsys):
    from pipeline.tools.cli import main as lincir

    with pytest.raises(SystemExit) as done:
        lincir(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("lincir ")
