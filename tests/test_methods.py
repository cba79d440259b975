"""The zero-shot CIR methods of pipeline/methods/ on a tiny world with a random backbone:
each trains with its authors' recipe and with the controlled one and its loss goes down;
Pic2Word's augmented views and SEARLE's losses are what the official code computes; masked
inversion draws and masks what it should; the Grad-CAM finds the world's objects better than
chance."""
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from pipeline.core.errors import PipelineError
from pipeline.core.params import typed
from pipeline.data.views import crop_box, embed_views
from pipeline.evaluation.cam_iou import cam_iou, world_items
from pipeline.methods import METHODS, Run, method_config, phi_recipe
from pipeline.methods.common import nt_xent
from pipeline.methods.masked_inversion import DRAWS, FILL, candidates, masked_images, masked_latents
from pipeline.methods.searle import ema_update, nearest_concepts, oti, phrase_latents, vocabulary
from pipeline.model import backbone as backbones
from pipeline.model.phi import IM2TEXT, load_phi, save_phi
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


def _run(project, name: str, tmp_path: Path, steps: int = 24, recipe: str = "authors",
         **config) -> tuple[Run, list[float]]:
    """A Run as the train stage makes it; paths are relative to the project, like DVC's."""
    root, params = project
    backbone = backbones.load(root / "data/backbone/backbone.json")
    _, method, method_cfg = method_config({**params, "method": name})
    cfg = TrainConfig(steps=steps, batch_size=16, lr=1e-3, dropout=0.0, log_every=1, checkpoint_every=1000,
                      recipe=recipe)
    method_cfg = replace(method_cfg, **config)
    losses = []
    run = Run(backbone, text_tower(backbone.model, backbone.tokenizer), backbones.embed_dim(backbone), cfg,
              method_cfg, "cpu", tmp_path / "ckpt.pt", tokens=root / "data/pair_tokens",
              pairs=root / "data/pairs", pair_tokens=root / "data/pair_tokens", out=tmp_path,
              log=lambda step, values: losses.append(values["loss"]), recipe=phi_recipe(method, method_cfg, cfg))
    return run, losses


# a short run needs a larger step than the authors' lr 1e-4 (everything else of their recipe is kept);
# few OTI steps and concepts; the oracle masks spare a Grad-CAM pass a candidate (the CAM has its own
# test below); in the controlled recipe, one draw an image (masked_inversion.draw: once) masks one noun an image
FAST = {("pic2word", "authors"): {"lr": 1e-3}, ("searle", "authors"): {"oti_steps": 2, "lr": 1e-3, "concepts": 10},
        ("masked_inversion", "authors"): {"mask": "oracle"},
        ("pic2word", "controlled"): {}, ("searle", "controlled"): {"oti_steps": 2, "concepts": 10},
        ("masked_inversion", "controlled"): {"mask": "oracle", "draw": "once"}}


@pytest.mark.parametrize("recipe", ["authors", "controlled"])
@pytest.mark.parametrize("name", ["pic2word", "searle", "masked_inversion"])
def test_each_method_trains_and_its_loss_goes_down(project, tmp_path, name, recipe):
    run, losses = _run(project, name, tmp_path, steps=10, recipe=recipe, **FAST[name, recipe])
    phi = METHODS.get(name).train(run)
    assert len(losses) == 10 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    # the authors' phi, or LinCIR's (train.phi_variant: paper, with its LayerNorms) in the controlled recipe
    own = {"pic2word": IM2TEXT, "searle": torch.nn.Sequential, "masked_inversion": torch.nn.Sequential}[name]
    assert isinstance(phi, own if recipe == "authors" else torch.nn.Sequential)
    assert any(isinstance(m, torch.nn.LayerNorm) for m in phi.modules()) == (recipe == "controlled")
    x = torch.randn(3, run.embed_dim)
    out = phi(x)
    assert out.shape == (3, run.tower.width) and not phi.training
    # what the train stage saves loads back as the same phi (evaluate, submit and `lincir search` load it)
    save_phi(phi, run.recipe.phi_config(run.embed_dim, run.tower.width), tmp_path / "phi.pt")
    assert torch.equal(load_phi(tmp_path / "phi.pt")(x), out)


def test_pic2word_uses_its_own_optimiser_and_schedule(project, tmp_path):
    run, _ = _run(project, "pic2word", tmp_path)
    r = run.recipe
    assert (r.phi, r.hidden, r.dropout, r.lr, r.weight_decay, r.betas, r.eps) == \
        ("pic2word", 512, 0.1, 1e-4, 0.1, (0.9, 0.98), 1e-6)
    phi = IM2TEXT(8, 512, 4, 0.1)
    groups = r.optimizer(phi, fused=False).param_groups
    assert [g["weight_decay"] for g in groups] == [0.0, 0.1]  # no decay on biases
    assert all(p.ndim == 1 for p in groups[0]["params"]) and all(p.ndim == 2 for p in groups[1]["params"])
    rates = [r.lr_at(step, 100) for step in range(100)]  # 10 warm-up steps, then a half cosine to 0
    assert rates[0] == pytest.approx(1e-5) and rates[9] == pytest.approx(1e-4) and max(rates) == pytest.approx(1e-4)
    assert rates[55] == pytest.approx(0.5e-4) and rates[-1] < 1e-6
    lincir = phi_recipe(METHODS.get("lincir"), None, TrainConfig())
    assert lincir.lr_at(50, 100) is None  # constant: LinCIR's optimiser is never touched
    assert phi_recipe(METHODS.get("pic2word"), run.config, TrainConfig(recipe="controlled")) == lincir


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


def test_masked_inversion_draws_a_caption_and_a_noun_of_it_per_image(project, tmp_path):
    run, _ = _run(project, "masked_inversion", tmp_path)
    cands = candidates(run)
    for caption, noun in zip(cands.caption, cands.noun):
        assert noun in re.findall(r"\w+", caption) and noun.lower() not in run.config.skip_nouns
    assert np.allclose(np.bincount(cands.row, weights=cands.chance), 1)  # an image's chances add up to 1
    # one masked latent a distinct (image, noun): a noun in two captions of an image is masked once
    assert len(cands.masked_image) == len({(i, n.lower()) for i, n in zip(cands.image, cands.noun)}) < len(cands.noun)
    rows = torch.arange(cands.rows)
    step, reachable = DRAWS.get("step")(cands, 0)
    assert np.array_equal(reachable, np.arange(len(cands.noun)))
    draws = [step(rows, torch.Generator().manual_seed(s)) for s in range(400)]
    assert all(torch.equal(torch.as_tensor(cands.row)[d], rows) for d in draws)  # each image's own candidate
    counts = np.bincount(torch.cat(draws).numpy(), minlength=len(cands.noun)) / 400
    assert np.abs(counts - cands.chance).max() < 0.1  # drawn as often as its chance says
    assert torch.equal(step(rows, torch.Generator().manual_seed(3)), draws[3])  # seeded by the step: resumable
    once, reachable = DRAWS.get("once")(cands, 0)
    fixed = once(rows, torch.Generator().manual_seed(1))
    assert torch.equal(once(rows, torch.Generator().manual_seed(2)), fixed)  # the same for the whole run
    assert np.array_equal(reachable, fixed.numpy())  # only these are masked and embedded
    assert not torch.equal(DRAWS.get("once")(cands, 1)[0](rows, None), fixed)


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
        cands = candidates(run)
        latents, stats[mask] = masked_latents(run, cands.masked_image[:40], cands.masked_noun[:40])
        assert latents.shape == (40, run.embed_dim)
    assert stats["oracle"]["iou_with_true_masks"] == pytest.approx(1.0)
    assert 0 < stats["oracle"]["mask_area"] < 0.3 and 0 < stats["cam"]["mask_area"] < 1


def test_gradcam_finds_world_objects_better_than_chance(project, write_backbone, tmp_path):
    """Even a random-weight ViT's Grad-CAM follows the one high-contrast object; a flipped or
    shifted map would fall to chance."""
    root, params = project
    torch.manual_seed(0)
    backbone = backbones.load(write_backbone(tmp_path / "vit", model="lincir-world-vit"))
    images, masks, prompts = world_items(root / "data/world", "train", 40)
    (row,) = cam_iou(backbone, images, masks, prompts, [0.3])
    assert row["iou"] > 1.3 * row["random_iou"]


def test_nt_xent_on_a_hand_computed_case():
    """a = b = [e1, e2] at temperature 1: each of the 4 rows has its pair at cosine 1 and the two
    other rows at 0, so every row's loss is -log(e / (e + 2))."""
    eye = torch.eye(2)
    assert nt_xent(eye, eye, 1.0).item() == pytest.approx(math.log(math.e + 2) - 1)
    # the intra-modal negative counts: b's rows at cosine 1 with a's other row raise the loss
    assert nt_xent(eye, eye.flip(0), 1.0).item() > nt_xent(eye, eye, 1.0).item()
    # SEARLE's formula (utils.contrastive_loss), written out, on random vectors
    a, b, t = torch.randn(5, 7), torch.randn(5, 7), 0.25
    z = torch.nn.functional.normalize(torch.cat([a, b]), dim=1)
    sims = torch.exp(z @ z.T / t)
    positive = torch.exp((z[:5] * z[5:]).sum(1) / t).repeat(2)
    assert nt_xent(a, b, t).item() == pytest.approx(-torch.log(positive / (sims.sum(0) - sims.diag())).mean().item())


def test_searle_keeps_the_moving_average_of_the_oti_tokens(project, tmp_path):
    assert ema_update(torch.tensor(1.0), torch.tensor(0.0), 0.99).item() == pytest.approx(0.99)
    assert ema_update(ema_update(torch.tensor(1.0), torch.tensor(0.0), 0.99), torch.tensor(2.0), 0.99).item() \
        == pytest.approx(0.99 * 0.99 + 0.01 * 2)
    tokens = {}
    run, _ = _run(project, "searle", tmp_path, concepts=5)
    v = torch.from_numpy(np.load(run.pairs / "latents.npy")[:8])
    concepts = vocabulary(run)
    ranked, phrases = nearest_concepts(run, v, concepts), phrase_latents(run, concepts)
    for decay in (0.0, 0.5, 1.0):
        tokens[decay] = oti(replace(run, config=replace(run.config, oti_steps=3, ema_decay=decay)), v, ranked, phrases)
    # decay 1 keeps the initial tokens, N(0, 0.02^2) from the seed; decay 0 the last optimised ones
    start = torch.randn(8, run.tower.width, generator=torch.Generator().manual_seed(run.cfg.seed)) * 0.02
    assert torch.equal(tokens[1.0], start) and not torch.allclose(tokens[0.0], start)
    assert not torch.allclose(tokens[0.5], tokens[0.0]) and not torch.allclose(tokens[0.5], start)


def test_searle_concepts_are_each_images_nearest_by_the_template_ensemble(project, tmp_path):
    run, _ = _run(project, "searle", tmp_path, top_k=2, distill_top_k=3, concepts=6)
    concepts = vocabulary(run)
    assert len(concepts) == 6
    v = torch.from_numpy(np.load(run.pairs / "latents.npy"))
    ranked = nearest_concepts(run, v, concepts)
    assert ranked.shape == (len(v), 3)
    templates = run.config.templates
    with torch.no_grad():  # CLIP's own encode_text, not the pipeline's tower
        z = run.backbone.model.encode_text(run.backbone.tokenizer([t.format(f" {c} ") for c in concepts for t in templates]))
    words = F.normalize(F.normalize(z.float(), dim=1).view(len(concepts), len(templates), -1).mean(1), dim=1)
    sims = F.normalize(v, dim=1) @ words.T
    assert torch.equal(ranked, sims.topk(3, dim=1).indices)


def test_pic2words_augmented_views_differ_per_view_and_are_cached(project, tmp_path, monkeypatch):
    root, params = project
    views, latents = np.load(root / "data/pairs/views.npy"), np.load(root / "data/pairs/latents.npy")
    assert views.shape == (len(latents), params["pairs"]["views"], latents.shape[1])
    # RandomResizedCrop falls back to the whole image when 10 draws miss (often on a square image, ~14 %)
    distinct = [len({row.tobytes() for row in image}) for image in views]
    assert np.mean(distinct) > 0.75 * views.shape[1] and min(distinct) >= 2
    plain = np.isclose(views, latents[:, None], atol=1e-5).all(-1)
    assert plain.mean() < 0.3 and not plain.all(0).any()  # no view index is the plain image throughout
    from PIL import Image
    image = Image.new("RGB", (64, 48))
    boxes = {crop_box(image, (0.9, 1.0), 0, 3, v) for v in range(20)}
    assert len(boxes) > 5 and all(0.9 * 64 * 48 - 64 <= h * w <= 64 * 48 for _, _, h, w in boxes)
    assert crop_box(image, (0.9, 1.0), 0, 3, 1) == crop_box(image, (0.9, 1.0), 0, 3, 1)  # seeded: the same crops
    backbone = backbones.load(root / "data/backbone/backbone.json")
    import pyarrow.parquet as pq
    paths = [Path(p) for p in pq.read_table(root / "data/pairs/images.parquet")["path"].to_pylist()[:3]]
    again = embed_views(backbone.model, backbone.preprocess, paths, views=views.shape[1],
                        scale=params["pairs"]["view_scale"], seed=params["pairs"]["view_seed"], batch_size=8,
                        num_workers=0, device="cpu")
    assert np.allclose(again, views[:3], atol=1e-5)  # the pairs stage's cache is these crops' latents
    run, losses = _run(project, "pic2word", tmp_path, steps=3)

    def no_image_encoder(*args, **kwargs):
        raise AssertionError("Pic2Word encoded an image while training: its views are cached")

    monkeypatch.setattr(run.backbone.model, "encode_image", no_image_encoder)
    METHODS.get("pic2word").train(run)
    assert len(losses) == 3
