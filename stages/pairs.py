"""DVC stage `pairs`: image–caption pairs prepared once (params: pairs, keywords).

Writes data/pairs/: captions.parquet and keywords.parquet (the keywords stage's code),
image_of.npy (the image row of each caption row), latents.npy (the images' latents,
unnormalised, as phi reads them) and images.parquet (each image's path, and where its true
object mask would be); from webdataset shards, also shard_images/ (their images, written
once). The `pair_tokens` stage tokenizes the captions (stages/tokens.py), so
a masking experiment re-runs neither spaCy nor the image encoder here. Methods that learn
from images (pipeline/methods/, train.supervision: image_latent) read them.
"""
from pathlib import Path
import shutil
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from pipeline import backbone as B
from pipeline.benchmarks import ImageSource, check_paths
from pipeline.core import stage
from pipeline.core.params import section, typed
from pipeline.gallery import EmbedConfig, embed_images
from pipeline.keywords import KeywordsConfig, tag_captions
from pipeline.pairs import PairsConfig, read_pairs, write_captions, write_images

OUT = Path("data/pairs")


def main(params: dict) -> None:
    cfg = typed(PairsConfig, section(params, "pairs"), "pairs")
    kw = typed(KeywordsConfig, section(params, "keywords"), "keywords")
    embed = typed(EmbedConfig, section(params, "embed"), "embed")
    device = stage.device()
    shutil.rmtree(OUT, ignore_errors=True)
    images, captions, skipped = read_pairs(cfg, OUT / "shard_images")
    check_paths(images, f"pairs {cfg.path}")  # every image decodes, before any model work
    image_of = write_captions(captions, OUT / "captions.parquet")
    np.save(OUT / "image_of.npy", image_of)
    write_images(images, cfg, OUT / "images.parquet")
    tag_captions(OUT / "captions.parquet", OUT / "keywords.parquet", kw.model, kw.pos, kw.batch_size, kw.n_process)
    backbone = B.load(Path("data/backbone/backbone.json"), device)
    latents = embed_images(backbone.model, backbone.preprocess, [ImageSource(p) for p in images],
                           batch_size=embed.batch_size, num_workers=embed.num_workers, device=device)
    np.save(OUT / "latents.npy", latents)
    print(f"pairs: {len(images)} images, {len(image_of)} captions"
          + (f", {skipped} shard samples without an image or a caption skipped" if skipped else ""))


if __name__ == "__main__":
    stage.run(main)
