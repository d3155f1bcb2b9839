from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ember.retrieval.errors import VectorIndexError
from ember.retrieval.fsutil import atomic_write
from ember.retrieval.index import IndexSpec, VectorIndex, gpu_available

DIM = 32


def clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, DIM))
    return (centers[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, DIM))).astype(np.float32)


def brute(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, metric: str) -> np.ndarray:
    if metric == "cosine":
        xn, qn = x / np.linalg.norm(x, axis=1, keepdims=True), q / np.linalg.norm(q, axis=1, keepdims=True)
        scores = qn @ xn.T
    else:
        scores = -((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return ids[np.argsort(-scores, axis=1, kind="stable")[:, :k]]


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_flat_is_exact(metric: str) -> None:
    x, q = clustered(1500), clustered(20, seed=1)
    ids = np.arange(1500, dtype=np.int64) * 3 + 7
    index = VectorIndex(IndexSpec(DIM, metric, "flat"))
    index.add(ids, x)
    scores, got = index.search(q, 10)
    assert (got == brute(x, ids, q, 10, metric)).mean() > 0.99  # float ties aside
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    if metric == "l2":
        np.testing.assert_allclose(-scores[0, 0], ((x[(got[0, 0] - 7) // 3] - q[0]) ** 2).sum(), rtol=1e-4)


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivfpq"])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_approximate_kinds_recall_delete_filter_persist(tmp_path: Path, kind: str, metric: str) -> None:
    x, q = clustered(4000), clustered(30, seed=2)
    ids = np.arange(4000, dtype=np.int64) + 100
    spec = IndexSpec(DIM, metric, kind, nprobe=8, pq_m=8, ef_search=128)
    index = VectorIndex(spec)
    index.add(ids, x)
    exact = brute(x, ids, q, 10, metric)
    _, got = index.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact, strict=True)])
    assert recall >= (0.6 if kind == "ivfpq" else 0.9), recall
    dead = exact[:, 0]  # delete every query's best hit
    index.remove(dead)
    assert index.ntotal == 4000 - len(set(dead.tolist()))
    _, after = index.search(q, 10)
    assert not np.isin(after, dead).any()
    allow = ids[::50]
    _, filtered = index.search(q, 5, allow=allow)
    assert np.isin(filtered[filtered >= 0], allow).all() and (filtered >= 0).sum() > 0
    index.save(tmp_path / "index.faiss")
    loaded = VectorIndex.load(tmp_path / "index.faiss", spec, alive=np.setdiff1d(ids, dead))
    _, again = loaded.search(q, 10)
    assert not np.isin(again, dead).any() and loaded.ntotal == index.ntotal
    assert np.array_equal(np.sort(np.setdiff1d(loaded.ids(), np.fromiter(loaded.deleted, np.int64))),
                          np.setdiff1d(ids, dead))


def test_hnsw_compact_drops_tombstones() -> None:
    x = clustered(600)
    ids = np.arange(600, dtype=np.int64)
    index = VectorIndex(IndexSpec(DIM, "cosine", "hnsw"))
    index.add(ids, x)
    index.remove(ids[:300])
    assert index.ntotal == 300 and len(index.deleted) == 300
    index.compact()
    assert index.ntotal == 300 and not index.deleted and sorted(index.ids()) == list(range(300, 600))
    _, got = index.search(x[400:401], 1)
    assert got[0, 0] == 400


def test_ivfpq_needs_training_points_and_shapes_are_checked() -> None:
    index = VectorIndex(IndexSpec(DIM, "cosine", "ivfpq", pq_m=8))
    with pytest.raises(VectorIndexError, match="at least 256 vectors"):
        index.add(np.arange(10), clustered(10))
    flat = VectorIndex(IndexSpec(DIM))
    with pytest.raises(VectorIndexError, match="do not fit a 32-d index"):
        flat.add(np.arange(3), np.zeros((3, 8), np.float32))
    with pytest.raises(ValueError, match="index kind"):
        IndexSpec(DIM, kind="annoy")
    empty_scores, empty_ids = flat.search(np.ones((2, DIM), np.float32), 3)
    assert (empty_ids == -1).all() and np.isneginf(empty_scores).all()


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "index.faiss"
    index = VectorIndex(IndexSpec(DIM))
    index.add(np.arange(50), clustered(50))
    index.save(target)
    before = target.read_bytes()

    def crash(tmp: Path) -> None:
        tmp.write_bytes(b"half written")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_bytes() == before and list(tmp_path.iterdir()) == [target]
    target.write_bytes(b"garbage")
    with pytest.raises(VectorIndexError, match="cannot read index"):
        VectorIndex.load(target, IndexSpec(DIM))


@pytest.mark.skipif(not gpu_available(), reason="needs faiss-gpu and a CUDA device")
def test_gpu_search_matches_cpu() -> None:
    x, q = clustered(5000), clustered(10, seed=3)
    ids = np.arange(5000, dtype=np.int64)
    cpu, gpu = VectorIndex(IndexSpec(DIM, kind="flat")), VectorIndex(IndexSpec(DIM, kind="flat", use_gpu=True))
    cpu.add(ids, x)
    gpu.add(ids, x)
    assert gpu._gpu_index() is not gpu.index
    np.testing.assert_array_equal(cpu.search(q, 10)[1], gpu.search(q, 10)[1])
