"""`ember keys create|list|revoke`: API keys for `ember serve` (stored hashed in the data directory)."""

from __future__ import annotations

import datetime
from typing import Annotated

import typer
from rich.table import Table

from ember.platform.cli.common import console, settings_from

app = typer.Typer(help="Create, list and revoke API keys for `ember serve`.", no_args_is_help=True)


def _store(ctx: typer.Context):  # -> KeyStore
    from ember.platform.server.db import Database
    from ember.platform.server.keys import KeyStore

    return KeyStore(Database(settings_from(ctx).database))


def _when(t: float | None) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "-"


@app.command()
def create(ctx: typer.Context, name: Annotated[str, typer.Argument(help="a name to recognise the key by")],
           user: Annotated[str | None, typer.Option(help="the user the key acts for (`ember users create`); "
                                                         "without one it is an admin key")] = None) -> None:
    """Create a key and print it once. From then on the server requires a key on every route but /health."""
    key = _store(ctx).create(name, user=user)
    console.print(f"Created API key [bold]{name}[/]. It is shown only now; keep it somewhere safe:")
    typer.echo(key)


@app.command("list")
def list_keys(ctx: typer.Context) -> None:
    """Every key: name, prefix, created, last used, revoked."""
    keys = _store(ctx).all()
    if not keys:
        console.print("No API keys: the server is open and listens on 127.0.0.1 only.")
        return
    table = Table("name", "user", "prefix", "created", "last used", "status")
    for k in keys:
        table.add_row(k.name, k.user or "-", k.prefix + "…", _when(k.created_at), _when(k.last_used_at),
                      "active" if k.active else f"revoked {_when(k.revoked_at)}")
    console.print(table)


@app.command()
def revoke(ctx: typer.Context, name: Annotated[str, typer.Argument(help="the key's name")]) -> None:
    """Revoke a key; a running server refuses it at once."""
    _store(ctx).revoke(name)
    console.print(f"Revoked API key [bold]{name}[/].")
