"""A task's corpus as an Ember collection (SQuAD paragraphs, BEIR documents), built once and reused.

Each passage is one document whose source is `eval:<doc id>`, chunked, embedded and indexed through
Ember's own retrieval path, so retrieval and RAG suites measure what users get. The collection name holds
a hash of the corpus and the embedder, so a changed corpus or embedder gets a new collection.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ember.evals.datasets import Corpus
from ember.evals.suite import fingerprint

SOURCE_PREFIX = "eval:"


def doc_id(source: str) -> str:
    return source[len(SOURCE_PREFIX):] if source.startswith(SOURCE_PREFIX) else source


def collection_name(label: str, corpus: Corpus, embedder_id: str) -> str:
    """`eval-<label>-<hash>`: suites over the same corpus (squad-rag, squad-retrieval) share one collection."""
    digest = fingerprint(sorted(corpus.docs.items()), embedder_id)[:10]
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in label)[:40]
    return f"eval-{safe}-{digest}"


def build_collection(data_dir: Path, name: str, corpus: Corpus, embedder,  # embedder: ember.retrieval Embedder
                     progress: Callable[[int, int], None] | None = None):  # -> Collection
    """Open the collection, or create it and ingest every passage (in batches, committed as they go)."""
    from ember.retrieval.chunking import chunk_text
    from ember.retrieval.collection import Collection, CollectionConfig, PreparedDocument
    from ember.retrieval.ingest import chunk_config
    from ember.retrieval.store import NewChunk

    col = Collection.open_or_create(data_dir, name, embedder.info, CollectionConfig())
    have = set(col.documents())
    todo = [(i, d) for i, d in corpus.docs.items() if SOURCE_PREFIX + i not in have]
    if not todo:
        return col
    config = chunk_config(col, embedder)
    counter = embedder.token_counter()
    step = 256
    for start in range(0, len(todo), step):
        part = todo[start:start + step]
        chunked = [chunk_text(text, counter, config) for _, (_, text) in part]
        vectors = embedder.embed([c.text for cs in chunked for c in cs])
        docs, offset = [], 0
        for (pid, (title, text)), cs in zip(part, chunked, strict=True):
            new = [NewChunk(n, c.text, c.start, c.end, c.tokens, None, (), vectors[offset + n])
                   for n, c in enumerate(cs)]
            offset += len(cs)
            docs.append(PreparedDocument.build(SOURCE_PREFIX + pid, title or pid, "text", text.encode(), new,
                                               size=len(text)))
        with col.lock():
            col.apply(docs)
            col.save()
        if progress:
            progress(min(start + step, len(todo)), len(todo))
    return col
