"""DVC stage `ingest`: caption files (params: ingest.sources) -> data/ingest/captions.parquet + stats.json."""
from pathlib import Path
import shutil
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script by dvc

from tqdm import tqdm

from pipeline.core import stage
from pipeline.ingest import ingest

OUT = Path("data/ingest")


def main(params: dict) -> None:
    shutil.rmtree(OUT, ignore_errors=True)  # a stage's outs are rebuilt whole
    with tqdm(desc="ingest", unit=" captions", unit_scale=True) as bar:
        stats = ingest(params["ingest"]["sources"], OUT / "captions.parquet", progress=bar.update)
    stage.write_json(OUT / "stats.json", stats)
    print("ingest: " + ", ".join(f"{k}={stats[k]}" for k in ("read", "missing", "empty", "duplicate", "dollar_stripped", "kept")))


if __name__ == "__main__":
    stage.run(main)
