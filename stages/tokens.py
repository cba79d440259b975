"""DVC stage `tokens`: token ids of every caption and of its masked version (params: backbone.model,
masking, tokens) -> data/tokens/{ids,masked,lengths}.npy + meta.json."""
from pathlib import Path
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

CAPTIONS = Path("data/ingest/captions.parquet")
KEYWORDS = Path("data/keywords/keywords.parquet")
OUT = Path("data/tokens")


def main(params: dict) -> None:
    check_params(section(params, "masking"))  # a typo in the strategy fails before any work
    n_process = processes(typed(TokensConfig, section(params, "tokens"), "tokens").n_process, "tokens.n_process")
    for path, name in ((CAPTIONS, "ingest"), (KEYWORDS, "keywords")):
        if not path.is_file():
            raise PipelineError(f"{path} not found: run the {name} stage first (dvc repro {name})")
    model = params["backbone"]["model"]
    tokenizer = get_tokenizer(model)
    shutil.rmtree(OUT, ignore_errors=True)  # a stage's outs are rebuilt whole
    desc = f"tokens ({n_process} process{'es' if n_process > 1 else ''})"
    with tqdm(total=pq.ParquetFile(CAPTIONS).metadata.num_rows, desc=desc, unit=" captions", unit_scale=True) as bar:
        meta = tokenize_captions(CAPTIONS, KEYWORDS, OUT, tokenizer, params["masking"], model, n_process=n_process,
                                 progress=bar.update)
    print(f"tokens: rows={meta['rows']}, context={meta['context_length']}, strategy={meta['strategy']}, "
          f"truncated={meta['truncated']}, fallbacks={meta['fallbacks']}, "
          f"placeholders_per_caption={meta['placeholders_per_caption_mean']:.2f}")


if __name__ == "__main__":
    stage.run(main)
