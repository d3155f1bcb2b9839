"""FAISS vector indexes: metric (cosine or L2), kind (flat, hnsw, ivf, ivfpq), chunk ids, atomic save.

Every vector carries its chunk id (int64) so chunks can be deleted. Flat keeps ids in an `IndexIDMap2`,
IVF kinds store them natively; both delete in place. FAISS's HNSW cannot remove vectors, so deleted ids
become tombstones that searches exclude through an `IDSelector`; `compact()` (or a rebuild) drops them.
Cosine is inner product on L2-normalised vectors; scores are similarities (higher is better), and for L2
the negated squared distance. With faiss-gpu and a CUDA device, flat and IVF searches run on a GPU copy of
the index; the CPU index stays the one that is mutated and saved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ember.retrieval.errors import InvalidSearchError, MissingDependencyError, VectorIndexError
from ember.retrieval.fsutil import atomic_write

METRICS = ("cosine", "l2")
KINDS = ("flat", "hnsw", "ivf", "ivfpq")


def faiss_module() -> Any:
    try:
        import faiss
    except ImportError:
        raise MissingDependencyError("faiss-cpu", "Vector search") from None
    return faiss


def gpu_available() -> bool:
    faiss = faiss_module()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@dataclass(frozen=True, slots=True)
class IndexSpec:
    dim: int
    metric: str = "cosine"
    kind: str = "flat"
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    nlist: int | None = None  # IVF lists; None = about 4·sqrt(n) at training time
    nprobe: int = 16
    pq_m: int = 48  # IVF-PQ sub-quantizers (bytes per vector at 8 bits); must divide dim
    pq_bits: int = 8
    use_gpu: bool = False

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise InvalidSearchError(f"index dimension must be positive, got {self.dim}")
        if self.metric not in METRICS:
            raise InvalidSearchError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.kind not in KINDS:
            raise InvalidSearchError(f"index kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if min(self.hnsw_m, self.ef_construction, self.ef_search, self.nprobe, self.pq_m, self.pq_bits) < 1:
            raise InvalidSearchError("index parameters must be positive")
        if self.kind == "ivfpq" and self.dim % self.pq_m:
            raise InvalidSearchError(f"ivfpq needs pq_m dividing dim={self.dim}, got pq_m={self.pq_m}")

    def nlist_for(self, n: int) -> int:
        wanted = self.nlist or max(1, int(4 * math.sqrt(n)))
        return max(1, min(wanted, n // 39 or 1))  # FAISS wants ~39 training points per centroid


class VectorIndex:
    """One FAISS index with chunk ids. Not thread-safe for writes; searches may run concurrently."""

    def __init__(self, spec: IndexSpec) -> None:
        self.spec = spec
        self.faiss = faiss_module()
        self.index: Any = None if spec.kind in ("ivf", "ivfpq") else self._new_untrained()
        self.deleted: set[int] = set()  # HNSW tombstones
        self._gpu: Any = None
        self._gpu_stale = True

    # building -------------------------------------------------------------------------------------
    def _faiss_metric(self) -> int:
        return self.faiss.METRIC_INNER_PRODUCT if self.spec.metric == "cosine" else self.faiss.METRIC_L2

    def _new_untrained(self, n_train: int = 0) -> Any:
        f, s, metric = self.faiss, self.spec, self._faiss_metric()
        if s.kind == "flat":
            return f.IndexIDMap2(f.IndexFlat(s.dim, metric))
        if s.kind == "hnsw":
            hnsw = f.IndexHNSWFlat(s.dim, s.hnsw_m, metric)
            hnsw.hnsw.efConstruction = s.ef_construction
            hnsw.hnsw.efSearch = s.ef_search
            return f.IndexIDMap2(hnsw)
        quantizer = f.IndexFlat(s.dim, metric)
        nlist = s.nlist_for(n_train)
        if s.kind == "ivf":
            ivf = f.IndexIVFFlat(quantizer, s.dim, nlist, metric)
        else:
            ivf = f.IndexIVFPQ(quantizer, s.dim, nlist, s.pq_m, s.pq_bits, metric)
        ivf.nprobe = min(s.nprobe, nlist)
        return ivf

    def _prepare(self, vectors: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.spec.dim:
            raise VectorIndexError(f"vectors of shape {x.shape} do not fit a {self.spec.dim}-d index")
        if self.spec.metric == "cosine":
            x = x.copy()
            self.faiss.normalize_L2(x)
        return x

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        x, ids = self._prepare(vectors), np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
        if not len(x):
            return
        if self.index is None:  # IVF: trained on the first batch (a rebuild retrains on everything)
            min_points = 2 ** self.spec.pq_bits if self.spec.kind == "ivfpq" else 1
            if len(x) < min_points:
                raise VectorIndexError(f"an {self.spec.kind} index needs at least {min_points} vectors to train, "
                                       f"got {len(x)}", hint="Use kind flat or hnsw for small collections.")
            index = self._new_untrained(len(x))
            # FAISS wants 39..256 points per centroid (and 39 * 256 for PQ codebooks); more only slows k-means
            cap = max(64 * index.nlist, 10_000)
            sample = x if len(x) <= cap else x[np.random.default_rng(0).choice(len(x), cap, replace=False)]
            index.train(sample)
            self.index = index
        self.index.add_with_ids(x, ids)
        self._gpu_stale = True

    def remove(self, ids: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.index is None or not len(ids):
            return
        if self.spec.kind == "hnsw":
            self.deleted.update(int(i) for i in ids)
        else:
            self.index.remove_ids(self.faiss.IDSelectorBatch(ids))
        self._gpu_stale = True

    @property
    def ntotal(self) -> int:
        """Live vectors (tombstones excluded)."""
        return 0 if self.index is None else int(self.index.ntotal) - len(self.deleted)

    def ids(self) -> np.ndarray:
        """Every id stored in the index, tombstoned ones included."""
        if self.index is None:
            return np.zeros(0, np.int64)
        if self.spec.kind in ("flat", "hnsw"):
            return self.faiss.vector_to_array(self.index.id_map).astype(np.int64)
        invlists = self.index.invlists
        parts = [self.faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
                 for i in range(invlists.nlist) if invlists.list_size(i)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def compact(self, vectors_of: Any = None) -> None:
        """Drop HNSW tombstones by rebuilding the graph from the live vectors the index still holds."""
        if self.spec.kind != "hnsw" or not self.deleted or self.index is None:
            return
        all_ids = self.ids()
        keep = ~np.isin(all_ids, np.fromiter(self.deleted, np.int64))
        vectors = self.index.index.reconstruct_n(0, self.index.ntotal)[keep]
        self.index, self.deleted = self._new_untrained(), set()
        self.add(all_ids[keep], vectors)

    # searching ------------------------------------------------------------------------------------
    def _params(self, allow: np.ndarray | None) -> tuple[Any, list[Any]]:
        f, keep = self.faiss, []
        sel = None
        if allow is not None:
            allow = np.ascontiguousarray(allow, dtype=np.int64)
            sel = f.IDSelectorBatch(allow)
            keep.append(allow)
        elif self.deleted:
            dead = np.fromiter(self.deleted, np.int64)
            inner = f.IDSelectorBatch(dead)
            sel = f.IDSelectorNot(inner)
            keep += [dead, inner]
        if self.spec.kind == "hnsw":
            params = f.SearchParametersHNSW(efSearch=self.spec.ef_search)
        elif self.spec.kind in ("ivf", "ivfpq"):
            params = f.SearchParametersIVF(nprobe=min(self.spec.nprobe, self.index.nlist))
        else:
            params = f.SearchParameters()
        if sel is not None:
            params.sel = sel
            keep.append(sel)
        return params, keep

    def search(self, queries: np.ndarray, k: int, allow: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n_queries, k); missing results have id -1 and score -inf."""
        q = self._prepare(queries)
        n = len(q)
        if self.index is None or self.ntotal == 0 or k < 1 or (allow is not None and not len(allow)):
            return np.full((n, max(k, 0)), -np.inf, np.float32), np.full((n, max(k, 0)), -1, np.int64)
        if allow is not None and self.deleted:
            allow = allow[~np.isin(allow, np.fromiter(self.deleted, np.int64))]
        params, _keep = self._params(allow)
        index = self._gpu_index() if self.spec.use_gpu and allow is None else self.index
        if index is self.index:
            distances, ids = index.search(q, k, params=params)
        else:
            distances, ids = index.search(q, k)
        scores = distances if self.spec.metric == "cosine" else -distances
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return scores, ids.astype(np.int64)

    def _gpu_index(self) -> Any:
        if self.spec.kind == "hnsw" or not gpu_available():
            return self.index
        if self._gpu is None or self._gpu_stale:
            if not hasattr(self, "_gpu_res"):
                self._gpu_res = self.faiss.StandardGpuResources()
            self._gpu = self.faiss.index_cpu_to_gpu(self._gpu_res, 0, self.index)
            self._gpu_stale = False
        return self._gpu

    # persistence ----------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Atomically (temp file, fsync, rename). Tombstones are not saved: `load` recomputes them."""
        if self.index is None:
            raise VectorIndexError("nothing to save: the index has no vectors yet")
        atomic_write(path, lambda tmp: self.faiss.write_index(self.index, str(tmp)))

    @classmethod
    def load(cls, path: Path, spec: IndexSpec, alive: np.ndarray | None = None) -> VectorIndex:
        """Read `path`; with `alive` (the ids that should be live), stale ids become tombstones or are removed."""
        out = cls(spec)
        try:
            index = out.faiss.read_index(str(path))
        except RuntimeError as e:
            raise VectorIndexError(f"cannot read index {path}: {str(e).splitlines()[-1]}") from None
        if index.d != spec.dim or index.metric_type != out._faiss_metric():
            raise VectorIndexError(f"{path} holds a {index.d}-d index with another metric than {spec}")
        out.index = index
        if spec.kind in ("ivf", "ivfpq"):
            out.spec = replace(spec, nlist=index.nlist)
        if alive is not None:
            stale = np.setdiff1d(out.ids(), alive, assume_unique=False)
            out.remove(stale)
        return out
