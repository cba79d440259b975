"""`lincir submit` on tiny CIRR- and CIRCO-format test splits (no ground truths), with a
random-weight lincir-world-vit backbone and a random phi: official files that read back."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.evaluation.benchmarks import load_benchmark
from pipeline.tools.cli import main

REPO = Path(__file__).resolve().parents[1]
GALLERY = 60  # more than the 50 names of a submitted ranking
GROUP = 6  # CIRR's img_set size


def _image(path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


def write_cirr_test1(root: Path, queries: int = 5) -> Path:
    rng = np.random.default_rng(0)
    names = [f"test1-{i // 2}-{i % 2}-img{i % 2}" for i in range(GALLERY)]
    for name in names:
        _image(root / "test1" / f"{name}.png", rng)
    splits, captions = root / "cirr" / "image_splits", root / "cirr" / "captions"
    splits.mkdir(parents=True)
    captions.mkdir(parents=True)
    (splits / "split.rc2.test1.json").write_text(json.dumps({n: f"./test1/{n}.png" for n in names}))
    entries = [{"pairid": 100 + i, "reference": names[GROUP * i], "caption": f"has {i + 2} dogs",
                "img_set": {"id": i, "members": names[GROUP * i:GROUP * (i + 1)], "reference_rank": 0}}
               for i in range(queries)]
    (captions / "cap.rc2.test1.json").write_text(json.dumps(entries))
    return root


def write_circo_test(root: Path, queries: int = 5) -> Path:
    rng = np.random.default_rng(1)
    ids = [1000 + 7 * i for i in range(GALLERY)]
    for i in ids:
        _image(root / "COCO2017_unlabeled" / "unlabeled2017" / f"{i:012d}.jpg", rng)
    info = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids]}
    (root / "COCO2017_unlabeled" / "annotations").mkdir(parents=True)
    (root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json").write_text(json.dumps(info))
    entries = [{"reference_img_id": ids[3 * i], "relative_caption": "is at night", "shared_concept": "a dog", "id": i}
               for i in range(queries)]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "test.json").write_text(json.dumps(entries))
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, random_run):
    base = tmp_path_factory.mktemp("submit")
    benchmarks = {"tiny_cirr": {"kind": "cirr", "root": str(write_cirr_test1(base / "CIRR")), "split": "val"},
                  "tiny_circo": {"kind": "circo", "root": str(write_circo_test(base / "CIRCO")), "split": "val"}}
    random_run(base / "repo", benchmarks)
    return base / "repo"


def _submit(workdir, monkeypatch, capsys, *argv):
    monkeypatch.chdir(workdir)
    code = main(["submit", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cirr_test1_files_in_the_server_format(workdir, monkeypatch, capsys):
    code, out, err = _submit(workdir, monkeypatch, capsys, "tiny_cirr", "--split", "test1", "--out", "subs")
    assert code == 0, err
    recall, subset = workdir / "subs" / "tiny_cirr_test1.json", workdir / "subs" / "tiny_cirr_test1_subset.json"
    assert out.split() == [str(Path("subs") / recall.name), str(Path("subs") / subset.name)]
    bench = load_benchmark("cirr", workdir.parent / "CIRR", "test1")
    written, written_subset = json.loads(recall.read_text()), json.loads(subset.read_text())
    assert (written.pop("version"), written.pop("metric")) == ("rc2", "recall")
    assert (written_subset.pop("version"), written_subset.pop("metric")) == ("rc2", "recall_subset")
    assert set(written) == set(written_subset) == {str(100 + i) for i in range(5)}
    for q in bench.queries:
        ranking = written[q.id]
        assert len(ranking) == len(set(ranking)) == 50 and q.reference not in ranking
        assert len(written_subset[q.id]) == 3 and set(written_subset[q.id]) <= set(q.candidates)
    rankings, candidates = bench.read_predictions(recall, subset)
    assert rankings == written and candidates == written_subset


def test_circo_test_file_in_the_server_format(workdir, monkeypatch, capsys):
    code, out, err = _submit(workdir, monkeypatch, capsys, "tiny_circo", "--split", "test", "--out", "subs")
    assert code == 0, err
    path = workdir / "subs" / "tiny_circo_test.json"
    assert out.split() == [str(Path("subs") / path.name)]
    written = json.loads(path.read_text())
    assert list(written) == [str(i) for i in range(5)]
    assert all(len(set(r)) == 50 and all(type(i) is int for i in r) for r in written.values())
    bench = load_benchmark("circo", workdir.parent / "CIRCO", "test")
    rankings, _ = bench.read_predictions(path)
    assert rankings == {k: [str(i) for i in r] for k, r in written.items()}


def test_missing_image_is_reported_before_any_model_work(workdir, monkeypatch, capsys, tmp_path):
    root = tmp_path / "CIRR"
    write_cirr_test1(root)
    gone = root / "test1" / "test1-3-1-img1.png"
    gone.unlink()
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["benchmarks"] = {"broken": {"kind": "cirr", "root": str(root), "split": "val"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))  # no data/: no backbone, no phi here
    code, _, err = _submit(tmp_path, monkeypatch, capsys, "broken", "--split", "test1")
    assert code == 1 and "Traceback" not in err
    assert f"1 of {GALLERY} image files are missing or unreadable" in err and f"{gone} (missing)" in err


def test_an_out_that_is_a_file_is_refused_before_any_work(workdir, monkeypatch, capsys):
    (workdir / "taken").write_text("mine")
    code, _, err = _submit(workdir, monkeypatch, capsys, "tiny_circo", "--split", "test", "--out", "taken")
    assert code == 1 and err.startswith("error: --out taken is a file") and err.count("\n") == 1
    assert (workdir / "taken").read_text() == "mine"


def test_unknown_benchmark_names_those_in_params(workdir, monkeypatch, capsys):
    code, _, err = _submit(workdir, monkeypatch, capsys, "cirr", "--split", "test1")
    assert code == 1 and "no benchmark named 'cirr' in params.yaml; names: tiny_cirr, tiny_circo" in err


def test_the_query_is_the_trained_methods_prompt_as_evaluate_writes_it(workdir, monkeypatch, capsys):
    """With method: pic2word the CIRR query is Pic2Word's "a photo of $ , {}" (evaluate's prompt for
    that method and kind); with evaluate.prompt: template, evaluate.template for every method."""
    from pipeline.evaluation import queries

    written, encode = [], queries.encode_texts

    def recording(ctx, texts, pseudo=None):
        if pseudo is not None:  # phi's queries, not the text-only baseline
            written.extend(texts)
        return encode(ctx, texts, pseudo)

    monkeypatch.setattr(queries, "encode_texts", recording)
    original = (workdir / "params.yaml").read_text()
    params = yaml.safe_load(original)
    try:
        for method, prompt, expected in [("pic2word", "method", "a photo of $ , has 2 dogs"),
                                         ("pic2word", "template", "a photo of $ that has 2 dogs"),
                                         ("searle", "method", "a photo of $ that has 2 dogs")]:
            params["method"], params["evaluate"]["prompt"] = method, prompt
            (workdir / "params.yaml").write_text(yaml.safe_dump(params))
            written.clear()
            code, _, err = _submit(workdir, monkeypatch, capsys, "tiny_cirr", "--split", "test1", "--out", "subs")
            assert code == 0, err
            assert written[0] == expected and len(written) == 5
    finally:
        (workdir / "params.yaml").write_text(original)
