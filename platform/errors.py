"""Turning `EmberError`s into what a person sees: a CLI message and exit code (HTTP comes with the server)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from ember.model.errors import EmberError

err_console = Console(stderr=True, highlight=False)


def report(error: EmberError) -> int:
    """Print `error` cleanly on stderr and return the exit code to use."""
    err_console.print(f"[bold red]Error:[/] {escape(error.message)}", markup=True, soft_wrap=True)
    if error.hint:
        err_console.print(f"[yellow]Hint:[/] {escape(error.hint)}", markup=True, soft_wrap=True)
    return error.exit_code
