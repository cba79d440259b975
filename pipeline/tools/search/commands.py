"""`lincir index`, `lincir search`, `lincir serve`: search your own photos.

    lincir index ~/Pictures --out pictures.index            # again later: only new/changed files
    lincir search --index pictures.index --image ~/Pictures/cat.jpg --text "is black and at night" -k 20
    lincir serve --index pictures.index                      # http://127.0.0.1:8000

Heavy imports (torch, faiss, flask) happen inside the commands: `lincir score` needs none.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.core.arguments import integer, number
from pipeline.core.errors import PipelineError
from pipeline.core.paths import BACKBONE, PHI
from pipeline.evaluation.ivfpq import DEFAULT_BUDGET_GB

INDEX_HELP = "embed every image under a folder into a search index (incremental)"
INDEX_DOC = """Embeds every image under FOLDER (jpg, png, webp, bmp, gif, tiff; recursively) with the
backbone of --backbone into a FAISS index in the folder --out, and records that backbone and the
phi of --phi there for `lincir search` and `lincir serve`. Run it again after adding, changing or
removing photos: only new or changed files are embedded. Unreadable files are listed and skipped.
A failed run (a full disk) leaves the previous index as it was.

  lincir index ~/Pictures --out pictures.index"""
SEARCH_HELP = "composed search in an index: a reference image and/or a condition"
SEARCH_DOC = """Ranks the images of an index built by `lincir index` for a composed query: a reference
image (--image) changed as a condition says (--text), answered as LinCIR does (`a photo of $ that
CONDITION`, $ = phi of the reference). Either one alone gives image-only or text-only search.
Prints `score<TAB>path` lines best first (cosine similarity).

  lincir search --index pictures.index --image cat.jpg --text "is black and at night" -k 20"""
SERVE_HELP = "a local web page for composed search in an index"
SERVE_DOC = """Serves a web page for composed search in an index built by `lincir index`: pick a reference
from the index or upload one, type a condition, see the results with their scores. It binds
127.0.0.1 (this machine only) unless --host says otherwise.

  lincir serve --index pictures.index        # then open http://127.0.0.1:8000/"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("index", help=INDEX_HELP, description=INDEX_DOC, formatter_class=raw)
    p.add_argument("folder", type=Path, metavar="FOLDER", help="folder of images (jpg, png, webp, bmp, gif, tiff), searched recursively")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="index folder (created; updated in place later)")
    p.add_argument("--backbone", type=Path, default=BACKBONE, metavar="FILE", help=f"backbone identity file (default: {BACKBONE})")
    p.add_argument("--phi", type=Path, default=PHI, metavar="FILE",
                   help=f"phi checkpoint, this pipeline's or the authors' released one (default: {PHI})")
    p.add_argument("--index", dest="kind", default="flat", metavar="KIND",  # pipeline.evaluation.gallery.INDEX checks the name
                   help="flat: exact; ivf, hnsw: approximate, for millions of images; ivfpq: compressed, for "
                        "collections past RAM, sized by --memory (default: flat)")
    p.add_argument("--memory", type=number(0, above=True), default=DEFAULT_BUDGET_GB, metavar="GB",
                   help=f"ivfpq: the index's memory budget; the most accurate code that fits is chosen "
                        f"(default: {DEFAULT_BUDGET_GB:g})")
    p.add_argument("--batch-size", type=integer(1), default=64, metavar="N", help="images embedded at once (default: 64)")
    p.add_argument("--workers", type=integer(0), default=0, metavar="N",
                   help="image-decoding processes beside this one; 0 decodes here (default: 0)")
    p.add_argument("--ray", metavar="HOST:PORT", help="embed on the Ray cluster whose head is there ('auto': RAY_ADDRESS "
                   "or this machine's); FOLDER and the backbone's weights must be at the same path on every node "
                   "(docs/ray.md). Default: this machine")
    p.set_defaults(func=index_command)

    p = subparsers.add_parser("search", help=SEARCH_HELP, description=SEARCH_DOC, formatter_class=raw)
    _index_args(p)
    p.add_argument("--image", metavar="PATH", help="reference: a path in the index (as listed) or any image file")
    p.add_argument("--text", metavar="CONDITION", help='condition, e.g. "is red and at night" (alone: text-to-image search)')
    p.add_argument("-k", type=integer(1), default=20, metavar="N", help="results (default: 20)")
    p.add_argument("--grid", type=Path, metavar="FILE", help="also write a picture of the reference and the results (.png or .jpg)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    p.set_defaults(func=search_command)

    p = subparsers.add_parser("serve", help=SERVE_HELP, description=SERVE_DOC, formatter_class=raw)
    _index_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=integer(0, 65535), default=8000, help="port to listen on; 0 picks a free one "
                   "(default: 8000)")
    p.add_argument("--max-upload-mb", type=number(0, above=True), default=10.0, metavar="MB",
                   help="largest reference upload, in MB (default: 10)")
    p.add_argument("--max-upload-megapixels", type=number(0, above=True), default=50.0, metavar="MP",
                   help="largest reference upload, in decoded pixels: a small file can hold a huge picture "
                        "(default: 50)")
    p.set_defaults(func=serve_command)


def _index_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", type=Path, required=True, metavar="DIR", help="index folder written by `lincir index`")
    p.add_argument("--phi", type=Path, metavar="FILE", help="another phi for the queries (default: the one recorded in the index)")


GRID_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def _device() -> str:
    from pipeline.core.stage import device

    return device()


def _one_faiss_thread() -> None:
    """Queries come one at a time: one FAISS thread answers them faster than an OpenMP team, which
    costs more to start than a single query's search (BENCHMARKS.md, search latency)."""
    import faiss

    faiss.omp_set_num_threads(1)


def index_command(args) -> int:
    from pipeline.core.executor import ExecutorConfig
    from pipeline.core.params import typed
    from pipeline.tools.search.index import update

    executor = typed(ExecutorConfig, {"kind": "ray", "address": args.ray}, "--ray", complete=False) if args.ray else None
    done = update(args.folder, args.out, backbone_file=args.backbone, phi=args.phi, kind=args.kind,
                  batch_size=args.batch_size, num_workers=args.workers, device=_device(), executor=executor,
                  memory_gb=args.memory)
    for path, why in done["skipped"].items():
        print(f"skipped {path}: {why}", file=sys.stderr)
    print(f"{args.out}: {done['images']} images ({done['embedded']} embedded, {done['reused']} unchanged, "
          f"{done['removed']} removed, {len(done['skipped'])} unreadable skipped), index {args.kind}")
    return 0


def search_command(args) -> int:
    from pipeline.tools.search.query import open_index, search

    if args.grid is not None:  # before the model loads
        if args.grid.suffix.lower() not in GRID_FORMATS:
            raise PipelineError(f"--grid {args.grid}: name a .png or .jpg file")
        if args.grid.is_dir():
            raise PipelineError(f"--grid {args.grid} is a folder: name a .png or .jpg file")
    _one_faiss_thread()
    searcher = open_index(args.index, args.phi, _device())
    mode, hits = search(searcher, args.image, args.text, args.k)
    if args.grid:
        _grid(searcher, args, hits)
    if args.json:
        print(json.dumps({"mode": mode, "root": str(searcher.root),
                          "results": [{"path": p, "score": round(s, 6)} for p, s in hits]}))
    else:
        print("\n".join(f"{s:.4f}\t{p}" for p, s in hits))
    return 0


def _grid(searcher, args, hits) -> None:
    from pipeline.data.images import ImageSource, open_image
    from pipeline.evaluation.visualize import Row, draw_grid, thumb

    def picture(path):
        return thumb(open_image(ImageSource(Path(path))))

    ref = None
    if args.image:
        ref = picture(searcher.root / args.image if args.image in searcher.row else args.image)
    row = Row(ref, args.text or "", [(picture(searcher.root / p), False) for p, _ in hits],
              tuple(f"{i}. score {s:.4f}\n{p}" for i, (p, s) in enumerate(hits, 1)))
    draw_grid([row], len(hits), f"left: the reference, then the condition, then the top {len(hits)} "
                                f"(rank, cosine score, path in the index)", args.grid)


def serve_command(args) -> int:
    try:
        from pipeline.tools.search.serve import serve
    except ImportError as e:  # flask is the optional extra `serve`
        raise PipelineError(f"lincir serve needs Flask ({e}): pip install -e '.[serve]'") from None

    _one_faiss_thread()
    serve(args.index, args.phi, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
          max_upload_megapixels=args.max_upload_megapixels, device=_device())
    return 0
