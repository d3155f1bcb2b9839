"""`ember ingest PATH --collection NAME`: add, update and remove documents incrementally."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ember.platform.cli.common import console, shown_path, wiring_from


def ingest(ctx: typer.Context,
           path: Annotated[Path, typer.Argument(help="a file or a folder (walked recursively)", exists=True)],
           collection: Annotated[str, typer.Option("--collection", "-c", help="collection name (created if new)")],
           include: Annotated[list[str] | None, typer.Option(
               help="glob of files to take, e.g. '*.md' or 'docs/**/*.pdf' (repeatable; default: all)")] = None,
           exclude: Annotated[list[str] | None, typer.Option(help="glob of files to leave out (repeatable)")] = None,
           tag: Annotated[list[str] | None, typer.Option(help="tag the documents (repeatable); search --tag")] = None,
           embedder: Annotated[str | None, typer.Option(
               help="embedder of a new collection (default retrieval.embedder); must match an existing one")] = None,
           index: Annotated[str | None, typer.Option(
               help="index kind of a new collection: auto, flat, hnsw, ivf or ivfpq")] = None,
           metric: Annotated[str | None, typer.Option(help="cosine or l2 (new collections)")] = None,
           chunk_size: Annotated[int | None, typer.Option(help="tokens per chunk (new collections)")] = None,
           chunk_overlap: Annotated[int | None, typer.Option(help="tokens of overlap (new collections)")] = None,
           loader: Annotated[str, typer.Option(
               help="ember, or llamaindex: LlamaIndex's file readers for the formats Ember does not read itself "
                    "(docx, pptx, epub, ipynb, csv, ...); needs pip install 'ember[integrations]'")] = "ember",
           splitter: Annotated[str, typer.Option(
               help="ember (token-aware, Markdown sections), langchain-recursive or llamaindex-sentence "
                    "(the integrations extra); sizes are still --chunk-size tokens")] = "ember",
           ) -> None:
    """Ingest a file or folder: new files are added, changed ones re-embedded, deleted ones removed, and
    unchanged ones left untouched. Files that cannot be read are listed with the reason and skipped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ember.retrieval.collection import Collection, CollectionConfig, validate_name
    from ember.retrieval.errors import CollectionNotFoundError
    from ember.retrieval.ingest import IngestOptions, check_extras, chunk_config
    from ember.retrieval.ingest import ingest as do_ingest

    w = wiring_from(ctx)
    s = w.settings
    r = s.retrieval
    validate_name(collection)
    options = IngestOptions(include=tuple(include or ("*",)), exclude=tuple(exclude or ()),
                            max_bytes=int(r.max_file_mb * 1e6), tags=tuple(tag or ()),
                            loader=loader, splitter=splitter)
    check_extras(options)  # a missing integrations extra is reported before a new collection is created
    try:
        col = Collection.open(s.data_dir, collection, database=s.database_url)
        model = w.embedder(embedder or col.row.embedder_spec)
    except CollectionNotFoundError:
        config = CollectionConfig(metric=metric or r.metric, kind=index or r.index,
                                  chunk_size=chunk_size or r.chunk_size,
                                  chunk_overlap=r.chunk_overlap if chunk_overlap is None else chunk_overlap)
        spec = embedder or r.embedder
        model = w.embedder(spec)
        col = Collection.create(s.data_dir, collection, model.info, config, embedder_spec=spec,
                                database=s.database_url)
    chunking = chunk_config(col, model)
    console.print(f"Ingesting {escape(str(path))} into [bold]{collection}[/] ({model.info.model_id}, chunks of "
                  f"{chunking.size} tokens, overlap {chunking.overlap}"
                  + (f", loader {loader}" if loader != "ember" else "")
                  + (f", splitter {splitter}" if splitter != "ember" else "") + ")")
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("[dim]{task.fields[file]}"), console=console) as bar:
        task = bar.add_task("files", total=None, file="")

        def progress(done: int, total: int, current: str) -> None:
            bar.update(task, completed=done, total=total, file=escape(shown_path(current))[-60:])

        report = do_ingest(col, model, path, options, progress)
    docs, chunks = col.counts()
    col.close()
    console.print(
        f"[green]✓[/] {report.files} files: {len(report.added)} added, {len(report.updated)} updated, "
        f"{len(report.removed)} removed, {report.unchanged} unchanged, {len(report.skipped)} skipped · "
        f"{report.chunks:,} chunks embedded in {report.seconds:.1f} s ({report.chunks_per_second:,.1f} chunks/s)\n"
        f"  {collection}: {docs:,} documents, {chunks:,} chunks")
    if report.skipped:
        console.print(f"[yellow]Skipped {len(report.skipped)} files:[/]")
        for item in report.skipped:
            console.print(f"  {escape(shown_path(item.path))}: {escape(item.reason)}", soft_wrap=True)
