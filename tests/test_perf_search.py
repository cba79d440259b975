"""`lincir perf search` at a tiny size: every kind timed, flat is its own exact reference."""
import json

from pipeline.tools.cli import main


def test_perf_search_times_every_index_kind(capsys):
    argv = ["perf", "search", "--sizes", "2000", "--dim", "32", "--queries", "20", "-k", "5", "--threads", "1"]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {row["path"]: row for row in record["rows"]}
    assert list(rows) == ["flat @ 2,000", "ivf @ 2,000", "hnsw @ 2,000", "ivfpq @ 2,000"]
    assert rows["ivfpq @ 2,000"]["factory"] == "IVF32,PQ16x4fs,Refine(SQ8)"  # 2 dimensions a sub-quantiser
    assert rows["ivfpq @ 2,000"]["bytes_per_vector"] < rows["flat @ 2,000"]["bytes_per_vector"]
    assert all(row["build_peak_gb"] >= 0 for row in rows.values())
    assert rows["flat @ 2,000"]["recall@5"] == 1.0 and rows["ivf @ 2,000"]["factory"] == "IVF178,Flat"
    assert all(0 < row["p50_ms"] <= row["p95_ms"] for row in rows.values())
    assert all(0 <= row["recall@5"] <= 1 for row in rows.values())
    assert set(record["ratio"]) == {"ivf_p50_speedup", "hnsw_p50_speedup", "ivfpq_p50_speedup"}


def test_without_flat_recall_is_measured_against_an_exact_scan(capsys):
    recall = {}
    for kinds in (["flat", "ivf"], ["ivf"]):
        argv = ["perf", "search", "--sizes", "3000", "--dim", "32", "--queries", "20", "-k", "5", "--threads", "1",
                "--kinds", *kinds]
        assert main(argv) == 0
        rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
        recall[len(kinds)] = rows[-1]["recall@5"]
    assert recall[1] is not None and recall[1] == recall[2] > 0.5  # the scan's top 5 are flat's
