"""Run by test_crash.py as a real subprocess: ingest a folder (or re-embed the collection), printing each
storage event, and SIGKILL itself at the N-th occurrence of a chosen event (or run to the end when the event
never comes; with event "random" it then waits for the test's SIGKILL).

    crash_worker.py DATA_DIR CORPUS URL EVENT NTH [ingest | ingest-default | reembed]

`ingest` commits every 8 chunks (many commits on a small corpus); `ingest-default` uses the default batch
(`IngestOptions()`), whose bound the test checks; `reembed` converts the collection to `ReversedEmbedder`."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ember.retrieval.collection import Collection, CollectionConfig
from ember.retrieval.embedders import EmbedderInfo, OpenAIEmbedder
from ember.retrieval.ingest import IngestOptions, ingest
from ember.retrieval.reembed import reembed
from ember.retrieval.tokens import TokenCounter

CONFIG = CollectionConfig(chunk_size=128, chunk_overlap=16)
REEMBED_BATCH = 16


class ReversedEmbedder:
    """Another embedding model, as far as a collection can tell: MiniLM's vectors with the dimensions reversed
    (still unit length, but every vector differs from MiniLM's own), under its own model id."""

    def __init__(self, inner: OpenAIEmbedder) -> None:
        self.inner = inner

    @property
    def info(self) -> EmbedderInfo:
        i = self.inner.info
        return EmbedderInfo("minilm-reversed", i.dim, i.normalized)

    @property
    def max_tokens(self) -> int | None:
        return self.inner.max_tokens

    def token_counter(self) -> TokenCounter:
        return self.inner.token_counter()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.ascontiguousarray(self.inner.embed(texts)[:, ::-1])


def main() -> None:
    data_dir, corpus, url, event, nth = sys.argv[1:6]
    mode = sys.argv[6] if len(sys.argv) > 6 else "ingest"
    embedder = OpenAIEmbedder(url, "all-MiniLM-L6-v2")
    col = Collection.open_or_create(Path(data_dir), "docs", embedder.info, CONFIG)
    seen = 0

    def on_event(name: str) -> None:
        nonlocal seen
        print(name, flush=True)
        if name == event:
            seen += 1
            if seen == int(nth):
                os.kill(os.getpid(), signal.SIGKILL)

    col.events = on_event
    if mode == "reembed":
        reembed(col, ReversedEmbedder(embedder), batch=REEMBED_BATCH)
    else:
        ingest(col, embedder, Path(corpus), IngestOptions() if mode == "ingest-default" else
               IngestOptions(batch_chunks=8))
    print("done", flush=True)
    if event == "random":  # the test's kill may come after the ingest finished: wait for it
        signal.pause()


if __name__ == "__main__":
    main()
