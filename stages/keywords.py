"""DVC stage `keywords`: spaCy POS tags and keyword spans of every caption (params: keywords)
-> data/keywords/keywords.parquet + stats.json."""
from pathlib import Path
import shutil
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script by dvc

import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.core import stage
from pipeline.core.errors import PipelineError
from pipeline.core.params import section, typed
from pipeline.keywords import KeywordsConfig, tag_captions
from pipeline.core.parallel import processes

CAPTIONS = Path("data/ingest/captions.parquet")
OUT = Path("data/keywords")


def main(params: dict) -> None:
    p = typed(KeywordsConfig, section(params, "keywords"), "keywords")
    if not CAPTIONS.is_file():
        raise PipelineError(f"{CAPTIONS} not found: run the ingest stage first (dvc repro ingest)")
    shutil.rmtree(OUT, ignore_errors=True)  # a stage's outs are rebuilt whole
    n_process = processes(p.n_process, "keywords.n_process")
    desc = f"keywords ({n_process} process{'es' if n_process > 1 else ''})"
    with tqdm(total=pq.ParquetFile(CAPTIONS).metadata.num_rows, desc=desc, unit=" captions", unit_scale=True) as bar:
        stats = tag_captions(CAPTIONS, OUT / "keywords.parquet", p.model, p.pos, p.batch_size, n_process,
                             progress=bar.update)
    stage.write_json(OUT / "stats.json", stats)
    print(f"keywords: captions={stats['captions']}, no_keyword={stats['no_keyword']}, "
          f"spans_per_caption_mean={stats['spans_per_caption_mean']:.2f}")


if __name__ == "__main__":
    stage.run(main)
