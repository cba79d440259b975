import json

import numpy as np
import pytest
import torch

from pipeline.core.errors import PipelineError
from pipeline.core.io import save_checkpoint
from pipeline.evaluation import cam_iou, metrics
from pipeline.model import cam
from pipeline.tools import cli


@pytest.fixture
def backbone(world_backbone):
    return world_backbone


def inputs(backbone, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 64, 64, generator=g)
    with torch.no_grad():
        texts = backbone.model.encode_text(backbone.tokenizer(["a photo of a star"] * n))
    return images, texts


def test_gradcam_is_a_map_per_image_in_unit_range_and_leaves_weights_alone(backbone):
    images, texts = inputs(backbone, 3)
    maps = cam.CAM.get("gradcam")(backbone.model, images, texts)
    assert maps.shape == (3, 64, 64) and not maps.requires_grad
    assert maps.min() >= 0 and maps.max() <= 1 and torch.allclose(maps.flatten(1).max(1).values, torch.ones(3))
    assert all(p.grad is None and not p.requires_grad for p in backbone.model.parameters())


def test_gradcam_of_an_image_does_not_depend_on_its_batch_or_on_the_token_layout(backbone):
    images, texts = inputs(backbone, 4)
    together = cam.gradcam(backbone.model, images, texts)
    alone = torch.cat([cam.gradcam(backbone.model, images[i:i + 1], texts[i:i + 1]) for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)

    # the same network run sequence-first (LND), as older open_clip transformers do
    transformer = backbone.model.visual.transformer
    try:
        for module in [transformer, *(block.attn for block in transformer.resblocks)]:
            module.batch_first = False
        assert torch.allclose(cam.gradcam(backbone.model, images, texts), together, atol=1e-5)
    finally:
        for module in [transformer, *(block.attn for block in transformer.resblocks)]:
            module.batch_first = True


def test_the_hook_leaves_the_forward_as_it_was(backbone):
    images, _ = inputs(backbone, 2)
    latents, tokens = cam.block_input(backbone.model.visual, images, -1)
    with torch.no_grad():
        assert torch.allclose(latents, backbone.model.encode_image(images), atol=1e-6)
    assert tokens.shape == (2, 1 + 16, 192) and tokens.requires_grad


def test_to_image_scales_each_map_and_keeps_a_flat_one_zero():
    maps = cam.to_image(torch.tensor([[0.0, 1, 2, 3], [5, 5, 5, 5]]), (2, 2), (8, 8))
    assert maps.shape == (2, 8, 8)
    assert maps[0].min() == 0 and maps[0].max() == 1 and maps[0, 0, 0] == 0 and maps[0, -1, -1] == 1
    assert (maps[1] == 0).all()


def square(top: int, left: int, side: int, size: int = 8) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    m[top:top + side, left:left + side] = True
    return m


def test_iou_per_mask():
    a = torch.stack([square(0, 0, 4), square(0, 0, 4), square(0, 0, 4), torch.zeros(8, 8, dtype=torch.bool)])
    b = torch.stack([square(0, 0, 4), square(0, 2, 4), square(4, 4, 4), torch.zeros(8, 8, dtype=torch.bool)])
    assert metrics.iou(a, b).tolist() == pytest.approx([1.0, 8 / 24, 0.0, 1.0])
    assert cam.mask_from_cam(torch.tensor([0.1, 0.3, 0.5]), 0.3).tolist() == [False, True, True]


def test_random_mask_keeps_area_and_shape_at_a_random_place():
    masks = torch.stack([square(1, 1, 3), square(5, 6, 2)])  # the second wraps around
    moved = [cam_iou.random_mask_like(masks, np.random.default_rng(s)) for s in range(20)]
    assert all(m.shape == masks.shape and (m.flatten(1).sum(1) == masks.flatten(1).sum(1)).all() for m in moved)
    assert len({m[0].numpy().tobytes() for m in moved}) > 10
    assert torch.equal(moved[3], cam_iou.random_mask_like(masks, np.random.default_rng(3)))
    # chance: one pixel placed at random falls in a fixed 4x4 square of 8x8 about 16/64 of the time
    rng = np.random.default_rng(0)
    hits = [metrics.iou(cam_iou.random_mask_like(square(0, 0, 1), rng), square(2, 2, 4)).item() > 0 for _ in range(2000)]
    assert np.mean(hits) == pytest.approx(16 / 64, abs=0.03)


def test_cam_iou_on_world_images(backbone, tiny_world):
    world, _ = tiny_world
    images, masks, prompts = cam_iou.world_items(world, "train", 6)
    assert len(images) == len(masks) == 6 and all(p.startswith("a photo of a ") for p in prompts)
    rows = cam_iou.cam_iou(backbone, images, masks, prompts, [0.2, 0.4], batch_size=4)
    assert [r["tau"] for r in rows] == [0.2, 0.4]
    assert all(0 <= r["iou"] <= 1 and 0 <= r["random_iou"] <= 1 for r in rows)
    with pytest.raises(PipelineError, match="one of each per image"):
        cam_iou.cam_iou(backbone, images, masks[:2], prompts, [0.2])


def test_lincir_cam_prints_iou_per_tau(backbone, tiny_world, tmp_path, capsys):
    world, _ = tiny_world
    save_checkpoint(backbone.model, tmp_path / "world.pt")
    identity = tmp_path / "backbone.json"
    identity.write_text(json.dumps({"model": "lincir-world-vit", "pretrained": str(tmp_path / "world.pt"), "sha256": ""}))
    assert cli.main(["cam", "--backbone", str(identity), "--world", str(world), "--images", "4",
                     "--taus", "0.3"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["cam"] == "gradcam" and row["images"] == 4 and row["tau"] == 0.3

    (world / "masks").rename(tmp_path / "moved")
    try:
        assert cli.main(["cam", "--backbone", str(identity), "--world", str(world)]) == 1
        assert "no object masks" in capsys.readouterr().err
    finally:
        (tmp_path / "moved").rename(world / "masks")


def test_gradcam_reads_a_resnet_tower_at_its_last_stage_input_and_refuses_other_towers():
    """CLIP's ModifiedResNet (the RN towers): the 4 x 4 map entering layer4 at 64 pixels, one map an image."""
    from open_clip.model import CLIP

    torch.manual_seed(0)
    model = CLIP(32, {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16},
                 {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}).eval()
    images, texts = torch.randn(3, 3, 64, 64), torch.randn(3, 32)
    latents, leaf, cells, grid = cam.feature_map(model.visual, images)
    assert grid == (4, 4) and cells(leaf).shape == (3, 16, 16 * 16)  # layer3: 4 x width planes, expansion 4
    maps = cam.gradcam(model, images, texts)
    assert maps.shape == (3, 64, 64) and maps.min() >= 0 and maps.max() == 1  # a map that points nowhere is 0
    alone = torch.cat([cam.gradcam(model, images[i:i + 1], texts[i:i + 1]) for i in range(3)])
    assert torch.allclose(maps, alone, atol=1e-5)  # eval-mode batch norm: each image its own
    with pytest.raises(PipelineError, match="not Linear"):
        cam.feature_map(torch.nn.Linear(2, 2), images)
