"""`lincir cam`: IoU of the frozen backbone's class-activation maps with the world's true object
masks, beside chance (pipeline/evaluation/cam_iou.py)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.core.arguments import integer, number
from pipeline.core.paths import BACKBONE

HELP = "how well a CAM of the frozen backbone finds the world's objects: IoU with the true masks, and chance"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("cam", help=HELP, description=HELP)
    parser.add_argument("--backbone", type=Path, default=BACKBONE,
                        help="the backbone stage's identity file")
    parser.add_argument("--world", type=Path, default=Path("data/world"), help="the world, with its masks")
    parser.add_argument("--split", default="train", help="pairs split (default: train)")
    parser.add_argument("--images", type=integer(1), default=300, help="how many images (default: 300)")
    parser.add_argument("--taus", type=number(0, 1), nargs="+", default=[0.2, 0.3, 0.4], help="CAM thresholds")
    parser.add_argument("--cam", default="gradcam", help="a CAM of pipeline/model/cam.py (default: gradcam)")
    parser.add_argument("--batch-size", type=integer(1), default=64)
    parser.add_argument("--seed", type=integer(0), default=0, help="seed of the random baseline")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from pipeline.evaluation.cam_iou import cam_iou, world_items
    from pipeline.model.backbone import load

    images, masks, prompts = world_items(args.world, args.split, args.images)
    rows = cam_iou(load(args.backbone), images, masks, prompts, args.taus, args.batch_size, args.cam, args.seed)
    for row in rows:
        print(json.dumps({"cam": args.cam, "images": len(images), **row}))
    return 0
