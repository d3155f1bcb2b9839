"""`ember collections ...`: list, inspect, delete and re-embed document collections."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ember.platform.cli.common import console, settings_from, shown_path, wiring_from

__all__ = ["app", "shown_path"]
app = typer.Typer(help="List, inspect, delete and re-embed document collections.", no_args_is_help=True)


def _size(path: Path) -> str:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0
    return f"{total / 1e6:,.1f} MB"


@app.command("list")
def list_collections(ctx: typer.Context) -> None:
    """Show every collection with its size, embedder and index."""
    from ember.retrieval.collection import Collection

    s = settings_from(ctx)
    rows = Collection.listing(s.data_dir, database=s.database_url)
    if not rows:
        console.print("No collections yet. Create one with `ember ingest PATH --collection NAME`.")
        return
    table = Table("name", "documents", "chunks", "embedder", "metric", "index", "updated")
    for row, docs, chunks in rows:
        table.add_row(row.name, f"{docs:,}", f"{chunks:,}", row.embedder_id, row.metric, row.kind,
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(row.updated_at)))
    console.print(table)


@app.command()
def info(ctx: typer.Context, name: Annotated[str, typer.Argument(help="collection name")]) -> None:
    """Show a collection's embedder, index, sizes and whether its index files match its database rows."""
    from ember.retrieval.collection import Collection

    s = settings_from(ctx)
    col = Collection.open(s.data_dir, name, database=s.database_url)
    docs, chunks = col.counts()
    with console.status("Checking the indexes…", spinner="dots"):
        col.load_indexes()
    assert col.index is not None
    meta = col.read_meta() or {}
    kinds: dict[str, int] = {}
    for d in col.documents().values():
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
    table = Table(show_header=False)
    table.add_row("name", col.name)
    table.add_row("folder", str(col.folder))
    table.add_row("embedder", f"{col.embedder.describe()} · load with {col.row.embedder_spec}")
    table.add_row("documents", f"{docs:,} (" + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")")
    table.add_row("chunks", f"{chunks:,} · {col.row.chunk_size} tokens, overlap {col.row.chunk_overlap}")
    table.add_row("index", f"{col.index.spec.kind} ({col.row.metric}; configured: {col.row.kind}) · "
                           f"{col.index.ntotal:,} vectors")
    table.add_row("generation", f"{col.row.generation} (index files: {meta.get('generation', 'none')})")
    table.add_row("on disk", _size(col.folder))
    table.add_row("consistency", "index files match the database" if not col.repairs
                  else "; ".join(col.repairs) + " (in memory; the next ingest saves it)")
    console.print(table)
    col.close()


@app.command()
def delete(ctx: typer.Context, name: Annotated[str, typer.Argument(help="collection name")],
           yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False) -> None:
    """Delete a collection: its database rows and its index files."""
    from ember.retrieval.collection import Collection

    s = settings_from(ctx)
    col = Collection.open(s.data_dir, name, database=s.database_url)
    docs, chunks = col.counts()
    col.close()
    if not yes:
        typer.confirm(f"Delete collection {name!r} ({docs} documents, {chunks} chunks)?", abort=True)
    Collection.delete(s.data_dir, name, database=s.database_url)
    from ember.platform.server.db import Database
    from ember.platform.server.users import UserStore

    db = Database(s.database)  # its grants go with it (a new collection of that name starts with none)
    try:
        UserStore(db).forget_collection(name)
    finally:
        db.close()
    console.print(f"[green]✓[/] deleted {name} ({docs} documents, {chunks} chunks)")


@app.command()
def reembed(ctx: typer.Context, name: Annotated[str, typer.Argument(help="collection name")],
            embedder: Annotated[str, typer.Option(help="all-MiniLM-L6-v2, a sentence-transformers folder, "
                                                       "or URL#MODEL")]) -> None:
    """Embed every chunk again with another model into a shadow index, then swap it in atomically."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from ember.retrieval.collection import Collection
    from ember.retrieval.reembed import reembed as do_reembed

    w = wiring_from(ctx)
    col = Collection.open(w.settings.data_dir, name, database=w.settings.database_url)
    model = w.embedder(embedder)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("Embedding chunks", total=None)
        report = do_reembed(col, model, embedder_spec=embedder,
                            progress=lambda done, total: bar.update(task, completed=done, total=total))
    console.print(f"[green]✓[/] {name}: {report.chunks:,} chunks re-embedded in {report.seconds:.1f} s\n"
                  f"  {report.old_embedder} → {report.new_embedder}")
    col.close()
