"""DVC stages `tokens` and `pair_tokens`: token ids of every caption and of its masked version
(params: backbone.model, masking, tokens) -> {ids,masked,lengths}.npy + meta.json.

    python stages/tokens.py                      the corpus: data/ingest + data/keywords -> data/tokens
    python stages/tokens.py --captions data/pairs/captions.parquet --keywords data/pairs/keywords.parquet \
        --out data/pair_tokens                   the image-caption pairs' captions (pairs stage)
"""
from pathlib import Path
import argparse
import shutil
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script by dvc

import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.core import stage
from pipeline.backbone import get_tokenizer
from pipeline.core.errors import PipelineError
from pipeline.core.parallel import processes
from pipeline.core.params import section, typed
from pipeline.masking import check_params
from pipeline.tokens import TokensConfig, tokenize_captions

def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", type=Path, default=Path("data/ingest/captions.parquet"))
    parser.add_argument("--keywords", type=Path, default=Path("data/keywords/keywords.parquet"))
    parser.add_argument("--out", type=Path, default=Path("data/tokens"))
    return parser.parse_args()


def main(params: dict) -> None:
    args = arguments()
    check_params(section(params, "masking"))  # a typo in the strategy fails before any work
    n_process = processes(typed(TokensConfig, section(params, "tokens"), "tokens").n_process, "tokens.n_process")
    for path in (args.captions, args.keywords):
        if not path.is_file():
            raise PipelineError(f"{path} not found: run the stage that writes it first (dvc repro)")
    model = params["backbone"]["model"]
    tokenizer = get_tokenizer(model)
    shutil.rmtree(args.out, ignore_errors=True)  # a stage's outs are rebuilt whole
    desc = f"tokens ({n_process} process{'es' if n_process > 1 else ''})"
    with tqdm(total=pq.ParquetFile(args.captions).metadata.num_rows, desc=desc, unit=" captions",
              unit_scale=True) as bar:
        meta = tokenize_captions(args.captions, args.keywords, args.out, tokenizer, params["masking"], model,
                                 n_process=n_process, progress=bar.update)
    print(f"tokens -> {args.out}: rows={meta['rows']}, context={meta['context_length']}, strategy={meta['strategy']}, "
          f"truncated={meta['truncated']}, fallbacks={meta['fallbacks']}, "
          f"placeholders_per_caption={meta['placeholders_per_caption_mean']:.2f}")


if __name__ == "__main__":
    stage.run(main)
