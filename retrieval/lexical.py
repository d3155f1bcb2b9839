"""BM25 that is built once at ingest and updated incrementally, never per query.

Tokenisation is bm25s's (scikit-learn style words, English stopwords, Snowball stems via PyStemmer).
bm25s stores precomputed per-document scores, which depend on global IDF and average length, so adding
one document would mean rebuilding it. Here raw term frequencies live in immutable sparse segments (like
Lucene's), with document frequencies and lengths kept as running totals; a query reads only its terms'
postings and applies the same Lucene BM25 formula as `bm25s.BM25(method="lucene")` (a test checks the
scores match). Adds append a segment, deletes flip a live bit and update the totals, and segments are
merged when there are too many. `builds` counts full builds: queries never touch it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ember.retrieval.errors import InvalidSearchError, MissingDependencyError, VectorIndexError
from ember.retrieval.fsutil import atomic_write_bytes

MAX_SEGMENTS = 8


def _scipy_sparse() -> Any:
    import scipy.sparse

    return scipy.sparse


@dataclass(slots=True)
class Segment:
    ids: np.ndarray  # (n,) int64 chunk ids
    lengths: np.ndarray  # (n,) float32 document lengths in tokens
    alive: np.ndarray  # (n,) bool
    csr: Any  # (n, vocab_at_creation) term frequencies, rows = documents
    csc: Any  # the same, columns = terms (postings)


class Analyzer:
    """Text -> stemmed terms, the way bm25s tokenizes."""

    __slots__ = ("stemmer", "stopwords")

    def __init__(self, stemmer: str | None = "english", stopwords: str = "en") -> None:
        try:
            import bm25s  # noqa: F401
        except ImportError:
            raise MissingDependencyError("bm25s", "Lexical (BM25) search") from None
        self.stopwords = stopwords
        self.stemmer: Any = None
        if stemmer:
            try:
                import Stemmer
            except ImportError:
                raise MissingDependencyError("PyStemmer", "BM25 stemming") from None
            self.stemmer = Stemmer.Stemmer(stemmer)

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        import bm25s

        if not texts:
            return []
        stem = self.stemmer.stemWords if self.stemmer else None
        return bm25s.tokenize(list(texts), stopwords=self.stopwords, stemmer=stem, return_ids=False,
                              show_progress=False)


class BM25Index:
    def __init__(self, k1: float = 1.5, b: float = 0.75, stemmer: str | None = "english") -> None:
        if k1 < 0 or not 0 <= b <= 1:
            raise InvalidSearchError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1, self.b, self.stemmer = k1, b, stemmer
        self.analyzer = Analyzer(stemmer)
        self.vocab: dict[str, int] = {}
        self.df = np.zeros(0, np.int64)
        self.segments: list[Segment] = []
        self.n_docs = 0
        self.total_length = 0.0
        self.builds = 0  # full builds (from_corpus / merge of everything); a query never adds one

    # updates ----------------------------------------------------------------------------------------
    def add(self, ids: Sequence[int] | np.ndarray, texts: Sequence[str]) -> None:
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        if not len(texts):
            return
        sp = _scipy_sparse()
        rows, cols, counts = [], [], []
        lengths = np.zeros(len(texts), np.float32)
        for r, terms in enumerate(self.analyzer(texts)):
            lengths[r] = len(terms)
            term_ids = np.fromiter((self.vocab.setdefault(t, len(self.vocab)) for t in terms), np.int64, len(terms))
            uniq, cnt = np.unique(term_ids, return_counts=True)
            rows.append(np.full(len(uniq), r, np.int64))
            cols.append(uniq)
            counts.append(cnt.astype(np.float32))
        v = len(self.vocab)
        csr = sp.csr_matrix((np.concatenate(counts), (np.concatenate(rows), np.concatenate(cols))),
                            shape=(len(texts), v), dtype=np.float32)
        self.df = np.concatenate([self.df, np.zeros(v - len(self.df), np.int64)])
        self.df[: csr.shape[1]] += np.diff(csr.tocsc().indptr)
        self.segments.append(Segment(np.asarray(ids, np.int64), lengths, np.ones(len(texts), bool), csr, csr.tocsc()))
        self.n_docs += len(texts)
        self.total_length += float(lengths.sum())
        if len(self.segments) > MAX_SEGMENTS:
            self.merge()

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Delete documents by id; returns how many were live."""
        ids = np.asarray(ids, np.int64)
        removed = 0
        for seg in self.segments:
            rows = np.flatnonzero(np.isin(seg.ids, ids) & seg.alive)
            if not len(rows):
                continue
            gone = seg.csr[rows]
            self.df[: gone.shape[1]] -= np.diff(gone.tocsc().indptr)
            seg.alive[rows] = False
            self.n_docs -= len(rows)
            self.total_length -= float(seg.lengths[rows].sum())
            removed += len(rows)
        return removed

    def merge(self) -> None:
        """Fold all segments into one, dropping deleted rows."""
        sp = _scipy_sparse()
        v = len(self.vocab)
        live = [(seg, np.flatnonzero(seg.alive)) for seg in self.segments]
        if not any(len(r) for _, r in live):
            self.segments = []
            return
        parts = []
        for seg, r in live:
            sub = seg.csr[r]
            parts.append(sp.csr_matrix((sub.data, sub.indices, sub.indptr), shape=(len(r), v)))
        csr = sp.vstack(parts, format="csr")
        ids = np.concatenate([seg.ids[r] for seg, r in live])
        lengths = np.concatenate([seg.lengths[r] for seg, r in live])
        self.segments = [Segment(ids, lengths, np.ones(len(ids), bool), csr, csr.tocsc())]

    @classmethod
    def from_corpus(cls, ids: Sequence[int] | np.ndarray, texts: Sequence[str], **kwargs: Any) -> BM25Index:
        index = cls(**kwargs)
        index.add(ids, texts)
        index.builds = 1
        return index

    @property
    def ids(self) -> np.ndarray:
        parts = [seg.ids[seg.alive] for seg in self.segments]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    # search -------------------------------------------------------------------------------------------
    def query_terms(self, query: str) -> np.ndarray:
        terms = self.analyzer([query])[0]
        return np.asarray([self.vocab[t] for t in terms if t in self.vocab], np.int64)

    def idf(self, term_ids: np.ndarray) -> np.ndarray:
        df = self.df[term_ids].astype(np.float64)
        return np.log(1 + (self.n_docs - df + 0.5) / (df + 0.5))

    def search(self, query: str, k: int, allow: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the best `k` live documents with a positive score, best first."""
        terms = self.query_terms(query)
        if not len(terms) or self.n_docs == 0 or k < 1:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        avg = self.total_length / self.n_docs
        idf = self.idf(terms)
        all_scores, all_ids = [], []
        for seg in self.segments:
            scores = np.zeros(len(seg.ids), np.float64)
            norm = self.k1 * (1 - self.b + self.b * seg.lengths / avg)
            for t, w in zip(terms, idf, strict=True):
                if t >= seg.csc.shape[1]:
                    continue
                lo, hi = seg.csc.indptr[t], seg.csc.indptr[t + 1]
                rows, tf = seg.csc.indices[lo:hi], seg.csc.data[lo:hi]
                scores[rows] += w * tf / (norm[rows] + tf)
            keep = seg.alive & (scores > 0)
            if allow is not None:
                keep &= np.isin(seg.ids, allow)
            all_scores.append(scores[keep])
            all_ids.append(seg.ids[keep])
        scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
        ids = np.concatenate(all_ids) if all_ids else np.zeros(0, np.int64)
        if len(scores) > k:
            top = np.argpartition(-scores, k - 1)[:k]
            scores, ids = scores[top], ids[top]
        order = np.lexsort((ids, -scores))
        return scores[order].astype(np.float32), ids[order]

    # persistence --------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """One .npz, written atomically."""
        arrays: dict[str, np.ndarray] = {"df": self.df}
        for i, seg in enumerate(self.segments):
            arrays |= {f"s{i}_ids": seg.ids, f"s{i}_len": seg.lengths, f"s{i}_alive": seg.alive,
                       f"s{i}_data": seg.csr.data, f"s{i}_indices": seg.csr.indices, f"s{i}_indptr": seg.csr.indptr,
                       f"s{i}_shape": np.asarray(seg.csr.shape, np.int64)}
        meta = {"k1": self.k1, "b": self.b, "stemmer": self.stemmer, "segments": len(self.segments),
                "n_docs": self.n_docs, "total_length": self.total_length, "vocab": list(self.vocab)}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> BM25Index:
        sp = _scipy_sparse()
        try:
            with np.load(path) as z:
                meta = json.loads(z["meta"].tobytes())
                out = cls(k1=meta["k1"], b=meta["b"], stemmer=meta["stemmer"])
                out.vocab = {t: i for i, t in enumerate(meta["vocab"])}
                out.df = z["df"].astype(np.int64)
                out.n_docs, out.total_length = int(meta["n_docs"]), float(meta["total_length"])
                for i in range(meta["segments"]):
                    csr = sp.csr_matrix((z[f"s{i}_data"], z[f"s{i}_indices"], z[f"s{i}_indptr"]),
                                        shape=tuple(z[f"s{i}_shape"]))
                    out.segments.append(Segment(z[f"s{i}_ids"], z[f"s{i}_len"], z[f"s{i}_alive"].copy(), csr,
                                                csr.tocsc()))
        except (OSError, KeyError, ValueError) as e:
            raise VectorIndexError(f"cannot read BM25 index {path}: {e}") from None
        return out
