"""`ember generate` (one prompt) and `ember chat` (a conversation in the terminal), on any backend."""

from __future__ import annotations

import sys
from typing import Annotated, Literal

import typer

from ember.platform.cli.common import console, start_backend, wiring_from

MaxTokens = Annotated[int, typer.Option("--max-tokens", "-n", min=1, help="most tokens to generate")]
Temperature = Annotated[float, typer.Option("--temperature", "-t", min=0.0, help="0 = greedy")]
TopP = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="nucleus sampling mass")]
TopK = Annotated[int, typer.Option("--top-k", min=0, help="sample among the k most likely tokens (0 = off)")]
MinP = Annotated[float, typer.Option("--min-p", min=0.0, max=1.0, help="drop tokens below min-p x p(top)")]
RepPenalty = Annotated[float, typer.Option("--repetition-penalty", min=0.01, help=">1 discourages repeats")]
Presence = Annotated[float, typer.Option("--presence-penalty", min=-2.0, max=2.0, help="OpenAI presence penalty")]
Frequency = Annotated[float, typer.Option("--frequency-penalty", min=-2.0, max=2.0, help="OpenAI frequency penalty")]
Stop = Annotated[list[str] | None, typer.Option("--stop", help="stop string (repeatable)")]
Seed = Annotated[int | None, typer.Option(help="random seed: the same seed gives the same sample")]
Model = Annotated[str | None, typer.Option("--model", "-m", help="model name or path (default: settings.model)")]
BackendOpt = Annotated[Literal["ember", "vllm", "openai"] | None,
                       typer.Option("--backend", "-b", help="ember, vllm or openai (default: settings.backend)")]


def _params(max_tokens: int, temperature: float, top_p: float, top_k: int, min_p: float,
            repetition_penalty: float, presence_penalty: float, frequency_penalty: float,
            stop: list[str] | None, seed: int | None):  # -> SamplingParams
    from ember.model.sampling_params import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p or 1.0, top_k=top_k,
                          min_p=min_p, repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                          frequency_penalty=frequency_penalty, stop=stop or [], seed=seed)


def generate(ctx: typer.Context,
             prompt: Annotated[str, typer.Argument(help="the prompt text ('-' reads standard input)")],
             chat: Annotated[bool, typer.Option("--chat", help="send the prompt as a user chat message")] = False,
             stream: Annotated[bool, typer.Option("--stream/--no-stream", help="print tokens as they come")] = True,
             max_tokens: MaxTokens = 256, temperature: Temperature = 0.0, top_p: TopP = 1.0, top_k: TopK = 0,
             min_p: MinP = 0.0, repetition_penalty: RepPenalty = 1.0, presence_penalty: Presence = 0.0,
             frequency_penalty: Frequency = 0.0, stop: Stop = None, seed: Seed = None, model: Model = None,
             backend: BackendOpt = None,
             stats: Annotated[bool, typer.Option(help="print token counts, time to first token and speed")] = False,
             ) -> None:
    """Generate a continuation of PROMPT (with --chat, an assistant reply) and print it."""
    if prompt == "-":
        prompt = sys.stdin.read()
    params = _params(max_tokens, temperature, top_p, top_k, min_p, repetition_penalty, presence_penalty,
                     frequency_penalty, stop, seed)
    with wiring_from(ctx, model=model, backend=backend) as w:
        b = start_backend(w)
        messages = [{"role": "user", "content": prompt}]
        if stream:
            completion = None
            for d in (b.chat_stream(messages, params) if chat else b.stream(prompt, params)):
                print(d.text, end="", flush=True)
                completion = d.completion or completion
            print()
        else:
            completion = b.chat(messages, params) if chat else b.generate([prompt], params)[0]
            print(completion.text)
        if stats and completion is not None:
            t = completion.timings
            console.print(f"[dim]{completion.prompt_tokens} prompt tokens, {completion.completion_tokens} generated "
                          f"({completion.finish_reason}); first token {t.first_token_s * 1000:.0f} ms, "
                          f"{completion.decode_tokens_per_s:.1f} tok/s decode, {t.total_s:.2f} s total[/]")


def chat(ctx: typer.Context, model: Model = None, backend: BackendOpt = None, max_tokens: MaxTokens = 512,
         temperature: Temperature = 0.0, top_p: TopP = 1.0, seed: Seed = None,
         system: Annotated[str | None, typer.Option(help="system prompt (plain chat only)")] = None,
         collection: Annotated[str | None, typer.Option(
             "--collection", "-c", help="answer from this collection's documents, with citations")] = None,
         mode: Annotated[str | None, typer.Option(help="with --collection: dense, bm25 or hybrid")] = None,
         k: Annotated[int | None, typer.Option(
             "-k", help="with --collection: passages to retrieve (default retrieval.rag_k)")] = None,
         ) -> None:
    """Chat with a model in the terminal. Type /reset to start over, /exit (or Ctrl-D) to leave.

    With --collection, every answer comes from the collection's documents (retrieved, fitted into the
    context window, cited); follow-up questions are rewritten with the conversation before searching.
    """
    params = _params(max_tokens, temperature, top_p, 0, 0.0, 1.0, 0.0, 0.0, None, seed)
    w = wiring_from(ctx, model=model, backend=backend)
    try:
        if collection:  # a missing collection fails before the model loads
            w.retriever(collection, dense=(mode or w.settings.retrieval.mode) != "bm25")
        b = start_backend(w)
        rag = w.rag(collection, mode=mode, k=k, max_tokens=max_tokens) if collection else None
    except BaseException:
        w.close()
        raise
    where = f" · collection [bold]{collection}[/]" if collection else ""
    console.print(f"[bold]Ember chat[/] · {b.name} backend{where}. [dim]/reset clears the history, /exit quits.[/]")
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system and not rag else []
    try:
        while True:
            try:
                user = console.input("[bold cyan]you>[/] ").strip()
            except (EOFError, KeyboardInterrupt):
                console.print()
                return
            if user in ("/exit", "/quit"):
                return
            if user == "/reset":
                history = history[:1] if system and not rag else []
                console.print("[dim]history cleared[/]")
                continue
            if not user:
                continue
            console.print("[bold green]ember>[/] ", end="")
            reply = ""
            stream = rag.stream(user, history, params) if rag is not None else b.chat_stream(
                [*history, {"role": "user", "content": user}], params)
            try:
                for d in stream:
                    if hasattr(d, "citations"):  # the RagAnswer that ends a RAG stream
                        print()
                        _print_citations(d)
                        continue
                    reply += d.text
                    print(d.text, end="", flush=True)
            except KeyboardInterrupt:
                stream.close()  # cancels the request and frees its KV blocks
                console.print(" [dim](stopped)[/]")
            print()
            history += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    finally:
        w.close()


def _print_citations(answer) -> None:  # answer: RagAnswer
    from rich.markup import escape

    from ember.platform.cli.collections import shown_path

    if answer.no_context:
        console.print("[dim](nothing relevant in the collection)[/]")
    for c in answer.citations:
        page = f", page {c.page}" if c.page else ""
        console.print(f"[dim]  [{c.n}] {escape(shown_path(c.source))} · {escape(c.location)} "
                      f"(chars {c.start}–{c.end}{page}, similarity {c.relevance:.2f})[/]", soft_wrap=True)
    if answer.dropped_chunk_ids:
        console.print(f"[dim]  ({len(answer.dropped_chunk_ids)} more passages did not fit the context window)[/]")
