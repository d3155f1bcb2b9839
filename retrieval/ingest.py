"""Incremental ingest of a file or folder into a collection.

Files are read and hashed first; a file whose hash matches its document row is left untouched (not even
parsed). New and changed files are parsed, chunked and embedded in batches of about `batch_chunks` chunks
(one `embed` call each, so the model sorts and pads a large batch), and each batch is committed in one
transaction; a changed file's old chunks are replaced in that same transaction. So a process killed
mid-ingest loses at most the batch in flight: at most `batch_chunks` (64) chunks of embedding work, or
one document when a single document has more chunks (a document is never split across commits); the
next ingest skips everything committed, by content hash. Documents under the
ingested root whose files are gone (or are no longer selected, or no longer load) are removed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ember.retrieval import store
from ember.retrieval.chunking import Chunk, ChunkConfig, Chunker, TokenChunker
from ember.retrieval.collection import Collection, PreparedDocument
from ember.retrieval.embedders import Embedder
from ember.retrieval.errors import InvalidSearchError, LoaderError, RetrievalError
from ember.retrieval.loaders.base import Document, source_of
from ember.retrieval.loaders.folder import (
    DEFAULT_MAX_BYTES,
    LOADERS,
    Candidate,
    Skipped,
    parse,
    read_candidate,
    walk,
)
from ember.retrieval.tokens import TokenCounter

BATCH_CHUNKS = 64  # chunks per commit: the most embedding work a kill -9 can lose (besides one big document)
LOADER_CHOICES = ("ember", "llamaindex")  # llamaindex: LlamaIndex's readers for the formats Ember does not read
SPLITTER_CHOICES = ("ember", "langchain-recursive", "llamaindex-sentence")


@dataclass(frozen=True, slots=True)
class IngestOptions:
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    max_bytes: int = DEFAULT_MAX_BYTES
    tags: tuple[str, ...] = ()
    batch_chunks: int = BATCH_CHUNKS
    loader: str = "ember"  # LOADER_CHOICES
    splitter: str = "ember"  # SPLITTER_CHOICES

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.batch_chunks < 1:
            raise InvalidSearchError("max_bytes and batch_chunks must be positive")
        if self.loader not in LOADER_CHOICES:
            raise InvalidSearchError(f"loader must be one of {', '.join(LOADER_CHOICES)}, got {self.loader!r}")
        if self.splitter not in SPLITTER_CHOICES:
            raise InvalidSearchError(f"splitter must be one of {', '.join(SPLITTER_CHOICES)}, got {self.splitter!r}")


@dataclass(slots=True)
class IngestReport:
    files: int = 0  # files selected by the walk
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    chunks: int = 0  # chunks embedded and written by this ingest
    seconds: float = 0.0

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds if self.seconds else 0.0


Progress = Callable[[int, int, str], None]  # files done, files total, current file


def chunk_config(collection: Collection, embedder: Embedder) -> ChunkConfig:
    """The collection's chunk size, capped to what the embedder sees whole (MiniLM: 256 - [CLS] - [SEP])."""
    size = collection.row.chunk_size
    if embedder.max_tokens:
        size = min(size, embedder.max_tokens)
    return ChunkConfig(size, min(collection.row.chunk_overlap, size - 1))


def make_chunker(splitter: str, counter: TokenCounter, config: ChunkConfig) -> Chunker:
    """Ember's `TokenChunker`, or LangChain's / LlamaIndex's splitter (the integrations extra)."""
    if splitter == "ember":
        return TokenChunker(counter, config)
    from ember.retrieval.integrations.splitters import make_splitter

    return make_splitter(splitter, counter, config)


def check_extras(options: IngestOptions) -> None:
    """Raise `MissingExtraError` now (before a collection is created) when the loader or splitter needs one."""
    from ember.retrieval.integrations import require

    if options.loader == "llamaindex":
        require("llama_index.readers.file", "llama-index-readers-file", "--loader llamaindex")
    if options.splitter == "langchain-recursive":
        require("langchain_text_splitters", "langchain-text-splitters", "--splitter langchain-recursive")
    if options.splitter == "llamaindex-sentence":
        require("llama_index.core.node_parser", "llama-index-core", "--splitter llamaindex-sentence")


def ingest(collection: Collection, embedder: Embedder, root: str | Path, options: IngestOptions | None = None,
           progress: Progress | None = None) -> IngestReport:
    options = options or IngestOptions()
    root = Path(root)
    if not root.exists():
        raise RetrievalError(f"{root} does not exist", hint="Give a file or a folder to ingest.")
    collection.check_embedder(embedder.info, "ingest into")
    chunker = make_chunker(options.splitter, embedder.token_counter(), chunk_config(collection, embedder))
    other = None  # LlamaIndex's readers, for the suffixes Ember does not read itself
    if options.loader == "llamaindex":
        from ember.retrieval.integrations.readers import LlamaIndexReader

        other = LlamaIndexReader()
    extra = other.suffixes - frozenset(LOADERS) if other else frozenset[str]()
    report = IngestReport()
    start = time.perf_counter()
    with collection.lock():
        collection.remove_stale_files()
        collection.load_indexes()
        root_source = source_of(root)
        existing = {s: d for s, d in collection.documents().items()
                    if s == root_source or s.startswith(root_source.rstrip("/") + "/")}
        paths = list(walk(root, options.include, options.exclude))
        report.files = len(paths)
        seen: set[str] = set()
        pending: list[tuple[Candidate, Document, list[Chunk], int | None]] = []

        def flush() -> None:
            if not pending:
                return
            texts = [c.text for _, _, chunks, _ in pending for c in chunks]
            vectors = embedder.embed(texts)
            offset, ready = 0, []
            for cand, doc, chunks, old_id in pending:
                new = [store.NewChunk(n, c.text, c.start, c.end, c.tokens, c.page, c.headings, vectors[offset + n])
                       for n, c in enumerate(chunks)]
                offset += len(chunks)
                ready.append(PreparedDocument.build(
                    doc.source, doc.title, doc.kind, cand.data, new, pages=len(doc.page_starts) or None,
                    tags=options.tags, replaces=old_id))
                (report.updated if old_id is not None else report.added).append(cand.source)
            collection.apply(ready)
            report.chunks += len(texts)
            pending.clear()

        for i, path in enumerate(paths):
            if progress:
                progress(i, len(paths), str(path))
            try:
                cand = read_candidate(path, options.max_bytes, extra)
                seen.add(cand.source)
                old = existing.get(cand.source)
                if old is not None and old.content_hash == cand.content_hash:
                    report.unchanged += 1
                    if old.tags != options.tags:
                        collection.set_tags(old.id, options.tags)
                    continue
                doc = other(cand.path, cand.data) if cand.path.suffix.lower() in extra and other else parse(cand)
            except LoaderError as e:
                report.skipped.append(Skipped(str(path), e.reason))
                continue
            chunks = chunker.chunk(doc)
            if not chunks:
                report.skipped.append(Skipped(str(path), "no text to index"))
                seen.discard(cand.source)
                continue
            if pending and sum(len(p[2]) for p in pending) + len(chunks) > options.batch_chunks:
                flush()  # commit what is pending first: a batch stays within batch_chunks (or is one document)
            pending.append((cand, doc, chunks, old.id if old is not None else None))
            if sum(len(p[2]) for p in pending) >= options.batch_chunks:
                flush()
        flush()
        gone = [d for s, d in existing.items() if s not in seen]
        if gone:
            collection.apply([], [d.id for d in gone])
            report.removed = sorted(d.source for d in gone)
        if progress:
            progress(len(paths), len(paths), "saving indexes")
        collection.save()
    report.seconds = time.perf_counter() - start
    return report

