"""World backbone sweep: train lincir-world variants with CLIP's loss and measure strength + geometry.

usage: python sweep.py NAME key=value ...   (appends one JSON line to /work/tmp/sweep.jsonl)
"""

import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import open_clip
import polars as pl
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from PIL import Image

torch.set_num_threads(int(__import__("os").environ.get("THREADS", "1")))
WORLD = Path(__import__("os").environ.get("WORLD", "/work/main/data/world"))
FIELDS = ("shape", "colour", "size", "position", "background")
POS = {"left": "on the left", "center": "in the center", "right": "on the right"}

cfg = dict(
    embed=128,
    vwidth=192,
    vlayers=4,
    patch=16,
    twidth=128,
    tlayers=4,
    theads=4,
    vheadw=32,
    steps=300,
    batch=128,
    lr=1e-3,
    wd=0.1,
    scale="learn",
    init_scale=1 / 0.07,
    seed=0,
    warm=0.05,
    wd_gains=1,
    images=None,
    evals="",
    resnet=0,
    rwidth=32,
    isize=64,
    scale_lr=1.0,
    group=1,
)
name = sys.argv[1]
for kv in sys.argv[2:]:
    k, v = kv.split("=")
    cfg[k] = type(cfg[k])(v) if cfg[k] is not None else int(v)

vision = {
    "image_size": cfg["isize"],
    "layers": cfg["vlayers"],
    "width": cfg["vwidth"],
    "head_width": cfg["vheadw"],
    "patch_size": cfg["patch"],
}
if cfg["resnet"]:
    vision = {"image_size": cfg["isize"], "layers": [cfg["resnet"]] * 4, "width": cfg["rwidth"], "head_width": 32}
model_cfg = {
    "embed_dim": cfg["embed"],
    "vision_cfg": vision,
    "text_cfg": {
        "context_length": 32,
        "vocab_size": 49408,
        "width": cfg["twidth"],
        "heads": cfg["theads"],
        "layers": cfg["tlayers"],
    },
}
open_clip.factory._MODEL_CONFIGS[f"sweep-{name}"] = model_cfg
torch.manual_seed(cfg["seed"])
model, _, preprocess = open_clip.create_model_and_transforms(f"sweep-{name}", pretrained=None)
model.logit_scale.data.fill_(math.log(cfg["init_scale"]))
tok = open_clip.get_tokenizer(f"sweep-{name}")


def load(split):
    pairs = pl.read_parquet(WORLD / "pairs.parquet").filter(pl.col("split") == split)
    if split == "train" and cfg["images"]:
        pairs = pairs.head(cfg["images"])
    images = torch.stack([preprocess(Image.open(WORLD / f).convert("RGB")) for f in pairs["file"]])
    caps = pairs["captions"].to_list()
    tokens = tok([c for cs in caps for c in cs]).view(len(caps), len(caps[0]), -1)
    return pairs, images, tokens


t0 = time.time()
trainpairs, images, tokens = load("train")
# neighbours: for each image, the images that differ from it in exactly one attribute
keys = [tuple(r) for r in trainpairs.select(FIELDS).rows()]
by_key = defaultdict(list)
for i, k in enumerate(keys):
    by_key[k].append(i)
values_ = {f: sorted(set(trainpairs[f].to_list())) for f in FIELDS}


def neighbours(i):
    k = keys[i]
    out = []
    for j, f in enumerate(FIELDS):
        for v in values_[f]:
            if v != k[j]:
                out += by_key.get(k[:j] + (v,) + k[j + 1 :], [])
    return out


NEIGH = [neighbours(i) for i in range(len(keys))] if cfg["group"] > 1 else None


def draw_batch(gen):
    if cfg["group"] == 1:
        return gen.choice(len(images), size=cfg["batch"], replace=False)
    anchors = gen.choice(len(images), size=cfg["batch"] // cfg["group"], replace=False)
    out = []
    for a in anchors:
        out.append(a)
        nb = NEIGH[a]
        if nb:
            out += list(gen.choice(nb, size=min(cfg["group"] - 1, len(nb)), replace=False))
    out = list(dict.fromkeys(int(x) for x in out))
    while len(out) < cfg["batch"]:
        x = int(gen.integers(len(images)))
        if x not in out:
            out.append(x)
    return np.array(out[: cfg["batch"]])


held, himages, htokens = load("heldout")
load_s = time.time() - t0

gen = np.random.default_rng(cfg["seed"])


def no_wd(n, p):  # open_clip's training: gains, biases, norms and the temperature are not decayed
    return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n


params_decay = [p for n, p in model.named_parameters() if cfg["wd_gains"] or not no_wd(n, p)]
params_nodecay = [p for n, p in model.named_parameters() if not (cfg["wd_gains"] or not no_wd(n, p))]
if cfg["scale"] == "fixed":
    model.logit_scale.requires_grad_(False)
opt = torch.optim.AdamW(
    [
        {
            "params": [p for p in params_decay if p.requires_grad and p is not model.logit_scale],
            "weight_decay": cfg["wd"],
        },
        {"params": [p for p in params_nodecay if p.requires_grad and p is not model.logit_scale], "weight_decay": 0.0},
        {
            "params": [model.logit_scale] if model.logit_scale.requires_grad else [],
            "weight_decay": cfg["wd"] if cfg["wd_gains"] else 0.0,
            "lr": cfg["lr"] * cfg["scale_lr"],
        },
    ],
    lr=cfg["lr"],
)
steps = cfg["steps"]
warmup = max(1, int(steps * cfg["warm"]))
sched = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
)
loss_fn = ClipLoss()
sys.path.insert(0, "/work/main")
from pipeline.model.text_encoder import encode, text_tower  # noqa: E402

TOWER = text_tower(model, tok)


def describe(t):
    return f"a photo of a {t['size']} {t['colour']} {t['shape']} {POS[t['position']]} on a {t['background']} background"


def evaluate(step):
    model.eval()
    with torch.no_grad():
        zi = torch.cat([model.encode_image(b) for b in himages.split(256)])
        zt = torch.cat([model.encode_text(b) for b in htokens[:, 0].split(256)])
        import itertools

        values = {f: sorted(set(pl.read_parquet(WORLD / "pairs.parquet")[f].to_list())) for f in FIELDS}
        combos = [dict(zip(FIELDS, c)) for c in itertools.product(*(values[f] for f in FIELDS))]
        zc = torch.cat([model.encode_text(b) for b in tok([describe(c) for c in combos]).split(256)])
        sims = F.normalize(zi, dim=-1) @ F.normalize(zc, dim=-1).T
        pred = sims.argmax(1)
        truth = held.select(FIELDS).to_dicts()
        top1 = np.mean([combos[p] == t for p, t in zip(pred.tolist(), truth)])
        per = {f: float(np.mean([combos[p][f] == t[f] for p, t in zip(pred.tolist(), truth)])) for f in FIELDS}
        ni, nt = F.normalize(zi, dim=-1), F.normalize(zt, dim=-1)
        gap = (ni.mean(0) - nt.mean(0)).norm().item()
        matched = (ni * nt).sum(1).mean().item()

        def pair(x):
            n = len(x)
            return ((x.sum(0).pow(2).sum() - n) / (n * (n - 1))).item()

        g = torch.Generator().manual_seed(0)
        u = torch.rand(len(zt), 1, generator=g)
        noise = u * torch.randn(zt.shape, generator=g)
        gap_un = (ni.mean(0) - F.normalize(zt + noise, dim=-1).mean(0)).norm().item()
        out = {
            "name": name,
            **cfg,
            "top1": top1,
            **{f"acc_{f}": v for f, v in per.items()},
            "gap": gap,
            "matched": matched,
            "img_img": pair(ni),
            "cap_cap": pair(nt),
            "zc_norm": zt.norm(dim=1).mean().item(),
            "zi_norm": zi.norm(dim=1).mean().item(),
            "noise_ratio": noise.norm(dim=1).mean().item() / zt.norm(dim=1).mean().item(),
            "gap_un": gap_un,
            "gap_closed": 1 - gap_un / gap,
            "logit_scale": model.logit_scale.exp().item(),
            "step": step,
            "final_loss": loss.item(),
            "train_s": time.time() - t1,
            "s_per_step": (time.time() - t1) / max(step, 1),
            "load_s": load_s,
        }
    print(json.dumps(out), flush=True)
    with open("/work/tmp/sweep.jsonl", "a") as f:
        f.write(json.dumps(out) + "\n")
    model.train()


EVALS = {int(s) for s in cfg["evals"].split(",") if s} | {steps}
model.train()
t1 = time.time()
for step in range(steps):
    idx = torch.from_numpy(draw_batch(gen))
    pick = torch.from_numpy(gen.integers(tokens.shape[1], size=cfg["batch"]))
    fi = F.normalize(model.encode_image(images[idx]), dim=-1)
    ft = F.normalize(encode(TOWER, tokens[idx, pick]), dim=-1)
    ls = model.logit_scale.exp()
    loss = loss_fn(fi, ft, ls)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    if (step + 1) in EVALS:
        evaluate(step + 1)
    if step % 100 == 0:
        print(name, step, round(loss.item(), 3), round(model.logit_scale.exp().item(), 1), flush=True)
