import json
from collections import Counter

import numpy as np
import polars as pl
import pytest
from PIL import Image

from pipeline.data.images import mask_file
from pipeline.data.world import WorldConfig, generate
from pipeline.data.world.attributes import BACKGROUNDS, FIELDS, VALUES, Thing
from pipeline.data.world.captions import caption, condition
from pipeline.data.world.render import X_CENTRE, render, render_with_mask

SMALL = WorldConfig(seed=3, train_images=40, heldout_images=10, gallery_images=150, corpus_captions=300,
                    circo_queries=25, cirr_queries=15, dev_queries=8)


def test_circo_ground_truth_is_complete(tiny_world):
    """Brute force: every gallery image whose attributes equal the target's is a ground truth, and no other."""
    out, _ = tiny_world
    gallery = pl.read_parquet(out / "gallery.parquet")
    things = {row["coco_id"]: Thing(*(row[f] for f in FIELDS)) for row in gallery.iter_rows(named=True)}
    queries = json.loads((out / "benchmarks/circo/annotations/val.json").read_text())
    assert len(queries) == SMALL.circo_queries
    for q in queries:
        target = things[q["target_img_id"]]
        expected = sorted(i for i, t in things.items() if t == target)
        assert q["gt_img_ids"] == expected
        ref = things[q["reference_img_id"]]
        assert 1 <= sum(a != b for a, b in zip(ref, target)) <= 2
        assert sorted(q["semantic_aspects"]) == sorted(f for f in FIELDS if getattr(ref, f) != getattr(target, f))


def test_cirr_target_is_the_only_match_and_group_is_well_formed(tiny_world):
    out, _ = tiny_world
    gallery = pl.read_parquet(out / "gallery.parquet")
    things = {row["cirr_name"]: Thing(*(row[f] for f in FIELDS)) for row in gallery.iter_rows(named=True)}
    split = json.loads((out / "benchmarks/cirr/cirr/image_splits/split.rc2.val.json").read_text())
    assert set(split) == set(things)
    for q in json.loads((out / "benchmarks/cirr/cirr/captions/cap.rc2.val.json").read_text()):
        members = q["img_set"]["members"]
        assert len(set(members)) == 6 and q["reference"] in members and q["target_hard"] in members
        matches = [n for n, t in things.items() if t == things[q["target_hard"]]]
        assert matches == [q["target_hard"]]
        assert (out / "benchmarks/cirr" / split[q["reference"]]).is_file()


def test_world_is_deterministic(tmp_path):
    cfg = WorldConfig(seed=1, train_images=5, heldout_images=2, gallery_images=30, corpus_captions=20,
                      circo_queries=3, cirr_queries=2, dev_queries=2)
    a, b = tmp_path / "a", tmp_path / "b"
    assert generate(cfg, a) == generate(cfg, b)
    for rel in ["corpus.txt", "benchmarks/circo/annotations/val.json", "images/train/000003.png"]:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()


def test_mask_is_the_object_and_leaves_the_image_as_it_was():
    for seed, thing in enumerate([Thing("star", "red", "large", "left", "white"),
                                  Thing("circle", "blue", "small", "right", "black"),
                                  Thing("cross", "yellow", "large", "center", "gray")]):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        image, mask = render_with_mask(thing, 64, a, ("line", "ring"))
        assert render(thing, 64, b, ("line", "ring")).tobytes() == image.tobytes()
        assert a.random() == b.random()  # the mask took no draws: what the world renders next is unchanged
        assert mask.mode == "L" and mask.size == (64, 64)

        # without clutter, the image differs from its background exactly where the mask covers it
        image, mask = render_with_mask(thing, 64, np.random.default_rng(seed))
        m, distance = np.asarray(mask), np.abs(np.asarray(image, dtype=float) - BACKGROUNDS[thing.background]).sum(-1)
        assert m.dtype == np.uint8 and m.min() == 0 and m.max() == 255
        assert np.percentile(distance[m == 0], 99) < 60 < distance[m == 255].min()


def test_corpus_has_combinations_never_rendered(tiny_world):
    out, counts = tiny_world
    assert counts["unseen_combinations"] == 72
    pairs = pl.read_parquet(out / "pairs.parquet")
    assert pairs.height == SMALL.train_images + SMALL.heldout_images
    assert all(len(c) == SMALL.captions_per_image for c in pairs["captions"])


def test_every_pair_image_has_its_mask(tiny_world):
    out, counts = tiny_world
    files = pl.read_parquet(out / "pairs.parquet")["file"].to_list()
    assert counts["masks"] == len(files) == len(list((out / "masks").rglob("*.png")))
    for f in files:
        mask = Image.open(out / mask_file(f))
        assert mask.mode == "L" and mask.size == Image.open(out / f).size


def words_of_other_values(t: Thing) -> set[str]:
    """Colour and background words of values `t` does not have (shape and position synonyms overlap)."""
    return {v for f in ("colour", "background") for v in VALUES[f] if v != getattr(t, f)} - {*t} - {"grey"}


def test_captions_name_a_true_subset_in_varied_wording():
    rng = np.random.default_rng(0)
    t = Thing("star", "blue", "large", "left", "black")
    texts = [caption(t, rng, ("line", "ring", "ring")) for _ in range(400)]
    assert len(set(texts)) > 200
    for text in texts:  # never a wrong colour or background
        assert not set(text.replace(",", " ").replace(":", " ").split()) & words_of_other_values(t), text
    named = {word: sum(word in text for text in texts) / len(texts) for word in ("star", "blue", "black", "left")}
    assert all(0.3 < share < 1 for share in named.values()), named  # each attribute named mostly, not always
    assert sum("ring" in text or "hoop" in text or "loop" in text for text in texts) > 40  # the clutter, at times
    lengths = [len(text.split()) for text in texts]
    assert min(lengths) <= 4 and max(lengths) >= 14
    assert Counter(text.startswith("a photo of") for text in texts)[True] > 5


def test_only_training_pairs_have_mismatched_captions(tmp_path):
    cfg = WorldConfig(seed=2, train_images=300, heldout_images=100, gallery_images=30, corpus_captions=20,
                      circo_queries=2, cirr_queries=1, dev_queries=1, mismatched_captions=0.2)
    generate(cfg, tmp_path)
    pairs = pl.read_parquet(tmp_path / "pairs.parquet")
    wrong = {split: 0 for split in ("train", "heldout")}
    for row in pairs.iter_rows(named=True):
        others = words_of_other_values(Thing(*(row[f] for f in FIELDS)))
        wrong[row["split"]] += any(set(c.replace(",", " ").replace(":", " ").split()) & others for c in row["captions"])
    assert wrong["heldout"] == 0
    # about 0.2 x 300 swapped (binomial, sd 7); a swap that hits a caption that fits goes unseen
    assert 0.1 * cfg.train_images < wrong["train"] < 0.3 * cfg.train_images
    for row in pairs.iter_rows(named=True):  # the mask is the image's own object, whatever its captions say
        mask = np.asarray(Image.open(tmp_path / mask_file(row["file"])), dtype=float)
        centre = (mask.sum(0) * np.arange(mask.shape[1])).sum() / mask.sum() / mask.shape[1]
        assert abs(centre - X_CENTRE[row["position"]]) < 0.06


def test_condition_names_the_changed_attributes_only():
    rng = np.random.default_rng(0)
    ref = Thing("star", "blue", "large", "left", "black")
    assert "red" in condition(ref, ref._replace(colour="red"), rng)
    both = condition(ref, ref._replace(colour="red", background="white"), rng)
    assert "red" in both and "white" in both and "star" not in both.replace("same shape", "")
    with pytest.raises(ValueError):
        condition(ref, ref, rng)


def test_swap_changes_only_the_named_value_of_one_field():
    """A hard negative caption: the field's value swapped for another of that field, the rest word for word,
    articles mended; None where the caption names no value of the field."""
    from pipeline.data.world.captions import SYNONYMS, swap

    rng = np.random.default_rng(0)
    text = "an image of a large orange round dot to the left, over grey"
    for _ in range(50):
        shape = swap(text, "shape", rng)
        head, tail = shape.removeprefix("an image of a large orange ").split(" to the left")
        assert tail == ", over grey" and head in {w for v, ws in SYNONYMS.items() if v in
                                                  ("square", "triangle", "star", "cross") for w in ws}
        colour = swap(text, "colour", rng)
        assert colour.startswith("an image of a large ") and "orange" not in colour
        assert colour.endswith("round dot to the left, over grey")
        assert swap("an orange star", "colour", rng).startswith("a ")  # "an red star" never
        assert swap(text, "background", rng).endswith(("over white", "over black", "over brown"))
    assert swap("a picture of a box in the middle", "size", rng) is None
