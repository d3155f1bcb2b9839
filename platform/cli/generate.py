"""`ember generate` (one prompt) and `ember chat` (an interactive conversation in the terminal)."""

from __future__ import annotations

from typing import Annotated

import typer
from ember.platform.cli.common import console, load_model, settings_from

MaxTokens = Annotated[int, typer.Option("--max-tokens", "-n", min=1, help="most tokens to generate")]
Temperature = Annotated[float, typer.Option("--temperature", "-t", min=0.0, help="0 = greedy")]
TopP = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="nucleus sampling mass")]
Seed = Annotated[int | None, typer.Option(help="random seed for sampling")]
Model = Annotated[str | None, typer.Option("--model", "-m", help="model name or path (default: settings.model)")]


def generate(ctx: typer.Context,
             prompt: Annotated[str, typer.Argument(help="the prompt text")],
             chat: Annotated[bool, typer.Option("--chat", help="wrap the prompt in the model's chat template")] = False,
             max_tokens: MaxTokens = 256, temperature: Temperature = 0.0, top_p: TopP = 1.0,
             seed: Seed = None, model: Model = None,
             stats: Annotated[bool, typer.Option(help="print token counts and speed")] = False) -> None:
    """Generate a continuation of PROMPT (or, with --chat, an assistant reply), streamed to stdout."""
    from ember.model.generate import GenerationConfig, generate_stream

    s = settings_from(ctx)
    cfg = GenerationConfig(max_tokens=max_tokens, temperature=temperature, top_p=top_p or 1.0, seed=seed)
    lm = load_model(s, model)
    text = lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}]) if chat else prompt
    ids = lm.tokenizer.encode(text, add_special_tokens=not chat)
    import time

    t0 = time.perf_counter()
    n = 0
    for _, piece in generate_stream(lm.model, lm.tokenizer, ids, cfg):
        n += 1
        print(piece, end="", flush=True)
    print()
    if stats:
        dt = time.perf_counter() - t0
        console.print(f"[dim]{len(ids)} prompt tokens, {n} generated in {dt:.2f}s ({n / dt:.1f} tok/s); "
                      f"model loaded in {lm.load_seconds:.1f}s[/]")


def chat(ctx: typer.Context, model: Model = None, max_tokens: MaxTokens = 512,
         temperature: Temperature = 0.0, top_p: TopP = 1.0, seed: Seed = None,
         system: Annotated[str | None, typer.Option(help="system prompt")] = None) -> None:
    """Chat with a model in the terminal. Type /reset to start over, /exit (or Ctrl-D) to leave."""
    from ember.model.generate import GenerationConfig, generate_stream

    s = settings_from(ctx)
    cfg = GenerationConfig(max_tokens=max_tokens, temperature=temperature, top_p=top_p or 1.0, seed=seed)
    lm = load_model(s, model)
    console.print(f"[bold]Ember chat[/] · {lm.source} · loaded in {lm.load_seconds:.1f}s. "
                  "[dim]/reset clears the history, /exit quits.[/]")
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    while True:
        try:
            user = console.input("[bold cyan]you>[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if user in ("/exit", "/quit"):
            return
        if user == "/reset":
            history = history[:1] if system else []
            console.print("[dim]history cleared[/]")
            continue
        if not user:
            continue
        history.append({"role": "user", "content": user})
        ids = lm.tokenizer.encode(lm.tokenizer.apply_chat_template(history), add_special_tokens=False)
        console.print("[bold green]ember>[/] ", end="")
        reply = ""
        try:
            for _, piece in generate_stream(lm.model, lm.tokenizer, ids, cfg):
                reply += piece
                print(piece, end="", flush=True)
        except KeyboardInterrupt:
            console.print(" [dim](stopped)[/]")
        print()
        history.append({"role": "assistant", "content": reply})
