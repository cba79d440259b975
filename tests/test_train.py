import errno

import numpy as np
import pytest
import torch

from pipeline.core.errors import PipelineError
from pipeline.methods.lincir import LincirConfig, train_phi
from pipeline.model.phi import PHI, build_phi, load_phi, save_phi
from pipeline.training.batches import batch_indices
from pipeline.training.loop import TrainConfig
from pipeline.training.resume import resumable

CAPTIONS = ["a small red circle on the left", "a big blue star on a black background", "a tiny green cross",
            "a yellow square that is large", "an orange triangle in the middle", "a purple box on gray"] * 6
MASKED = ["$ on $", "$ on $", "$", "$ that is $", "$ in $", "$ on $"] * 6


def arrays(tokenizer):
    return tokenizer(CAPTIONS).numpy().astype(np.uint16), tokenizer(MASKED).numpy().astype(np.uint16)


def params_of(phi):
    return torch.cat([p.detach().flatten() for p in phi.parameters()])


def test_phi_variants_have_the_paper_shapes():
    phi = build_phi("paper", 128, 96, 0.5)
    assert isinstance(phi[0], torch.nn.LayerNorm) and isinstance(phi[-1], torch.nn.LayerNorm)
    linears = [m for m in phi if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(128, 512), (512, 512), (512, 96)]
    official = build_phi("official", 128, 96, 0.5)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in official)
    assert sorted(PHI.names()) == ["official", "paper", "pic2word"]


def _layers(phi):
    """(type, shape or p) of each leaf module, in order."""
    return [(type(m).__name__, tuple(m.weight.shape) if hasattr(m, "weight") else getattr(m, "p", None))
            for m in phi.modules() if not list(m.children())]


def test_each_phi_architecture_is_built_from_the_widths_as_its_official_code_builds_it():
    d, w = 128, 96  # the joint embedding and the token widths (ViT-L/14: 768, 768)
    # navervision/lincir and miccunifi/SEARLE `Phi(d, 4d, w, 0.5)`: layers = Linear, GELU, Dropout (x2), Linear
    assert _layers(build_phi("official", d, w, 0.5)) == [
        ("Linear", (4 * d, d)), ("GELU", None), ("Dropout", 0.5), ("Linear", (4 * d, 4 * d)), ("GELU", None),
        ("Dropout", 0.5), ("Linear", (w, 4 * d))]
    assert sorted(build_phi("official", d, w, 0.5).state_dict()) == [f"{i}.{p}" for i in (0, 3, 6) for p in ("bias", "weight")]
    # google-research/composed_image_retrieval `IM2TEXT(embed_dim=d, middle_dim=512, output_dim=w, n_layer=2)`:
    # layers = [Linear, Dropout 0.1, ReLU] x 2, then fc_out; its state dict keys, so its checkpoints fit
    pic2word = build_phi("pic2word", d, w, 0.1)
    assert _layers(pic2word) == [("Linear", (512, d)), ("Dropout", 0.1), ("ReLU", None), ("Linear", (512, 512)),
                                 ("Dropout", 0.1), ("ReLU", None), ("Linear", (w, 512))]
    assert sorted(pic2word.state_dict()) == ["fc_out.bias", "fc_out.weight", "layers.0.0.bias", "layers.0.0.weight",
                                            "layers.1.0.bias", "layers.1.0.weight"]
    assert _layers(build_phi("pic2word", d, w, 0.1, hidden=64))[0] == ("Linear", (64, d))
    x = torch.randn(4, d)
    pic2word.eval()
    expected = pic2word.fc_out(torch.relu(pic2word.layers[1][0](torch.relu(pic2word.layers[0][0](x)))))
    assert torch.allclose(pic2word(x), expected)  # Linear -> ReLU twice, then fc_out (dropout off in eval)


def test_batches_cover_each_epoch_without_repeats():
    seen = np.concatenate([batch_indices(36, 6, seed=0, step=s) for s in range(6)])
    assert sorted(seen) == list(range(36))
    assert not np.array_equal(batch_indices(36, 6, 0, 0), batch_indices(36, 6, 0, 6))  # reshuffled next epoch


def test_training_lowers_the_smp_loss(tower, tmp_path):
    t, d, tok = tower
    ids, masked = arrays(tok)
    losses = []
    cfg = TrainConfig(steps=30, batch_size=12, lr=1e-3, dropout=0.0, checkpoint_every=100, log_every=1)
    train_phi(t, d, ids, masked, cfg, device="cpu", checkpoint=tmp_path / "c.pt", log=lambda s, v, losses=losses: losses.append(v["loss"]))
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_a_killed_run_resumes_exactly(tower, tmp_path, capsys):
    t, d, tok = tower
    ids, masked = arrays(tok)
    cfg = TrainConfig(steps=8, batch_size=12, lr=1e-3, checkpoint_every=3, log_every=1)
    straight_losses, resumed_losses = [], []
    straight = train_phi(t, d, ids, masked, cfg, device="cpu", checkpoint=tmp_path / "a.pt",
                         log=lambda s, v: straight_losses.append(v["loss"]))

    class Killed(Exception):
        pass

    def kill_at_5(step, values):
        resumed_losses.append(values["loss"])
        if step == 4:
            raise Killed

    with pytest.raises(Killed):
        train_phi(t, d, ids, masked, cfg, device="cpu", checkpoint=tmp_path / "b.pt", log=kill_at_5)
    # said before any step: a process killed from outside prints nothing afterwards
    assert f"saves its state to {tmp_path / 'b.pt'} every 3 steps" in capsys.readouterr().out
    # the resumed run logs steps 0-2 again from the checkpoint, then 3-7: each step once, no duplicate rows
    resumed_points = []
    resumed = train_phi(t, d, ids, masked, cfg, device="cpu", checkpoint=tmp_path / "b.pt",
                        log=lambda s, v: resumed_points.append((s, v["loss"])))
    assert [s for s, _ in resumed_points] == list(range(8))
    assert torch.allclose(params_of(straight), params_of(resumed), atol=1e-6)
    assert np.allclose(straight_losses, [v for _, v in resumed_points], atol=1e-6)


def test_a_checkpoint_of_other_code_or_a_damaged_one_is_not_resumed(tower, tmp_path, capsys):
    t, d, tok = tower
    ids, masked = arrays(tok)
    cfg = TrainConfig(steps=6, batch_size=12, lr=1e-3, checkpoint_every=3, log_every=1)
    ckpt = tmp_path / "c.pt"

    class Killed(Exception):
        pass

    def kill_at_4(step, values):
        if step == 4:
            raise Killed

    with pytest.raises(Killed):
        train_phi(t, d, ids, masked, cfg, device="cpu", checkpoint=ckpt, fingerprint="code-v1", log=kill_at_4)
    assert resumable(ckpt, cfg, "code-v1") is not None
    assert resumable(ckpt, cfg, "code-v2") is None  # an edited module: not the same run
    fresh = []
    train_phi(t, d, ids, masked, cfg, device="cpu", checkpoint=ckpt, fingerprint="code-v2",
              log=lambda s, v: fresh.append(s))
    assert fresh[0] == 0 and "resuming" not in capsys.readouterr().out
    ckpt.write_bytes(b"not a checkpoint")
    assert resumable(ckpt, cfg, "code-v2") is None
    assert "ignoring the unreadable checkpoint" in capsys.readouterr().out


def test_code_fingerprint_changes_with_any_imported_module(tmp_path, monkeypatch):
    from pipeline.core import stage

    before = stage.code_fingerprint()
    assert before == stage.code_fingerprint()
    fake = tmp_path / "mod.py"
    fake.write_text("x = 1\n")
    monkeypatch.setattr(stage, "ROOT", tmp_path)
    import importlib.util
    spec = importlib.util.spec_from_file_location("lincir_fp_probe", fake)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(__import__("sys").modules, "lincir_fp_probe", module)
    spec.loader.exec_module(module)
    one = stage.code_fingerprint()
    fake.write_text("x = 2\n")
    assert stage.code_fingerprint() != one


@pytest.mark.parametrize("key,value,message", [
    ("steps", 0, "train.steps must be at least 1"),
    ("steps", -5, "train.steps must be at least 1"),
    ("batch_size", 0, "train.batch_size must be at least 1"),
    ("checkpoint_every", 0, "train.checkpoint_every must be at least 1"),
    ("lr", "fast", "train.lr must be a number, not 'fast'"),
    ("lr", 0, "train.lr must be positive"),
    ("dropout", 1.0, "train.dropout must be below 1"),
    ("truncate", "yes", "train.truncate must be true or false"),
    ("stepz", 3, "unknown key train.stepz"),
])
def test_bad_train_params_are_refused_before_any_work(key, value, message):
    from pipeline.core.params import typed

    with pytest.raises(PipelineError, match=message):
        typed(TrainConfig, {key: value}, "train", complete=False)


def test_a_float_written_by_hand_is_a_float():
    from pipeline.core.params import typed

    assert typed(TrainConfig, {"lr": "1e-4"}, "train", complete=False).lr == 1e-4  # PyYAML reads 1e-4 as a string


def test_optimisations_do_not_change_the_loss_curve(tower, tmp_path):
    """Truncation and cached z_c are exact: the reference path (full context, z_c every step)
    gives the same curve on a fixed seed, to float tolerance."""
    t, d, tok = tower
    ids, masked = arrays(tok)
    lengths = (masked == masked.max(axis=1, keepdims=True)).argmax(axis=1) + 1
    curves = []
    for fast in (True, False):
        losses = []
        cfg = TrainConfig(steps=6, batch_size=12, lr=1e-3, cache_targets=fast, truncate=fast, checkpoint_every=100,
                          log_every=1)
        train_phi(t, d, ids, masked, cfg, device="cpu", checkpoint=tmp_path / f"{fast}.pt", lengths=lengths,
                  log=lambda s, v, losses=losses: losses.append(v["loss"]))
        curves.append(losses)
    assert np.allclose(curves[0], curves[1], rtol=1e-4, atol=1e-6)


def test_length_buckets_cover_each_epoch_once_and_group_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, size=4096)
    batches = [batch_indices(4096, 64, seed=0, step=s, lengths=lengths) for s in range(64)]
    assert sorted(np.concatenate(batches)) == list(range(4096))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 10  # unbucketed batches span almost the whole 5..59 range
    assert not np.array_equal(batches[0], batch_indices(4096, 64, seed=0, step=64, lengths=lengths))


def test_unknown_noise_or_variant_fails_before_any_work(tower, tmp_path):
    t, d, tok = tower
    ids, masked = arrays(tok)
    with pytest.raises(PipelineError, match="valid names"):
        train_phi(t, d, ids, masked, TrainConfig(), LincirConfig(noise="foo"), device="cpu", checkpoint=tmp_path / "x.pt")
    with pytest.raises(PipelineError, match="official, paper"):
        TrainConfig(phi_variant="mine").check()


def test_phi_checkpoint_round_trip(tmp_path):
    phi = build_phi("official", 16, 8, 0.1)
    config = {"variant": "official", "embed_dim": 16, "token_width": 8, "dropout": 0.1}
    save_phi(phi, config, tmp_path / "phi.pt")
    again = load_phi(tmp_path / "phi.pt")
    assert torch.equal(params_of(phi), params_of(again))
    # Pic2Word's IM2TEXT of a non-default width: the width is recorded and rebuilt
    phi = build_phi("pic2word", 16, 8, 0.1, hidden=24)
    save_phi(phi, {"variant": "pic2word", "embed_dim": 16, "token_width": 8, "dropout": 0.1, "hidden": 24},
             tmp_path / "p2w.pt")
    assert torch.equal(params_of(phi), params_of(load_phi(tmp_path / "p2w.pt")))


def test_validation_keeps_the_best_phi_and_logs_its_curve(tower, tmp_path):
    from pipeline.training.loop import Validation

    t, d, tok = tower
    ids, masked = arrays(tok)
    cfg = TrainConfig(steps=6, batch_size=12, lr=1e-3, dropout=0.0, checkpoint_every=100, log_every=1,
                      validate_every=2, validate_on="dev", validate_metric="R@1")
    scores = iter([1.0, 5.0, 3.0])  # at steps 2, 4, 6: the phi after 4 steps is the best
    validation = Validation(lambda phi: next(scores), every=2)
    points = []
    best = train_phi(t, d, ids, masked, cfg, device="cpu", checkpoint=tmp_path / "v.pt", validation=validation,
                     log=lambda s, v: points.append((s, v)))
    assert (validation.best_step, validation.best_score) == (4, 5.0)
    assert [(s, v["val_R@1"]) for s, v in points if "val_R@1" in v] == [(1, 1.0), (3, 5.0), (5, 3.0)]
    four = train_phi(t, d, ids, masked, TrainConfig(**{**cfg.__dict__, "steps": 4, "validate_every": 0, "patience": 0}),
                     device="cpu", checkpoint=tmp_path / "four.pt")
    assert torch.equal(params_of(best), params_of(four))


def test_supervision_kinds_change_what_phi_learns_from(tower, tmp_path):
    from pipeline.methods.lincir import SUPERVISION

    t, d, tok = tower
    ids, masked = arrays(tok)
    fixed = SUPERVISION.get("photo_of").masked(masked, tok)
    assert fixed.shape == masked.shape and (fixed == fixed[0]).all()
    assert (fixed[0] == t.placeholder_id).sum() == 1 and not np.array_equal(fixed[1], masked[1])
    assert SUPERVISION.get("smp").masked(masked, tok) is masked
    image_latents = np.random.default_rng(0).normal(size=(len(ids), d)).astype(np.float32)
    runs = {}
    for kind in ("smp", "photo_of", "image_latent"):
        s = SUPERVISION.get(kind)
        cfg = TrainConfig(steps=3, batch_size=12, lr=1e-3, checkpoint_every=100)
        runs[kind] = params_of(train_phi(t, d, ids, s.masked(masked, tok), cfg, LincirConfig(supervision=kind), device="cpu",
                                         checkpoint=tmp_path / f"{kind}.pt",
                                         sources=image_latents if s.from_images else None))
    assert not torch.equal(runs["smp"], runs["photo_of"]) and not torch.equal(runs["smp"], runs["image_latent"])
    with pytest.raises(PipelineError, match="unknown supervision 'image'"):
        LincirConfig(supervision="image").check()


def test_image_latent_supervision_feeds_phi_the_image_latent(tower):
    from pipeline.methods.lincir import smp_loss

    t, d, tok = tower
    ids, masked = arrays(tok)
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros(len(x), t.width)

    z_c, source = torch.randn(4, d), torch.randn(4, d)
    cfg = LincirConfig(noise="none")
    smp_loss(t, Probe(), torch.from_numpy(masked[:4].astype(np.int64)), z_c, cfg, torch.Generator(), source=source)
    smp_loss(t, Probe(), torch.from_numpy(masked[:4].astype(np.int64)), z_c, cfg, torch.Generator())
    assert torch.equal(seen[0], source) and torch.equal(seen[1], z_c)


def test_early_stopping_on_a_toy_curve(tower, tmp_path):
    """The curve rises, peaks after 4 steps, then falls: with patience 2 (validations every 2 steps)
    training stops after step 8, two validations past the peak, and returns the phi of step 4."""
    from pipeline.training.loop import Validation

    t, d, tok = tower
    ids, masked = arrays(tok)
    cfg = TrainConfig(steps=20, batch_size=12, lr=1e-3, dropout=0.0, checkpoint_every=100, log_every=1,
                      validate_every=2, validate_on="dev", validate_metric="R@1", patience=2)
    curve = iter([1.0, 3.0, 2.0, 2.5, 9.0, 9.0])  # steps 2, 4, 6, 8 (then it would rise again)
    validation = Validation(lambda phi: next(curve), every=2)
    losses = []
    best = train_phi(t, d, ids, masked, cfg, device="cpu", checkpoint=tmp_path / "e.pt", validation=validation,
                     log=lambda s, v: "loss" in v and losses.append(s))
    assert (validation.best_step, validation.best_score) == (4, 3.0)
    assert max(losses) == 7  # stopped after step 8 (0-based 7), never reached step 20
    four = train_phi(t, d, ids, masked, TrainConfig(**{**cfg.__dict__, "steps": 4, "validate_every": 0, "patience": 0}),
                     device="cpu", checkpoint=tmp_path / "four.pt")
    assert torch.equal(params_of(best), params_of(four))
    with pytest.raises(PipelineError, match="train.patience .* needs train.validate_every"):
        TrainConfig(validate_every=0, patience=3).check()


def test_a_diverging_training_stops_with_an_error(tower, tmp_path):
    """A large lr makes the loss NaN: the run stops there, no phi of NaN is returned (and so saved)."""
    t, d, tok = tower
    ids, masked = arrays(tok)
    cfg = TrainConfig(steps=4, batch_size=12, lr=1e6, checkpoint_every=100, log_every=1)
    with pytest.raises(PipelineError, match=r"phi training diverged: the loss is nan at step 1; lower train.lr "
                                            r"\(now 1e\+06\)"):
        train_phi(t, d, ids, masked, cfg, device="cpu", checkpoint=tmp_path / "c.pt")


def test_a_checkpoint_that_cannot_be_written_does_not_stop_training(tower, tmp_path, monkeypatch, capsys):
    from pipeline.training import loop

    t, d, tok = tower
    ids, masked = arrays(tok)
    cfg = TrainConfig(steps=4, batch_size=12, lr=1e-3, dropout=0.0, checkpoint_every=2, log_every=1)
    straight = train_phi(t, d, ids, masked, cfg, device="cpu", checkpoint=tmp_path / "a.pt")

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "b.pt.tmp"))

    monkeypatch.setattr(loop, "save_training_state", full)
    without = train_phi(t, d, ids, masked, cfg, device="cpu", checkpoint=tmp_path / "b.pt")
    assert "warning: no checkpoint at step 2: [Errno 28] No space left on device" in capsys.readouterr().out
    assert torch.equal(params_of(straight), params_of(without))


def test_a_checkpoint_write_names_its_real_cause(tmp_path, monkeypatch, capsys):
    from pipeline.core import io
    from pipeline.core.errors import one_line

    phi = build_phi("official", 8, 6, 0.5)

    def denied(path, mode="r", *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(io, "open", denied, raising=False)
    assert one_line(lambda: io.save_checkpoint(phi, tmp_path / "c.pt")) == 1
    err = capsys.readouterr().err
    assert "error: permission denied (" in err and "disk" not in err
    monkeypatch.undo()

    monkeypatch.setattr(torch, "save", lambda *a: (_ for _ in ()).throw(RuntimeError("unexpected pos 704 vs 598")))
    monkeypatch.setattr(io.shutil, "disk_usage", lambda path: shutil_usage(0))
    assert one_line(lambda: io.save_checkpoint(phi, tmp_path / "c.pt")) == 1
    assert "error: cannot write " in (err := capsys.readouterr().err) and "c.pt: the disk is full" in err
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind
    (tmp_path / "file").write_text("")
    assert one_line(lambda: io.save_checkpoint(phi, tmp_path / "file" / "c.pt")) == 1
    assert "error: a part of the path is a file, not a folder" in capsys.readouterr().err


def shutil_usage(free: int):
    import shutil

    return shutil._ntuple_diskusage(10**9, 10**9 - free, free)
