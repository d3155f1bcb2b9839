"""The `ember` command. `main` turns every `EmberError` into a clean message and exit code."""

from __future__ import annotations

import os

# Before anything loads torch (and with it libgomp, which reads this once): torch's OpenMP threads sleep at
# a barrier instead of spinning. On a shared CPU (the server's own event loop and embedder, other
# processes) a spinning team waits for a descheduled member at every op: SmolLM2 decode with 2 threads
# fell to 1.2 tok/s beside one busy process, and ran 24.5 tok/s with PASSIVE (benchmarks/RESULTS.md).
# An explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer

from ember.model.errors import EmberError
from ember.platform.cli import (
    agent,
    bench,
    collections,
    eval,
    generate,
    ingest,
    keys,
    mcp,
    models,
    search,
    serve,
    train,
    users,
)
from ember.platform.errors import report
from ember.platform.settings import load_settings

app = typer.Typer(
    name="ember",
    help="Ember: a self-hosted LLM stack — our own Llama engine, retrieval, agents and evals.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(models.app, name="models")
app.add_typer(bench.app, name="bench")
app.add_typer(collections.app, name="collections")
app.add_typer(eval.app, name="eval")
app.add_typer(mcp.mcp_app, name="mcp")
app.add_typer(keys.app, name="keys")
app.add_typer(users.app, name="users")
app.add_typer(train.app, name="train")
app.command()(generate.generate)
app.command()(generate.chat)
app.command()(ingest.ingest)
app.command()(search.search)
app.command()(agent.agent)
app.command()(serve.serve)


def ember_version() -> str:
    try:
        return version("ember")
    except PackageNotFoundError:
        return "0+unknown"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ember {ember_version()}")
        raise typer.Exit()


@app.callback()
def root(ctx: typer.Context,
         data_dir: Annotated[Path | None,
                             typer.Option(help="data directory (default ./.ember; EMBER_DATA_DIR)")] = None,
         device: Annotated[str | None, typer.Option(help="auto, cpu or cuda (EMBER_DEVICE)")] = None,
         dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16 or float16 (EMBER_DTYPE)")] = None,
         version_: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    """Settings come from ember.toml (or EMBER_CONFIG), then EMBER_* variables, then these options."""
    ctx.obj = load_settings(data_dir=data_dir, device=device, dtype=dtype)


def main() -> None:
    try:
        app()
    except EmberError as e:  # a refusal the user can act on; anything else is a bug and keeps its traceback
        raise SystemExit(report(e)) from None


if __name__ == "__main__":
    main()
