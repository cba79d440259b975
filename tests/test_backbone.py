"""The real-backbone loading path, offline: a checkpoint file of a small open_clip architecture,
open_clip tags resolved from the Hugging Face cache, the errors for names, tags and no network, and the
world backbone's CLIP training (pipeline/model/contrastive.py)."""
import json
import socket
import time

import numpy as np
import open_clip
import pytest
import torch
from huggingface_hub import constants as hf_constants

from pipeline.core import io
from pipeline.core.errors import PipelineError
from pipeline.model import backbone as backbones

MODEL = "lincir-world-vit"  # registered from pipeline/model/model_configs/, small enough for a test
HUB_REPO = "timm/vit_base_patch32_clip_224.openai"  # where open_clip fetches ViT-B-32/openai


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Offline mode, an empty Hugging Face cache, and every download path made to fail loudly."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download weights")

    monkeypatch.setattr(open_clip, "download_pretrained", refuse)
    monkeypatch.setattr(open_clip.factory, "download_pretrained", refuse)
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", refuse)
    return tmp_path / "hub"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    original = backbones.create(MODEL, None)
    path = tmp_path_factory.mktemp("weights") / "random.pt"
    io.save_checkpoint(original.model, path)
    return original, path


@torch.no_grad()
def _outputs(backbone: backbones.Backbone) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    texts = backbone.tokenizer(["a red square on a beach", "a photo of $ that is blue"])
    model = backbone.model.eval()
    return model.encode_image(images), model.encode_text(texts)


def test_checkpoint_file_loads_with_identical_weights_and_outputs(checkpoint, tmp_path):
    original, path = checkpoint
    assert backbones.resolve_weights(MODEL, str(path)) == path

    loaded = backbones.create(MODEL, str(path))
    identity = tmp_path / "backbone.json"
    identity.write_text(json.dumps({"model": MODEL, "pretrained": str(path), "sha256": io.file_sha256(path)}))
    frozen = backbones.load(identity)
    expected = original.model.state_dict()
    for backbone in (loaded, frozen):
        state = backbone.model.state_dict()
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], expected[k]) for k in expected)
        for got, want in zip(_outputs(backbone), _outputs(original)):
            # a frozen model may take torch's inference fast path: equal up to float rounding
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in frozen.model.parameters()) and not frozen.model.training
    assert frozen.pretrained == str(path) and backbones.embed_dim(frozen) == 128


def test_other_weights_have_another_identity(checkpoint, tmp_path):
    _, path = checkpoint
    torch.manual_seed(1)
    io.save_checkpoint(backbones.create(MODEL, None).model, tmp_path / "other.pt")
    assert io.file_sha256(tmp_path / "other.pt") != io.file_sha256(path)


def test_unknown_model_name_names_similar_ones():
    with pytest.raises(PipelineError, match=r"'ViT-L-15' is not an open_clip model name; similar names: .*ViT-L-14"):
        backbones.create("ViT-L-15", None)


def test_unknown_tag_names_the_model_tags(no_network):
    for call in (backbones.create, backbones.resolve_weights):
        with pytest.raises(PipelineError, match=r"'no-such-tag' is neither a checkpoint file nor a tag of ViT-B-32 "
                                                r"\(tags: openai, .*laion2b_s34b_b79k"):
            call("ViT-B-32", "no-such-tag")


def test_openai_weights_need_the_quickgelu_architecture(no_network):
    with pytest.raises(PipelineError, match="trained with QuickGELU; set backbone.model to 'ViT-L-14-quickgelu'"):
        backbones.create("ViT-L-14", "openai")


def test_offline_tag_fails_fast_saying_what_to_fetch_and_where(no_network):
    for call in (backbones.resolve_weights, backbones.create):
        start = time.monotonic()
        with pytest.raises(PipelineError) as error:
            call("ViT-B-32-quickgelu", "openai")
        assert time.monotonic() - start < 5
        message = str(error.value)
        assert "HF_HUB_OFFLINE is set" in message and HUB_REPO in message
        assert "open_clip_model.safetensors" in message and str(no_network) in message
        assert "pretrained='openai'" in message and "local checkpoint file" in message


def test_an_unreachable_hub_fails_fast_without_hf_hub_offline(no_network, monkeypatch):
    """No HF_HUB_OFFLINE, but nothing answers: one refused connection, not the hub client's minute of retries."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as s:  # a port nothing listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(hf_constants, "ENDPOINT", endpoint)
    start = time.monotonic()
    with pytest.raises(PipelineError) as error:
        backbones.resolve_weights("ViT-B-32-quickgelu", "openai")
    assert time.monotonic() - start < 5
    message = str(error.value)
    assert f"the Hugging Face Hub ({endpoint}) cannot be reached" in message and "refused" in message
    assert HUB_REPO in message and "HF_HUB_OFFLINE=1" in message


def test_the_network_probe_goes_to_the_proxy_where_one_is_set(monkeypatch):
    with socket.socket() as proxy:
        proxy.bind(("127.0.0.1", 0))
        proxy.listen()
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.getsockname()[1]}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        assert io.unreachable("https://huggingface.invalid") is None  # the proxy answers; the name is its business
    assert "127.0.0.1" in io.unreachable("https://huggingface.invalid")  # the proxy is gone


def test_offline_tag_resolves_from_the_cache(no_network):
    # the layout huggingface_hub gives a fetched file: refs/main -> snapshots/<commit>/<file>
    repo = no_network / ("models--" + HUB_REPO.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    weights = repo / "snapshots" / commit / "open_clip_pytorch_model.bin"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights")
    assert backbones.resolve_weights("ViT-B-32-quickgelu", "openai") == weights


def test_unreadable_checkpoint_is_named(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError, match=f"could not load {MODEL} weights from {bad}"):
        backbones.create(MODEL, str(bad))


def test_missing_identity_file_says_which_stage_makes_it(tmp_path):
    with pytest.raises(PipelineError, match="backbone.json not found: run the backbone stage first"):
        backbones.load(tmp_path / "backbone.json")


def test_clip_training_draws_its_batches_from_the_draw_hook():
    """train_clip takes each batch's images from `draw(gen, batch_size)` when given one: with every image
    outside the drawn ones poisoned (NaN), the weights stay finite; the uniform draw reaches the poison."""
    from pipeline.model.contrastive import train_clip

    def train(draw):
        torch.manual_seed(0)
        backbone = backbones.create("lincir-world", None)
        images = torch.rand(64, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        images[16:] = float("nan")
        tokens = torch.randint(1, 49000, (64, 2, 32), generator=torch.Generator().manual_seed(0))
        train_clip(backbone.model, images, tokens, steps=2, batch_size=16, lr=1e-3, weight_decay=0.1, seed=0,
                   tokenizer=backbone.tokenizer, draw=draw)
        return all(torch.isfinite(p).all() for p in backbone.model.parameters())

    calls = []

    def first_sixteen(gen, batch_size):
        calls.append(batch_size)
        return np.arange(batch_size)

    assert train(first_sixteen) and calls == [16, 16]
    assert not train(None)


def test_clip_training_runs_channels_last_and_hands_back_the_standard_layout():
    """train_clip computes in channels-last layout (faster convolutions) but returns every weight in torch's
    standard layout, so the checkpoint and every later stage see ordinary tensors; the loss it computes in
    that layout is the standard layout's up to float rounding."""
    from pipeline.model.contrastive import train_clip

    def trained(channels_last: bool):
        torch.manual_seed(0)
        backbone = backbones.create("lincir-world", None)
        images = torch.rand(32, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        tokens = torch.randint(1, 49000, (32, 2, 32), generator=torch.Generator().manual_seed(0))
        losses = train_clip(backbone.model, images, tokens, steps=1, batch_size=16, lr=1e-3, weight_decay=0.1,
                            seed=0, tokenizer=backbone.tokenizer, channels_last=channels_last)
        return backbone.model, losses[0]

    model, loss = trained(True)
    convs = [p for p in model.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous() for p in convs)
    _, standard = trained(False)
    assert abs(loss - standard) < 1e-5 * abs(standard)


def test_adamw_holds_a_weight_seen_only_up_to_scale_at_the_equilibrium_norm():
    """equilibrium_norm, the world's text_projection start, on a toy: a weight the loss sees only normalised,
    random gradients, AdamW from 5x too large and from 5x too small; both settle at sqrt(lr·n / 2wd)."""
    from pipeline.model.contrastive import equilibrium_norm

    gen = torch.Generator().manual_seed(0)
    lr, wd = 1e-2, 0.5  # settles within a few times 1 / (2·lr·wd) = 100 steps
    for start in (5.0, 0.2):
        w = torch.nn.Parameter(torch.randn(64, 32, generator=gen))
        with torch.no_grad():
            w.mul_(start * equilibrium_norm(lr, wd, w.numel()) / w.norm())
        opt = torch.optim.AdamW([w], lr=lr, weight_decay=wd)
        for _ in range(1500):
            loss = (torch.nn.functional.normalize(w.flatten(), dim=0) * torch.randn(w.numel(), generator=gen)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert w.norm().item() == pytest.approx(equilibrium_norm(lr, wd, w.numel()), rel=0.15)


def test_negclip_loss_is_clips_without_negatives_and_adds_each_existing_negative_to_every_image():
    """negclip_loss: with no negative it is open_clip's ClipLoss; an existing negative is one more caption every
    image is told apart from (a copy of caption 3 given as the only one: the image-to-text mean rises, by ln 2
    at most), and the caption-to-image direction does not see it."""
    from open_clip.loss import ClipLoss

    from pipeline.model.contrastive import negclip_loss

    gen = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(8, 16, generator=gen), dim=-1)
    captions = torch.nn.functional.normalize(torch.randn(8, 16, generator=gen), dim=-1)
    scale = torch.tensor(10.0)
    clip = ClipLoss()(images, captions, scale)
    texts = torch.cat([captions, captions])  # every negative a copy of its caption
    none = torch.zeros(8, dtype=torch.bool)
    assert negclip_loss(images, texts, none, scale).item() == pytest.approx(clip.item(), abs=1e-6)
    one = none.clone()
    one[3] = True
    logits = scale * images @ torch.cat([captions, captions[3:4]]).T
    labels = torch.arange(8)
    expected = (torch.nn.functional.cross_entropy(logits, labels)
                + torch.nn.functional.cross_entropy(scale * captions @ images.T, labels)) / 2
    assert negclip_loss(images, texts, one, scale).item() == pytest.approx(expected.item(), abs=1e-6)
    assert clip.item() < expected.item() < clip.item() + np.log(2) / 2


def test_hard_negatives_swap_a_named_field_and_leave_none_where_nothing_is_named():
    from pipeline.model.contrastive import hard_negatives

    backbone = backbones.create("lincir-world", None)
    captions = [["a small red star on the left", "a photo of a thing"], ["a big blue box", "clip art"]]
    ids = hard_negatives(captions, ["shape"], backbone.tokenizer, seed=0)
    assert ids.shape[:2] == (2, 2)
    assert not ids[0, 1].any() and not ids[1, 1].any()  # they name no shape
    assert ids[0, 0].any() and not torch.equal(ids[0, 0], backbone.tokenizer(["a small red star on the left"])[0])
