"""DVC stages `tokens` and `pair_tokens`: token ids of every caption and of its keyword-masked
version (params: masking, backbone.model) -> ids.npy, masked.npy, lengths.npy and meta.json.
`tokens` reads the corpus (ingest, keywords), `pair_tokens` the image-caption pairs' captions
(pairs stage): a masking experiment re-runs these two and nothing before them."""
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.core import stage
from pipeline.core.executor import ExecutorConfig
from pipeline.core.parallel import processes
from pipeline.core.params import typed
from pipeline.data.masking import check_params
from pipeline.data.tokens import TokensConfig, tokenize_captions
from pipeline.model.backbone import get_tokenizer

PARAMS = ["masking", "backbone.model"]
UNTRACKED = ["tokens", "executor"]  # the same arrays whatever their values


def main(params: dict, args) -> None:
    check_params(params["masking"])  # a typo in the strategy fails before any work
    n_process = processes(typed(TokensConfig, params["tokens"], "tokens").n_process, "tokens.n_process")
    executor = typed(ExecutorConfig, params["executor"], "executor")
    for path in (args.captions, args.keywords):
        stage.require(path, "pairs" if "pairs" in path.parts else "keywords")
    model = params["backbone"]["model"]
    tokenizer = get_tokenizer(model)
    stage.fresh(args.out)
    with tqdm(total=pq.ParquetFile(args.captions).metadata.num_rows, desc=f"tokens ({stage.where(executor, n_process)})",
              unit=" captions", unit_scale=True) as bar:
        meta = tokenize_captions(args.captions, args.keywords, args.out, tokenizer, params["masking"], model,
                                 n_process=n_process, progress=bar.update, executor=executor)
    print(f"tokens -> {args.out}: rows={meta['rows']}, context={meta['context_length']}, strategy={meta['strategy']}, "
          f"truncated={meta['truncated']}, fallbacks={meta['fallbacks']}, "
          f"placeholders_per_caption={meta['placeholders_per_caption_mean']:.2f}")


if __name__ == "__main__":
    stage.run(main, PARAMS, UNTRACKED, stage.arguments(__doc__, captions="captions.parquet (id, text)",
                                                       keywords="their keywords.parquet", out="the stage's folder"))
