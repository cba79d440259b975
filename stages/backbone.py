"""DVC stage `backbone`: the frozen model named by params `backbone`.

`pretrained: world` trains the small `lincir-world` open_clip model on the world's image-caption
pairs (pipeline/model/contrastive.py); any other value is an open_clip tag or a checkpoint file.
Either way the weights are loaded by the one loader every later stage uses, and their identity
(path + sha256) is written to backbone.json. The held-out pairs' latents (heldout_latents.pt) are
kept for the geometry stage, and their zero-shot retrieval and geometry go to the metrics file.
"""
from pathlib import Path

import torch

from pipeline.core import stage
from pipeline.core.io import file_sha256, save_checkpoint, write_json
from pipeline.core.params import typed
from pipeline.data.world.attributes import FIELDS, all_things
from pipeline.data.world.captions import describe
from pipeline.evaluation.geometry import geometry
from pipeline.evaluation.metrics import attribute_accuracy, retrieval_recall, zero_shot_classes
from pipeline.model import backbone as backbones
from pipeline.model.contrastive import WorldTraining, train_clip, world_pairs

PARAMS = ["backbone"]


def classification(backbone, image_features: torch.Tensor, things: list[tuple]) -> dict[str, float]:
    """Zero-shot classification of the held-out images among all the world's combinations, one full
    description each; and how often each attribute read off the answer is right (percent)."""
    combos = all_things()
    with torch.no_grad():
        prompts = backbone.tokenizer([describe(c) for c in combos])
        class_features = torch.cat([backbone.model.encode_text(b) for b in prompts.split(256)])
    predicted = [combos[i] for i in zero_shot_classes(image_features, class_features)]
    accuracy = attribute_accuracy(predicted, things, FIELDS)
    return {"zero_shot_top1": accuracy.pop("all"), **{f"zero_shot_{f}": v for f, v in accuracy.items()}}


def heldout(backbone, world: Path) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """The metrics of `backbone` on the world's held-out pairs (zero-shot retrieval, geometry,
    classification), and the pairs' image and caption latents they were measured on."""
    pairs, images, tokens = world_pairs(world, backbone, "heldout")
    with torch.no_grad():
        image_features = torch.cat([backbone.model.encode_image(b) for b in images.split(256)])
        text_features = torch.cat([backbone.model.encode_text(b) for b in tokens[:, 0].split(256)])
    things = pairs.select(list(FIELDS)).rows()
    same = torch.tensor([[a == b for b in things] for a in things])
    metrics = {**retrieval_recall(image_features, text_features, same), **geometry(image_features, text_features),
               **classification(backbone, image_features, things)}
    return metrics, image_features, text_features


def main(params: dict, args) -> None:
    cfg = typed(backbones.BackboneConfig, params["backbone"], "backbone")
    stage.fresh(args.out)
    if cfg.pretrained == "world":
        t = typed(WorldTraining, cfg.world_training, "backbone.world_training")
        torch.manual_seed(t.seed)  # the random initialisation, too, is part of the recipe
        model = backbones.create(cfg.model, None)
        _, images, tokens = world_pairs(args.world, model, "train")
        train_clip(model.model, images, tokens, steps=t.steps, batch_size=t.batch_size, lr=t.lr,
                   weight_decay=t.weight_decay, seed=t.seed, tokenizer=model.tokenizer)
        weights = args.out / "world.pt"
        save_checkpoint(model.model, weights)
    else:
        weights = backbones.resolve_weights(cfg.model, cfg.pretrained)
    identity = {"model": cfg.model, "pretrained": str(weights), "sha256": file_sha256(weights)}
    write_json(args.out / "backbone.json", identity)

    backbone = backbones.load(args.out / "backbone.json")  # the same loader every later stage uses
    metrics, image_features, text_features = heldout(backbone, args.world)
    torch.save({"image": image_features, "caption": text_features}, args.out / "heldout_latents.pt")
    write_json(args.metrics, metrics)
    print("backbone on held-out world pairs (zero-shot retrieval in %, geometry):",
          ", ".join(f"{k}={v:.3g}" for k, v in metrics.items()))


if __name__ == "__main__":
    stage.run(main, PARAMS, parser=stage.arguments(__doc__, world="the world's folder", out="the stage's folder",
                                                   metrics="metrics file"))
