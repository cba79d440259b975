"""DVC stage `embed@<benchmark>`: a benchmark's images -> unnormalised latents + FAISS index.

Depends on the backbone and the images only, never on phi. Every image is checked
(present, readable) before any model work, and all problems are reported at once.
"""
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import backbone as B
from pipeline import gallery
from pipeline.core import stage
from pipeline.core.params import section, typed
from pipeline.gallery import EmbedConfig
from pipeline.benchmarks import check_images, from_params


def main(params: dict) -> None:
    name = sys.argv[1]
    p = typed(EmbedConfig, section(params, "embed"), "embed")
    bench = from_params(params, name)
    check_images(bench)
    device = stage.device()
    backbone = B.load(Path("data/backbone/backbone.json"), device)
    names, latents, indexes = gallery.embed_benchmark(
        bench, backbone.model, backbone.preprocess, batch_size=p.batch_size, num_workers=p.num_workers,
        index=p.index, device=device)
    gallery.save(Path("data/embed") / name, names, latents, indexes)
    print(f"embed {name}: {len(names)} images, {len(indexes)} index(es) of type {p.index}")


if __name__ == "__main__":
    stage.run(main)
