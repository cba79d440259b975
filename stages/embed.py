"""DVC stage `embed@<benchmark>`: a benchmark's images -> unnormalised latents + FAISS index.

Depends on the backbone and the images only, never on phi. Every image is checked (present,
readable) before any model work, and all problems are reported at once.
"""
from pathlib import Path

from pipeline.core import stage
from pipeline.core.executor import ExecutorConfig
from pipeline.core.params import typed
from pipeline.evaluation import gallery
from pipeline.evaluation.benchmarks import check_images, from_params
from pipeline.evaluation.gallery import EmbedConfig
from pipeline.model import backbone as backbones

PARAMS = ["benchmarks.${key}", "embed.index"]
UNTRACKED = ["embed.batch_size", "embed.num_workers", "executor"]  # the same latents whatever their values


def main(params: dict, args) -> None:
    p = typed(EmbedConfig, params["embed"], "embed")
    bench = from_params(params, args.key)
    check_images(bench)
    device = stage.device()
    executor = typed(ExecutorConfig, params["executor"], "executor")
    identity = backbones.read_identity(args.backbone)
    identity["pretrained"] = str(Path(identity["pretrained"]).resolve())  # a cluster worker's path to the weights
    backbone = backbones.from_identity(identity, device)
    names, latents, indexes = gallery.embed_benchmark(
        bench, backbone.model, backbone.preprocess, batch_size=p.batch_size, num_workers=p.num_workers,
        index=p.index, device=device, executor=executor, identity=identity)
    gallery.save(args.out, names, latents, indexes)
    print(f"embed {args.key}: {len(names)} images, {len(indexes)} index(es) of type {p.index}")


if __name__ == "__main__":
    stage.run(main, PARAMS, UNTRACKED, stage.arguments(__doc__, "the benchmark's name in params.yaml",
                                                       backbone="the backbone stage's backbone.json", out="the stage's folder"))
