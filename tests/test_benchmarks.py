"""Benchmark readers on the real annotation files, the GeneCIS crop, and the image check."""
import json

import numpy as np
import pytest
from PIL import Image
from placeholder_images import ANNOTATIONS, linked_root, write_circo_image_info, write_placeholder_images

from pipeline.core.errors import PipelineError
from pipeline.data.images import ImageSource, MissingImagesError, crop_to_box, open_image, pad_to_square
from pipeline.evaluation.benchmarks import Benchmark, check_images, load_benchmark
from pipeline.evaluation.benchmarks.fashioniq import condition_texts

needs_annotations = pytest.mark.skipif(
    not ANNOTATIONS.is_dir(), reason=f"official annotation files not found at {ANNOTATIONS}"
)
OBJECT_TASKS = ["change_object", "focus_object"]  # the GeneCIS files shipped in shared/


@pytest.fixture(scope="module")
def circo_root(tmp_path_factory):
    root = linked_root(ANNOTATIONS / "CIRCO", tmp_path_factory.mktemp("circo") / "CIRCO")
    write_circo_image_info(root, extra_ids=range(1, 301))
    return root


# ---- the real annotation folders: counts from their README -------------------------------
@needs_annotations
def test_cirr_val_and_test1():
    val = load_benchmark("cirr", ANNOTATIONS / "CIRR", "val")
    assert (len(val.queries), len(val.gallery)) == (4181, 2297)
    assert val.exclude_reference and val.depth == 50 and val.candidate_depth == 3
    raw = json.loads((ANNOTATIONS / "CIRR/cirr/captions/cap.rc2.val.json").read_text())[0]
    q = val.queries[0]
    assert q.id == str(raw["pairid"]) and q.captions == (raw["caption"],) and q.targets == (raw["target_hard"],)
    assert q.candidates == tuple(m for m in raw["img_set"]["members"] if m != raw["reference"])
    assert len(q.candidates) == 5 and q.targets[0] in q.candidates
    assert val.images[q.reference].path == ANNOTATIONS / "CIRR" / "dev" / f"{q.reference}.png"

    test = load_benchmark("cirr", ANNOTATIONS / "CIRR", "test1")
    assert (len(test.queries), len(test.gallery)) == (4148, 2315)
    assert not test.has_targets and all(len(q.candidates) == 5 for q in test.queries)


@needs_annotations
def test_circo_val_uses_relative_caption_and_puts_the_target_first(circo_root):
    val = load_benchmark("circo", circo_root, "val")
    assert len(val.queries) == 220 and not val.exclude_reference
    raw = json.loads((circo_root / "annotations/val.json").read_text())
    for q, entry in zip(val.queries, raw):
        assert q.captions == (entry["relative_caption"],)  # no shared_concept, as SEARLE/LinCIR
        assert q.targets[0] == str(entry["target_img_id"])
        assert sorted(q.targets) == sorted(str(g) for g in entry["gt_img_ids"])
        assert q.aspects == tuple(entry["semantic_aspects"])
    some = val.queries[0].reference
    assert val.images[some].path == circo_root / "COCO2017_unlabeled/unlabeled2017" / f"{int(some):012d}.jpg"
    test = load_benchmark("circo", circo_root, "test")
    assert len(test.queries) == 800 and not test.has_targets


@needs_annotations
def test_fashioniq_val_one_gallery_per_category():
    bench = load_benchmark("fashioniq", ANNOTATIONS / "FashionIQ", "val")
    counts = {c: sum(q.group == c for q in bench.queries) for c in ("dress", "shirt", "toptee")}
    assert counts == {"dress": 2017, "shirt": 2038, "toptee": 1961}
    assert {c: len(g) for c, g in bench.galleries.items()} == {"dress": 3817, "shirt": 6346, "toptee": 5373}
    shirt = next(q for q in bench.queries if q.group == "shirt")
    assert bench.gallery_for(shirt) is bench.galleries["shirt"]
    assert all(q.targets[0] in set(bench.galleries[q.group]) for q in bench.queries[:100])
    assert len(bench.images) == 3817 + 6346 + 5373 - 121  # shirt and toptee share 121 images
    only = load_benchmark("fashioniq", ANNOTATIONS / "FashionIQ", "val", groups=["toptee"])
    assert len(only.queries) == 1961 and list(only.galleries) == ["toptee"]


def test_fashioniq_captions_are_cleaned_and_joined_both_ways():
    assert condition_texts([" yello and more flowing", "short and black."]) == (
        "yello and more flowing and short and black",
        "short and black and yello and more flowing",
    )
    assert condition_texts(["is red?", ", has sleeves ,"]) == ("is red and has sleeves", "has sleeves and is red")


@needs_annotations
def test_genecis_object_tasks_rank_target_plus_gallery():
    bench = load_benchmark("genecis", ANNOTATIONS / "GeneCIS", "val", groups=OBJECT_TASKS)
    assert {t: sum(q.group == t for q in bench.queries) for t in OBJECT_TASKS} == {t: 1960 for t in OBJECT_TASKS}
    assert bench.gallery == [] and not bench.ranks_gallery
    raw = json.loads((ANNOTATIONS / "GeneCIS/change_object.json").read_text())
    for q, entry in zip(bench.queries, raw):
        ids = [entry["target"]["val_image_id"]] + [g["val_image_id"] for g in entry["gallery"]]
        assert q.candidates == tuple(dict.fromkeys(f"coco-{i}" for i in ids))  # official order, target first
        assert q.captions == (entry["condition"],) and q.targets == (f"coco-{ids[0]}",)
    repeated = [q for q, e in zip(bench.queries, raw) if len(q.candidates) < len(e["gallery"]) + 1]
    assert [q.id for q in repeated] == ["change_object-19"]  # its target appears again in its gallery
    name = bench.queries[0].reference
    assert bench.images[name].path == ANNOTATIONS / "GeneCIS/val2017" / f"{int(name[5:]):012d}.jpg"


def test_genecis_attribute_tasks_read_visual_genome_boxes(tmp_path):
    entry = {
        "condition": "red",
        "reference": {"image_id": 10, "instance_bbox": [1, 2, 3, 4]},
        "target": {"image_id": 11, "instance_bbox": [0, 0, 5, 5]},
        "gallery": [{"image_id": 10, "instance_bbox": [4, 4, 2, 2]}, {"image_id": 12, "instance_bbox": [1.5, 0, 2, 2]}],
    }
    (tmp_path / "focus_attribute.json").write_text(json.dumps([entry]))
    bench = load_benchmark("genecis", tmp_path, "val", groups=["focus_attribute"])
    q = bench.queries[0]
    assert q.id == "focus_attribute-0" and q.reference == "vg-10-1_2_3_4"
    assert q.candidates == ("vg-11-0_0_5_5", "vg-10-4_4_2_2", "vg-12-1.5_0_2_2")
    source = bench.images["vg-10-4_4_2_2"]
    assert source.path == tmp_path / "VG_100K/10.jpg" and source.box == (4.0, 4.0, 2.0, 2.0)


# ---- the GeneCIS crop --------------------------------------------------------------------
def _coded_image(width, height):
    """Each pixel's red = x and green = y, so a crop tells where it was cut."""
    image = Image.new("RGB", (width, height))
    image.putdata([(x, y, 7) for y in range(height) for x in range(width)])
    return image


def test_crop_grows_the_box_towards_the_top_left_and_pads_to_square():
    # box x=50 y=40 w=20 h=10: left = 50 - 14 = 36, top = 40 - 7 = 33,
    # right = 36 + 1.7*20 = 70, bottom = 33 + 1.7*10 = 50: a 34 x 17 crop, padded to 34 x 34
    crop = crop_to_box(_coded_image(100, 80), [50, 40, 20, 10])
    assert crop.size == (34, 34)
    offset = (34 - 17) // 2
    assert crop.getpixel((0, offset)) == (36, 33, 7)
    assert crop.getpixel((33, offset + 16)) == (69, 49, 7)
    assert crop.getpixel((5, offset - 1)) == (0, 0, 0) and crop.getpixel((5, offset + 17)) == (0, 0, 0)


def test_crop_clipped_at_the_image_edges():
    # left = max(0, 5 - 14) = 0, so right = 0 + 34 = 34: the box's own right edge (25) is passed
    crop = crop_to_box(_coded_image(100, 80), [5, 5, 20, 10])
    assert crop.size == (34, 34) and crop.getpixel((33, (34 - 17) // 2)) == (33, 0, 7)
    # right and bottom are clipped at the image size
    crop = crop_to_box(_coded_image(40, 30), [30, 20, 20, 20])
    assert crop.size == (24, 24) and crop.getpixel((0, 0)) == (16, 6, 7)


def test_pad_to_square_keeps_grayscale_and_square_images():
    gray = pad_to_square(Image.new("L", (2, 6), 255))
    assert gray.mode == "L" and gray.size == (6, 6)
    assert gray.getpixel((0, 0)) == 0 and gray.getpixel((2, 0)) == 255
    square = Image.new("RGB", (5, 5))
    assert pad_to_square(square) is square


# ---- check_images and open_image -----------------------------------------------------------
@needs_annotations
def test_check_images_passes_then_names_missing_and_unreadable_files(tmp_path):
    root = linked_root(ANNOTATIONS / "CIRR", tmp_path / "CIRR")
    bench = load_benchmark("cirr", root, "val")
    assert write_placeholder_images(bench, tmp_path / "store") == 2297
    check_images(bench)

    gone = [bench.images[name].path for name in bench.gallery[:3]]
    for path in gone:
        path.unlink()
    broken = bench.images[bench.gallery[3]].path
    broken.unlink()
    broken.write_bytes(b"not an image")
    with pytest.raises(MissingImagesError) as error:
        check_images(bench)
    message = str(error.value)
    assert "4 of 2297 image files are missing or unreadable" in message
    assert all(f"{path} (missing)" in message for path in gone)
    assert f"{broken} (unreadable" in message
    assert len(error.value.problems) == 4


def test_check_images_lists_at_most_ten_but_counts_all(tmp_path):
    (tmp_path / "focus_object.json").write_text(json.dumps([
        {"condition": "cat", "reference": {"val_image_id": 1}, "target": {"val_image_id": 2},
         "gallery": [{"val_image_id": i} for i in range(3, 15)]}
    ]))
    bench = load_benchmark("genecis", tmp_path, "val", groups=["focus_object"])
    with pytest.raises(MissingImagesError, match=r"14 of 14 image files") as error:
        check_images(bench)
    assert str(tmp_path / "val2017/000000000001.jpg") in str(error.value)
    assert "... and 4 more" in str(error.value) and len(error.value.problems) == 14


def test_open_image_crops_boxes(tmp_path):
    _coded_image(100, 80).save(tmp_path / "10.png")
    entry = {"condition": "red", "reference": {"image_id": 10, "instance_bbox": [50, 40, 20, 10]},
             "target": {"image_id": 10, "instance_bbox": [0, 0, 10, 10]}, "gallery": []}
    (tmp_path / "change_attribute.json").write_text(json.dumps([entry]))
    bench = load_benchmark("genecis", tmp_path, "val", groups=["change_attribute"])
    source = bench.images[bench.queries[0].reference]
    (tmp_path / "VG_100K").mkdir()
    (tmp_path / "VG_100K/10.jpg").symlink_to(tmp_path / "10.png")  # PIL reads by content
    assert open_image(source).size == (34, 34)
    with pytest.raises(PipelineError, match="cannot read image"):
        open_image(ImageSource(tmp_path / "nothing.jpg"))


# ---- bad input -------------------------------------------------------------------------------
def test_bad_names_and_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="valid names: circo, cirr, fashioniq, genecis"):
        load_benchmark("cir", tmp_path, "val")
    with pytest.raises(PipelineError, match="cirr has no groups"):
        load_benchmark("cirr", tmp_path, "val", groups=["dress"])
    with pytest.raises(PipelineError, match="one evaluation split, 'val'"):
        load_benchmark("genecis", tmp_path, "test")
    with pytest.raises(PipelineError, match="FashionIQ categories are dress, shirt, toptee"):
        load_benchmark("fashioniq", tmp_path, "val", groups=["shoes"])
    with pytest.raises(PipelineError, match="task files not found.*change_attribute.json.*--groups"):
        load_benchmark("genecis", tmp_path, "val")
    with pytest.raises(PipelineError, match="image split not found: .*split.rc2.val.json"):
        load_benchmark("cirr", tmp_path, "val")

    (tmp_path / "focus_object.json").write_text(json.dumps([{"condition": "cat", "reference": {"val_image_id": 1}}]))
    with pytest.raises(PipelineError, match=r"focus_object.json: entry 0 has no 'gallery'"):
        load_benchmark("genecis", tmp_path, "val", groups=["focus_object"])
    (tmp_path / "focus_object.json").write_text("{not json")
    with pytest.raises(PipelineError, match=r"focus_object.json: not valid JSON"):
        load_benchmark("genecis", tmp_path, "val", groups=["focus_object"])


@needs_annotations
def test_circo_ground_truth_outside_the_gallery_names_the_query(tmp_path):
    root = linked_root(ANNOTATIONS / "CIRCO", tmp_path / "CIRCO")
    ids = write_circo_image_info(root)
    info = root / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"
    first = json.loads((root / "annotations/val.json").read_text())[0]
    kept = [i for i in ids if i != first["gt_img_ids"][-1]]
    info.write_text(json.dumps({"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in kept]}))
    with pytest.raises(PipelineError, match=rf"query 0 names images not in .*\['{first['gt_img_ids'][-1]}'\]"):
        load_benchmark("circo", root, "val")


@needs_annotations
@pytest.mark.parametrize(
    "kind, folder, split, groups",
    [
        ("circo", "CIRCO", "test", None),
        ("fashioniq", "FashionIQ", "val", ["dress"]),
        ("genecis", "GeneCIS", "val", OBJECT_TASKS),
    ],
)
def test_placeholder_roots_satisfy_check_images(tmp_path, kind, folder, split, groups):
    root = linked_root(ANNOTATIONS / folder, tmp_path / folder)
    if kind == "circo":
        write_circo_image_info(root)
    bench = load_benchmark(kind, root, split, groups=groups)
    with pytest.raises(MissingImagesError, match=f"{len({s.path for s in bench.images.values()})} of "):
        check_images(bench)
    write_placeholder_images(bench, tmp_path / "store")
    check_images(bench)
    assert open_image(next(iter(bench.images.values()))).size == (8, 8)


# ---- image bodies, not only headers ----------------------------------------------------------
def _genecis_with(tmp_path, write) -> Benchmark:
    """A one-query GeneCIS object task whose 14 COCO images are fine JPEGs; `write(path)` spoils #1."""
    (tmp_path / "focus_object.json").write_text(json.dumps([
        {"condition": "cat", "reference": {"val_image_id": 1}, "target": {"val_image_id": 2},
         "gallery": [{"val_image_id": i} for i in range(3, 15)]}]))
    (tmp_path / "val2017").mkdir()
    for i in range(1, 15):
        _coded_image(40, 30).save(tmp_path / f"val2017/{i:012d}.jpg")
    write(tmp_path / "val2017/000000000001.jpg")
    return load_benchmark("genecis", tmp_path, "val", groups=["focus_object"])


def _truncated_jpeg(path):
    path.write_bytes(path.read_bytes()[:-200])


def _truncated_png(path):
    _coded_image(40, 30).save(path.with_suffix(".png"))
    path.write_bytes(path.with_suffix(".png").read_bytes()[:-40])


def _bomb(path):
    Image.new("1", (14_000, 14_000)).save(path, "PNG")  # 196 Mpixel: over twice PIL's bomb limit


@pytest.mark.parametrize("spoil,why", [(_truncated_jpeg, "Truncated"), (_truncated_png, "unreadable"),
                                       (_bomb, "DecompressionBombError")])
def test_check_images_decodes_every_body_before_model_work(tmp_path, spoil, why):
    bench = _genecis_with(tmp_path, spoil)
    with pytest.raises(MissingImagesError, match="1 of 14 image files") as error:
        check_images(bench)
    assert why in str(error.value) and "000000000001.jpg (unreadable" in str(error.value)


def test_a_decompression_bomb_is_a_message_from_open_image(tmp_path):
    _bomb(tmp_path / "big.png")
    with pytest.raises(PipelineError, match="DecompressionBombError"):
        open_image(ImageSource(tmp_path / "big.png"))


def test_16_bit_greyscale_keeps_its_contrast(tmp_path):
    import numpy as np

    from pipeline.data.images import to_rgb

    ramp = (np.arange(256, dtype=np.uint16)[None, :].repeat(8, 0) * 257)  # 0..65535
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    with Image.open(tmp_path / "ramp16.png") as image:
        rgb = np.asarray(to_rgb(image))
    assert rgb.shape == (8, 256, 3)
    assert np.abs(rgb[0, :, 0].astype(int) - np.arange(256)).max() <= 1  # not 99 % white
    assert (rgb == 255).mean() < 0.01


def test_circo_file_names_that_leave_the_root_are_refused(tmp_path):
    root = tmp_path / "CIRCO"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations/val.json").write_text("[]")
    for bad in ("../../etc/passwd", "/etc/passwd"):
        write_circo_image_info(root)
        info = root / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"
        info.write_text(json.dumps({"images": [{"id": 1, "file_name": bad}]}))
        with pytest.raises(PipelineError, match="absolute or leaves"):
            load_benchmark("circo", root, "val")


@pytest.mark.parametrize("kind", ["circo", "cirr"])
def test_per_query_scores_average_to_the_official_score(tiny_world, kind):
    world, _ = tiny_world
    bench = load_benchmark(kind, world / "benchmarks" / kind, "val")
    rng = np.random.default_rng(0)
    rankings = {q.id: list(rng.permutation(bench.gallery_for(q))[:50]) for q in bench.queries}
    first = bench.queries[0]
    rankings[first.id] = [first.targets[0], *[n for n in rankings[first.id] if n != first.targets[0]][:49]]
    candidates = {q.id: list(rng.permutation(q.candidates)) for q in bench.queries} if first.candidates else None
    per_query = bench.per_query(rankings, candidates)
    scores = bench.score(rankings, candidates)
    assert set(per_query) == set(scores)
    for metric, values in per_query.items():
        assert len(values) == len(bench.queries)
        assert np.mean(values) == pytest.approx(scores[metric])
    assert per_query["R@5" if kind == "circo" else "R@1"][0] == 100.0  # the planted hit, alone
