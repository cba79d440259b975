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

from pipeline.core.errors import PipelineError
from pipeline.core.paths import BACKBONE, PHI


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("index", help="embed every image under a folder into a search index (incremental)")
    p.add_argument("folder", type=Path, help="folder of images (jpg, png, webp, bmp, gif, tiff), searched recursively")
    p.add_argument("--out", type=Path, required=True, help="index folder (created; updated in place later)")
    p.add_argument("--backbone", type=Path, default=BACKBONE, help=f"backbone identity file (default: {BACKBONE})")
    p.add_argument("--phi", type=Path, default=PHI,
                   help=f"phi checkpoint, this pipeline's or the authors' released one (default: {PHI})")
    p.add_argument("--index", dest="kind", default="flat",  # pipeline.evaluation.gallery.INDEX checks the name
                   help="flat: exact; ivf, hnsw: approximate, for millions of images (default: flat)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="image-decoding processes (default: 0)")
    p.set_defaults(func=index_command)

    p = subparsers.add_parser("search", help="composed search in an index: a reference image and/or a condition")
    _index_args(p)
    p.add_argument("--image", help="reference: a path in the index (as listed) or any image file")
    p.add_argument("--text", help='condition, e.g. "is red and at night" (alone: text-to-image search)')
    p.add_argument("-k", type=int, default=20, help="results (default: 20)")
    p.add_argument("--grid", type=Path, help="also write a PNG of the reference and the results")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    p.set_defaults(func=search_command)

    p = subparsers.add_parser("serve", help="a local web page for composed search in an index")
    _index_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest reference upload (default: 10)")
    p.set_defaults(func=serve_command)


def _index_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", type=Path, required=True, help="index folder written by `lincir index`")
    p.add_argument("--phi", type=Path, help="another phi for the queries (default: the one recorded in the index)")


def _device() -> str:
    from pipeline.core.stage import device

    return device()


def _one_faiss_thread() -> None:
    """Queries come one at a time: one FAISS thread answers them faster than an OpenMP team, which
    costs more to start than a single query's search (BENCHMARKS.md, search latency)."""
    import faiss

    faiss.omp_set_num_threads(1)


def index_command(args) -> int:
    from pipeline.tools.search.index import update

    done = update(args.folder, args.out, backbone_file=args.backbone, phi=args.phi, kind=args.kind,
                  batch_size=args.batch_size, num_workers=args.workers, device=_device())
    for path, why in done["skipped"].items():
        print(f"skipped {path}: {why}", file=sys.stderr)
    print(f"{args.out}: {done['images']} images ({done['embedded']} embedded, {done['reused']} unchanged, "
          f"{done['removed']} removed, {len(done['skipped'])} unreadable skipped), index {args.kind}")
    return 0


def search_command(args) -> int:
    from pipeline.tools.search.query import open_index, search

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
    serve(args.index, args.phi, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, device=_device())
    return 0
