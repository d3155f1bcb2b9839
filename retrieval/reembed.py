"""Re-embedding a collection with another model: a shadow index, swapped in atomically.

New vectors are computed for every chunk into `shadow_vectors` (committed in batches; the live rows are
not touched, so searches keep using the old model meanwhile), a shadow FAISS index is built from them and
saved beside the live one, and then one transaction moves the new vectors into the chunk rows and records
the new embedder. Only after that commit does the shadow file replace `index.faiss`. A crash before the
commit (mid-batch, between shadow batches, after the shadow index is saved) leaves the old collection as it
was, and the next re-embed starts over (a stale shadow file and shadow rows are cleared next time); a
crash after it leaves SQLite wholly on the new model, and the next open rebuilds the index from it since
`meta.json` still names the old one. Old and new vectors are never in one index.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ember.retrieval import store
from ember.retrieval.collection import Collection
from ember.retrieval.embedders import Embedder
from ember.retrieval.errors import RetrievalError
from ember.retrieval.fsutil import fsync_dir

SHADOW = "index.next.faiss"


@dataclass(frozen=True, slots=True)
class ReembedReport:
    chunks: int
    old_embedder: str
    new_embedder: str
    seconds: float


def reembed(collection: Collection, embedder: Embedder, embedder_spec: str | None = None, batch: int = 512,
            progress: Callable[[int, int], None] | None = None) -> ReembedReport:
    info = embedder.info
    old = collection.embedder
    name, con = collection.name, collection.con
    start = time.perf_counter()
    with collection.lock():
        collection.remove_stale_files()
        with store.transaction(con):
            con.execute("DELETE FROM shadow_vectors WHERE collection = ?", (name,))
        rows = list(store.all_chunk_texts(con, name))
        for i in range(0, len(rows), batch):
            part = rows[i:i + batch]
            vectors = embedder.embed([t for _, t in part])
            with store.transaction(con):
                con.executemany("INSERT INTO shadow_vectors VALUES (?,?,?)",
                                [(name, cid, np.ascontiguousarray(v, np.float32).tobytes())
                                 for (cid, _), v in zip(part, vectors, strict=True)])
            collection.events("shadow_committed")
            if progress:
                progress(min(i + batch, len(rows)), len(rows))
        new_row = replace(collection.row, embedder_id=info.model_id, embedder_spec=embedder_spec or info.model_id,
                          dim=info.dim, normalized=info.normalized)
        collection.row = new_row
        spec = collection.index_spec(len(rows))
        shadow = collection.build_index(spec, table="shadow_vectors")
        if shadow.index is not None:
            shadow.save(collection.folder / SHADOW)
        collection.events("shadow_saved")
        with store.transaction(con):
            n = con.execute("SELECT count(*) FROM shadow_vectors WHERE collection = ?", (name,)).fetchone()[0]
            if n != len(rows):
                raise RetrievalError(f"re-embed of {name!r} found {n} new vectors for {len(rows)} chunks; "
                                     "nothing changed")
            con.execute("UPDATE chunks SET vector = (SELECT s.vector FROM shadow_vectors s WHERE s.collection = ? "
                        "AND s.chunk_id = chunks.id) WHERE id IN (SELECT chunk_id FROM shadow_vectors "
                        "WHERE collection = ?)", (name, name))
            con.execute("UPDATE collections SET embedder_id = ?, embedder_spec = ?, dim = ?, normalized = ? "
                        "WHERE name = ?", (info.model_id, new_row.embedder_spec, info.dim, int(info.normalized), name))
            store.bump_generation(con, name)
            con.execute("DELETE FROM shadow_vectors WHERE collection = ?", (name,))
        collection.events("swapped")
        collection.row = store.get_collection(con, name) or new_row
        if shadow.index is not None:
            os.replace(collection.folder / SHADOW, collection.folder / "index.faiss")
            fsync_dir(collection.folder)
        collection.index = shadow
        collection.save()
    return ReembedReport(len(rows), old.describe(), info.describe(), time.perf_counter() - start)
