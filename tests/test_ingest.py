import html
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.errors import PipelineError
from pipeline.data.ingest import READERS, HashSet, _unescape, hash64, ingest, normalise

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = ["a gray cat sleeps on a pillow", "two dogs, one brown", "Un chat gris 🐈 dort", "一只猫在睡觉"]


def read(path):
    return pq.read_table(path).to_pylist()


def test_normalise_whitespace_dollars_and_entities():
    assert normalise("  a\tcat\u00a0on\u3000a\u2028mat \u200b now\n") == ("a cat on a mat now", False)
    assert normalise("costs $5 or ＄6 or &#36;7 or &amp;#36;8") == ("costs 5 or 6 or 7 or 8", True)
    assert normalise("Tom &amp; Jerry") == ("Tom & Jerry", False)
    assert normalise("$ $$") == ("", True)
    assert normalise("🐈 猫") == ("🐈 猫", False)


def repeated_unescape(text: str) -> str:
    while (decoded := html.unescape(text)) != text:
        text = decoded
    return text


def test_entities_are_decoded_to_a_fixpoint_in_linear_time(monkeypatch):
    """As many rounds of html.unescape as it takes (the tokenizer unescapes again), but not one round
    over the whole text per level of nesting: that was quadratic, 3.8 s for a 200 KB caption."""
    rng = random.Random(0)
    pieces = ["&", "amp;", "&amp;", "#36;", "#", "1", "x", "lt", ";", "not", "in", "&#105;", " ", "&#38;", "gt", "$"]
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        decoded = _unescape(text)
        assert html.unescape(decoded) == decoded, text  # what the tokenizer reads is what is stored
        if repeated_unescape(text) != decoded:  # only where three rounds were not enough
            assert html.unescape(html.unescape(html.unescape(text))) != repeated_unescape(text), text
    read, real = [], html.unescape
    monkeypatch.setattr(html, "unescape", lambda t: read.append(len(t)) or real(t))
    nested = "a caption " + "&" + "amp;" * 100_000 + "#36;5"  # 400 KB
    assert _unescape(nested) == "a caption $5" and normalise(nested) == ("a caption 5", True)
    assert sum(read) < 10 * len(nested)  # characters html.unescape read: a few passes, not 100,000


def test_txt_drops_empty_and_duplicates_with_counts(tmp_path):
    src = tmp_path / "corpus.txt"
    src.write_text("\ufeffa cat\n\n   \na  cat\t\nthe $dog\n$\nthe dog\nUn chat 🐈\r\nlast line no newline", encoding="utf-8")
    stats = ingest([{"path": str(src)}], tmp_path / "out" / "captions.parquet")
    rows = read(tmp_path / "out" / "captions.parquet")
    assert [r["text"] for r in rows] == ["a cat", "the dog", "Un chat 🐈", "last line no newline"]
    assert [r["id"] for r in rows] == [0, 1, 2, 3]
    assert {r["source"] for r in rows} == {"corpus"}
    # 9 lines: 3 empty ("", "   ", "$"), 2 duplicates ("a  cat", "the dog"), 2 with `$`
    assert {k: stats[k] for k in ("read", "empty", "duplicate", "dollar_stripped", "kept")} == \
        {"read": 9, "empty": 3, "duplicate": 2, "dollar_stripped": 2, "kept": 4}
    schema = pq.read_schema(tmp_path / "out" / "captions.parquet")
    assert schema.field("id").type == pa.int64() and schema.names == ["id", "text", "source"]


def write_formats(tmp_path) -> dict:
    """The same captions in each non-txt format, under a column named `caption`."""
    paths = {}
    frame = pa.table({"n": list(range(len(CAPTIONS))), "caption": CAPTIONS})
    paths["parquet"] = tmp_path / "c.parquet"
    pq.write_table(frame, paths["parquet"])
    paths["jsonl"] = tmp_path / "c.jsonl"
    paths["jsonl"].write_text("".join(json.dumps({"n": i, "caption": c}) + "\n" for i, c in enumerate(CAPTIONS)))
    paths["csv"] = tmp_path / "c.csv"
    paths["csv"].write_text("n,caption\n" + "".join(f'{i},"{c}"\n' for i, c in enumerate(CAPTIONS)))
    paths["tsv"] = tmp_path / "c.tsv"
    paths["tsv"].write_text("n\tcaption\n" + "".join(f"{i}\t{c}\n" for i, c in enumerate(CAPTIONS)))
    return paths


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_each_format_with_named_column(tmp_path, fmt):
    path = write_formats(tmp_path)[fmt]
    stats = ingest([{"path": str(path), "column": "caption", "name": fmt}], tmp_path / "captions.parquet")
    rows = read(tmp_path / "captions.parquet")
    assert [r["text"] for r in rows] == CAPTIONS
    assert [r["source"] for r in rows] == [fmt] * len(CAPTIONS)
    assert stats["kept"] == len(CAPTIONS)


def test_csv_quoting_and_newlines_in_values(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('caption,other\n"a cat, on\na mat",1\n"say ""hi""",2\n1984,3\n,4\n')
    stats = ingest([{"path": str(path), "column": "caption"}], tmp_path / "captions.parquet")
    assert [r["text"] for r in read(tmp_path / "captions.parquet")] == ["a cat, on a mat", 'say "hi"', "1984"]
    assert stats["empty"] == 1


def test_sources_are_concatenated_capped_and_deduplicated_across(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("one\ntwo\ntwo\nthree\nfour\nfive\n")
    b = tmp_path / "b.txt"
    b.write_text("four\nsix\none\n")  # "four" was not taken from a (cap): it is new here
    stats = ingest([{"path": str(a), "max_captions": 3}, {"path": str(b), "name": "bee"}], tmp_path / "c.parquet", chunk=2)
    rows = read(tmp_path / "c.parquet")
    assert [(r["id"], r["text"], r["source"]) for r in rows] == [
        (0, "one", "a"), (1, "two", "a"), (2, "three", "a"), (3, "four", "bee"), (4, "six", "bee")]
    assert stats["sources"]["a"] == {"read": 4, "missing": 0, "empty": 0, "duplicate": 1, "dollar_stripped": 0, "kept": 3}
    assert stats["sources"]["bee"]["duplicate"] == 1 and stats["kept"] == 5


def test_chunking_does_not_change_the_result(tmp_path):
    rng = np.random.default_rng(0)
    lines = [f"caption {i}" for i in rng.integers(0, 50, size=300)]
    src = tmp_path / "c.txt"
    src.write_text("\n".join(lines))
    big = ingest([{"path": str(src)}], tmp_path / "big.parquet")
    small = ingest([{"path": str(src)}], tmp_path / "small.parquet", chunk=7)
    assert big == small
    assert read(tmp_path / "big.parquet") == read(tmp_path / "small.parquet")
    assert [r["text"] for r in read(tmp_path / "big.parquet")] == list(dict.fromkeys(lines))


def test_hash_set_matches_a_python_set():
    rng = np.random.default_rng(1)
    seen, reference = HashSet(), set()
    for _ in range(40):
        hashes = rng.integers(0, 500, size=int(rng.integers(0, 60))).astype(np.uint64)
        new = seen.unseen(hashes)
        expected = []
        for h in hashes.tolist():
            expected.append(h not in reference)
            reference.add(h)
        assert new.tolist() == expected
        seen.add(hashes[new])
    assert len(seen) == len(reference)
    assert len(seen.runs) <= 10  # merged like a binary counter, not one run per chunk
    assert hash64(["a cat"]).dtype == np.uint64 and hash64(["a cat"])[0] != hash64(["a cat "])[0]


def test_missing_column_names_the_file_and_the_columns(tmp_path):
    path = write_formats(tmp_path)["parquet"]
    with pytest.raises(PipelineError, match=r"c\.parquet has no column 'text'; its columns are: n, caption"):
        ingest([{"path": str(path), "column": "text"}], tmp_path / "out.parquet")
    with pytest.raises(PipelineError, match=r"c\.jsonl needs `column:`"):
        ingest([{"path": str(tmp_path / "c.jsonl")}], tmp_path / "out.parquet")
    with pytest.raises(PipelineError, match=r"c\.csv has no column 'txt'"):
        ingest([{"path": str(tmp_path / "c.csv"), "column": "txt"}], tmp_path / "out.parquet")


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(PipelineError, match=r"nope\.txt not found"):
        ingest([{"path": str(tmp_path / "nope.txt")}], tmp_path / "out.parquet")
    (tmp_path / "c.xml").write_text("<a/>")
    with pytest.raises(PipelineError, match=r"unknown format '\.xml'; valid: \.csv, \.jsonl, \.parquet, \.tsv, \.txt"):
        ingest([{"path": str(tmp_path / "c.xml")}], tmp_path / "out.parquet")
    (tmp_path / "c.txt").write_text("a")
    with pytest.raises(PipelineError, match="keys are"):
        ingest([{"path": str(tmp_path / "c.txt"), "colum": "x"}], tmp_path / "out.parquet")
    (tmp_path / "latin.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(PipelineError, match="not UTF-8"):
        ingest([{"path": str(tmp_path / "latin.txt")}], tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()
    assert sorted(READERS.names()) == [".csv", ".jsonl", ".parquet", ".tsv", ".txt"]


def test_stage_prints_the_error_and_exits_1(tmp_path, stage_cli):
    (tmp_path / "params.yaml").write_text("ingest:\n  sources:\n    - path: data/missing.txt\n")
    code, err = stage_cli(tmp_path, "ingest")
    assert code == 1
    assert "data/missing.txt not found" in err and "Traceback" not in err


def test_a_jsonl_line_nested_too_deeply_is_named(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"caption": "a cat"}\n{"caption": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(PipelineError, match=r"c.jsonl line 2 is JSON nested too deeply"):
        ingest([{"path": str(path), "column": "caption"}], tmp_path / "out.parquet")


@pytest.mark.parametrize("value", [1.5, 7, True, False])
def test_a_jsonl_number_or_boolean_is_no_caption(tmp_path, value):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"caption": "a cat"}) + "\n" + json.dumps({"caption": value}) + "\n")
    with pytest.raises(PipelineError, match=r"c.jsonl line 2: field 'caption' holds .* not a caption string"):
        ingest([{"path": str(path), "column": "caption"}], tmp_path / "out.parquet")


def test_a_missing_jsonl_field_is_counted_apart_from_empty(tmp_path):
    path = tmp_path / "c.jsonl"
    rows = [{"caption": "a cat"}, {"other": 1}, {"caption": ""}, {"caption": None}, {"caption": "a dog"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = ingest([{"path": str(path), "column": "caption"}], tmp_path / "out.parquet")
    assert (stats["read"], stats["missing"], stats["empty"], stats["kept"]) == (5, 1, 2, 2)


@pytest.mark.parametrize("column", [pa.array([1.5, 2.5]), pa.array([1, 2]), pa.array([["a"], ["b"]])])
def test_a_parquet_column_that_is_not_text_is_refused(tmp_path, column):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"caption": column}), path)
    with pytest.raises(PipelineError, match="column 'caption' holds .*, not text"):
        ingest([{"path": str(path), "column": "caption"}], tmp_path / "out.parquet")
