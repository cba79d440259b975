"""FAISS indexes of the gallery: exact flat search, approximate kinds close to it, GPU hand-off."""
import faiss
import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.evaluation import gallery, ivfpq


def clustered(n=3000, d=32, seed=0):
    """Latents in 30 clusters, like image embeddings (not uniform noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, d))
    return (centres[rng.integers(0, 30, n)] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)


def top_k(index, queries, k):
    return index.search(gallery.normalise(queries).astype(np.float32), k)[1]


def test_flat_is_exact_cosine_over_the_given_rows():
    x = clustered()
    ids = np.arange(0, len(x), 2)  # a gallery that is a subset of the embedded images
    index = gallery.build_index(x, ids, "flat")
    queries = clustered(50, seed=1)
    cos = gallery.normalise(queries) @ gallery.normalise(x[ids]).T
    assert np.array_equal(top_k(index, queries, 10), ids[np.argsort(-cos, axis=1)[:, :10]])


@pytest.mark.parametrize("kind, recall", [("hnsw", 0.95), ("ivf", 0.9)])
def test_approximate_kinds_find_most_of_the_exact_neighbours(kind, recall):
    x, queries = clustered(), clustered(100, seed=2)
    ids = np.arange(len(x))
    exact = top_k(gallery.build_index(x, ids, "flat"), queries, 10)
    found = top_k(gallery.build_index(x, ids, kind), queries, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, found)])
    assert overlap >= recall


def test_ivfpq_finds_most_of_the_exact_neighbours_in_its_budget(tmp_path):
    x, queries = clustered(20_000, 64), clustered(100, 64, seed=2)
    ids = np.arange(len(x))
    exact = top_k(gallery.build_index(x, ids, "flat"), queries, 10)
    index = gallery.build_index(x, ids, "ivfpq", memory_gb=0.002)
    plan = ivfpq.plan(len(x), 64, 0.002e9)
    assert plan.factory == "IVF128,PQ32x4fs,Refine(SQ8)" and plan.total_bytes <= 0.002e9
    faiss.write_index(index, str(tmp_path / "ivfpq.faiss"))  # its search settings travel in the file
    index = faiss.read_index(str(tmp_path / "ivfpq.faiss"))
    assert len(faiss.serialize_index(index)) < 0.002e9
    found = top_k(index, queries, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, found)]) >= 0.9


def test_ivfpq_takes_a_smaller_code_under_a_smaller_budget_and_names_one_too_small():
    rich, poor = ivfpq.plan(10**8, 768, 100e9), ivfpq.plan(10**8, 768, 10e9)
    assert rich.factory == "IVF8192_HNSW32,PQ384x4fs,Refine(SQ8)" and rich.total_bytes <= 100e9
    assert poor.factory == "IVF8192_HNSW32,PQ96x4fs" and poor.total_bytes <= 10e9
    with pytest.raises(PipelineError, match=r"100,000,000 vectors of 768 dimensions need at least 6\.43 GB"):
        ivfpq.plan(10**8, 768, 1e9)


def test_unknown_index_kind_names_the_valid_ones():
    with pytest.raises(PipelineError, match="flat, hnsw, ivf"):
        gallery.build_index(clustered(100), np.arange(100), "annoy")


def test_save_load_round_trip(tmp_path):
    x = clustered(200)
    indexes = {"": gallery.build_index(x, np.arange(200), "ivf")}
    gallery.save(tmp_path, [f"img{i}" for i in range(200)], x, indexes)
    names, latents, loaded = gallery.load(tmp_path)
    assert names[3] == "img3" and np.array_equal(latents, x)
    q = clustered(5, seed=3)
    assert np.array_equal(top_k(loaded[""], q, 5), top_k(indexes[""], q, 5))


def test_indexes_go_to_the_gpus_when_faiss_sees_one(monkeypatch):
    index = gallery.build_index(clustered(100), np.arange(100), "flat")
    assert gallery.on_gpus(index) is index  # faiss-cpu here: no GPU, nothing moves
    moved = []
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda i: moved.append(i) or "on gpus", raising=False)
    assert gallery.on_gpus(index) == "on gpus" and moved == [index]

    def no_gpu_version(i):
        raise RuntimeError("not implemented for this type of index")

    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", no_gpu_version, raising=False)
    assert gallery.on_gpus(index) is index  # e.g. HNSW: searched on the CPU
