"""Image–caption pairs: the table or the webdataset shards read in order, captions aligned
with their images."""
import io
import os
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.data.pairs import PairsConfig, read_pairs, write_captions


def test_pairs_are_read_in_order_and_captions_map_to_their_image(tmp_path):
    pq.write_table(pa.table({"file": ["a.png", "/abs/b.png", "c.png"], "split": ["train", "train", "heldout"],
                             "captions": [["a red  cat", "a $ cat"], ["a dog"], ["x"]]}), tmp_path / "p.parquet")
    images, captions, skipped = read_pairs(PairsConfig(path=str(tmp_path / "p.parquet")))
    assert images == [tmp_path / "a.png", Path("/abs/b.png")]
    assert captions == [["a red  cat", "a $ cat"], ["a dog"]] and skipped == 0
    image_of = write_captions(captions, tmp_path / "out/captions.parquet")
    assert image_of.tolist() == [0, 0, 1]
    rows = pq.read_table(tmp_path / "out/captions.parquet").to_pylist()
    assert [r["text"] for r in rows] == ["a red cat", "a cat", "a dog"] and [r["id"] for r in rows] == [0, 1, 2]


def test_a_csv_with_one_caption_a_row_and_every_split(tmp_path):
    (tmp_path / "p.csv").write_text("image,caption\nx.jpg,a cat\ny.jpg,a dog\n")
    images, captions, _ = read_pairs(PairsConfig(path=str(tmp_path / "p.csv"), image_column="image",
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


def _shard(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _png(colour) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, "PNG")
    return out.getvalue()


def test_webdataset_shards_give_pairs_in_order_and_skip_incomplete_samples(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    _shard(shards / "000.tar", {"a/0001.png": _png("red"), "a/0001.txt": b"a red square\n",
                                "a/0002.jpg.json": b"{}",  # no image: only a json named like one
                                "a/0003.png": _png("blue"), "a/0003.json": b'{"captions": ["a blue one", "blue"]}',
                                "a/0004.txt": b"a caption without its image"})
    _shard(shards / "001.tar", {"../../escape.png": _png("green"), "../../escape.txt": b"green"})
    images, captions, skipped = read_pairs(PairsConfig(path=str(shards), split=""), tmp_path / "out")
    assert captions == [["a red square"], ["a blue one", "blue"], ["green"]] and skipped == 2
    assert [p.relative_to(tmp_path / "out").as_posix() for p in images] == \
        ["000/00000000.png", "000/00000001.png", "001/00000002.png"]  # named by position: nothing escapes
    assert Image.open(images[1]).getpixel((0, 0)) == (0, 0, 255)
    assert not (tmp_path / "escape.png").exists()
    one, _, _ = read_pairs(PairsConfig(path=str(shards / "001.tar"), split=""), tmp_path / "one")
    assert len(one) == 1


@pytest.mark.parametrize("members,split,message", [
    ({"0.png": b"x", "0.txt": b"x"}, "train", "shards have no `split` column"),
    ({"0.png": b"x", "0.json": b"[1]"}, "", "is not a JSON object"),
    ({"0.png": b"x", "0.json": b'{"captions": 3}'}, "", "must be a caption or a list of captions"),
    ({"0.txt": b"x"}, "", "no sample has both an image"),
])
def test_bad_shards_are_named(tmp_path, members, split, message):
    _shard(tmp_path / "s.tar", members)
    with pytest.raises(PipelineError, match=message):
        read_pairs(PairsConfig(path=str(tmp_path / "s.tar"), split=split), tmp_path / "out")


def test_a_json_nested_too_deeply_is_named(tmp_path):
    _shard(tmp_path / "s.tar", {"0.png": _png("red"), "0.json": b'{"captions": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"})
    with pytest.raises(PipelineError, match="sample '0'.json is nested too deeply"):
        read_pairs(PairsConfig(path=str(tmp_path / "s.tar"), split=""), tmp_path / "out")


@pytest.mark.parametrize("member, size", [("0.txt", 3 << 30), ("0.png", 300 << 20)])
def test_a_member_larger_than_a_caption_or_an_image_is_refused_unread(tmp_path, member, size):
    """A member of gigabytes (as a gzipped shard of a few MB can hold): refused from its header,
    before anything is read or written."""
    with open(tmp_path / "s.tar", "wb") as f:
        for name, data in {"0.png": _png("red"), "0.txt": b"a red square"}.items():
            info = tarfile.TarInfo(name)
            info.size = size if name == member else len(data)
            f.write(info.tobuf())
            if name == member:
                f.seek(size, os.SEEK_CUR)  # a hole: the member's gigabytes take no disk (a sparse file)
            else:
                f.write(data + b"\0" * (-len(data) % 512))
        f.write(b"\0" * 1024)  # the end of the archive
    with pytest.raises(PipelineError, match=f"member '{member}' is {size:,} bytes; a .{member[2:]} may be at most"):
        read_pairs(PairsConfig(path=str(tmp_path / "s.tar"), split=""), tmp_path / "out")
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_a_file_that_is_not_a_tar_is_named(tmp_path):
    (tmp_path / "s.tar").write_text("not a tar")
    with pytest.raises(PipelineError, match="s.tar is not a readable tar shard"):
        read_pairs(PairsConfig(path=str(tmp_path / "s.tar"), split=""), tmp_path / "out")
