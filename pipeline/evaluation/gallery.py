"""Gallery images -> embeddings -> a FAISS index on disk.

Embeddings depend on the backbone and the images only, never on phi, so the embed
stage is re-used by every `dvc exp run` that changes training.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import faiss
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pipeline.core import executor as executors
from pipeline.core import io
from pipeline.core.errors import PipelineError
from pipeline.core.params import at_least
from pipeline.core.registry import Registry
from pipeline.data.images import ImageSource, open_image, to_rgb
from pipeline.evaluation import ivfpq
from pipeline.evaluation.benchmarks import Benchmark

INDEX = Registry("faiss index type")
INDEX.register("flat")(lambda d, n: "Flat")  # exact; the default
INDEX.register("hnsw")(lambda d, n: "HNSW32")  # approximate, for galleries of millions
# IVF: ~4 sqrt(n) lists; never more lists than vectors to train them on (a folder of 10 photos)
INDEX.register("ivf")(lambda d, n: f"IVF{max(1, min(n, 4096, int(4 * np.sqrt(n))))},Flat")
# IVF-PQ re-ranked, under a memory budget (pipeline/evaluation/ivfpq.py): for collections past RAM
INDEX.register("ivfpq")(lambda d, n, budget_gb=ivfpq.DEFAULT_BUDGET_GB: ivfpq.plan(n, d, budget_gb * 1e9).factory)


@dataclass
class EmbedConfig:
    """params.yaml `embed` (stages/embed.py)."""

    batch_size: int = 256
    num_workers: int = 0
    index: str = "flat"

    def check(self) -> None:
        INDEX.get(self.index)  # a typo fails now, not after the whole gallery is embedded
        at_least("embed.batch_size", self.batch_size, 1)
        at_least("embed.num_workers", self.num_workers, 0)


class _Images(Dataset):
    def __init__(self, sources: list[ImageSource], preprocess, skip_unreadable: bool = False):
        self.sources, self.preprocess, self.skip_unreadable = sources, preprocess, skip_unreadable

    def __len__(self):
        return len(self.sources)

    def __getitem__(self, i):
        try:
            return i, self.preprocess(to_rgb(open_image(self.sources[i])))
        except PipelineError as e:
            if not self.skip_unreadable:
                raise
            return i, str(e)


def _readable(batch: list) -> tuple[list[int], torch.Tensor | None, dict[int, str]]:
    """Collates the images that decoded; the others' errors by position."""
    kept = [(i, x) for i, x in batch if not isinstance(x, str)]
    problems = {i: x for i, x in batch if isinstance(x, str)}
    return [i for i, _ in kept], torch.stack([x for _, x in kept]) if kept else None, problems


_TOWER: dict = {}  # a cluster worker's image tower, loaded once by _load_tower


def _load_tower(identity: dict) -> None:
    """The backbone of `identity` (backbone.json's record, the weights' path absolute) on this worker's device."""
    from pipeline.model.backbone import from_identity

    device = "cuda" if torch.cuda.is_available() else "cpu"
    backbone = from_identity(identity, device)
    _TOWER.update(model=backbone.model, preprocess=backbone.preprocess, device=device)


@torch.no_grad()
def _encode(model: torch.nn.Module, images: torch.Tensor | None, device: str) -> np.ndarray | None:
    if images is None:
        return None
    with torch.autocast(device, dtype=torch.float16 if device == "cuda" else torch.float32, enabled=device == "cuda"):
        return model.encode_image(images.to(device)).float().cpu().numpy()


def _embed_block(task: tuple) -> tuple[list[int], np.ndarray | None, dict[int, str]]:
    """A cluster worker's task: one batch of images (positions, sources), read and embedded there."""
    positions, sources, skip_unreadable = task
    images = _Images(sources, _TOWER["preprocess"], skip_unreadable)
    kept, batch, problems = _readable([(positions[i], images[i][1]) for i in range(len(sources))])
    return kept, _encode(_TOWER["model"], batch, _TOWER["device"]), problems


def embed_readable(model: torch.nn.Module, preprocess, sources: list[ImageSource], *, batch_size: int,
                   num_workers: int, device: str, skip_unreadable: bool = False, progress: bool = True,
                   executor: executors.ExecutorConfig | None = None, identity: dict | None = None,
                   ) -> tuple[np.ndarray, list[int], dict[int, str]]:
    """Unnormalised image latents [N, d] float32 (phi takes them unnormalised, as in training),
    the positions in `sources` they belong to, and the error of each position left out: none
    unless `skip_unreadable`, which drops files that do not decode (a user's photo folder)
    where a benchmark raises.

    On a Ray `executor`, each batch of `batch_size` images (the same batches as here, so the same
    arithmetic) is read and embedded by a worker holding the backbone of `identity` (its record,
    the weights' path one every node sees), on a GPU where the cluster has them.
    """
    loader = DataLoader(_Images(sources, preprocess, skip_unreadable), batch_size=batch_size,
                        num_workers=num_workers, pin_memory=device == "cuda", collate_fn=_readable)
    # read only on a cluster, with the paths every node sees
    blocks = ((list(range(a, min(a + batch_size, len(sources)))),
               [replace(s, path=Path(s.path).resolve()) for s in sources[a:a + batch_size]], skip_unreadable)
              for a in range(0, len(sources), batch_size))
    local = executors.Job(lambda batch: (batch[0], _encode(model, batch[1], device), batch[2]), loader)
    remote = executors.Job(_embed_block, blocks, _load_tower, (identity,), gpus=True)
    out, rows, problems = [], [], {}
    try:
        for kept, latents, failed in tqdm(executors.run(executor, local, remote), total=len(loader),
                                          desc="embedding images", unit="batch", disable=not progress):
            problems.update(failed)
            if latents is not None:
                out.append(latents)
                rows += kept
    except PipelineError as e:  # from a worker, its message carries the worker's traceback: keep the last line
        raise PipelineError(str(e).strip().splitlines()[-1].split("PipelineError: ", 1)[-1]) from None
    return (np.concatenate(out) if out else np.zeros((0, 0), np.float32)), rows, problems


def embed_images(model: torch.nn.Module, preprocess, sources: list[ImageSource], *, batch_size: int,
                 num_workers: int, device: str, executor: executors.ExecutorConfig | None = None,
                 identity: dict | None = None) -> np.ndarray:
    """Unnormalised image latents [N, d] float32, one per source; an unreadable image raises."""
    return embed_readable(model, preprocess, sources, batch_size=batch_size, num_workers=num_workers,
                          device=device, executor=executor, identity=identity)[0]


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def build_index(features: np.ndarray, ids: np.ndarray, kind: str,
                memory_gb: float = ivfpq.DEFAULT_BUDGET_GB) -> faiss.Index:
    """Inner-product index over normalised features (= cosine similarity), ids = row numbers;
    `memory_gb`: the ivfpq kind's budget."""
    if kind == "ivfpq":  # trained on a sample, filled shard by shard: no normalised copy of all
        return ivfpq.build(features, np.asarray(ids), memory_gb * 1e9, progress=len(ids) > ivfpq.SHARD)
    d = features.shape[1]
    index = faiss.IndexIDMap(faiss.index_factory(d, INDEX.get(kind)(d, len(ids)), faiss.METRIC_INNER_PRODUCT))
    x = normalise(features[ids]).astype(np.float32, copy=False)
    if kind == "ivf":
        # k-means on at most 64 points a list (faiss's own seeded sample; it takes 256 by default):
        # 4x less training at 1M images, the same lists up to ~65k (n <= 64 * 4 sqrt(n))
        faiss.extract_index_ivf(index).cp.max_points_per_centroid = 64
    if not index.is_trained:
        index.train(x)
    # faiss's search defaults favour speed over recall (1 IVF list, HNSW beam 16): recall@10 was
    # ~0.6 of flat's on clustered latents; these give >= 0.9 (tests/test_gallery.py). Saved in the file.
    if kind == "ivf":
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = max(1, ivf.nlist // 8)
    if kind == "hnsw":
        hnsw = faiss.downcast_index(index.index).hnsw
        hnsw.efConstruction, hnsw.efSearch = 80, 128
    index.add_with_ids(x, ids.astype(np.int64))
    return index


def embed_benchmark(bench: Benchmark, model: torch.nn.Module, preprocess, *, batch_size: int, num_workers: int,
                    index: str, device: str, executor: executors.ExecutorConfig | None = None,
                    identity: dict | None = None) -> tuple[list[str], np.ndarray, dict[str, faiss.Index]]:
    """Every image of `bench` embedded (rows in the order of `names`), and one index per gallery
    its queries are ranked against: a group's own where it has groups (FashionIQ's categories),
    else "" for its one gallery; none where queries rank only their candidates (GeneCIS)."""
    names = list(bench.images)
    latents = embed_images(model, preprocess, [bench.images[n] for n in names], batch_size=batch_size,
                           num_workers=num_workers, device=device, executor=executor, identity=identity)
    row = {n: i for i, n in enumerate(names)}
    galleries = dict(bench.galleries) if bench.galleries else {"": bench.gallery}
    indexes = {g: build_index(latents, np.array([row[n] for n in members]), index)
               for g, members in galleries.items() if members}
    return names, latents, indexes


def save(out: Path, names: list[str], features: np.ndarray, indexes: dict[str, faiss.Index]) -> None:
    """`indexes`: one per gallery, keyed by group ("" = the benchmark's one gallery)."""
    io.save_npy(out / "features.npy", features)
    io.write_text(out / "names.json", json.dumps({"images": names, "galleries": sorted(indexes)}))
    for group, index in indexes.items():
        with io.atomic(out / f"gallery{'-' + group if group else ''}.faiss") as tmp:
            faiss.write_index(index, str(tmp))


def on_gpus(index: faiss.Index) -> faiss.Index:
    """The index copied to every GPU when faiss-gpu sees one (searches run there), else the index itself.

    Indexes are stored on disk as CPU indexes; a type without a GPU version (HNSW) stays on the CPU.
    """
    if getattr(faiss, "get_num_gpus", lambda: 0)() == 0:
        return index
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except (RuntimeError, AttributeError):
        return index


def load(out: Path) -> tuple[list[str], np.ndarray, dict[str, faiss.Index]]:
    meta = json.loads((out / "names.json").read_text())
    indexes = {g: on_gpus(faiss.read_index(str(out / f"gallery{'-' + g if g else ''}.faiss")))
               for g in meta["galleries"]}
    return meta["images"], np.load(out / "features.npy"), indexes
