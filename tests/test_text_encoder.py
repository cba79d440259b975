import torch

from pipeline.model import backbone as backbones
from pipeline.model.text_encoder import encode, text_tower


def test_truncated_encoding_equals_open_clip_full_length(world_backbone):
    tower = text_tower(world_backbone.model, world_backbone.tokenizer)
    ids = world_backbone.tokenizer(["a red circle on the left", "a photo of a tiny blue star on a black background",
                                    "x"])
    full = world_backbone.model.encode_text(ids)
    assert torch.allclose(encode(tower, ids), full, atol=1e-5)


def test_truncated_pseudo_token_encoding_equals_full_length(world_backbone):
    tower = text_tower(world_backbone.model, world_backbone.tokenizer)
    ids = world_backbone.tokenizer(["a photo of $ that is blue", "$ sleeps on $", "a much longer caption about $ "
                                    "that keeps going for a while with many words"])
    pseudo = torch.randn(3, tower.width)
    short = encode(tower, ids, pseudo, truncate=True)
    full = encode(tower, ids, pseudo, truncate=False)
    assert torch.allclose(short, full, atol=1e-5)
    # the pseudo-token matters: another one gives another output
    assert not torch.allclose(short, encode(tower, ids, torch.randn(3, tower.width)), atol=1e-3)


def test_placeholder_id_is_looked_up_from_the_tokenizer(world_backbone):
    tower = text_tower(world_backbone.model, world_backbone.tokenizer)
    assert tower.placeholder_id == world_backbone.tokenizer(["$"])[0][1].item() == 259
    assert tower.causal


def test_truncation_on_a_real_architecture_layout():
    """ViT-B-32's text tower (77 tokens, random weights): same equality."""
    torch.manual_seed(0)
    b = backbones.freeze(backbones.create("ViT-B-32", None))
    tower = text_tower(b.model, b.tokenizer)
    ids = b.tokenizer(["a photo of $ that is red", "gray cat sleeps on a pillow"])
    pseudo = torch.randn(2, tower.width)
    assert torch.allclose(encode(tower, ids, pseudo), encode(tower, ids, pseudo, truncate=False), atol=1e-5)
    assert torch.allclose(encode(tower, ids), b.model.encode_text(ids), atol=1e-5)
