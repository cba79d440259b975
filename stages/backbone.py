"""DVC stage `backbone`: materialises the frozen model named by params `backbone`.

`pretrained: world` trains the small `lincir-world` open_clip model on the world's
image-caption pairs; any other value is an open_clip tag or a checkpoint file. Either
way the weights are then loaded by the one loader every later stage uses, and their
identity (path + sha256) is written to data/backbone/backbone.json. The held-out pairs'
latents (data/backbone/heldout_latents.pt) are kept for the geometry stage.
"""
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl
import torch
from PIL import Image
from tqdm import tqdm

from pipeline import backbone as B
from pipeline.core import stage
from pipeline.core.params import section, typed
from pipeline.contrastive import WorldTraining, retrieval_recall, train_clip
from pipeline.geometry import geometry

WORLD = Path("data/world")
OUT = Path("data/backbone")


def load_pairs(backbone: B.Backbone, split: str) -> tuple[pl.DataFrame, torch.Tensor, torch.Tensor]:
    pairs = pl.read_parquet(WORLD / "pairs.parquet").filter(pl.col("split") == split)
    images = torch.stack([backbone.preprocess(Image.open(WORLD / f).convert("RGB"))
                          for f in tqdm(pairs["file"], desc=f"loading {split} images", unit="img")])
    captions = pairs["captions"].to_list()
    tokens = backbone.tokenizer([c for cs in captions for c in cs]).view(len(captions), len(captions[0]), -1)
    return pairs, images, tokens


def main(params: dict) -> None:
    cfg = vars(typed(B.BackboneConfig, section(params, "backbone"), "backbone"))
    if cfg["pretrained"] == "world":
        t = typed(WorldTraining, cfg["world_training"], "backbone.world_training")
        torch.manual_seed(t.seed)  # the random initialisation, too, is part of the recipe
        model = B.create(cfg["model"], None)
        _, images, tokens = load_pairs(model, "train")
        train_clip(model.model, images, tokens, steps=t.steps, batch_size=t.batch_size, lr=t.lr,
                   weight_decay=t.weight_decay, seed=t.seed)
        weights = OUT / "world.pt"
        B.save_checkpoint(model.model, weights)
    else:
        weights = B.resolve_weights(cfg["model"], cfg["pretrained"])
    identity = {"model": cfg["model"], "pretrained": str(weights), "sha256": B.file_sha256(weights)}
    stage.write_json(OUT / "backbone.json", identity)

    backbone = B.load(OUT / "backbone.json")  # the same loader every later stage uses
    pairs, images, tokens = load_pairs(backbone, "heldout")
    with torch.no_grad():
        image_features = torch.cat([backbone.model.encode_image(b) for b in images.split(256)])
        text_features = torch.cat([backbone.model.encode_text(b) for b in tokens[:, 0].split(256)])
    things = pairs.select(["shape", "colour", "size", "position", "background"]).rows()
    same = torch.tensor([[a == b for b in things] for a in things])
    torch.save({"image": image_features, "caption": text_features}, OUT / "heldout_latents.pt")
    metrics = {**retrieval_recall(image_features, text_features, same), **geometry(image_features, text_features)}
    stage.write_json(Path("metrics/backbone.json"), metrics)
    print("backbone on held-out world pairs (zero-shot retrieval in %, geometry):",
          ", ".join(f"{k}={v:.3g}" for k, v in metrics.items()))


if __name__ == "__main__":
    stage.run(main)
