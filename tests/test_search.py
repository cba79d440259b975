"""`lincir index` / `lincir search` on world images (tests/search_world.py): a composed query
finds its ground truth, updates re-embed only what changed, the authors' phi checkpoints load,
and bad input is one clear error."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import search_world
import torch
from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.evaluation.queries import composed_queries
from pipeline.model.phi import load_phi
from pipeline.tools.cli import main
from pipeline.tools.search import index as search_index
from pipeline.tools.search.query import open_index, search


def test_a_composed_query_ranks_its_ground_truths_first(photo_index):
    s = photo_index["searcher"]
    composed = text_only = 0
    for ref, condition, truths in search_world.queries():
        mode, hits = search(s, ref, condition, k=search_world.RENDERS)
        assert mode == "composed" and ref not in {p for p, _ in hits}
        composed += {p for p, _ in hits} == truths
        text_only += {p for p, _ in search(s, None, condition, k=search_world.RENDERS)[1]} == truths
    assert composed == 30  # the reference's shape comes through phi's token
    assert text_only <= 10  # without it the shape is a guess (1 in 5)


def test_scores_are_cosine_similarities_best_first(photo_index):
    _, hits = search(photo_index["searcher"], search_world.thing_path("star", "red", 1), None, k=10)
    scores = [c for _, c in hits]
    assert scores == sorted(scores, reverse=True) and all(-1.0001 <= c <= 1.0001 for c in scores)
    assert len(hits) == 10 and hits[0][0] == search_world.thing_path("star", "red", 0)  # its twin render, itself left out


def test_an_image_file_outside_the_index_is_embedded_like_the_gallery(photo_index, tmp_path):
    ref = search_world.thing_path("cross", "green", 0)
    outside = tmp_path / "mine.png"
    shutil.copy(photo_index["photos"] / ref, outside)
    from_file = search(photo_index["searcher"], str(outside), "is purple", k=5)[1]
    from_entry = search(photo_index["searcher"], ref, "is purple", k=4)[1]
    assert search(photo_index["searcher"], str(outside), None, k=1)[1][0] == (ref, pytest.approx(1, abs=1e-5))
    assert [p for p, _ in from_file if p != ref][:4] == [p for p, _ in from_entry]
    assert np.allclose([c for p, c in from_file if p != ref][:4], [c for _, c in from_entry], atol=1e-5)
    # the same file named by its path under the indexed folder is the entry, left out of its results
    assert search(photo_index["searcher"], str(photo_index["photos"] / ref), "is purple", k=4)[1] == from_entry


def test_update_re_embeds_only_new_and_changed_files(photo_index, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    shutil.copytree(photo_index["photos"], photos)
    out = tmp_path / "idx"
    first = search_index.update(photos, out, backbone_file=photo_index["backbone"], phi=photo_index["phi"], kind="flat")
    assert first == {"images": 60, "embedded": 60, "reused": 0, "removed": 0, "skipped": {}}
    before = search_index.read(out)

    changed, removed = search_world.thing_path("circle", "red", 0), search_world.thing_path("star", "blue", 1)
    shutil.copy(photos / search_world.thing_path("square", "yellow", 0), photos / changed)  # new pixels, same name
    (photos / removed).unlink()
    (photos / "new").mkdir()
    Image.open(photos / search_world.thing_path("cross", "orange", 1)).save(photos / "new" / "x.webp")
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    (photos / "notes.txt").write_text("not an image: never looked at")

    embedded = []
    real = search_index.gallery.embed_readable
    monkeypatch.setattr(search_index.gallery, "embed_readable", lambda m, p, sources, **kw: embedded.extend(
        s.path.relative_to(photos).as_posix() for s in sources) or real(m, p, sources, **kw))
    second = search_index.update(photos, out, backbone_file=photo_index["backbone"], phi=photo_index["phi"], kind="flat")
    assert sorted(embedded) == sorted([changed, "new/x.webp", "broken.jpg"])
    assert (second["images"], second["embedded"], second["reused"], second["removed"]) == (60, 2, 58, 1)
    assert list(second["skipped"]) == ["broken.jpg"] and "cannot read image" in second["skipped"]["broken.jpg"]

    after = search_index.read(out)
    paths = after.table["path"].to_list()
    assert paths == sorted(paths) and removed not in paths and "new/x.webp" in paths
    assert after.record["skipped"] == second["skipped"]
    old_row = {p: i for i, p in enumerate(before.table["path"])}
    for i, p in enumerate(paths):
        if p not in (changed, "new/x.webp"):
            assert np.array_equal(after.latents[i], before.latents[old_row[p]])  # kept, not recomputed
    assert not np.allclose(after.latents[paths.index(changed)], before.latents[old_row[changed]])
    assert search_index.load_faiss(out).ntotal == 60


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "ivfpq"])
def test_approximate_index_kinds(photo_index, tmp_path, kind):
    search_index.update(photo_index["photos"], tmp_path / kind, backbone_file=photo_index["backbone"], phi=photo_index["phi"], kind=kind)
    s = open_index(tmp_path / kind)
    assert json.loads((tmp_path / kind / "index.json").read_text())["index"] == kind
    ref, condition, truths = next(search_world.queries())
    assert len(search(s, ref, condition, k=5)[1]) == 5


def authors_checkpoint(phi: torch.nn.Module, path):
    """What navervision/lincir saves: {"Phi": state dict of `self.layers = Sequential(...)`}."""
    torch.save({"Phi": {f"layers.{k}": v for k, v in phi.state_dict().items()}}, path)


def test_an_authors_checkpoint_gives_the_same_query_features(photo_index, tmp_path):
    authors_checkpoint(photo_index["phi_module"], tmp_path / "lincir_world.pt")
    ours, theirs = load_phi(photo_index["phi"]), load_phi(tmp_path / "lincir_world.pt")
    assert type(theirs[0]) is torch.nn.Linear and len(theirs) == 7  # the `official` variant
    ctx = photo_index["searcher"].ctx
    refs = ctx.latents[:6]
    texts = ["is red", "is blue", "is a star", "is green", "is yellow", "is on the left"]
    a, b = composed_queries(ctx, refs, texts, ours), composed_queries(ctx, refs, texts, theirs)
    assert np.array_equal(a, b)
    s = open_index(photo_index["index"], phi=tmp_path / "lincir_world.pt")
    ref, condition, truths = next(search_world.queries())
    assert search(s, ref, condition, 5) == search(photo_index["searcher"], ref, condition, 5)


def test_a_phi_for_another_backbone_is_refused_naming_both_widths(photo_index, tmp_path, capsys):
    from pipeline.model.phi import build_phi

    authors_checkpoint(build_phi("official", 64, 96, 0.5), tmp_path / "other.pt")
    with pytest.raises(PipelineError, match="64-d embedding to a 96-wide token.*128-d joint embedding and a 128-wide"):
        open_index(photo_index["index"], phi=tmp_path / "other.pt")
    code = main(["index", str(photo_index["photos"]), "--out", str(tmp_path / "x"), "--backbone", str(photo_index["backbone"]),
                 "--phi", str(tmp_path / "other.pt")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: phi ") and "64-d" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()  # refused before any embedding


def test_not_a_phi_checkpoint_is_named(photo_index, tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "odd.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(PipelineError, match="odd.pt is not a phi checkpoint.*found \\['weights'\\]"):
        load_phi(tmp_path / "odd.pt")
    with pytest.raises(PipelineError, match="junk.pt is not a readable phi checkpoint"):
        load_phi(tmp_path / "junk.pt")


def test_search_command_prints_json_and_draws_a_grid(photo_index, capsys, tmp_path):
    ref, condition, truths = next(search_world.queries())
    code = main(["search", "--index", str(photo_index["index"]), "--image", ref, "--text", condition, "-k", "4",
                 "--json", "--grid", str(tmp_path / "grid.png")])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["mode"] == "composed" and len(out["results"]) == 4
    assert {r["path"] for r in out["results"][:2]} == truths
    assert Image.open(tmp_path / "grid.png").size[0] > 4 * 100
    assert main(["search", "--index", str(photo_index["index"]), "--text", "is red", "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(len(line.split("\t")) == 2 for line in lines)


def lincir(argv: list[str]) -> int:
    """`lincir ARGV`'s exit status: argparse exits on a bad argument, the commands return."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("argv, message", [
    (["--image", "nowhere/none.png", "--text", "is red"], "neither an entry of the index nor an image file"),
    ([], "needs a reference image, a condition text, or both"),
    (["--text", "is red", "-k", "0"], "argument -k: must be at least 1, not 0"),
    (["--text", "is red and " + "very " * 30 + "bright"], "is 36 tokens long, more than the 32 the text encoder reads"),
    (["--image", search_world.thing_path("star", "red", 0), "--text", "is like $ but blue"], "contains '$'"),
    (["--text", "costs ＄5"], "contains '$'"),  # the tokenizer reads a fullwidth dollar as the placeholder too
])
def test_bad_queries_are_one_error_line(photo_index, capsys, argv, message):
    assert lincir(["search", "--index", str(photo_index["index"]), *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_a_condition_is_refused_only_where_the_encoder_would_cut_it(photo_index):
    s = photo_index["searcher"]
    fits = "is red and " + "very " * 26 + "bright"  # start + 30 + end: the 32 tokens of lincir-world
    assert len(search(s, None, fits, 3)[1]) == 3
    with pytest.raises(PipelineError, match="is 33 tokens long"):
        search(s, None, fits + " indeed", 3)
    ref = search_world.thing_path("star", "red", 0)  # composed: the template's words count too
    with pytest.raises(PipelineError, match=r"the query 'a photo of \$ that is red.* is 37 tokens long"):
        search(s, ref, fits, 3)


def test_index_refuses_what_it_cannot_trust(photo_index, tmp_path, capsys):
    assert main(["search", "--index", str(tmp_path), "--text", "x"]) == 1
    assert "is not an index (no index.json)" in capsys.readouterr().err
    copy = tmp_path / "copy"
    shutil.copytree(photo_index["index"], copy)
    record = json.loads((copy / "index.json").read_text())
    record["backbone"]["sha256"] = "0" * 64  # as if the weights file changed since indexing:
    record["backbone"]["stat"][1] -= 1  # its content, and so its mtime
    (copy / "index.json").write_text(json.dumps(record))
    with pytest.raises(PipelineError, match="missing or changed since"):
        open_index(copy)
    with pytest.raises(PipelineError, match="was built with backbone .* index into a new --out"):
        search_index.update(photo_index["photos"], copy, backbone_file=photo_index["backbone"], phi=photo_index["phi"], kind="flat")
    with pytest.raises(PipelineError, match="unknown faiss index type 'annoy'; valid names: flat, hnsw, ivf"):
        search_index.update(photo_index["photos"], tmp_path / "y", backbone_file=photo_index["backbone"], phi=photo_index["phi"], kind="annoy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match="no readable image under"):
        search_index.update(tmp_path / "empty", tmp_path / "z", backbone_file=photo_index["backbone"], phi=photo_index["phi"], kind="flat")


def test_unchanged_weights_are_not_hashed_again_on_every_search(photo_index, monkeypatch):
    from pipeline.core import io

    hashed, real = [], io.file_sha256
    monkeypatch.setattr(io, "file_sha256", lambda path: hashed.append(Path(path).name) or real(path))
    open_index(photo_index["index"])
    weights = Path(json.loads((photo_index["index"] / "index.json").read_text())["backbone"]["pretrained"]).name
    assert weights not in hashed and hashed  # phi, small, is still hashed


def test_a_relative_weights_path_is_recorded_absolute(photo_index, tmp_path, monkeypatch):
    """backbone.json names its weights relative to the repository; search may run from anywhere."""
    workdir = photo_index["photos"].parent
    identity = json.loads(photo_index["backbone"].read_text())
    identity["pretrained"] = str(Path(identity["pretrained"]).relative_to(workdir))
    (tmp_path / "backbone.json").write_text(json.dumps(identity))
    monkeypatch.chdir(workdir)
    search_index.update(photo_index["photos"], tmp_path / "idx", backbone_file=tmp_path / "backbone.json", phi=photo_index["phi"], kind="flat")
    monkeypatch.chdir(tmp_path)
    assert len(search(open_index(tmp_path / "idx"), None, "is red", 3)[1]) == 3
