"""How much of each attribute the world backbone's image latent carries: a linear probe (softmax regression
on the l2-normalised latents of the 4,000 training images, read on the 500 held-out ones) for each attribute.
Run from the repository root after the backbone stage: python docs/world_backbone/latent_probe.py [BACKBONE_DIR]"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, ".")
from pipeline.data.world.attributes import FIELDS, VALUES  # noqa: E402
from pipeline.model import backbone as backbones  # noqa: E402
from pipeline.model.contrastive import world_pairs  # noqa: E402

torch.manual_seed(0)
backbone = backbones.load(Path(sys.argv[1] if len(sys.argv) > 1 else "data/backbone") / "backbone.json")
latents, labels = {}, {}
for split in ("train", "heldout"):
    pairs, images, _ = world_pairs(Path("data/world"), backbone, split)
    with torch.no_grad():
        latents[split] = F.normalize(torch.cat([backbone.model.encode_image(b) for b in images.split(256)]), dim=-1)
    labels[split] = {f: torch.tensor([VALUES[f].index(v) for v in pairs[f]]) for f in FIELDS}
for field in FIELDS:
    head = torch.nn.Linear(latents["train"].shape[1], len(VALUES[field]))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(500):  # full batch; the training accuracy says whether the probe itself is the limit
        loss = F.cross_entropy(head(10 * latents["train"]), labels["train"][field])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = {s: 100 * (head(10 * latents[s]).argmax(1) == labels[s][field]).float().mean().item() for s in latents}
    print(f"{field}: held-out {acc['heldout']:.1f} %, training images {acc['train']:.1f} %")
