"""Image–caption pairs: the table read in order, captions aligned with their images."""
from pathlib import Path
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.errors import PipelineError
from pipeline.pairs import PairsConfig, read_pairs, write_captions


def test_pairs_are_read_in_order_and_captions_map_to_their_image(tmp_path):
    pq.write_table(pa.table({"file": ["a.png", "/abs/b.png", "c.png"], "split": ["train", "train", "heldout"],
                             "captions": [["a red  cat", "a $ cat"], ["a dog"], ["x"]]}), tmp_path / "p.parquet")
    images, captions = read_pairs(PairsConfig(path=str(tmp_path / "p.parquet")))
    assert images == [tmp_path / "a.png", Path("/abs/b.png")]
    assert captions == [["a red  cat", "a $ cat"], ["a dog"]]
    image_of = write_captions(captions, tmp_path / "out/captions.parquet")
    assert image_of.tolist() == [0, 0, 1]
    rows = pq.read_table(tmp_path / "out/captions.parquet").to_pylist()
    assert [r["text"] for r in rows] == ["a red cat", "a cat", "a dog"] and [r["id"] for r in rows] == [0, 1, 2]


def test_a_csv_with_one_caption_a_row_and_every_split(tmp_path):
    (tmp_path / "p.csv").write_text("image,caption\nx.jpg,a cat\ny.jpg,a dog\n")
    images, captions = read_pairs(PairsConfig(path=str(tmp_path / "p.csv"), image_column="image",
                                              caption_column="caption", split=""))
    assert [p.name for p in images] == ["x.jpg", "y.jpg"] and captions == [["a cat"], ["a dog"]]


@pytest.mark.parametrize("table,message", [
    ({"file": ["a.png"], "captions": [["x"]]}, "no `split` column"),
    ({"file": ["a.png"], "caption": [["x"]], "split": ["train"]}, "no column 'captions'"),
    ({"file": ["a.png"], "captions": [[1.5]], "split": ["train"]}, "row 0: expected an image path and a caption"),
    ({"file": ["a.png"], "captions": [["x"]], "split": ["heldout"]}, "has no pairs with split 'train'"),
])
def test_bad_pairs_tables_are_named(tmp_path, table, message):
    pq.write_table(pa.table(table), tmp_path / "p.parquet")
    with pytest.raises(PipelineError, match=message):
        read_pairs(PairsConfig(path=str(tmp_path / "p.parquet")))
