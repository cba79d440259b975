"""`lincir perf embed`: gallery image embedding, pipeline.evaluation.gallery vs one image at a time."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from pipeline.core.arguments import integer
from pipeline.core.parallel import cores
from pipeline.tools.perf.common import measure, report

HELP = "gallery embedding (images/s): pipeline.evaluation.gallery.embed_images vs per-image fp32"
DESCRIPTION = f"""{HELP}.

Reference: one image at a time, decoded and preprocessed in the main process, encoded in
fp32. Optimised: pipeline.evaluation.gallery.embed_images, the embed stage itself: batches, images
decoded by --workers DataLoader processes, fp16 autocast on GPU. Both embed the same
generated 640x480 JPEGs on disk (COCO's typical size) with a random-weight open_clip model
(speed does not depend on the weights) and must give the same latents."""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("embed", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=integer(1), default=64, help="generated JPEGs embedded by each path (default: 64)")
    p.add_argument("--model", default="ViT-B-32", help="open_clip architecture, random weights (default: ViT-B-32)")
    p.add_argument("--batch-size", type=integer(1), default=64, help="optimised batch size (default: 64)")
    p.add_argument("--workers", type=integer(0), help="optimised image-decoding workers (default: the cores available)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=integer(0), default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np
    import torch

    from pipeline.data.images import ImageSource
    from pipeline.evaluation.gallery import embed_images
    from pipeline.model.backbone import create, freeze
    from pipeline.tools.perf import reference
    from pipeline.tools.perf.synthetic import write_images

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    workers = cores() if args.workers is None else args.workers
    torch.manual_seed(args.seed)
    backbone = freeze(create(args.model, None, device))
    model, preprocess = backbone.model, backbone.preprocess
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.images, args.seed)
        reference.embed_images(model, preprocess, paths[:1], device)  # warm-up
        with measure() as ref:
            ref_latents = reference.embed_images(model, preprocess, paths, device)
        with measure() as opt:
            opt_latents = embed_images(model, preprocess, [ImageSource(p) for p in paths], batch_size=args.batch_size,
                                       num_workers=workers, device=device)
    cosine = float(np.min(np.sum(ref_latents * opt_latents, 1)
                          / np.linalg.norm(ref_latents, axis=1) / np.linalg.norm(opt_latents, axis=1)))
    n = args.images
    rows = [{"path": "reference", "images_per_s": n / ref.wall, "batch": 1, "workers": 0, "precision": "fp32"},
            {"path": "optimised", "images_per_s": n / opt.wall, "batch": args.batch_size, "workers": workers,
             "precision": "fp16" if device == "cuda" else "fp32"}]
    ratio = {"images_per_s": rows[1]["images_per_s"] / rows[0]["images_per_s"]}
    setup = {"images": n, "model": args.model, "device": device, "threads": torch.get_num_threads(),
             "min_cosine": round(cosine, 6)}
    report("embed", setup, ["images_per_s", "batch", "workers", "precision"], rows, ratio,
           [f"latents agree: minimum cosine similarity {cosine:.6f}"], device=device)
    return 0 if cosine > (0.99 if device == "cuda" else 0.9999) else 1
