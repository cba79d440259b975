"""DVC stage `pairs`: image-caption pairs prepared once (params: pairs, keywords, backbone.model).

Writes captions.parquet and keywords.parquet (the keywords stage's code), image_of.npy (the image
row of each caption row), latents.npy (the images' latents, unnormalised, as phi reads them),
views.npy (the latents of `pairs.views` augmented crops of each image, [images, views, d]: Pic2Word
draws one a step) and images.parquet (each image's path, and where its true object mask would be); from webdataset
shards, also shard_images/ (their images, written once). The `pair_tokens` stage tokenizes the
captions, so a masking experiment re-runs neither spaCy nor the image encoder here. Methods that
learn from images (pipeline/methods/, lincir.supervision: image_latent) read them.
"""
import numpy as np

from pipeline.core import stage
from pipeline.core.params import typed
from pipeline.data.images import ImageSource, check_paths
from pipeline.data.keywords import KeywordsConfig, tag_captions
from pipeline.data.pairs import PairsConfig, read_pairs, write_captions, write_images
from pipeline.data.views import embed_views
from pipeline.evaluation.gallery import EmbedConfig, embed_images
from pipeline.model import backbone as backbones

PARAMS = ["pairs", "keywords.model", "keywords.pos"]  # the backbone: its stage's output, a dep
UNTRACKED = ["keywords.batch_size", "keywords.n_process", "embed"]  # the same outputs whatever their values


def main(params: dict, args) -> None:
    cfg = typed(PairsConfig, params["pairs"], "pairs")
    kw = typed(KeywordsConfig, params["keywords"], "keywords")
    embed = typed(EmbedConfig, params["embed"], "embed")
    device = stage.device()
    out = stage.fresh(args.out)
    images, captions, skipped = read_pairs(cfg, out / "shard_images")
    check_paths(images, f"pairs {cfg.path}")  # every image decodes, before any model work
    image_of = write_captions(captions, out / "captions.parquet")
    np.save(out / "image_of.npy", image_of)
    write_images(images, cfg, out / "images.parquet")
    tag_captions(out / "captions.parquet", out / "keywords.parquet", kw.model, kw.pos, kw.batch_size, kw.n_process)
    backbone = backbones.load(args.backbone, device)
    latents = embed_images(backbone.model, backbone.preprocess, [ImageSource(p) for p in images],
                           batch_size=embed.batch_size, num_workers=embed.num_workers, device=device)
    np.save(out / "latents.npy", latents)
    views = embed_views(backbone.model, backbone.preprocess, images, views=cfg.views, scale=cfg.view_scale,
                        seed=cfg.view_seed, batch_size=embed.batch_size, num_workers=embed.num_workers,
                        device=device) if cfg.views else np.zeros((len(images), 0, latents.shape[1]), np.float32)
    np.save(out / "views.npy", views)
    print(f"pairs: {len(images)} images, {len(image_of)} captions"
          + (f", {skipped} shard samples without an image or a caption skipped" if skipped else ""))


if __name__ == "__main__":
    stage.run(main, PARAMS, UNTRACKED, stage.arguments(__doc__, backbone="the backbone stage's backbone.json",
                                                       out="the stage's folder"))
