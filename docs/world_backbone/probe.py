"""Supervised probe: how fast does a tower learn each attribute (cross-entropy heads on its features)?"""

import sys
import time

import numpy as np
import open_clip
import polars as pl
import torch
import torch.nn.functional as F
from PIL import Image

torch.set_num_threads(1)
arch = sys.argv[1]
steps = int(sys.argv[2])
W = "/work/main/data/world/"
FIELDS = ("shape", "colour", "size", "position", "background")
vis = {
    "vit16": {"image_size": 64, "layers": 4, "width": 192, "head_width": 32, "patch_size": 16},
    "vit8": {"image_size": 64, "layers": 4, "width": 192, "head_width": 32, "patch_size": 8},
    "vit8s": {"image_size": 64, "layers": 3, "width": 128, "head_width": 32, "patch_size": 8},
    "rn32": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 32, "head_width": 32},
    "rn16": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16},
}[arch]
open_clip.factory._MODEL_CONFIGS["p"] = {
    "embed_dim": 128,
    "vision_cfg": vis,
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
torch.manual_seed(0)
m, _, pp = open_clip.create_model_and_transforms("p")
v = m.visual
d = pl.read_parquet(W + "pairs.parquet")
tr, he = d.filter(pl.col("split") == "train"), d.filter(pl.col("split") == "heldout")
X = torch.stack([pp(Image.open(W + f).convert("RGB")) for f in tr["file"]])
Xh = torch.stack([pp(Image.open(W + f).convert("RGB")) for f in he["file"]])
vals = {f: sorted(set(d[f].to_list())) for f in FIELDS}
Y = torch.tensor([[vals[f].index(x) for f, x in zip(FIELDS, r)] for r in tr.select(FIELDS).rows()])
Yh = torch.tensor([[vals[f].index(x) for f, x in zip(FIELDS, r)] for r in he.select(FIELDS).rows()])
heads = torch.nn.ModuleList([torch.nn.Linear(128, len(vals[f])) for f in FIELDS])
opt = torch.optim.AdamW(list(v.parameters()) + list(heads.parameters()), lr=1e-3, weight_decay=0.1)
g = np.random.default_rng(0)
t0 = time.time()
for s in range(steps):
    idx = torch.from_numpy(g.choice(len(X), 128, replace=False))
    f = v(X[idx])
    loss = sum(F.cross_entropy(h(f), Y[idx, i]) for i, h in enumerate(heads))
    opt.zero_grad()
    loss.backward()
    opt.step()
    if (s + 1) % 100 == 0:
        with torch.no_grad():
            fh = torch.cat([v(b) for b in Xh.split(250)])
            acc = {f: (heads[i](fh).argmax(1) == Yh[:, i]).float().mean().item() for i, f in enumerate(FIELDS)}
        print(
            arch,
            s + 1,
            round(loss.item(), 3),
            {k: round(a, 2) for k, a in acc.items()},
            round((time.time() - t0) / (s + 1), 2),
            "s/step",
            flush=True,
        )
