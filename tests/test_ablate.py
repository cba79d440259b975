"""The ablation grid: its cells, skipping finished experiments after an interruption, and
RESULTS.md from `dvc exp show --json`."""
import argparse
import json

import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.tools.experiments import ablate, results, stats

BASE = {"noise": "unif_gaussian", "train.seed": "0", "masking.strategy": "all_keywords", "masking.seed": "0",
        "masking.n": "1", "lincir.supervision": "smp", "method": "lincir", "train.recipe": "authors"}


def test_cells_cover_the_papers_ablations_with_seeds():
    cells = ablate.cells(list(ablate.GROUPS), seeds=3, base=BASE)
    names = [name for name, _ in cells]
    assert len(names) == len(set(names)) == (7 + 7 + 3 + 4 + 4) * 3
    assert all(ablate.NAME.fullmatch(n) for n in names)
    # the first seed of every group comes before any second seed
    assert max(names.index(n) for n in names if n.endswith("-s0")) < min(names.index(n) for n in names if n.endswith("-s1"))
    overrides = dict(cells)
    # every cell sets every grid param: the workspace keeps the last experiment's params
    assert overrides["noise-gaussian-s2"] == ["noise=gaussian", "train.seed=2", "masking.strategy=all_keywords",
                                             "masking.seed=0", "masking.n=1", "lincir.supervision=smp", "method=lincir",
                                             "train.recipe=authors"]
    assert overrides["masking-nouns-s1"] == ["noise=unif_gaussian", "train.seed=1", "masking.strategy=nouns",
                                            "masking.seed=1", "masking.n=1", "lincir.supervision=smp", "method=lincir",
                                            "train.recipe=authors"]
    # Tab. 8's 1, 3 and 5 keyword tokens: n_keywords with masking.n set
    assert overrides["masking-keywords_3-s0"][2:5] == ["masking.strategy=n_keywords", "masking.seed=0", "masking.n=3"]
    # the methods in both recipes: as their authors built them, and with LinCIR's phi and optimiser
    assert overrides["method-searle-s0"][-2:] == ["method=searle", "train.recipe=authors"]
    assert overrides["controlled-searle-s0"][-2:] == ["method=searle", "train.recipe=controlled"]


def test_committed_params_are_read_from_the_last_commit():
    base = ablate.committed_params()
    assert set(base) == set(ablate.grid_params())
    assert base["noise"] in ablate.GROUPS["noise"].values


def test_an_interrupted_run_resumes_with_the_missing_experiments(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    done, calls, killed = set(), [], []

    def fake_dvc(*args):
        if args[:2] == ("exp", "list"):
            assert "--all-commits" in args  # a cell finished at an earlier commit is not run again
            return "\n".join(sorted(done)) + "\n"
        if args[0] == "checkout":
            return ""
        calls.append(args[3])
        if len(calls) == 3 and not killed:
            killed.append(args[3])
            raise PipelineError("killed")
        done.add(args[3])
        return ""

    monkeypatch.setattr(ablate, "dvc", fake_dvc)
    monkeypatch.setattr(ablate, "committed_params", lambda: BASE)
    args = argparse.Namespace(groups=["supervision"], seeds=2, dry_run=False, part=(1, 1))
    with pytest.raises(PipelineError):
        ablate.run(args)
    assert done == {"supervision-smp-s0", "supervision-photo_of-s0"}
    calls.clear()
    ablate.run(args)
    # the finished two are skipped
    assert calls == ["supervision-image_latent-s0", "supervision-smp-s1", "supervision-photo_of-s1",
                     "supervision-image_latent-s1"]
    assert done == {f"supervision-{v}-s{s}" for v in ablate.GROUPS["supervision"].values for s in (0, 1)}


def test_parts_share_the_grid_out_between_clones(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    ran = {}  # part -> the experiments it ran

    def run_part(label):
        def fake_dvc(*args):
            if args[:2] != ("exp", "list"):
                ran.setdefault(label, []).append(args[3])
            return ""

        monkeypatch.setattr(ablate, "dvc", fake_dvc)
        ablate.run(argparse.Namespace(groups=["noise", "supervision"], seeds=2, dry_run=False, part=ablate.part(label)))

    monkeypatch.setattr(ablate, "committed_params", lambda: BASE)
    for label in ("1/3", "2/3", "3/3"):
        run_part(label)
    everything = [name for name, _ in ablate.cells(["noise", "supervision"], 2, BASE)]
    assert sorted(sum(ran.values(), [])) == sorted(everything)  # each cell once, in exactly one part
    assert ran["1/3"] == everything[0::3] and ran["3/3"] == everything[2::3]
    for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(argparse.ArgumentTypeError, match="K/N"):
            ablate.part(bad)


def _exp(name, r1, map5):
    return {"rev": name, "name": name, "data": {"metrics": {
        "metrics/evaluate/world_cirr.json": {"data": {"world_cirr": {"R@1": r1, "R@50": 50 + r1}}},
        "metrics/evaluate/world_circo.json": {"data": {"world_circo": {"mAP@5": map5}}}}}}


def test_report_averages_seeds_and_compares_orderings(tmp_path, monkeypatch):
    show = [{"rev": "workspace", "name": None, "data": {}, "experiments": [
        {"revs": [_exp("noise-none-s0", 10.0, 1.0)]}, {"revs": [_exp("noise-none-s1", 12.0, 3.0)]},
        {"revs": [_exp("noise-gaussian-s0", 20.0, 5.0)]}, {"revs": [_exp("noise-gaussian-s1", 22.0, 7.0)]},
        {"revs": [_exp("something-else", 1.0, 1.0)]}]}]
    summary = ablate.summarise(ablate.rows(show))
    assert summary["noise"]["none"][("world_cirr", "R@1")] == pytest.approx((11.0, 2 ** 0.5, 2))
    monkeypatch.setattr(results, "PAPER", {"noise": [results.Paper("Tab. 9", "CIRR dev R@1", {"none": 19.76,
                                                                                            "gaussian": 24.0})]})
    monkeypatch.setattr(results, "DISCUSSION", tmp_path / "none.md")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/geometry.json").write_text(json.dumps({"noise": {
        "none": {"modality_gap": 0.9, "gap_closed": 0.0, "norm_ratio": 0.0},
        "gaussian": {"modality_gap": 0.81, "gap_closed": 0.1, "norm_ratio": 0.77}}}))
    results.write_results(summary, tmp_path / "RESULTS.md", tmp_path / "r.png")
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| `gaussian` | 21.00 ± 1.41 (n=2) | 71.00 ± 1.41 (n=2) | 6.00 ± 1.41 (n=2) | 24.0 |" in text
    # Tab. 1 beside the world's gaps, in the grid's order
    assert "| `gaussian` | 0.810 | 10.0 % | 0.77 | 0.77 |\n| `none` | 0.900 | 0.0 % | 0.00 | 0.81 |" in text
    assert "paper CIRR dev R@1 |" in text and "## noise (`noise`; paper: Tab. 9)" in text
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_differences_have_paired_intervals_and_a_verdict_only_off_the_floor(tmp_path, monkeypatch):
    """Three values against `unif_gaussian` over 200 queries and 2 seeds: one equal to it, one better
    on every query by 10 points, and R@1 at the floor for all."""
    rng = np.random.default_rng(0)
    base = {s: rng.uniform(0, 40, 200) for s in (0, 1)}
    per_query = {"unif_gaussian": {("world_circo", "mAP@5"): base, ("world_cirr", "R@1"): {s: 0 * base[s] for s in base}},
                 "gaussian": {("world_circo", "mAP@5"): {s: base[s].copy() for s in base},
                              ("world_cirr", "R@1"): {s: 0 * base[s] + (s == 1) for s in base}},
                 "none": {("world_circo", "mAP@5"): {s: base[s] + 10 for s in base}}}
    summary = {v: {k: (float(np.mean([x.mean() for x in seeds.values()])), 0.0, 2) for k, seeds in cells.items()}
               for v, cells in per_query.items()}
    paper = [results.Paper("Tab. 9", "CIRR dev R@1", {"unif_gaussian": 25.47, "gaussian": 23.70, "none": 19.76})]
    lines = results.comparison_rows("noise", per_query, summary, paper)
    gaussian = next(line for line in lines if line.startswith("| `gaussian`"))
    none = next(line for line in lines if line.startswith("| `none`"))
    assert "+0.00 [+0.00, +0.00] ≈; paper -1.77: no verdict" in gaussian  # equal on every query
    assert "at the floor, not judged" in gaussian  # R@1 of at most 1 %: shown, judged on nothing
    assert "+10.00 [+10.00, +10.00] >; paper -5.71: differs" in none
    assert "no per-query scores" in none  # its R@50 was not kept
    # a noisy difference: an interval that holds the true one and excludes 0 once it is large enough
    noisy = {s: base[s] + rng.normal(2, 5, 200) for s in base}
    d = stats.paired_difference(noisy, base)
    assert d.low < 2 < d.high and d.low > 0 and d.verdict == ">" and d.seeds == 2


def test_the_methods_table_has_the_training_free_baselines_and_each_papers_number(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics/evaluate").mkdir(parents=True)
    (tmp_path / "metrics/evaluate/world_circo.all.json").write_text(
        '{"lincir": {"mAP@5": 3.0}, "image_only": {"mAP@5": 1.25}, "text_only": {"mAP@5": 0.5}}')
    show = [{"rev": "workspace", "name": None, "data": {}, "experiments": [
        {"revs": [_exp("method-pic2word-s0", 1.0, 2.0)]}, {"revs": [_exp("method-lincir-s0", 1.0, 3.0)]}]}]
    monkeypatch.setattr(results, "DISCUSSION", tmp_path / "none.md")
    results.write_results(ablate.summarise(ablate.rows(show)), tmp_path / "RESULTS.md", tmp_path / "r.png")
    text = (tmp_path / "RESULTS.md").read_text()
    assert ("| value | phi and optimiser | world_cirr R@1 | world_cirr R@50 | world_circo mAP@5 | "
            "paper CIRR test R@1, ViT-L/14 | paper CIRCO mAP@5, ViT-L/14 |") in text
    assert "| `pic2word` | as the authors built them | 1.00 (n=1) | 51.00 (n=1) | 2.00 (n=1) | 23.9 | 8.72 |" in text
    assert "| `image_only` | — | — | — | 1.25 (training-free) | — | — |" in text


def test_report_names_each_groups_commits_and_refuses_a_cell_run_at_two(tmp_path, monkeypatch):
    old = {"rev": "743586f" + "0" * 33, "name": "main", "data": {}, "experiments": [
        {"revs": [_exp("noise-none-s0", 10.0, 1.0)]}, {"revs": [_exp("noise-none-s1", 12.0, 3.0)]}]}
    new = {"rev": "ab55ba8" + "0" * 33, "name": "main", "data": {}, "experiments": [
        {"revs": [_exp("method-lincir-s0", 1.0, 3.0)]}]}
    experiments = ablate.rows([{"rev": "workspace", "name": None, "data": {}}, new, old])
    assert ablate.commits(experiments) == {"method": ["ab55ba8"], "noise": ["743586f"]}
    monkeypatch.setattr(results, "DISCUSSION", tmp_path / "none.md")
    results.write_results(ablate.summarise(experiments), tmp_path / "RESULTS.md", tmp_path / "r.png",
                          ablate.commits(experiments))
    assert "Experiments derived from commit 743586f." in (tmp_path / "RESULTS.md").read_text()
    new["experiments"].append({"revs": [_exp("noise-none-s1", 99.0, 9.0)]})
    with pytest.raises(PipelineError, match="noise-none-s1 exists at commits .* pick the commits with --rev"):
        ablate.summarise(ablate.rows([new, old]))


def test_run_records_the_train_stages_time_unless_it_was_restored_or_resumed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "logs/train.json"

    def fake_dvc(*args):
        if args[:2] == ("exp", "list"):
            return ""
        name = args[3]
        if name != "method-searle-s0":  # searle's train stage comes from DVC's cache: no new log
            log.parent.mkdir(exist_ok=True)
            log.write_text('{"seconds": %s, "device": "cpu", "resumed": %s}'
                           % (len(name), "true" if name == "method-pic2word-s0" else "false"))
        return ""

    monkeypatch.setattr(ablate, "dvc", fake_dvc)
    monkeypatch.setattr(ablate, "committed_params", lambda: BASE)
    ablate.run(argparse.Namespace(groups=["method"], seeds=1, dry_run=False, part=(1, 1)))
    times = json.loads((tmp_path / "logs/ablate_times.json").read_text())
    assert times == {"method-lincir-s0": {"seconds": 16, "device": "cpu"},
                     "method-masked_inversion-s0": {"seconds": 26, "device": "cpu"}}
    assert ablate.train_times(tmp_path / "logs/ablate_times.json") == {
        "method": {"lincir": (16, 0.0, 1), "masked_inversion": (26, 0.0, 1)}}
    show = [{"rev": "workspace", "name": None, "data": {}, "experiments": [
        {"revs": [_exp("method-lincir-s0", 1.0, 3.0)]}, {"revs": [_exp("method-searle-s0", 1.0, 2.0)]}]}]
    monkeypatch.setattr(results, "DISCUSSION", tmp_path / "none.md")
    results.write_results(ablate.summarise(ablate.rows(show)), tmp_path / "RESULTS.md", tmp_path / "r.png",
                          times=ablate.train_times(tmp_path / "logs/ablate_times.json"))
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| `lincir` | as the authors built them | 1.00 (n=1) | 51.00 (n=1) | 3.00 (n=1) | 25.04 | 12.59 | 16.00 (n=1) |" \
        in text
    assert "| `searle` | as the authors built them | 1.00 (n=1) | 51.00 (n=1) | 2.00 (n=1) | 24.24 | 11.68 | — |" in text


def test_report_asks_dvc_for_the_commits_named(tmp_path, monkeypatch):
    asked = []
    show = [{"rev": "743586f" + "0" * 33, "name": "main", "data": {}, "experiments": [
        {"revs": [_exp("noise-none-s0", 10.0, 1.0)]}]}]

    def fake_dvc(*args):
        asked.append(args)
        return json.dumps(show)

    monkeypatch.setattr(ablate, "dvc", fake_dvc)
    monkeypatch.setattr(results, "DISCUSSION", tmp_path / "none.md")
    args = argparse.Namespace(show=None, rev=["743586f", "HEAD"], all_commits=False, times=str(tmp_path / "t.json"),
                              out=str(tmp_path / "RESULTS.md"), png=str(tmp_path / "r.png"))
    ablate.report(args)
    assert asked == [("exp", "show", "--json", "--rev", "743586f", "--rev", "HEAD")]
    ablate.report(argparse.Namespace(**{**vars(args), "rev": None, "all_commits": True}))
    assert asked[-1] == ("exp", "show", "--json", "--all-commits")


def test_the_methods_table_shows_both_recipes_and_the_paper_beside_the_authors_build_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    show = [{"rev": "workspace", "name": None, "data": {}, "experiments": [
        {"revs": [_exp("method-pic2word-s0", 1.0, 2.0)]}, {"revs": [_exp("method-pic2word-s1", 3.0, 4.0)]},
        {"revs": [_exp("controlled-pic2word-s0", 5.0, 6.0)]}, {"revs": [_exp("controlled-searle-s0", 7.0, 8.0)]}]}]
    monkeypatch.setattr(results, "DISCUSSION", tmp_path / "none.md")
    summary = ablate.summarise(ablate.rows(show))
    assert set(summary) == {"method", "controlled"}
    results.write_results(summary, tmp_path / "RESULTS.md", tmp_path / "r.png")
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.count("## method (") == 1 and "## controlled" not in text  # one table, both recipes
    rows = [line for line in text.splitlines() if line.startswith("| `pic2word`") or line.startswith("| `searle`")]
    assert rows == [
        "| `pic2word` | as the authors built them | 2.00 ± 1.41 (n=2) | 52.00 ± 1.41 (n=2) | 3.00 ± 1.41 (n=2) | 23.9 | 8.72 |",
        "| `pic2word` | controlled: LinCIR's phi and optimiser | 5.00 (n=1) | 55.00 (n=1) | 6.00 (n=1) | — | — |",
        "| `searle` | controlled: LinCIR's phi and optimiser | 7.00 (n=1) | 57.00 (n=1) | 8.00 (n=1) | — | — |"]
    assert "Differences (" not in text  # no `lincir` row: nothing to compare against


def test_every_paper_number_is_the_papers():
    """Spot checks against the LinCIR paper's text (/work/shared/papers), one a table."""
    assert results.TAB6_CIRR["ViT-L/14"]["searle"]["R@1"] == 24.24 and results.TAB6_CIRR["ViT-L/14"]["searle"]["R@5"] == 52.48
    assert results.TAB3_CIRCO["ViT-G/14"]["lincir"]["mAP@50"] == 24.18
    assert results.TAB5_FASHIONIQ["ViT-L/14"]["lincir"]["R@10"] == 26.28
    assert results.TAB5_FASHIONIQ["ViT-H/14"]["pic2word"]["R@50/toptee"] == 62.01
    assert results.TAB4_GENECIS["ViT-L/14"]["searle"]["R@3"] == 31.30
    assert results.TAB9_NOISE["uniform"] == 25.14 and results.TAB8_MASKING["nouns"] == 24.95
    assert results.TAB7_SUPERVISION == {"photo_of": 21.65, "image_latent": 22.63, "smp": 25.66}
    # each grid value the paper reports has its number; none the paper lacks has one
    for group, papers in results.PAPER.items():
        assert set(papers[0].values) <= set(ablate.GROUPS[group].values), group
    assert set(results.PAPER["noise"][0].values) == set(ablate.GROUPS["noise"].values)


def test_a_failed_experiment_leaves_the_workspace_as_it_was(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = "# the world's settings\nnoise: unif_gaussian  # paper\ntrain:\n  seed: 0\n"
    (tmp_path / "params.yaml").write_text(params)
    (tmp_path / "data/train").mkdir(parents=True)
    checkouts = []

    def fake_dvc(*args):
        if args[:2] == ("exp", "list"):
            return ""
        if args[0] == "checkout":  # what `dvc checkout --force` does: dvc.lock's outputs back
            checkouts.append(args)
            (tmp_path / "data/train").mkdir(parents=True)
            return ""
        # what a failing `dvc exp run -S ...` leaves: the cell's params without comments, outputs gone
        (tmp_path / "params.yaml").write_text("noise: gaussian\ntrain:\n  seed: 0\n")
        (tmp_path / "data/train").rmdir()
        raise PipelineError("dvc exp run failed: the train stage diverged")

    monkeypatch.setattr(ablate, "dvc", fake_dvc)
    monkeypatch.setattr(ablate, "committed_params", lambda: BASE)
    with pytest.raises(PipelineError, match="the train stage diverged"):
        ablate.run(argparse.Namespace(groups=["noise"], seeds=1, dry_run=False, part=(1, 1)))
    assert (tmp_path / "params.yaml").read_text() == params and (tmp_path / "data/train").is_dir()
    assert checkouts == [("checkout", "--force")]


def lincir(argv) -> int:
    from pipeline.tools.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    return code


GOOD_SHOW = [{"rev": "workspace", "name": None, "data": {}, "experiments": [{"revs": [_exp("noise-none-s0", 10.0, 1.0)]}]}]


@pytest.mark.parametrize("show, times, message", [
    (b"not json", None, "show.json: not valid JSON"),
    (b"\xff\xfe[]", None, "show.json: not UTF-8 text"),
    (b"[" * 100_000 + b"]" * 100_000, None, "show.json: JSON nested too deeply"),
    (b'[{"rev": ' + b"9" * 5000 + b"}]", None, "show.json: not a saved `dvc exp show --json`"),
    (b'{"rev": "workspace"}', None, "the top level is {'rev': 'workspace'}, not a list of commits"),
    (b'[{"rev": 7}]', None, "[0].rev is 7, not a commit"),
    (b'[{"rev": "workspace", "experiments": [{"revs": "noise-none-s0"}]}]', None,
     "[0].experiments[0].revs is 'noise-none-s0', not a list"),
    (json.dumps([{"rev": "workspace", "experiments": [{"revs": [
        {**_exp("noise-none-s0", 10.0, 1.0), "data": {"metrics": {"metrics/evaluate/world_cirr.json": {
            "data": {"world_cirr": {"R@1": "12.5"}}}}}}]}]}]).encode(), None,
     "noise-none-s0: world_cirr R@1 is '12.5', not a number"),
    (None, b"[1, 2]", "times.json: expected {experiment:"),
    (None, b'{"noise-none-s0": {"seconds": "12"}}', "times.json: 'noise-none-s0' is {'seconds': '12'}, not"),
    (None, b'{"noise-none-s0": 12}', "'noise-none-s0' is 12, not"),
    (None, b"\xff", "times.json: not UTF-8 text"),
])
def test_report_names_a_malformed_show_or_times_file(tmp_path, monkeypatch, capsys, show, times, message):
    monkeypatch.setattr(results, "DISCUSSION", tmp_path / "none.md")
    (tmp_path / "show.json").write_bytes(show if show is not None else json.dumps(GOOD_SHOW).encode())
    (tmp_path / "times.json").write_bytes(times if times is not None else b"{}")
    code = lincir(["ablate", "report", "--show", tmp_path / "show.json", "--times", tmp_path / "times.json",
                   "--out", tmp_path / "RESULTS.md", "--png", tmp_path / "r.png"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "RESULTS.md").exists()


def test_report_into_a_new_folder_and_seeds_checked(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(results, "DISCUSSION", tmp_path / "none.md")
    (tmp_path / "show.json").write_text(json.dumps(GOOD_SHOW))
    out = tmp_path / "new" / "folder" / "RESULTS.md"
    assert lincir(["ablate", "report", "--show", tmp_path / "show.json", "--times", tmp_path / "none.json",
                   "--out", out, "--png", tmp_path / "new" / "r.png"]) == 0
    assert "| `none` | 10.00 (n=1)" in out.read_text() and sorted(p.name for p in out.parent.iterdir()) == ["RESULTS.md"]
    assert lincir(["ablate", "run", "--seeds", "0"]) == 1
    assert "argument --seeds: must be at least 1, not 0" in capsys.readouterr().err


def test_per_query_scores_are_read_from_what_run_kept_and_a_damaged_file_is_named(tmp_path):
    show = [{"rev": "workspace", "name": None, "data": {}, "experiments": [
        {"revs": [_exp("noise-none-s0", 1.0, 2.0)]}, {"revs": [_exp("noise-none-s1", 1.0, 2.0)]}]}]
    experiments = ablate.rows(show)
    kept = tmp_path / "kept"
    (kept / "noise-none-s0").mkdir(parents=True)
    (kept / "noise-none-s0" / "world_cirr.json").write_text(json.dumps(
        {"queries": ["a", "b"], "rows": {"lincir": {"R@1": [0.0, 100.0], "R@50": [100.0, 100.0]},
                                         "image_only": {"R@1": [100.0, 100.0]}}}))
    scores = ablate.per_query_scores(experiments, kept)
    cells = scores["noise"]["none"]
    assert set(cells) == {("world_cirr", "R@1"), ("world_cirr", "R@50")}  # seed 1 and CIRCO were not kept
    assert cells[("world_cirr", "R@1")][0].tolist() == [0.0, 100.0] and list(cells[("world_cirr", "R@1")]) == [0]
    (kept / "noise-none-s0" / "world_cirr.json").write_text(json.dumps({"rows": ["lincir"]}))
    with pytest.raises(PipelineError, match="world_cirr.json: no per-query R@1 of a trained phi"):
        ablate.per_query_scores(experiments, kept)


def test_ctrl_c_ends_a_run_with_one_line_and_the_workspace_as_it_was(tmp_path, monkeypatch, capsys):
    from pipeline.tools import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("noise: unif_gaussian  # a comment dvc exp run would drop\n")
    checked_out = []

    def fake_dvc(*args):
        if args[:2] == ("exp", "list"):
            return ""
        if args[0] == "checkout":
            checked_out.append(args)
            return ""
        (tmp_path / "params.yaml").write_text("noise: gaussian\n")  # what an interrupted exp run leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(ablate, "dvc", fake_dvc)
    monkeypatch.setattr(ablate, "committed_params", lambda: BASE)
    assert cli.main(["ablate", "run", "--groups", "supervision", "--seeds", "1"]) == 130
    err = capsys.readouterr().err
    assert "lincir ablate: interrupted" in err and "Traceback" not in err
    assert (tmp_path / "params.yaml").read_text() == "noise: unif_gaussian  # a comment dvc exp run would drop\n"
    assert checked_out == [("checkout", "--force")]
