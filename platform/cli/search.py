"""`ember search "query" --collection NAME`: ranked chunks with their source and score."""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer
from rich.markup import escape

from ember.platform.cli.collections import embedder_from, shown_path
from ember.platform.cli.common import console, settings_from

SPACE = re.compile(r"\s+")


def search(ctx: typer.Context,
           query: Annotated[str, typer.Argument(help="what to look for")],
           collection: Annotated[str, typer.Option("--collection", "-c", help="collection name")],
           mode: Annotated[str | None, typer.Option(help="dense, bm25 or hybrid (default retrieval.mode)")] = None,
           k: Annotated[int | None, typer.Option("-k", "--k", help="number of results (default retrieval.k)")] = None,
           source: Annotated[str | None, typer.Option(help="only documents whose path matches this glob")] = None,
           tag: Annotated[str | None, typer.Option(help="only documents with this tag")] = None,
           embedder: Annotated[str | None, typer.Option(
               help="query embedder (default: the one the collection was built with)")] = None,
           as_json: Annotated[bool, typer.Option("--json", help="one JSON object per result")] = False,
           full: Annotated[bool, typer.Option(help="print whole chunks instead of a snippet")] = False) -> None:
    """Search a collection. Scores: cosine similarity (dense), BM25 (bm25) or reciprocal-rank fusion (hybrid)."""
    from ember.retrieval.collection import Collection
    from ember.retrieval.retriever import Retriever, SearchFilter

    s = settings_from(ctx)
    mode = mode or s.retrieval.mode
    k = k or s.retrieval.k
    col = Collection.open(s.data_dir, collection)
    model = embedder_from(s, embedder or col.row.embedder_spec) if mode != "bm25" else None
    retriever = Retriever(col, model, mode=mode, k=k)
    where = SearchFilter(source=source, tag=tag) if source or tag else None
    hits = retriever.search(query, where=where)
    col.close()
    if as_json:
        for h in hits:
            c = h.chunk
            typer.echo(json.dumps({"rank": h.rank, "score": h.score, "source": c.source, "title": c.title,
                                   "chunk_id": c.id, "start": c.start, "end": c.end, "page": c.page,
                                   "headings": list(c.headings), "text": c.text}))
        return
    if not hits:
        console.print("No results.")
        return
    for h in hits:
        c = h.chunk
        where_in = " › ".join(c.headings) if c.headings else c.title
        loc = f"chars {c.start}–{c.end}" + (f", page {c.page}" if c.page else "")
        console.print(f"[bold]{h.rank}.[/] [cyan]{h.score:.4f}[/]  [bold]{escape(shown_path(c.source))}[/]"
                      f"  [dim]{escape(where_in)} · {loc}[/]", soft_wrap=True)
        text = c.text if full else SPACE.sub(" ", c.text)[:300] + ("…" if len(c.text) > 300 else "")
        console.print("   " + escape(text), soft_wrap=True, highlight=False)
