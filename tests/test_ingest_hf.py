"""`hf:` caption sources, offline: the Hub is a local folder laid out as its refs/convert/parquet revision."""
import os
import socket
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from huggingface_hub import HfFileSystem, constants

from pipeline.core.errors import PipelineError
from pipeline.data import hf_captions
from pipeline.data.ingest import ingest

ROOT = Path(__file__).resolve().parents[1]
SD = "Gustavosta/Stable-Diffusion-Prompts"


class Hub:
    """A local folder served as the Hub's file system; records the files opened and the bytes read."""

    def __init__(self, root: Path):
        self.root = root
        self.fs = DirFileSystem(path=str(root), fs=LocalFileSystem())
        self.opened: list[str] = []
        self.bytes_read = 0

    def publish(self, dataset, tables, config="default", split="train", row_group_size=4, folder=None) -> list[Path]:
        """Writes `tables` where the Hub's Parquet conversion puts them, with a file that is not Parquet beside them."""
        where = self.root / "datasets" / f"{dataset}@refs%2Fconvert%2Fparquet" / config / (folder or split)
        where.mkdir(parents=True)
        (where / "index.duckdb").write_bytes(b"not parquet")
        paths = []
        for i, table in enumerate(tables):
            paths.append(where / f"{i:04d}.parquet")
            pq.write_table(table, paths[-1], row_group_size=row_group_size)
        return paths

    def open(self, path):
        self.opened.append(path.rsplit("/", 1)[-1])
        file = self.fs.open(path, "rb")
        hub = self

        class Counted:  # the file object pyarrow reads, counting what it reads
            def __getattr__(self, name):
                return getattr(file, name)

            def read(self, n=-1):
                data = file.read(n)
                hub.bytes_read += len(data)
                return data

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                file.close()

        return Counted()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    served = Hub(tmp_path / "hub")
    monkeypatch.setattr(hf_captions, "filesystem", lambda: served.fs)
    monkeypatch.setattr(hf_captions, "open_file", served.open)
    return served


def prompts(texts, **columns):
    return pa.table({"Prompt": texts, **columns})


def test_row_groups_stream_into_the_table_with_dedup(hub, tmp_path):
    first = ["a castle on a hill", "A  castle on a hill", "", "neon city, $8k", "a castle on a hill", "a red fox",
             None, "portrait of a cat &amp; a dog", "a red fox", "misty forest", "a lone tree", "a blue whale"]
    blob = [os.urandom(200_000) for _ in first]  # an image column the reader must not fetch
    second = ["misty forest", "a golden retriever", "a cat", "  ", "a blue whale", "sunset over the sea"]
    paths = hub.publish(SD, [prompts(first, jpg=blob), prompts(second, jpg=[b""] * len(second))])
    assert pq.ParquetFile(paths[0]).num_row_groups == 3
    local = tmp_path / "local.txt"
    local.write_text("a cat\nmy own caption\n")
    sizes = []

    stats = ingest([{"path": str(local)}, {"hf": SD, "split": "train", "column": "Prompt", "name": "sd"}],
                   tmp_path / "out" / "captions.parquet", chunk=3, progress=sizes.append)

    rows = pq.read_table(tmp_path / "out" / "captions.parquet").to_pylist()
    assert [(r["id"], r["text"], r["source"]) for r in rows] == [
        (0, "a cat", "local"), (1, "my own caption", "local"),
        (2, "a castle on a hill", "sd"), (3, "A castle on a hill", "sd"), (4, "neon city, 8k", "sd"),
        (5, "a red fox", "sd"), (6, "portrait of a cat & a dog", "sd"), (7, "misty forest", "sd"),
        (8, "a lone tree", "sd"), (9, "a blue whale", "sd"), (10, "a golden retriever", "sd"),
        (11, "sunset over the sea", "sd")]
    # 18 read: "", None and "  " are empty; "a castle on a hill", "a red fox", "misty forest", "a blue whale"
    # and "a cat" (from local.txt) are duplicates
    assert stats["sources"]["sd"] == {"read": 18, "missing": 0, "empty": 3, "duplicate": 5, "dollar_stripped": 1, "kept": 10}
    assert stats["kept"] == 12 and stats["duplicate"] == 5
    assert sizes[:1] == [2] and max(sizes[1:]) <= 3 and sum(sizes[1:]) == 18  # chunks of at most `chunk`
    # the schema is checked from the first file before reading, then both files are read, in order
    assert hub.opened == ["0000.parquet", "0000.parquet", "0001.parquet"]
    # only the caption column is fetched (and two footers: pyarrow reads 64 KB ends), not the 2.4 MB of images
    assert hub.bytes_read < 0.1 * paths[0].stat().st_size


def test_chunk_size_does_not_change_the_result(hub, tmp_path):
    texts = [f"prompt {i % 37}" for i in range(200)]
    hub.publish(SD, [prompts(texts[:120]), prompts(texts[120:])], row_group_size=16)
    source = {"hf": SD, "column": "Prompt"}
    small = ingest([source], tmp_path / "small.parquet", chunk=5)
    big = ingest([source], tmp_path / "big.parquet")
    assert small == big and small["sources"]["Stable-Diffusion-Prompts"]["kept"] == 37
    assert pq.read_table(tmp_path / "small.parquet") == pq.read_table(tmp_path / "big.parquet")


def test_max_captions_stops_reading(hub, tmp_path):
    hub.publish(SD, [prompts([f"prompt {i}" for i in range(40)]), prompts(["never read"])], row_group_size=4)
    stats = ingest([{"hf": SD, "column": "Prompt", "max_captions": 6}], tmp_path / "c.parquet", chunk=4)
    assert [r["text"] for r in pq.read_table(tmp_path / "c.parquet").to_pylist()] == [f"prompt {i}" for i in range(6)]
    assert stats["sources"]["Stable-Diffusion-Prompts"]["read"] == 6 and stats["kept"] == 6
    assert hub.opened == ["0000.parquet", "0000.parquet"]  # the second file is never opened


def test_missing_column_names_the_dataset_and_its_columns(hub, tmp_path):
    hub.publish(SD, [prompts(["a cat"], seed=[1])])
    local = tmp_path / "local.txt"
    local.write_text("a dog\n")
    with pytest.raises(PipelineError, match=r"Hugging Face dataset Gustavosta/Stable-Diffusion-Prompts \(config default, "
                                            r"split train\) has no column 'prompt'; its columns are: Prompt, seed\. "
                                            r"Set `column:`"):
        ingest([{"path": str(local)}, {"hf": SD, "column": "prompt"}], tmp_path / "out.parquet")
    with pytest.raises(PipelineError, match=r"Stable-Diffusion-Prompts .* needs `column:` naming the caption column; "
                                            r"its columns are: Prompt, seed"):
        ingest([{"hf": SD}], tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()  # found before any source was read


def test_missing_split_config_or_dataset_say_what_there_is(hub, tmp_path):
    hub.publish(SD, [prompts(["a cat"])], split="train")
    hub.publish(SD, [prompts(["a dog"])], split="test")
    with pytest.raises(PipelineError, match=r"no split 'tran' at revision refs/convert/parquet; its splits are: test, train"):
        ingest([{"hf": SD, "split": "tran", "column": "Prompt"}], tmp_path / "out.parquet")
    with pytest.raises(PipelineError, match=r"no config 'unlabeled' .*; its configs are: default"):
        ingest([{"hf": SD, "config": "unlabeled", "column": "Prompt"}], tmp_path / "out.parquet")
    with pytest.raises(PipelineError, match=r"Hugging Face dataset someone/missing .*not found on the Hub"):
        ingest([{"hf": "someone/missing", "column": "Prompt"}], tmp_path / "out.parquet")


def test_a_partially_converted_split_is_read_with_a_note(hub, tmp_path, capsys):
    hub.publish("big/corpus", [prompts(["first 5 GB"])], folder="partial-train")
    stats = ingest([{"hf": "big/corpus", "column": "Prompt"}], tmp_path / "c.parquet")
    assert stats["kept"] == 1
    assert "only the first 5 GB" in capsys.readouterr().err


def test_offline_is_a_fast_clear_error_naming_the_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_hub():
        raise AssertionError("the Hub was asked although HF_HUB_OFFLINE is set")

    monkeypatch.setattr(hf_captions, "filesystem", no_hub)
    start = time.monotonic()
    with pytest.raises(PipelineError) as error:
        ingest([{"hf": "FredZhang7/stable-diffusion-prompts-2.47M", "column": "text"}], tmp_path / "c.parquet")
    assert time.monotonic() - start < 2
    message = str(error.value)
    assert "FredZhang7/stable-diffusion-prompts-2.47M" in message and "HF_HUB_OFFLINE" in message
    assert "needs network access" in message and "local copy" in message
    assert "hf download FredZhang7/stable-diffusion-prompts-2.47M --repo-type dataset --revision refs/convert/parquet" in message
    assert "`path:` source" in message
    assert not (tmp_path / "c.parquet").exists()


def test_an_unreachable_hub_is_the_same_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as s:  # a port nothing listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(hf_captions, "filesystem",
                        lambda: HfFileSystem(endpoint=f"http://127.0.0.1:{port}", token=False, skip_instance_cache=True))
    start = time.monotonic()
    with pytest.raises(PipelineError, match=r"Hugging Face dataset FredZhang7/stable-diffusion-prompts-2\.47M .*could not "
                                            r"be reached \(ConnectError.*needs network access.*local copy"):
        ingest([{"hf": "FredZhang7/stable-diffusion-prompts-2.47M", "column": "text"}], tmp_path / "c.parquet")
    assert time.monotonic() - start < 10


def test_source_kind_must_be_path_or_hf(tmp_path):
    (tmp_path / "c.txt").write_text("a cat\n")
    for source in ({"pth": str(tmp_path / "c.txt")}, {"path": str(tmp_path / "c.txt"), "hf": SD}, {"column": "x"}):
        with pytest.raises(PipelineError, match=r"give exactly one of `hf:` \(a Hugging Face dataset id owner/name\) "
                                                r"or `path:` \(a local caption file"):
            ingest([source], tmp_path / "out.parquet")
    with pytest.raises(PipelineError, match=r"unknown key splt; keys are column, config, hf, max_captions, name, "
                                            r"revision, split for `hf:`"):
        ingest([{"hf": SD, "splt": "train"}], tmp_path / "out.parquet")
    with pytest.raises(PipelineError, match=r"`hf:` takes a Hugging Face dataset id owner/name"):
        ingest([{"hf": "conceptual_captions"}], tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_stage_reports_offline_without_a_traceback(tmp_path, stage_cli, monkeypatch):
    (tmp_path / "params.yaml").write_text(
        "ingest:\n  sources:\n    - {hf: FredZhang7/stable-diffusion-prompts-2.47M, split: train, column: text}\n")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = stage_cli(tmp_path, "ingest")
    assert code == 1 and "Traceback" not in err
    assert "FredZhang7/stable-diffusion-prompts-2.47M" in err and "needs network access" in err
