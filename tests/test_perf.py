"""`lincir perf`: every target runs at a tiny size and reports both paths and their ratio; the
reference paths compute what the optimised ones compute; the synthetic inputs look like CC3M."""
import json

import numpy as np
import pytest
import torch

from pipeline.methods.lincir import LincirConfig, smp_loss, train_phi
from pipeline.model.text_encoder import encode
from pipeline.tools.cli import main
from pipeline.tools.perf import reference, synthetic
from pipeline.tools.perf.train import bf16_peak, build_tower, text_tower_flops
from pipeline.training.batches import batch_indices, text_latents
from pipeline.training.loop import TrainConfig, new_phi

SOT, EOT = 49406, 49407


def bench(capsys, *argv) -> dict:
    assert main(["perf", *argv]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    record = json.loads(lines[-1])
    assert any(line.startswith("ratio (") for line in lines)  # the table's ratio line
    return record


def both_paths(record: dict, metric: str) -> float:
    rows = {row["path"]: row for row in record["rows"]}
    assert rows["reference"][metric] > 0 and rows["optimised"][metric] > 0
    ratio = record["ratio"][metric]
    assert ratio == pytest.approx(rows["optimised"][metric] / rows["reference"][metric])
    return ratio


@pytest.fixture(scope="module")
def world_tower():
    torch.manual_seed(0)
    return build_tower("lincir-world-vit", "cpu")


def test_perf_train_reports_both_paths(capsys):
    record = bench(capsys, "train", "--model", "lincir-world-vit", "--batch-size", "8", "--steps", "2")
    both_paths(record, "captions_per_s")
    assert record["rows"][0]["mean_tokens"] == 32  # the reference runs the whole context


def test_perf_methods_times_every_method_with_its_real_code(capsys):
    record = bench(capsys, "methods", "--model", "lincir-world-vit", "--samples", "24", "--batch-size", "8",
                   "--steps", "2", "--oti-steps", "2")
    rows = {row["path"]: row for row in record["rows"]}
    assert list(rows) == ["lincir", "pic2word", "searle", "masked_inversion"]
    assert all(row["s_per_step"] > 0 and row["s_per_sample"] > row["image_latent_s"] for row in rows.values())
    assert rows["lincir"]["image_latent_s"] == 0 and rows["pic2word"]["image_latent_s"] > 0
    assert rows["searle"]["one_off_s_per_sample"] > rows["pic2word"]["one_off_s_per_sample"]  # the inversion
    for name in ("pic2word", "searle", "masked_inversion"):
        assert record["ratio"][name] == pytest.approx(rows[name]["s_per_sample"] / rows["lincir"]["s_per_sample"])


def test_perf_keywords_reports_both_paths_and_the_same_spans(capsys):
    record = bench(capsys, "keywords", "--captions", "40")
    both_paths(record, "captions_per_s")
    assert record["same_spans"] >= 39 and "per_core" in record["ratio"]  # see pipeline/tools/perf/keywords.py


def test_perf_tokens_reports_both_paths_and_the_same_tokens(capsys):
    record = bench(capsys, "tokens", "--captions", "40")
    both_paths(record, "captions_per_s")
    assert record["same_tokens"]


def test_perf_embed_reports_both_paths_and_the_same_latents(capsys):
    record = bench(capsys, "embed", "--model", "lincir-world-vit", "--images", "4", "--batch-size", "2", "--workers", "0")
    both_paths(record, "images_per_s")
    assert record["min_cosine"] > 0.9999


def test_perf_memory_measures_every_stage_in_a_subprocess(capsys):
    assert main(["perf", "memory", "--captions", "30", "--scale", "1"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    stages = [row for row in record["rows"] if not row["path"].startswith("peak")]
    assert [row["path"] for row in stages] == ["ingest @ 30", "keywords @ 30", "tokens @ 30"]
    assert [row["captions"] for row in stages] == [30, 30, 30]
    assert all(row["max_rss_MB"] > 10 for row in stages)


def test_perf_memory_reports_the_ratio_of_the_two_sizes(capsys, monkeypatch):
    from pipeline.tools.perf import memory

    monkeypatch.setattr(memory, "corpus", lambda work, n, seed: None)
    monkeypatch.setattr(memory, "measure_stage", lambda stage, work, args: {
        "captions": int(work.name[1:]), "seconds": 1.0, "max_rss_MB": 100.0 + int(work.name[1:]) / 10,
        "tree_rss_MB": 90.0, "tree_pss_MB": 80.0, "tree_anon_MB": 50.0})
    record = bench(capsys, "memory", "--captions", "100", "--scale", "10")
    assert record["ratio"]["max_rss_MB_10x_over_1x"] == pytest.approx(200 / 110)
    assert [row["path"] for row in record["rows"]][-1] == "peak @ 1,000"


def test_reference_and_optimised_training_give_the_same_first_loss(world_tower, tmp_path):
    """The reference is fair: the official settings compute the optimised path's loss (to float rounding)."""
    tower, d, _, _ = world_tower
    ids, masked, lengths = synthetic.token_arrays(48, SOT, EOT, tower.placeholder_id, context_length=32)
    # through the training loop: same first batch when neither buckets (bucketing only reorders batches)
    cfg = TrainConfig(steps=1, batch_size=16, bucket_by_length=False, checkpoint_every=100)
    losses = {}
    for name, c in (("optimised", cfg), ("reference", reference.train_config(cfg, "cpu"))):
        train_phi(tower, d, ids, masked, c, device="cpu", checkpoint=tmp_path / f"{name}.pt", lengths=lengths,
                  log=lambda step, values, name=name: losses.setdefault(name, values["loss"]))
    assert losses["optimised"] == pytest.approx(losses["reference"], rel=1e-5)

    # the optimised path's own first batch (bucketed), z_c from its cache vs encoded at full length
    opt = TrainConfig(batch_size=16)
    idx = batch_indices(len(ids), 16, opt.seed, 0, lengths)
    rows = lambda a: torch.from_numpy(a[idx].astype(np.int64))  # noqa: E731
    values = []
    for run in ("optimised", "reference"):
        phi = new_phi(tower, d, opt, "cpu").train()
        torch.manual_seed(7)
        gen = torch.Generator().manual_seed(7)
        if run == "optimised":
            z_c = text_latents(tower, ids, 64, "cpu", None, truncate=True)[torch.as_tensor(idx)]
            values.append(smp_loss(tower, phi, rows(masked), z_c, LincirConfig(), gen, opt.truncate).item())
        else:
            values.append(reference.smp_loss(tower, phi, rows(ids), rows(masked), LincirConfig(), gen).item())
    assert values[0] == pytest.approx(values[1], rel=1e-5)


def test_length_sampler_is_cc3m_like():
    lengths = synthetic.sample_token_lengths(100_000, seed=0)
    assert abs(lengths.mean() - 13) < 0.5
    assert lengths.min() >= 4 and lengths.max() <= 77
    assert np.array_equal(lengths, synthetic.sample_token_lengths(100_000, seed=0))


def test_synthetic_token_arrays_have_open_clip_layout():
    ids, masked, masked_lengths = synthetic.token_arrays(200, SOT, EOT, 259)
    eot = (ids == EOT).argmax(1)
    assert (ids[:, 0] == SOT).all() and (ids == EOT).sum(1).tolist() == [1] * 200
    assert ((masked == 259).sum(1) >= 1).all() and ((masked == 259).sum(1) <= 4).all() and not (ids == 259).any()
    assert np.array_equal((masked == EOT).argmax(1) + 1, masked_lengths) and (masked_lengths <= eot + 1).all()


def test_synthetic_captions_are_seeded_english_of_cc3m_length():
    from pipeline.model.backbone import get_tokenizer

    captions = synthetic.caption_list(3000, seed=1)
    assert captions == synthetic.caption_list(3000, seed=1) != synthetic.caption_list(3000, seed=2)
    assert captions[:100] == next(synthetic.captions(3000, seed=1, chunk=100_000))[:100]
    words = np.mean([len(c.split()) for c in captions])
    tokens = ((get_tokenizer("ViT-B-32")(captions).numpy() == EOT).argmax(1) + 1).mean()
    assert 9 < words < 11.5 and 12 < tokens < 14
    assert len(set(captions)) > 0.99 * len(captions)


def test_flop_formula_matches_torch_flop_counter(world_tower):
    """The matmuls of forward and backward-to-inputs count as FlopCounterMode counts them; attention
    (whose CPU kernel it does not count) is the formula's only extra."""
    from torch.utils.flop_counter import FlopCounterMode

    tower, d, layers, width = world_tower
    batch, length = 6, 11
    ids = torch.randint(300, 40000, (batch, 32))
    ids[:, 3], ids[:, length - 1], ids[:, length:] = tower.placeholder_id, EOT, 0
    pseudo = torch.randn(batch, width, requires_grad=True)
    attention = layers * 4 * batch * length ** 2 * width
    with FlopCounterMode(display=False) as forward:
        out = encode(tower, ids, pseudo)
    with FlopCounterMode(display=False) as backward:
        out.sum().backward()
    for counter, is_backward in ((forward, False), (backward, True)):
        formula = text_tower_flops(layers, width, d, batch, length, is_backward)
        extra = attention * (2 if is_backward else 1)
        assert formula - extra <= counter.get_total_flops() <= formula


def test_bf16_peaks_by_device_name():
    assert bf16_peak("NVIDIA H100 80GB HBM3") == 989 and bf16_peak("NVIDIA H200") == 989
    assert bf16_peak("NVIDIA H100 PCIe") == 756 and bf16_peak("Some Future GPU") is None


@pytest.mark.parametrize("argv, argument", [
    (["cam", "--taus", "0.3", "1.5"], "--taus"),
    (["cam", "--images", "0"], "--images"),
    (["perf", "search", "--dim", "0"], "--dim"),
    (["perf", "search", "--memory-gb", "-2"], "--memory-gb"),
    (["perf", "gpu", "--budget-s", "0"], "--budget-s"),
    (["perf", "executor", "--nodes", "1", "0"], "--nodes"),
    (["perf", "train", "--steps", "-1"], "--steps"),
    (["perf", "embed", "--seed", "x"], "--seed"),
])
def test_tool_arguments_out_of_range_are_one_line_naming_them(argv, argument, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 1 and err.count("\n") == 1
    assert f"argument {argument}" in err and "must be" in err and "Traceback" not in err
