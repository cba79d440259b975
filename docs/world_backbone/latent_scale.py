"""Latent-scale probe: the backbone stage's world training with open_clip's text_projection drawn at
c x its usual std (and optionally another starting temperature), then the stage's held-out metrics and
the geometry stage's noise closure. usage: python latent_scale.py NAME C [LOGIT_SCALE_START]
(appends one JSON line to latent_scale.jsonl beside this file; run from the repository root)."""
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [".", "stages"]
from backbone import classification  # noqa: E402  (stages/backbone.py)

from pipeline.data.world.attributes import FIELDS  # noqa: E402
from pipeline.evaluation.geometry import geometry, noise_geometry  # noqa: E402
from pipeline.evaluation.metrics import retrieval_recall  # noqa: E402
from pipeline.model import backbone as backbones  # noqa: E402
from pipeline.model.contrastive import train_clip, world_pairs  # noqa: E402
from pipeline.model.noise import NOISE  # noqa: E402

torch.set_num_threads(1)
name, c = sys.argv[1], float(sys.argv[2])
world = Path("data/world")
t0 = time.time()
torch.manual_seed(0)
model = backbones.create("lincir-world", None)
with torch.no_grad():
    model.model.text_projection.mul_(c)
    if len(sys.argv) > 3:
        model.model.logit_scale.fill_(math.log(float(sys.argv[3])))
_, images, tokens = world_pairs(world, model, "train")
train_clip(model.model, images, tokens, steps=400, batch_size=128, lr=1e-3, weight_decay=0.2, seed=0,
           tokenizer=model.tokenizer)
pairs, images, tokens = world_pairs(world, model, "heldout")
with torch.no_grad():
    img = torch.cat([model.model.encode_image(b) for b in images.split(256)])
    txt = torch.cat([model.model.encode_text(b) for b in tokens[:, 0].split(256)])
things = pairs.select(list(FIELDS)).rows()
same = torch.tensor([[a == b for b in things] for a in things])
m = {**retrieval_recall(img, txt, same), **geometry(img, txt), **classification(model, img, things)}
g, _ = noise_geometry(img, txt, NOISE, 1.0, 0)
m["znorm"] = txt.norm(dim=-1).mean().item()
m["logit_scale"] = model.model.logit_scale.exp().item()
m["closed"] = {k: (round(v["gap_closed"], 4), round(v["norm_ratio"], 3)) for k, v in g["noise"].items()}
m["name"], m["c"], m["seconds"] = name, c, time.time() - t0
print(json.dumps(m))
with open(Path(__file__).with_name("latent_scale.jsonl"), "a") as f:
    f.write(json.dumps(m) + "\n")
