"""The zero-shot CIR methods of pipeline/methods/ on a tiny world with a random backbone:
each trains and its loss goes down; masked inversion masks what it should, in the text and
in the image; the Grad-CAM finds the world's objects better than chance."""
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.core.errors import PipelineError
from pipeline.core.params import typed
from pipeline.evaluation.cam_iou import cam_iou, world_items
from pipeline.methods import METHODS, Run, method_config
from pipeline.methods.masked_inversion import FILL, draw_pairs, mask_noun, masked_images
from pipeline.model import backbone as backbones
from pipeline.model.text_encoder import text_tower
from pipeline.training.loop import TrainConfig

REPO = Path(__file__).resolve().parents[1]
TINY_WORLD = {"train_images": 40, "heldout_images": 8, "gallery_images": 60, "corpus_captions": 40,
              "circo_queries": 2, "cirr_queries": 2, "dev_queries": 2}


@pytest.fixture(autouse=True)
def in_project(project, monkeypatch):
    monkeypatch.chdir(project[0])


@pytest.fixture(scope="module")
def project(tmp_path_factory, stage, write_backbone):
    """A tiny world, a random frozen backbone, and the pairs and pair_tokens stages' outputs."""
    root = tmp_path_factory.mktemp("methods")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["world"].update(TINY_WORLD)
    params["keywords"]["n_process"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert stage(root, "world") == 0
    torch.manual_seed(0)
    write_backbone(root / "data/backbone", params["backbone"]["model"])
    assert stage(root, "pairs") == 0
    assert stage(root, "pair_tokens") == 0
    return root, params


def _run(project, name: str, tmp_path: Path, steps: int = 24, **config) -> tuple[Run, list[float]]:
    """A Run as the train stage makes it; paths are relative to the project, like DVC's."""
    root, params = project
    backbone = backbones.load(root / "data/backbone/backbone.json")
    _, _, method_cfg = method_config({**params, "method": name})
    cfg = TrainConfig(steps=steps, batch_size=16, lr=1e-3, dropout=0.0, log_every=1, checkpoint_every=1000)
    losses = []
    run = Run(backbone, text_tower(backbone.model, backbone.tokenizer), backbones.embed_dim(backbone), cfg,
              replace(method_cfg, **config), "cpu", tmp_path / "ckpt.pt", tokens=root / "data/pair_tokens",
              pairs=root / "data/pairs", pair_tokens=root / "data/pair_tokens", out=tmp_path, log=lambda step, values: losses.append(values["loss"]))
    return run, losses


@pytest.mark.parametrize("name", ["pic2word", "searle", "masked_inversion"])
def test_each_method_trains_and_its_loss_goes_down(project, tmp_path, name):
    config = {"oti_steps": 5} if name == "searle" else {}
    run, losses = _run(project, name, tmp_path, **config)
    phi = METHODS.get(name).train(run)
    assert len(losses) == 24 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    out = phi(torch.zeros(2, run.embed_dim))
    assert out.shape == (2, run.tower.width) and not phi.training


def test_lincir_through_the_registry_trains_on_the_tokens(project, tmp_path):
    run, losses = _run(project, "lincir", tmp_path, steps=6)
    METHODS.get("lincir").train(run)
    assert len(losses) == 6 and all(np.isfinite(losses))


def test_every_method_is_typed_from_its_own_section(project):
    _, params = project
    for name in METHODS.names():
        assert method_config({**params, "method": name})[0] == name
    with pytest.raises(PipelineError, match="unknown method 'pic2wrd'.*pic2word"):
        method_config({**params, "method": "pic2wrd"})
    with pytest.raises(PipelineError, match="masked_inversion.query"):
        typed(METHODS.get("masked_inversion").config, {"query": "a photo of $"}, "masked_inversion", complete=False)
    with pytest.raises(PipelineError, match="unknown masked_inversion.mask 'perfect'"):
        typed(METHODS.get("masked_inversion").config, {"mask": "perfect"}, "masked_inversion", complete=False)


def test_the_masked_noun_is_gone_from_the_text(project, tmp_path):
    assert mask_noun("a red triangle next to a ring", (6, 14)) == "a red next to a ring"
    run, _ = _run(project, "masked_inversion", tmp_path)
    pairs = draw_pairs(run, seed=0)
    assert len(pairs.image) == len(set(pairs.image.tolist())) > 0  # one row an image
    for caption, noun, masked in zip(pairs.caption, pairs.noun, pairs.masked_caption):
        words = re.findall(r"\w+", caption)
        assert noun in words and words.count(noun) == re.findall(r"\w+", masked).count(noun) + 1
        assert " ," not in masked and noun not in run.config.skip_nouns
    assert draw_pairs(run, seed=0).noun == pairs.noun and draw_pairs(run, seed=1).noun != pairs.noun


def test_the_masked_region_and_only_it_changes(project, tmp_path):
    images = torch.randn(3, 3, 8, 8)
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[:, 2:5, 3:6] = True
    for fill in FILL.names():
        out = masked_images(images, masks, fill)
        assert torch.equal(out[:, :, ~masks[0]], images[:, :, ~masks[0]])
        assert not torch.equal(out[:, :, masks[0]], images[:, :, masks[0]])
        assert torch.allclose(out[:, :, masks[0]], out[:, :, masks[0]][..., :1].expand(-1, -1, 9))  # one colour


def test_oracle_masks_are_the_objects_and_cam_masks_are_smaller_than_the_image(project, tmp_path):
    root, _ = project
    stats = {}
    for mask in ("oracle", "cam"):
        run, _ = _run(project, "masked_inversion", tmp_path, mask=mask)
        from pipeline.methods.masked_inversion import masked_latents
        latents, stats[mask] = masked_latents(run, draw_pairs(run, 0))
        assert latents.shape == (len(draw_pairs(run, 0).image), run.embed_dim)
    assert stats["oracle"]["iou_with_true_masks"] == pytest.approx(1.0)
    assert 0 < stats["oracle"]["mask_area"] < 0.3 and 0 < stats["cam"]["mask_area"] < 1


def test_gradcam_finds_world_objects_better_than_chance(project):
    """Even a random-weight ViT's Grad-CAM follows the one high-contrast object; a flipped or
    shifted map would fall to chance."""
    root, params = project
    backbone = backbones.load(root / "data/backbone/backbone.json")
    images, masks, prompts = world_items(root / "data/world", "train", 40)
    (row,) = cam_iou(backbone, images, masks, prompts, [0.3])
    assert row["iou"] > 1.3 * row["random_iou"]
