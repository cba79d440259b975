"""The ablation grid: its cells, skipping finished experiments after an interruption, and
RESULTS.md from `dvc exp show --json`."""
import argparse

import pytest

from pipeline import ablate, results
from pipeline.core.errors import PipelineError


def test_cells_cover_the_papers_ablations_with_seeds():
    cells = ablate.cells(["noise", "masking", "supervision"], seeds=3)
    names = [name for name, _ in cells]
    assert len(names) == len(set(names)) == (7 + 5 + 2) * 3
    assert ("noise-gaussian-s2", ["noise=gaussian", "train.seed=2"]) in cells
    assert ("masking-nouns-s1", ["masking.strategy=nouns", "train.seed=1", "masking.seed=1"]) in cells
    assert all(ablate.NAME.fullmatch(n) for n in names)


def test_an_interrupted_run_resumes_with_the_missing_experiments(monkeypatch):
    done, calls = set(), []

    def fake_dvc(*args):
        if args[:2] == ("exp", "list"):
            return "\n".join(sorted(done)) + "\n"
        calls.append(args[3])
        if len(calls) == 3:
            raise PipelineError("killed")
        done.add(args[3])
        return ""

    monkeypatch.setattr(ablate, "dvc", fake_dvc)
    args = argparse.Namespace(groups=["supervision"], seeds=2, dry_run=False)
    with pytest.raises(PipelineError):
        ablate.run(args)
    assert done == {"supervision-smp-s0", "supervision-smp-s1"}
    calls.clear()
    ablate.run(args)
    assert calls == ["supervision-photo_of-s0", "supervision-photo_of-s1"]  # the finished two are skipped
    assert done == {f"supervision-{v}-s{s}" for v in ("smp", "photo_of") for s in (0, 1)}


def _exp(name, r1, map5):
    return {"rev": name, "name": name, "data": {"metrics": {
        "metrics/evaluate/world_cirr.json": {"data": {"world_cirr": {"R@1": r1}}},
        "metrics/evaluate/world_circo.json": {"data": {"world_circo": {"mAP@5": map5}}}}}}


def test_report_averages_seeds_and_compares_orderings(tmp_path, monkeypatch):
    show = [{"rev": "workspace", "name": None, "data": {}, "experiments": [
        {"revs": [_exp("noise-none-s0", 10.0, 1.0)]}, {"revs": [_exp("noise-none-s1", 12.0, 3.0)]},
        {"revs": [_exp("noise-gaussian-s0", 20.0, 5.0)]}, {"revs": [_exp("noise-gaussian-s1", 22.0, 7.0)]},
        {"revs": [_exp("something-else", 1.0, 1.0)]}]}]
    summary = ablate.summarise(ablate.rows(show))
    assert summary["noise"]["none"][("world_cirr", "R@1")] == pytest.approx((11.0, 2 ** 0.5, 2))
    monkeypatch.setattr(results, "PAPER", {"noise": {"none": 19.76, "gaussian": 24.0}})
    monkeypatch.setattr(results, "DISCUSSION", tmp_path / "none.md")
    results.write_results(summary, tmp_path / "RESULTS.md", tmp_path / "r.png")
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| `gaussian` | 21.00 ± 1.41 (n=2) | 6.00 ± 1.41 (n=2) | 24.0 |" in text
    assert "best: ours `gaussian`, paper `gaussian` (holds)" in text
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_ordering_says_where_ours_differs():
    assert "worst: ours `a`, paper `b` (differs)" in results.ordering({"a": 1, "b": 2, "c": 3}, {"a": 2, "b": 1, "c": 3})
    assert "fewer than two" in results.ordering({"a": 1}, {"a": 2})
