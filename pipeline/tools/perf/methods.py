"""`lincir perf methods`: the training cost of every method of pipeline/methods/ side by side.

Each method trains with its real code (`METHODS[name].train`) on the same synthetic pairs
(CC3M-like captions tagged by spaCy, synthetic photos) with a random-weight open_clip model of
a real architecture: speed does not depend on the weights, and nothing is downloaded.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from pipeline.core.arguments import integer
from pipeline.tools.perf.common import report

HELP = "training cost of each method (LinCIR, Pic2Word, SEARLE, masked inversion), and the ratio to LinCIR"
DESCRIPTION = f"""{HELP}.

Per method: its one-off work per training sample (LinCIR: caching z_c of a caption; SEARLE:
the per-image textual inversion; masked inversion: the CAM, masking and encoding of the
masked image), the seconds of a training step, and s_per_sample = one-off + step / batch
(+ the image latent every image method needs, computed once by the pairs stage; Pic2Word's
augmented views, `pairs.views` of them, cost that many image latents more, which this tool
does not embed: its steps cost the same with one view). Each method trains with its authors'
phi and optimiser (`train.recipe: authors`). The ratio
is s_per_sample against LinCIR's: what a run that sees each sample once costs. The paper
reports LinCIR 6.0x faster than Pic2Word and 8.4x than SEARLE with ViT-L (16.4x / 17.6x with
ViT-G), on real data with its images decoded and encoded in every step."""

METHOD_NAMES = ("lincir", "pic2word", "searle", "masked_inversion")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("methods", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-32", help="open_clip architecture, random weights (default: ViT-B-32)")
    p.add_argument("--samples", type=integer(1), help="pairs (images and captions; default: 512 on GPU, 128 on CPU)")
    p.add_argument("--batch-size", type=integer(1), help="default: 512 on GPU, 32 on CPU")
    p.add_argument("--steps", type=integer(1), help="timed steps after one warm-up step (default: 10 on GPU, 3 on CPU)")
    p.add_argument("--oti-steps", type=integer(1), help="SEARLE's inversion steps an image (default: params.yaml's "
                   "default, 350, the official code's)")
    p.add_argument("--methods", nargs="+", default=list(METHOD_NAMES), choices=METHOD_NAMES)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=integer(0), default=0)
    p.set_defaults(func=run)


def prepare_pairs(folder: Path, backbone, n: int, device: str, seed: int) -> float:
    """Writes a pairs folder as the pairs stage does (one caption an image); returns the seconds
    of computing the image latents."""
    import numpy as np

    from pipeline.data.images import ImageSource
    from pipeline.data.keywords import KeywordsConfig, tag_captions
    from pipeline.data.pairs import PairsConfig, write_captions, write_images
    from pipeline.data.tokens import tokenize_captions
    from pipeline.evaluation.gallery import embed_images
    from pipeline.tools.perf.synthetic import caption_list
    from pipeline.tools.perf.synthetic import write_images as synthetic_images

    size = backbone.preprocess.transforms[0].size
    side = size if isinstance(size, int) else size[0]
    side = max(side, 224)  # the synthetic photos need room for their shapes; preprocess resizes them
    images = synthetic_images(folder / "images", n, seed, size=(side, side))
    np.save(folder / "image_of.npy", write_captions([[c] for c in caption_list(n, seed)], folder / "captions.parquet"))
    write_images(images, PairsConfig(path=str(folder / "pairs.parquet")), folder / "images.parquet")
    kw = KeywordsConfig()
    tag_captions(folder / "captions.parquet", folder / "keywords.parquet", kw.model, kw.pos, kw.batch_size, 1)
    tokenize_captions(folder / "captions.parquet", folder / "keywords.parquet", folder / "tokens", backbone.tokenizer,
                      {"strategy": "all_keywords", "n": 1, "seed": 0}, backbone.name)
    embed_images(backbone.model, backbone.preprocess, [ImageSource(p) for p in images[:8]], batch_size=8,
                 num_workers=0, device=device)  # warm-up
    start = time.perf_counter()
    latents = embed_images(backbone.model, backbone.preprocess, [ImageSource(p) for p in images], batch_size=64,
                           num_workers=0, device=device)
    seconds = time.perf_counter() - start
    np.save(folder / "latents.npy", latents)
    np.save(folder / "views.npy", np.zeros((len(latents), 0, latents.shape[1]), np.float32))  # no augmented views
    return seconds


def timed_method(name: str, backbone, folder: Path, cfg, oti_steps: int | None, device: str) -> dict:
    """Wall seconds of the whole train call, and of steps 1..N (step 0 is the warm-up)."""
    import torch

    from pipeline.methods import METHODS, Run, phi_recipe
    from pipeline.model import backbone as backbones
    from pipeline.model.text_encoder import text_tower

    method = METHODS.get(name)
    config = method.config()
    if name == "searle" and oti_steps:
        config = replace(config, oti_steps=oti_steps)
    marks = {}

    def log(step, values):  # after step 0 and after the last step; reading the loss syncs the GPU
        if device == "cuda":
            torch.cuda.synchronize()
        marks[step] = time.perf_counter()

    run = Run(backbone, text_tower(backbone.model, backbone.tokenizer), backbones.embed_dim(backbone), cfg, config, device,
              folder / f"{name}.ckpt", tokens=folder / "tokens", pairs=folder,
              pair_tokens=folder / "tokens", out=folder / name, log=log,
              recipe=phi_recipe(method, config, cfg))
    start = time.perf_counter()
    method.train(run)
    total = time.perf_counter() - start
    return {"steps_s": marks[cfg.steps - 1] - marks[0], "total_s": total}


def run(args) -> int:
    import torch

    from pipeline.methods import METHODS
    from pipeline.model.backbone import create, freeze
    from pipeline.training.loop import TrainConfig

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    gpu = device == "cuda"
    n = args.samples or (512 if gpu else 128)
    batch = min(n, args.batch_size or (512 if gpu else 32))
    steps = args.steps or (10 if gpu else 3)
    torch.manual_seed(args.seed)
    backbone = freeze(create(args.model, None, device))
    cfg = TrainConfig(steps=steps + 1, batch_size=batch, seed=args.seed, checkpoint_every=10 ** 9,
                      log_every=steps + 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        latents_s = prepare_pairs(folder, backbone, n, device, args.seed)
        for name in args.methods:
            t = timed_method(name, backbone, folder, cfg, args.oti_steps, device)
            step_s = t["steps_s"] / steps
            one_off = max(0.0, t["total_s"] - t["steps_s"] - step_s) / n  # all but the timed and warm-up steps
            image = latents_s / n if METHODS.get(name).images else 0.0
            rows.append({"path": name, "s_per_step": step_s, "samples_per_s": batch / step_s,
                         "one_off_s_per_sample": one_off, "image_latent_s": image,
                         "s_per_sample": one_off + image + step_s / batch})
    base = next((r["s_per_sample"] for r in rows if r["path"] == "lincir"), None)
    ratio = {r["path"]: r["s_per_sample"] / base for r in rows if base and r["path"] != "lincir"}
    setup = {"model": args.model, "samples": n, "batch_size": batch, "steps": steps, "warmup_steps": 1,
             "device": device, "threads": torch.get_num_threads(),
             "searle_oti_steps": args.oti_steps or METHODS.get("searle").config().oti_steps}
    notes = ["one_off_s_per_sample includes whatever a method does before its first step, per sample "
             "(LinCIR: z_c cache; SEARLE: textual inversion; masked inversion: CAM + masked-image latents)",
             "image_latent_s: the visual tower on one image (pairs stage), for the methods that read images"]
    report("methods", setup, ["s_per_step", "samples_per_s", "one_off_s_per_sample", "image_latent_s",
                              "s_per_sample"], rows, ratio, notes, device=device,
           ratio_label="s_per_sample / LinCIR's")
    return 0
