"""`lincir perf train`: phi training steps, optimised TrainConfig vs the reference one.

Both run `pipeline.methods.lincir.train_phi` on the same synthetic token arrays (CC3M-like
lengths) with a random-weight text tower of a real open_clip architecture (speed does not
depend on the weights; nothing is downloaded). The corpus is exactly one epoch of
warm-up + N steps, so every batch of the epoch is timed once whatever the bucketing; its
batches are drawn from a full bucketing window (`sample_window`), so the optimised path
sees the batch lengths that a run on a large corpus sees.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pipeline.core.arguments import integer
from pipeline.tools.perf.common import report

HELP = "phi training steps (captions/s): optimised TrainConfig vs the official loop's settings"
DESCRIPTION = f"""{HELP}.

Reference: train_phi with truncate, cache_targets and bucket_by_length off, fp32 on CPU /
fp16 autocast on GPU: both encoder passes at the full 77-token context every step (the
official train_phi.py). Optimised: the default TrainConfig (exact truncation to each batch's
longest EOT, z_c cached once, length buckets, bf16 autocast and fused AdamW on GPU).
Throughput counts N steps after one untimed warm-up step; the z_c cache is timed apart
(it is paid once per distinct caption, the reference pays it on every step). On GPU the
text tower's achieved TFLOP/s (forward + backward to the inputs, counted analytically) and
its fraction of the GPU's dense bf16 peak are printed, with the projected wall time of the
official schedule (20,000 steps x batch 512)."""

OFFICIAL_STEPS, OFFICIAL_BATCH = 20_000, 512
# dense bf16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name(); first match wins
BF16_PEAK = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("H800", 989.0),
             ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0)]


def bf16_peak(device_name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAK if key in device_name), None)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-32", help="open_clip architecture whose text tower is used "
                   "(random weights): ViT-B-32, ViT-L-14, ViT-H-14, ViT-bigG-14, ... (default: ViT-B-32)")
    p.add_argument("--batch-size", type=integer(1), help="captions a step (default: 512 on GPU, 64 on CPU)")
    p.add_argument("--steps", type=integer(1), help="timed steps, after one warm-up step (default: 20 on GPU, 3 on CPU)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--compile", action="store_true", help="torch.compile in the optimised path")
    p.add_argument("--repeats", type=integer(1), default=1, help="runs of each path, alternating; the median is "
                   "reported (steadier on a shared machine; default: 1)")
    p.add_argument("--seed", type=integer(0), default=0)
    p.set_defaults(func=run)


def text_tower_flops(layers: int, width: int, embed_dim: int, batch: int, seq: int, backward: bool) -> float:
    """FLOPs of a CLIP text tower on [batch, seq] tokens: forward, or backward to the inputs only
    (the frozen weights get no gradient). Per layer and token: QKV + output projections + MLP
    (ratio 4) = 24 w^2, attention scores and values 4 seq w (full, unmasked matrices); the
    backward to the inputs costs the same for the matmuls and twice for attention (dQ, dK, dP, dV).
    The projection runs on the pooled token only."""
    dense = 24 * batch * seq * width ** 2
    attention = 4 * batch * seq ** 2 * width
    head = 2 * batch * width * embed_dim
    return layers * (dense + (2 if backward else 1) * attention) + head


def build_tower(model: str, device: str):
    """(TextTower, embed_dim, layers, width) of `model`'s text tower with random weights, frozen.

    Only the text tower is built (ViT-bigG-14's whole model would be 2.5B parameters), in a
    module with the attributes pipeline.model.text_encoder.text_tower reads from an open_clip CLIP."""
    import open_clip
    from torch import nn

    from pipeline.model.backbone import check_model_name
    from pipeline.model.text_encoder import text_tower

    check_model_name(model)
    cfg = open_clip.get_model_config(model)
    tc = cfg["text_cfg"]
    try:
        from open_clip.model import _build_text_tower  # open-clip-torch is pinned in pyproject.toml

        text = _build_text_tower(cfg["embed_dim"], tc, cfg.get("quick_gelu", False))
    except Exception:
        text = None
    if text is None or not hasattr(text, "token_embedding"):  # e.g. a Hugging Face tower: the whole model
        whole = open_clip.create_model(model, pretrained=None)
        module = getattr(whole, "text", whole)
    else:
        module = nn.Module()
        for name in ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection"):
            setattr(module, name, getattr(text, name))
        module.text_pool_type, module.text_eos_id = text.pool_type, text.eos_id
        module.register_buffer("attn_mask", text.attn_mask, persistent=False)
    module = module.to(device).eval().requires_grad_(False)
    tower = text_tower(module, open_clip.get_tokenizer(model))
    return tower, cfg["embed_dim"], tc["layers"], tc["width"]


WINDOW = 64  # batches that pipeline.training.loop sorts by length together


def sample_window(ids, masked, lengths, batch: int, steps: int, seed: int):
    """A corpus of steps + 1 batches whose bucketed batches are length buckets of one bucketing window of
    WINDOW batches (the arrays' rows): the timed steps get buckets evenly spread from the shortest to the
    longest, and the warm-up step (not timed) one in between. Rows come in random order; bucketing this
    small corpus rebuilds exactly those batches, so the timed steps have the lengths that the steps of
    a full-size run have (a corpus of a few batches, bucketed, would instead put its whole long tail
    into one batch; buckets drawn at random would make a few steps' mean length a lottery)."""
    import numpy as np

    from pipeline.training.batches import batch_indices

    timed = ((np.arange(steps) + 0.5) * WINDOW / steps).astype(int)
    # which bucket, by length rank, train_phi takes for step 0: it depends on the seed only
    probe = np.repeat(np.arange(steps + 1), batch)
    rank = int(probe[batch_indices(len(probe), batch, seed, 0, probe)][0])
    lo = timed[rank - 1] + 1 if rank > 0 else 0
    hi = timed[rank] - 1 if rank < steps else WINDOW - 1
    free = [b for b in range(lo, hi + 1) if b not in timed] or [b for b in range(WINDOW) if b not in timed]
    chosen = np.sort(np.append(timed, free[len(free) // 2]))
    window = np.argsort(lengths, kind="stable").reshape(WINDOW, batch)
    rows = window[chosen].reshape(-1)
    rows = rows[np.random.default_rng([seed, 64]).permutation(len(rows))]  # a corpus arrives unsorted
    return ids[rows], masked[rows], lengths[rows]


def timed_corpus(tower, batch: int, steps: int, seed: int):
    """(ids, masked, lengths) of one epoch of warm-up + `steps` batches (`sample_window`), and the
    bucketing window's arrays they were drawn from."""
    from pipeline.tools.perf.synthetic import token_arrays

    sot, eot = 49406, 49407  # open_clip's BPE; the placeholder is looked up from the tokenizer
    context = tower.module.positional_embedding.shape[0]
    window = token_arrays(WINDOW * batch, sot, eot, tower.placeholder_id, seed=seed, context_length=context)
    return sample_window(*window, batch, steps, seed), window


def timed_work(cfg, ids, lengths, shape: tuple[int, int, int], steps: int) -> tuple[list[int], float]:
    """The context each of steps 1..N of `cfg`'s train_phi runs the text tower on, and their FLOPs:
    the masked caption forward and backward to the inputs, plus z_c's forward where it is not cached.
    shape: (layers, width, embed_dim) of the tower."""
    from pipeline.training.batches import batch_indices

    n, batch = len(ids), cfg.batch_size
    layers, width, embed_dim = shape
    bucket = lengths if cfg.bucket_by_length else None
    seqs = [int(lengths[batch_indices(n, batch, cfg.seed, s, bucket)].max()) if cfg.truncate else ids.shape[1]
            for s in range(1, steps + 1)]
    passes = (False, True) if cfg.cache_targets else (False, True, False)
    work = sum(text_tower_flops(layers, width, embed_dim, batch, L, backward) for L in seqs for backward in passes)
    return seqs, work


def timed_train(tower, embed_dim: int, ids, masked, lengths, cfg, device: str) -> dict:
    """Runs train_phi; wall seconds of the whole call, wall and CPU seconds of steps 1..N, wall seconds
    until step 0 (the warm-up: z_c cache, first step, compilation) was done, and the last step's loss."""
    import torch

    from pipeline.methods.lincir import train_phi
    from pipeline.tools.perf.common import cpu_seconds

    marks, losses = {}, {}

    def log(step, values):  # called after step 0 and after the last step; reading the loss syncs the GPU
        marks[step] = (time.perf_counter(), cpu_seconds())
        losses[step] = values["loss"]

    with tempfile.TemporaryDirectory() as tmp:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_phi(tower, embed_dim, ids, masked, cfg, device=device, checkpoint=Path(tmp) / "phi.pt",
                  lengths=lengths, log=log)
        total = time.perf_counter() - start
    (wall0, cpu0), (wall1, cpu1) = marks[0], marks[cfg.steps - 1]
    return {"steps_s": wall1 - wall0, "steps_cpu_s": cpu1 - cpu0, "total_s": total, "setup_s": wall0 - start,
            "last_loss": losses[cfg.steps - 1]}


def cache_seconds(tower, ids, cfg, device: str) -> float:
    """Wall seconds of caching z_c of every row (the optimised path's one-off pass), after a warm-up."""
    import torch

    from pipeline.training.batches import text_latents

    dtype = cfg.autocast_dtype(device)
    rows = torch.from_numpy(ids.astype("int32")).to(device) if device == "cuda" else ids
    text_latents(tower, rows[:cfg.batch_size], 4 * cfg.batch_size, device, dtype, cfg.truncate)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    text_latents(tower, rows, 4 * cfg.batch_size, device, dtype, cfg.truncate)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(args) -> int:
    import numpy as np
    import torch

    from pipeline.tools.perf import reference
    from pipeline.training.batches import PRECISIONS
    from pipeline.training.loop import TrainConfig

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    batch = args.batch_size or (OFFICIAL_BATCH if device == "cuda" else 64)
    steps = args.steps or (20 if device == "cuda" else 3)
    torch.manual_seed(args.seed)
    tower, embed_dim, layers, width = build_tower(args.model, device)
    if steps + 1 > WINDOW:
        raise SystemExit(f"lincir perf train: at most {WINDOW - 1} steps (one bucketing window)")
    n = (steps + 1) * batch  # one epoch: warm-up + timed steps
    context = tower.module.positional_embedding.shape[0]
    (ids, masked, lengths), window = timed_corpus(tower, batch, steps, args.seed)
    window_tokens = float(np.sort(window[2]).reshape(WINDOW, batch).max(1).mean())  # each bucket's longest
    common = dict(steps=steps + 1, batch_size=batch, seed=args.seed, checkpoint_every=10 ** 9,
                  log_every=steps + 1)
    optimised = TrainConfig(**common, compile=args.compile)
    ref = reference.train_config(TrainConfig(**common), device)

    paths = (("reference", ref), ("optimised", optimised))
    runs = {name: [] for name, _ in paths}
    for _ in range(max(1, args.repeats)):  # alternating: a change in the machine's load hits both paths
        for name, cfg in paths:
            runs[name].append(timed_train(tower, embed_dim, ids, masked, lengths, cfg, device))
    rows = []
    for name, cfg in paths:
        times = {k: float(np.median([r[k] for r in runs[name]])) for k in runs[name][0]}
        seqs, work = timed_work(cfg, ids, lengths, (layers, width, embed_dim), steps)
        row = {"path": name, "captions_per_s": steps * batch / times["steps_s"], "s_per_step": times["steps_s"] / steps,
               "captions_per_cpu_s": steps * batch / times["steps_cpu_s"],
               "mean_tokens": float(np.mean(seqs)), "TFLOP_per_s": work / times["steps_s"] / 1e12,
               "end_to_end_captions_per_s": (steps + 1) * batch / times["total_s"],
               "precision": next(k for k, v in PRECISIONS.items() if v == cfg.autocast_dtype(device)),
               "runs_s_per_step": [round(r["steps_s"] / steps, 3) for r in runs[name]]}
        rows.append(row)
    cache_s = cache_seconds(tower, ids, optimised, device)
    rows[1]["cache_captions_per_s"] = n / cache_s

    notes = [f"mean tokens: context the tower runs on a timed step ({context} = full context); over a whole "
             f"bucketing window of {WINDOW} batches the mean is {window_tokens:.1f}; captions average "
             f"{float(np.mean(window[2])):.1f} masked tokens",
             f"z_c cache (optimised, once per distinct caption): {n / cache_s:,.0f} captions/s; "
             f"end-to-end includes it and the warm-up step (one epoch: the cache's worst case)"]
    peak = None
    if device == "cuda":
        peak = bf16_peak(torch.cuda.get_device_name())
        for row in rows:
            row["bf16_peak_fraction"] = row["TFLOP_per_s"] * 1e12 / (peak * 1e12) if peak else None
        official = OFFICIAL_STEPS * OFFICIAL_BATCH
        for row in rows:
            row["official_schedule_min"] = official / row["captions_per_s"] / 60
        notes.append(f"official schedule ({OFFICIAL_STEPS:,} steps x {OFFICIAL_BATCH}, {args.model}, at this run's "
                     f"captions/s): optimised "
                     f"{rows[1]['official_schedule_min']:.1f} min of steps + {official / (n / cache_s) / 60:.1f} min "
                     f"to cache z_c if all {official:,} captions are distinct; reference "
                     f"{rows[0]['official_schedule_min']:.1f} min")
        notes.append(f"bf16 peak of {torch.cuda.get_device_name()}: "
                     + (f"{peak:g} TFLOP/s dense" if peak else "unknown (no fraction printed)"))
    columns = ["captions_per_s", "s_per_step", "captions_per_cpu_s", "mean_tokens", "TFLOP_per_s",
               "end_to_end_captions_per_s", "precision"]
    if device == "cuda":
        columns[5:5] = ["bf16_peak_fraction", "official_schedule_min"]
    ratio = {"captions_per_s": rows[1]["captions_per_s"] / rows[0]["captions_per_s"],
             "per_cpu_s": rows[1]["captions_per_cpu_s"] / rows[0]["captions_per_cpu_s"],
             "end_to_end": rows[1]["end_to_end_captions_per_s"] / rows[0]["end_to_end_captions_per_s"]}
    setup = {"model": args.model, "text_tower": f"{layers} layers x width {width}", "batch_size": batch,
             "steps": steps, "warmup_steps": 1, "device": device, "threads": torch.get_num_threads(),
             "compile": args.compile, "repeats": max(1, args.repeats)}
    report("train", setup, columns, rows, ratio, notes, device=device)
    return 0
