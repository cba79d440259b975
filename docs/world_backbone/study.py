"""One run of the world backbone's study (docs/world_backbone.md): the backbone stage's training and
held-out metrics, with the knobs the study varied. Run from the repository root; appends one JSON line
to OUT. Every option defaults to the committed default (lincir-world.json, params.yaml).

  python docs/world_backbone/study.py NAME OUT [--steps N] [--temperature T] [--text W L H]
      [--projection-scale C] [--lr LR] [--groups FIELD G FRACTION] [--negatives FIELD ...]
      [--batch-size B] [--world FOLDER] [--latents FILE]

--text W L H: the text tower's width, layers and heads; --projection-scale: text_projection drawn at
C x open_clip's std (without it, it starts at AdamW's equilibrium norm, as the stage's does);
--groups: FRACTION of each batch made of groups of G images that differ only in FIELD (hard
negatives); the rest drawn uniformly, as CLIP draws its batches; --negatives: NegCLIP's hard negative
captions, each caption's value of one of these fields swapped for another; --world: a world folder
other than the world stage's data/world (one generated with other render settings).
"""
import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import open_clip
import torch
import yaml

sys.path[:0] = [".", "stages"]
from backbone import heldout  # noqa: E402  (stages/backbone.py)

from pipeline.data.world.attributes import FIELDS  # noqa: E402
from pipeline.evaluation.geometry import noise_geometry  # noqa: E402
from pipeline.model import backbone as backbones  # noqa: E402
from pipeline.model.contrastive import hard_negatives, train_clip, world_pairs  # noqa: E402
from pipeline.model.noise import NOISE  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("name")
p.add_argument("out", type=Path)
p.add_argument("--steps", type=int)
p.add_argument("--temperature", type=float, help="the logit scale's start (learned from there)")
p.add_argument("--text", type=int, nargs=3, metavar=("WIDTH", "LAYERS", "HEADS"))
p.add_argument("--projection-scale", type=float)
p.add_argument("--lr", type=float)
p.add_argument("--groups", nargs=3, metavar=("FIELD", "G", "FRACTION"))
p.add_argument("--negatives", nargs="+", metavar="FIELD", help="a hard negative caption each, one of these fields swapped")
p.add_argument("--batch-size", type=int)
p.add_argument("--world", type=Path, default=Path("data/world"), help="a world folder (the world stage's out)")
p.add_argument("--latents", type=Path, help="also save the held-out image and caption latents here (torch.save)")
args = p.parse_args()

training = yaml.safe_load(open("params.yaml"))["backbone"]["world_training"]
steps, lr = args.steps or training["steps"], args.lr or training["lr"]
batch_size = args.batch_size or training["batch_size"]
config = json.loads(Path("pipeline/model/model_configs/lincir-world.json").read_text())
if args.text:
    config["text_cfg"].update(width=args.text[0], layers=args.text[1], heads=args.text[2])
if args.temperature:
    config["init_logit_scale"] = math.log(args.temperature)
open_clip.factory._MODEL_CONFIGS["lincir-world-study"] = config

torch.set_num_threads(1)
t0 = time.time()
torch.manual_seed(training["seed"])
model = backbones.create("lincir-world-study", None)
if args.projection_scale is not None:
    with torch.no_grad():
        model.model.text_projection.mul_(args.projection_scale)
pairs, images, tokens = world_pairs(args.world, model, "train")

draw = None
if args.groups:
    field, group, fraction = args.groups[0], int(args.groups[1]), float(args.groups[2])
    things, k = pairs.select(list(FIELDS)).rows(), FIELDS.index(args.groups[0])
    siblings = defaultdict(lambda: defaultdict(list))  # the other attributes -> this field's value -> images
    for i, t in enumerate(things):
        siblings[t[:k] + t[k + 1:]][t[k]].append(i)

    def draw(gen, batch_size):
        chosen = []
        for a in gen.permutation(len(things)):
            if len(chosen) >= int(batch_size * fraction) // group * group:
                break
            rest = siblings[things[a][:k] + things[a][k + 1:]]
            others = [v for v in rest if v != things[a][k]]
            if len(others) < group - 1:
                continue
            members = [int(a)] + [int(gen.choice(rest[others[v]])) for v in gen.choice(len(others), group - 1, replace=False)]
            if not set(members) & set(chosen):
                chosen += members
        taken = set(chosen)
        return np.array(chosen + [int(i) for i in gen.permutation(len(things)) if int(i) not in taken][:batch_size - len(chosen)])

negatives = None
if args.negatives:
    negatives = hard_negatives(pairs["captions"].to_list(), args.negatives, model.tokenizer, training["seed"])
losses = train_clip(model.model, images, tokens, steps=steps, batch_size=batch_size, lr=lr,
                    weight_decay=training["weight_decay"], seed=training["seed"], tokenizer=model.tokenizer, draw=draw,
                    start_at_equilibrium=args.projection_scale is None,
                    negatives=negatives)
seconds = time.time() - t0
metrics, image_features, text_features = heldout(model, args.world)
if args.latents:
    torch.save({"image": image_features, "caption": text_features}, args.latents)
noise, _ = noise_geometry(image_features, text_features, NOISE, 1.0, 0)
record = {"name": args.name, **{k: v for k, v in vars(args).items() if k not in ("name", "out", "latents")}, "steps": steps, "lr": lr,
          "batch_size": batch_size, "world": str(args.world),
          **metrics, "znorm": text_features.norm(dim=-1).mean().item(), "logit_scale": model.model.logit_scale.exp().item(),
          "closed": {k: (round(v["gap_closed"], 4), round(v["norm_ratio"], 3)) for k, v in noise["noise"].items()},
          "final_loss": float(np.mean(losses[-20:])), "train_seconds": seconds, "threads": 1}
print(json.dumps(record))
with open(args.out, "a") as f:
    f.write(json.dumps(record) + "\n")
