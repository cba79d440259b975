"""DVC stage `world`: the synthetic world (params: world): images, their captions and object
masks, a caption corpus and CIRCO/CIRR-format benchmarks."""
from pipeline.core import stage
from pipeline.core.io import write_json
from pipeline.core.params import typed
from pipeline.data.world import WorldConfig, generate

PARAMS = ["world"]


def main(params: dict, args) -> None:
    cfg = typed(WorldConfig, params["world"], "world")
    stage.fresh(args.out)
    counts = generate(cfg, args.out)
    write_json(args.out / "counts.json", counts)
    print("world:", ", ".join(f"{k}={v}" for k, v in counts.items()))


if __name__ == "__main__":
    stage.run(main, PARAMS, parser=stage.arguments(__doc__, out="the world's folder"))
