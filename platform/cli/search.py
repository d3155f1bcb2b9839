"""`ember search "query" --collection NAME`: ranked chunks with their source and score."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer
from rich.markup import escape

from ember.platform.cli.common import console, settings_from, shown_path, wiring_from

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
    """Search a collection. Scores: cosine similarity (dense), BM25 (bm25) or reciprocal-rank fusion (hybrid).

    With `remote` set (EMBER_REMOTE, the URL of a running `ember serve`), the query goes to that server,
    whose embedder is already loaded, unless --source, --tag or --embedder ask for what its API lacks."""
    s = settings_from(ctx)
    mode = mode or s.retrieval.mode
    k = k or s.retrieval.k
    results = None
    if s.remote and not (source or tag or embedder):
        results = _remote(s.remote, s.remote_api_key, collection, query, mode, k)
    if results is None:
        results = _local(ctx, collection, query, mode, k, source, tag, embedder)
    if as_json:
        for r in results:
            typer.echo(json.dumps(r))
        return
    if not results:
        console.print("No results.")
        return
    for r in results:
        where_in = " › ".join(r["headings"]) if r["headings"] else r["title"]
        loc = f"chars {r['start']}–{r['end']}" + (f", page {r['page']}" if r["page"] else "")
        console.print(f"[bold]{r['rank']}.[/] [cyan]{r['score']:.4f}[/]  [bold]{escape(shown_path(r['source']))}[/]"
                      f"  [dim]{escape(where_in)} · {loc}[/]", soft_wrap=True)
        text = r["text"] if full else SPACE.sub(" ", r["text"])[:300] + ("…" if len(r["text"]) > 300 else "")
        console.print("   " + escape(text), soft_wrap=True, highlight=False)


FIELDS = ("rank", "score", "source", "title", "chunk_id", "start", "end", "page", "headings", "text")


def _local(ctx: typer.Context, collection: str, query: str, mode: str, k: int, source: str | None,
           tag: str | None, embedder: str | None) -> list[dict[str, Any]]:
    from ember.retrieval.retriever import SearchFilter

    with wiring_from(ctx) as w:
        retriever = w.retriever(collection, dense=mode != "bm25", embedder=embedder)
        where = SearchFilter(source=source, tag=tag) if source or tag else None
        try:
            hits = retriever.search(query, mode=mode, k=k, where=where)
        finally:
            if embedder is not None:  # a one-off retriever is not the wiring's to close
                retriever.collection.close()
    return [{"rank": h.rank, "score": h.score, "source": h.chunk.source, "title": h.chunk.title,
             "chunk_id": h.chunk.id, "start": h.chunk.start, "end": h.chunk.end, "page": h.chunk.page,
             "headings": list(h.chunk.headings), "text": h.chunk.text} for h in hits]


def _remote(url: str, api_key: str | None, collection: str, query: str, mode: str,
            k: int) -> list[dict[str, Any]] | None:
    """The server's results, or None (after a notice) when it cannot be reached: then search runs here."""
    import httpx

    from ember.model.errors import EmberError

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.post(f"{url.rstrip('/')}/v1/collections/{collection}/search", headers=headers, timeout=60,
                       json={"query": query, "mode": mode, "k": k})
    except httpx.TransportError as e:
        console.print(f"[dim]{escape(url)} is not reachable ({type(e).__name__}); searching here.[/]")
        return None
    if r.status_code != 200:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:200]
        raise EmberError(f"the server at {url} refused the search (HTTP {r.status_code}): {message}")
    return [{f: hit.get(f) for f in FIELDS} for hit in r.json()["data"]]
