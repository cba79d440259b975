"""DVC stage `keywords`: spaCy POS tags and keyword spans of every caption (params: keywords)
-> keywords.parquet and stats.json."""
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.core import stage
from pipeline.core.executor import ExecutorConfig
from pipeline.core.io import write_json
from pipeline.core.parallel import processes
from pipeline.core.params import typed
from pipeline.data.keywords import KeywordsConfig, tag_captions

PARAMS = ["keywords.model", "keywords.pos"]
UNTRACKED = ["keywords.batch_size", "keywords.n_process", "executor"]  # the same table whatever their values


def main(params: dict, args) -> None:
    p = typed(KeywordsConfig, params["keywords"], "keywords")
    stage.require(args.captions, "ingest")
    stage.fresh(args.out)
    n_process = processes(p.n_process, "keywords.n_process")
    executor = typed(ExecutorConfig, params["executor"], "executor")
    with tqdm(total=pq.ParquetFile(args.captions).metadata.num_rows, desc=f"keywords ({stage.where(executor, n_process)})",
              unit=" captions", unit_scale=True) as bar:
        stats = tag_captions(args.captions, args.out / "keywords.parquet", p.model, p.pos, p.batch_size, n_process,
                             progress=bar.update, executor=executor)
    write_json(args.out / "stats.json", stats)
    print(f"keywords: captions={stats['captions']}, no_keyword={stats['no_keyword']}, "
          f"spans_per_caption_mean={stats['spans_per_caption_mean']:.2f}")


if __name__ == "__main__":
    stage.run(main, PARAMS, UNTRACKED, stage.arguments(__doc__, captions="ingest's captions.parquet",
                                                       out="the stage's folder"))
