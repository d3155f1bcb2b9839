"""Run by test_crash.py as a real subprocess: ingest a folder, printing each storage event, and SIGKILL
itself at the N-th occurrence of a chosen event (or run to the end when the event never comes; with
event "random" it then waits for the test's SIGKILL)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from ember.retrieval.collection import Collection, CollectionConfig
from ember.retrieval.embedders import OpenAIEmbedder
from ember.retrieval.ingest import IngestOptions, ingest

CONFIG = CollectionConfig(chunk_size=128, chunk_overlap=16)


def main() -> None:
    data_dir, corpus, url, event, nth = sys.argv[1:6]
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
    ingest(col, embedder, Path(corpus), IngestOptions(batch_chunks=8))
    print("done", flush=True)
    if event == "random":  # the test's kill may come after the ingest finished: wait for it
        signal.pause()


if __name__ == "__main__":
    main()
