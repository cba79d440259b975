"""DVC stage `ingest`: caption files (params: ingest.sources) -> captions.parquet (`id`, `text`,
`source`) and stats.json, the counts of what the documented policy dropped."""
from tqdm import tqdm

from pipeline.core import stage
from pipeline.core.io import write_json
from pipeline.data.ingest import ingest

PARAMS = ["ingest"]


def main(params: dict, args) -> None:
    stage.fresh(args.out)
    with tqdm(desc="ingest", unit=" captions", unit_scale=True) as bar:
        stats = ingest(params["ingest"]["sources"], args.out / "captions.parquet", progress=bar.update)
    write_json(args.out / "stats.json", stats)
    print("ingest: " + ", ".join(f"{k}={stats[k]}" for k in ("read", "missing", "empty", "duplicate",
                                                              "dollar_stripped", "kept")))


if __name__ == "__main__":
    stage.run(main, PARAMS, parser=stage.arguments(__doc__, out="the stage's folder"))
