"""`lincir index` / `lincir search` with hostile files and arguments: an index's parts are trusted only
together, an update that fails leaves the previous index working, a damaged index is rebuilt, and
every bad argument or file is one `error:` line with exit status 1."""
import errno
import json
import os
import shutil
from pathlib import Path

import faiss
import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from pipeline.evaluation import gallery
from pipeline.tools.cli import main
from pipeline.tools.search import index as search_index
from pipeline.tools.search.query import open_index


def lincir(argv: list[str]) -> int:
    """`lincir ARGV`'s exit status: argparse exits on a bad argument, the commands return."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:
        return e.code


def one_error(capsys, *expected: str) -> str:
    err = capsys.readouterr().err  # beside progress bars and warnings
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert all(e in lines[0] for e in expected), lines[0]
    return lines[0]


@pytest.fixture
def copy(photo_index, tmp_path):
    """A copy of the search world's index (same root: an update reuses every latent)."""
    out = tmp_path / "copy.index"
    shutil.copytree(photo_index["index"], out)
    return out


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def update(photo_index, out: Path, folder: Path | None = None, **kw) -> dict:
    return search_index.update(folder or photo_index["photos"], out, backbone_file=photo_index["backbone"],
                               phi=photo_index["phi"], kind="flat", **kw)


def disk_full(path) -> None:
    """What a writer does on a full disk: half a file, then an error."""
    Path(str(path)).write_bytes(b"\0" * 100)
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def faiss_write_error(index, path) -> None:
    Path(path).write_bytes(b"\0" * 10)
    raise RuntimeError(f"Error: 'ret == (n)' failed: write error in {path}")  # faiss has no errno


@pytest.mark.parametrize("part", ["images.parquet", "latents.npy", "gallery.faiss", "index.json"])
def test_a_failed_update_leaves_the_previous_index_working(photo_index, copy, monkeypatch, capsys, part):
    before = snapshot(copy)
    write_text = Path.write_text
    fail = {
        "images.parquet": lambda: monkeypatch.setattr(pl.DataFrame, "write_parquet", lambda self, p: disk_full(p)),
        "latents.npy": lambda: monkeypatch.setattr(search_index.np, "save", lambda f, a: disk_full(f.name)),
        "gallery.faiss": lambda: monkeypatch.setattr(search_index.faiss, "write_index", faiss_write_error),
        "index.json": lambda: monkeypatch.setattr(Path, "write_text", lambda self, text, **kw: disk_full(self)
                                                  if self.name.startswith("index.json") else write_text(self, text, **kw)),
    }
    fail[part]()
    code = lincir(["index", photo_index["photos"], "--out", copy, "--backbone", photo_index["backbone"],
                   "--phi", photo_index["phi"]])
    monkeypatch.undo()
    assert code == 1
    one_error(capsys, "write error in" if part == "gallery.faiss" else "the disk is full")
    assert snapshot(copy) == before  # no temporary file left, every part as it was
    search_index.read(copy)  # and trusted together


DAMAGE = {
    "truncated record": ("index.json", lambda p: p.write_text(p.read_text()[:50])),
    "rows as text": ("index.json", lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "images": "60"}))),
    "no part checksums": ("index.json", lambda p: p.write_text(json.dumps(
        {k: v for k, v in json.loads(p.read_text()).items() if k != "parts"}))),
    "record not UTF-8": ("index.json", lambda p: p.write_bytes(b"\xff\xfe{}")),
    "truncated table": ("images.parquet", lambda p: p.write_bytes(p.read_bytes()[:200])),
    "truncated latents": ("latents.npy", lambda p: p.write_bytes(p.read_bytes()[:-128])),
    "other latents": ("latents.npy", lambda p: np.save(p, np.load(p) * 2)),  # a valid file, other values
    "garbage index": ("gallery.faiss", lambda p: p.write_bytes(b"garbage")),
    "rows reordered": ("gallery.faiss", lambda p: faiss.write_index(  # a valid index of the same rows, reversed
        gallery.build_index(np.load(p.with_name("latents.npy"))[::-1].copy(), np.arange(60), "flat"), str(p))),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_part_is_refused(copy, capsys, damage):
    part, spoil = DAMAGE[damage]
    spoil(copy / part)
    with pytest.raises(search_index.DamagedIndex, match="cannot be trusted; build it again"):
        search_index.read(copy)
    assert lincir(["search", "--index", copy, "--text", "is red"]) == 1
    one_error(capsys, part, "cannot be trusted")


@pytest.mark.parametrize("damage", ["truncated record", "other latents", "rows reordered"])
def test_the_next_update_rebuilds_a_damaged_index(photo_index, copy, capsys, damage):
    part, spoil = DAMAGE[damage]
    spoil(copy / part)
    done = update(photo_index, copy)
    if part == "gallery.faiss":  # rebuilt from the latents, which are still trusted: nothing to embed
        assert done["embedded"] == 0
    else:
        assert done["embedded"] == 60 and "embedding every image" in capsys.readouterr().err
    rebuilt, original = search_index.read(copy), search_index.read(photo_index["index"])
    assert np.array_equal(rebuilt.latents, original.latents) and rebuilt.table.equals(original.table)
    open_index(copy)


def test_a_part_of_another_index_is_refused(photo_index, copy, tmp_path):
    """A valid FAISS file (and table) of another folder's index: searching with it would name other images."""
    few = tmp_path / "few"
    for path in list(photo_index["things"])[:12]:
        (few / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo_index["photos"] / path, few / path)
    other = tmp_path / "other.index"
    update(photo_index, other, folder=few)
    open_index(other)
    for part in ("gallery.faiss", "images.parquet"):
        damaged = tmp_path / part
        shutil.copytree(copy, damaged)
        shutil.copy(other / part, damaged / part)
        with pytest.raises(search_index.DamagedIndex, match=f"{part} is not the file this index wrote"):
            open_index(damaged)


@pytest.mark.parametrize("argv, expected", [
    (["--batch-size", "0"], "argument --batch-size: must be at least 1, not 0"),
    (["--workers", "-1"], "argument --workers: must be at least 0, not -1"),
    (["--batch-size", "many"], "must be a whole number, not 'many'"),
])
def test_index_arguments_are_range_checked(photo_index, tmp_path, capsys, argv, expected):
    assert lincir(["index", photo_index["photos"], "--out", tmp_path / "x", *argv]) == 1
    one_error(capsys, "lincir index", expected)
    assert not (tmp_path / "x").exists()


def test_index_refuses_an_out_it_cannot_write_and_a_bad_backbone_record(photo_index, tmp_path, capsys):
    args = ["--backbone", photo_index["backbone"], "--phi", photo_index["phi"]]
    (tmp_path / "file").write_text("mine")
    assert lincir(["index", photo_index["photos"], "--out", tmp_path / "file", *args]) == 1
    one_error(capsys, "is a file: an index is a folder")
    assert (tmp_path / "file").read_text() == "mine"
    assert lincir(["index", photo_index["photos"], "--out", tmp_path / "file" / "sub", *args]) == 1
    one_error(capsys, "cannot write the index to", "Not a directory")
    for record, expected in [("{not json", "is not a backbone record (JSON)"),
                             (json.dumps({"model": "lincir-world-vit", "sha256": "0" * 64}), 'needs "model", "pretrained"')]:
        (tmp_path / "backbone.json").write_text(record)
        assert lincir(["index", photo_index["photos"], "--out", tmp_path / "y", "--backbone",
                       tmp_path / "backbone.json", "--phi", photo_index["phi"]]) == 1
        one_error(capsys, expected)


def test_a_file_name_that_is_not_utf8_is_skipped_and_listed(photo_index, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, path in [("a.png", "star/red-0.png"), ("b.png", "circle/blue-0.png")]:
        shutil.copy(photo_index["photos"] / path, folder / name)
    shutil.copy(photo_index["photos"] / "star/red-1.png", os.fsdecode(bytes(folder) + b"/caf\xe9.png"))
    assert lincir(["index", folder, "--out", tmp_path / "idx", "--backbone", photo_index["backbone"],
                   "--phi", photo_index["phi"]]) == 0
    out, err = capsys.readouterr()
    assert "2 images (2 embedded" in out and "1 unreadable skipped" in out
    assert "skipped caf\\xe9.png: the file name is not valid UTF-8" in err
    assert search_index.read(tmp_path / "idx").table["path"].to_list() == ["a.png", "b.png"]


def test_an_image_whose_latent_is_not_finite_is_skipped_not_indexed(photo_index, tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        shutil.copy(photo_index["photos"] / "star/red-0.png", folder / name)
    real = search_index.gallery.embed_readable

    def nan_for_b(*args, **kwargs):
        latents, rows, problems = real(*args, **kwargs)
        latents[1] = np.nan
        return latents, rows, problems

    monkeypatch.setattr(search_index.gallery, "embed_readable", nan_for_b)
    done = update(photo_index, tmp_path / "idx", folder=folder)
    assert (done["images"], done["embedded"]) == (2, 2) and "not finite" in done["skipped"]["b.png"]
    assert search_index.read(tmp_path / "idx").table["path"].to_list() == ["a.png", "c.png"]


def test_a_phi_with_nan_weights_is_refused_by_index_and_search(photo_index, tmp_path, capsys):
    phi = torch.load(photo_index["phi"], weights_only=True)
    phi["state_dict"]["6.weight"][0, 0] = float("nan")
    torch.save(phi, tmp_path / "nan.pt")
    assert lincir(["index", photo_index["photos"], "--out", tmp_path / "x", "--backbone", photo_index["backbone"],
                   "--phi", tmp_path / "nan.pt"]) == 1
    one_error(capsys, "nan.pt: 6.weight holds NaN or inf")
    assert lincir(["search", "--index", photo_index["index"], "--phi", tmp_path / "nan.pt", "--text", "is red"]) == 1
    one_error(capsys, "6.weight holds NaN or inf")


@pytest.mark.parametrize("grid, expected", [
    ("grid", "name a .png or .jpg file"),
    ("grid.gif", "name a .png or .jpg file"),
    ("folder.png", "is a folder"),
])
def test_a_grid_path_is_checked_before_the_search(photo_index, tmp_path, capsys, grid, expected):
    (tmp_path / "folder.png").mkdir()
    assert lincir(["search", "--index", photo_index["index"], "--text", "is red", "--grid", tmp_path / grid]) == 1
    one_error(capsys, expected)


def test_a_grid_on_a_full_disk_is_a_message_and_no_file(photo_index, tmp_path, capsys, monkeypatch):
    def full(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device", str(fp))

    monkeypatch.setattr(Image.Image, "save", full)
    assert lincir(["search", "--index", photo_index["index"], "--text", "is red", "-k", "3",
                   "--grid", tmp_path / "grid.jpg"]) == 1
    one_error(capsys, "the disk is full", "free space")
    assert list(tmp_path.iterdir()) == []


def test_the_index_write_names_its_temporaries_beside_the_parts(photo_index, copy):
    """A finished update leaves exactly the four files, recording each part's size and hash."""
    update(photo_index, copy)
    assert sorted(p.name for p in copy.iterdir()) == ["gallery.faiss", "images.parquet", "index.json", "latents.npy"]
    parts = json.loads((copy / "index.json").read_text())["parts"]
    assert set(parts) == {"gallery.faiss", "images.parquet", "latents.npy"}
    assert all(parts[name]["size"] == (copy / name).stat().st_size for name in parts)
