"""`ember users create|list|role|delete|grant|revoke|grants`: the users of a team server, their roles, and who
may read or write which collection. Until the first user exists Ember is single-user, as before."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ember.platform.cli.common import console, settings_from

if TYPE_CHECKING:
    from ember.platform.server.keys import KeyStore
    from ember.platform.server.users import UserStore

app = typer.Typer(help="Users and roles (admin | editor | viewer), and per-collection read/write grants.",
                  no_args_is_help=True)


def _stores(ctx: typer.Context) -> tuple[UserStore, KeyStore]:
    from ember.platform.server.db import Database
    from ember.platform.server.keys import KeyStore
    from ember.platform.server.users import UserStore

    db = Database(settings_from(ctx).database)
    return UserStore(db), KeyStore(db)


def _collection_exists(ctx: typer.Context, name: str) -> None:
    from ember.retrieval.collection import Collection
    from ember.retrieval.errors import CollectionNotFoundError

    s = settings_from(ctx)
    if name not in {r.name for r in Collection.names(s.data_dir, database=s.database_url)}:
        raise CollectionNotFoundError(f"no collection named {name!r}", hint="See `ember collections list`.")


@app.command()
def create(ctx: typer.Context,
           name: Annotated[str, typer.Argument(help="the user's name (letters, digits, . _ @ -)")],
           role: Annotated[str, typer.Option(help="admin (everything), editor (creates and writes its collections, "
                                                  "reads granted ones) or viewer (reads granted collections)")
                           ] = "viewer",
           key: Annotated[bool, typer.Option(help="also create an API key for the user (named after it) and "
                                                  "print it once")] = True,
           ) -> None:
    """Create a user. From the first user on, every key acts for its user: collections need a grant (or
    ownership) to be seen, chat sessions are private, viewers cannot upload or delete."""
    users, keys = _stores(ctx)
    user = users.create(name, role)
    try:
        secret = keys.create(name, user=name) if key else None
    except BaseException:
        users.delete(name)  # all or nothing: no user left without the key the command promised
        raise
    console.print(f"Created user [bold]{user.name}[/] ({user.role}).")
    if secret is not None:
        console.print(f"API key [bold]{name}[/] for {name}. It is shown only now; keep it somewhere safe:")
        typer.echo(secret)


@app.command("list")
def list_users(ctx: typer.Context) -> None:
    """Every user with their role and when they were created."""
    users, _ = _stores(ctx)
    rows = users.all()
    if not rows:
        console.print("No users: Ember is in single-user mode (every key is an admin key).")
        return
    table = Table("name", "role", "created")
    for u in rows:
        table.add_row(u.name, u.role, datetime.datetime.fromtimestamp(u.created_at).strftime("%Y-%m-%d %H:%M"))
    console.print(table)


@app.command()
def role(ctx: typer.Context, name: Annotated[str, typer.Argument(help="the user")],
         new_role: Annotated[str, typer.Argument(metavar="ROLE", help="admin, editor or viewer")]) -> None:
    """Change a user's role (a running server applies it to the next request)."""
    users, _ = _stores(ctx)
    users.set_role(name, new_role)
    console.print(f"User [bold]{name}[/] is now {new_role}.")


@app.command()
def delete(ctx: typer.Context, name: Annotated[str, typer.Argument(help="the user")]) -> None:
    """Delete a user with their keys, grants and chat sessions (their collections stay, for admins)."""
    users, _ = _stores(ctx)
    users.delete(name)
    console.print(f"Deleted user [bold]{name}[/].")


@app.command()
def grant(ctx: typer.Context, name: Annotated[str, typer.Argument(help="the user")],
          collection: Annotated[str, typer.Argument(help="the collection")],
          access: Annotated[str, typer.Option(help="read (search, chat) or write (also upload)")] = "read") -> None:
    """Let a user read (or write) a collection."""
    _collection_exists(ctx, collection)
    users, _ = _stores(ctx)
    users.grant(collection, name, access)
    console.print(f"User [bold]{name}[/] may {access} collection [bold]{collection}[/].")


@app.command()
def revoke(ctx: typer.Context, name: Annotated[str, typer.Argument(help="the user")],
           collection: Annotated[str, typer.Argument(help="the collection")]) -> None:
    """Take a user's grant on a collection away (ownership stays)."""
    users, _ = _stores(ctx)
    users.revoke(collection, name)
    console.print(f"User [bold]{name}[/] no longer has access to collection [bold]{collection}[/].")


@app.command()
def grants(ctx: typer.Context, collection: Annotated[str, typer.Argument(help="the collection")]) -> None:
    """Who may use a collection: its owner and the users granted read or write (admins always may)."""
    users, _ = _stores(ctx)
    found = users.grants(collection)
    if not found:
        console.print(f"Collection [bold]{collection}[/] has no owner or grants: only admins see it.")
        return
    table = Table("user", "access")
    for user, access in found.items():
        table.add_row(user, access)
    console.print(table)
