"""`ember serve`: the OpenAI-compatible API, collections, chat sessions and the web chat UI."""

from __future__ import annotations

from typing import Annotated

import typer

from ember.platform.cli.common import console, settings_from


def serve(ctx: typer.Context,
          host: Annotated[str | None, typer.Option(help="address (default server.host, 127.0.0.1)")] = None,
          port: Annotated[int | None, typer.Option(help="port (default server.port, 8000)")] = None,
          model: Annotated[str | None, typer.Option("--model", "-m", help="model (default settings.model)")] = None,
          max_concurrent: Annotated[int | None, typer.Option(help="generations at once")] = None,
          ) -> None:
    """Serve the web chat UI at / and the OpenAI-compatible API at /v1 (see README, Server)."""
    import uvicorn

    from ember.platform.auth import check_bind
    from ember.platform.server.app import create_app
    from ember.platform.server.db import Database
    from ember.platform.server.keys import KeyStore
    from ember.platform.server.state import ServerState
    from ember.platform.wiring import Wiring

    s = settings_from(ctx)
    changes = {k: v for k, v in {"host": host, "port": port, "max_concurrent": max_concurrent}.items() if v is not None}
    if changes:
        s = s.model_copy(update={"server": s.server.model_copy(update=changes)})
    db = Database(s.database)
    has_keys = KeyStore(db).configured()
    db.close()
    check_bind(s.server.host, has_keys)
    wiring = Wiring(s, model=model)
    try:
        with console.status(f"Loading {wiring.model_name} on the {s.backend} backend…", spinner="dots"):
            wiring.backend()
        st = ServerState(wiring)
        with console.status("Loading the embedding model…", spinner="dots"):
            st.embedder()
    except BaseException:
        wiring.close()
        raise
    url = f"http://{s.server.host}:{s.server.port}"
    auth = "" if not has_keys else ' -H "Authorization: Bearer $EMBER_API_KEY"'
    console.print(f"[bold]Ember[/] serving [cyan]{wiring.model_name}[/] at [bold]{url}[/]  (chat UI: {url}/ , "
                  f"API: {url}/v1)", soft_wrap=True)
    if s.database_url:
        from ember.retrieval.sql import describe

        console.print(f"State in PostgreSQL [bold]{describe(s.database_url)}[/] (shared with every server on it); "
                      f"index cache in {s.collections_dir}", soft_wrap=True)
    if not has_keys:
        console.print("[yellow]No API keys configured:[/] listening on the loopback address only. "
                      "Create one with `ember keys create NAME` to require keys.", soft_wrap=True)
    console.print(f"[dim]Try: curl{auth} {url}/v1/chat/completions -H 'Content-Type: application/json' -d "
                  f"'{{\"model\": \"ember-rag:ember-docs\", \"messages\": [{{\"role\": \"user\", \"content\": "
                  f"\"What is Ember?\"}}]}}'[/]", soft_wrap=True)
    try:
        uvicorn.run(create_app(st), host=s.server.host, port=s.server.port, log_level="warning",
                    timeout_graceful_shutdown=5)
    finally:
        st.close()  # closes the wiring: its collections and the backend it built
