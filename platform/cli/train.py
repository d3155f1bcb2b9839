"""`ember train ...`: train a tokenizer, pre-train a small Llama from scratch, fine-tune (full or LoRA).

Runs live in `<data dir>/runs/<name>/` (packed data, checkpoint.pt, metrics.jsonl); the trained model is
exported as an HF folder to `<data dir>/models/<name>/`, so `ember chat -m <name>` serves it at once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ember.platform.cli.common import console, device_for, resolve_model, settings_from

app = typer.Typer(help="Train a tokenizer, pre-train a model from scratch, fine-tune (SFT / LoRA).",
                  no_args_is_help=True)

Steps = Annotated[int, typer.Option("--steps", min=1, help="optimizer steps")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="sequences per micro-batch")]
GradAccum = Annotated[int, typer.Option("--grad-accum", min=1, help="micro-batches per optimizer step")]
Lr = Annotated[float, typer.Option("--lr", min=0.0, help="peak learning rate")]
Warmup = Annotated[int, typer.Option("--warmup", min=0, help="linear warmup steps")]
EvalEvery = Annotated[int, typer.Option("--eval-every", min=0, help="steps between validation passes (0 = end)")]
SaveEvery = Annotated[int, typer.Option("--save-every", min=0, help="steps between checkpoints (0 = end)")]
Resume = Annotated[bool, typer.Option("--resume", help="continue the run's checkpoint exactly where it stopped")]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the training forward (best on CUDA)")]
Seed = Annotated[int, typer.Option("--seed", help="seed of initialisation and data order")]


@contextmanager
def _progress(total: int, what: str) -> Iterator[Any]:
    """A rich progress bar over optimizer steps; yields the `on_record` callback for `train`."""
    columns = (TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(what, total=total, info="")
        state: dict[str, float] = {}

        def on_record(r: dict[str, float]) -> None:
            state.update(r)
            info = f"loss {state['loss']:.3f}" if "loss" in state else ""
            if "val_loss" in state:
                info += f" · val {state['val_loss']:.3f}"
            if "tokens_per_s" in state:
                info += f" · {state['tokens_per_s']:,.0f} tok/s"
            progress.update(task, completed=int(r["step"]), info=info)

        yield on_record


def _summary(result: Any, out: Path) -> None:
    loss, val = result.last("loss"), result.last("val_loss")
    console.print(f"[green]✓[/] {result.step} steps · loss {loss:.4f}" + (f" · val loss {val:.4f}" if val else "")
                  + f" → {out}")


@app.command()
def tokenizer(ctx: typer.Context,
              corpus: Annotated[list[Path], typer.Argument(help=".txt/.md files, .jsonl ({\"text\"}), a SQuAD "
                                                                ".json or folders of them")],
              name: Annotated[str, typer.Option(help="saved as <data dir>/tokenizers/NAME")] = "ember-bpe",
              vocab_size: Annotated[int, typer.Option(min=259, help="vocabulary size, special tokens included")]
              = 8192) -> None:
    """Train a byte-level BPE tokenizer (ChatML special tokens and chat template), saved in HF format."""
    from ember.model.train.corpus import iter_documents
    from ember.model.train.tokenizer_train import train_tokenizer

    out = settings_from(ctx).data_dir / "tokenizers" / name
    with console.status(f"Training a {vocab_size}-token BPE…", spinner="dots"):
        tok = train_tokenizer(iter_documents(corpus), vocab_size)
        out.mkdir(parents=True, exist_ok=True)
        tok.save(out)
    console.print(f"[green]✓[/] tokenizer with {tok.vocab_size} tokens → {out}")


@app.command()
def pretrain(ctx: typer.Context,
             corpus: Annotated[list[Path], typer.Argument(help="training text (same forms as `train tokenizer`)")],
             tokenizer: Annotated[str, typer.Option(help="tokenizer name under <data dir>/tokenizers or a path")]
             = "ember-bpe",
             name: Annotated[str, typer.Option(help="run and model name")] = "nano",
             preset: Annotated[str, typer.Option(help="architecture: tiny, nano or micro")] = "nano",
             experts: Annotated[int, typer.Option(min=0, help="Mixtral-style sparse MoE with N experts (0 = dense)")]
             = 0,
             experts_per_token: Annotated[int, typer.Option(min=1, help="MoE: experts each token uses")] = 2,
             seq_len: Annotated[int, typer.Option(min=8, help="tokens per packed sequence")] = 256,
             val_fraction: Annotated[float, typer.Option(help="share of documents held out")] = 0.05,
             steps: Steps = 1000, batch_size: BatchSize = 8, grad_accum: GradAccum = 1, lr: Lr = 1e-3,
             warmup: Warmup = 50, eval_every: EvalEvery = 100, save_every: SaveEvery = 0, resume: Resume = False,
             compile_: Compile = False, seed: Seed = 1337) -> None:
    """Pre-train a Llama from scratch on CORPUS (packed, memory-mapped), then export it to models/NAME."""
    from ember.model.config import PRESETS
    from ember.model.errors import ConfigError
    from ember.model.loader import export_hf
    from ember.model.tokenizer import Tokenizer
    from ember.model.train.config import TrainConfig
    from ember.model.train.corpus import iter_documents
    from ember.model.train.init import new_model
    from ember.model.train.packing import META, PackedDataset, pack_corpus
    from ember.model.train.trainer import train

    s = settings_from(ctx)
    device = device_for(s)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}", hint=f"Presets: {', '.join(PRESETS)}.")
    tok_dir = s.data_dir / "tokenizers" / tokenizer
    tok = Tokenizer.load(tok_dir if tok_dir.is_dir() else Path(tokenizer))
    config = dataclasses.replace(PRESETS[preset], vocab_size=tok.vocab_size, bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                 max_position_embeddings=max(seq_len, PRESETS[preset].max_position_embeddings),
                                 num_local_experts=experts, num_experts_per_tok=experts_per_token)
    cfg = TrainConfig(seq_len=seq_len, batch_size=batch_size, grad_accum=grad_accum, max_steps=steps, lr=lr,
                      min_lr=lr / 10, warmup_steps=min(warmup, steps), eval_every=eval_every,
                      save_every=save_every, seed=seed, device=device, compile=compile_)
    run = s.data_dir / "runs" / name
    data_dir = run / "data"
    if not (resume and (data_dir / META).is_file()):
        with console.status("Tokenising and packing the corpus…", spinner="dots"):
            meta = pack_corpus(iter_documents(corpus), tok, data_dir, val_fraction)
        console.print(f"[dim]•[/] packed {meta['train_tokens']:,} training and {meta['val_tokens']:,} held-out "
                      f"tokens")
    data = PackedDataset(data_dir / "train.bin", seq_len, batch_size, seed=seed)
    val = PackedDataset(data_dir / "val.bin", seq_len, batch_size, shuffle=False)
    cfg = dataclasses.replace(cfg, eval_batches=min(cfg.eval_batches, val.batches_per_epoch))
    model = new_model(config, seed)
    moe = f" ({config.num_parameters(active=True) / 1e6:.1f} M active, {experts} experts)" if experts else ""
    console.print(f"[dim]•[/] {preset}: {config.num_parameters() / 1e6:.1f} M parameters{moe}, "
                  f"{cfg.tokens_per_step:,} tokens per step on {device}")
    with _progress(steps, f"pretrain {name}") as on_record:
        result = train(model, data, cfg, run, val=val, resume=resume, on_record=on_record)
    model.cpu()
    export_hf(model, tok, s.models_dir / name)
    _summary(result, s.models_dir / name)


@app.command()
def sft(ctx: typer.Context,
        model: Annotated[str, typer.Argument(help="base model: name, HF folder or .gguf")],
        data: Annotated[Path, typer.Argument(help="JSONL of {\"messages\": [...]}, or a SQuAD .json file "
                                                  "(turned into grounded-QA examples)")],
        name: Annotated[str, typer.Option(help="run and output model name")] = "sft",
        lora: Annotated[bool, typer.Option("--lora/--full", help="LoRA adapters, or all weights")] = True,
        rank: Annotated[int, typer.Option(min=1, help="LoRA rank")] = 16,
        alpha: Annotated[float, typer.Option(help="LoRA alpha (scale = alpha / rank)")] = 32.0,
        max_len: Annotated[int, typer.Option(min=8, help="tokens per example (longer ones keep the end)")] = 512,
        limit: Annotated[int | None, typer.Option(min=1, help="use only the first N examples")] = None,
        distractors: Annotated[int, typer.Option(min=0, help="SQuAD data: up to N other paragraphs per prompt")]
        = 1,
        unanswerable: Annotated[float, typer.Option(min=0.0, max=0.95, help="SQuAD data: at most this share of "
                                                    "examples teach the refusal")] = 0.3,
        train_titles: Annotated[bool, typer.Option("--train-titles/--all-titles", help="SQuAD data: only the "
                                                   "articles in ember.model.train.grounded.TRAIN_TITLES (the "
                                                   "SQuAD evals score on the others), or every article")] = True,
        demos: Annotated[bool, typer.Option("--demos/--no-demos", help="SQuAD data: keep the RAG prompt's worked "
                                            "examples (prompts.DEMOS), or train without them; the adapter "
                                            "records which, and Ember serves it with the same prompt")] = True,
        adapter_dtype: Annotated[str, typer.Option(help="dtype of the saved adapter: float32 or bfloat16 (half "
                                                       "the size, for shipping)")] = "float32",
        last_turn: Annotated[bool, typer.Option("--last-turn/--all-turns", help="loss on the last assistant turn "
                                                "only (earlier ones are worked examples), or on every one")]
        = True,
        steps: Steps = 100, batch_size: BatchSize = 4, grad_accum: GradAccum = 1, lr: Lr = 2e-4,
        warmup: Warmup = 10, save_every: SaveEvery = 0, resume: Resume = False, compile_: Compile = False,
        seed: Seed = 1337) -> None:
    """Fine-tune MODEL on chat data, loss on the assistant turns only; export merged model and adapter."""
    import torch

    from ember.model.adapter import ServingHints
    from ember.model.errors import ConfigError
    from ember.model.loader import DTYPES, export_hf, load
    from ember.model.train.config import TrainConfig
    from ember.model.train.grounded import TRAIN_TITLES, grounded_examples, read_squad
    from ember.model.train.lora import LoRAConfig, apply_lora, merge_lora, save_adapter
    from ember.model.train.sft_data import SFTDataset, read_conversations
    from ember.model.train.trainer import train

    if adapter_dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"--adapter-dtype {adapter_dtype!r}: use float32 or bfloat16")
    s = settings_from(ctx)
    device = device_for(s)
    path = resolve_model(s, model)
    with console.status(f"Loading {path}…", spinner="dots"):
        loaded = load(path, dtype="float32", device="cpu")
    if data.suffix == ".json":
        conversations = grounded_examples(read_squad(data), max_distractors=distractors, seed=seed,
                                          unanswerable_share=unanswerable,
                                          titles=TRAIN_TITLES if train_titles else None, demos=demos)
    else:
        conversations = read_conversations(data)
    conversations = conversations[:limit]
    dataset = SFTDataset.from_conversations(loaded.tokenizer, conversations, batch_size, max_len, seed=seed,
                                            last_turn_only=last_turn)
    net = loaded.model
    lora_cfg = LoRAConfig(r=rank, alpha=alpha) if lora else None
    cfg = TrainConfig(seq_len=max_len, batch_size=batch_size, grad_accum=grad_accum, max_steps=steps, lr=lr,
                      min_lr=lr / 10, warmup_steps=min(warmup, steps), weight_decay=0.0 if lora else 0.01,
                      eval_every=0, save_every=save_every, seed=seed, device=device, compile=compile_)
    if lora_cfg is not None:
        if cfg.use_bf16:  # frozen base weights in bf16 once, instead of autocast casting them every step
            net.to(torch.bfloat16)
        apply_lora(net, lora_cfg)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    console.print(f"[dim]•[/] {len(dataset)} examples · {trainable / 1e6:.2f} M trainable parameters "
                  f"({'LoRA r=' + str(rank) if lora else 'full'}) on {device}")
    run = s.data_dir / "runs" / name
    with _progress(steps, f"sft {name}") as on_record:
        result = train(net, dataset, cfg, run, resume=resume, on_record=on_record)
    net.cpu()
    if lora_cfg is not None:
        hints = ServingHints(rag_demos=demos) if data.suffix == ".json" else None  # served as it was trained
        save_adapter(net, lora_cfg, run / "adapter", base_model=path.name, dtype=DTYPES[adapter_dtype],
                     serving=hints)
        console.print(f"[dim]•[/] adapter → {run / 'adapter'}")
        merge_lora(net)
    export_hf(net, loaded.tokenizer, s.models_dir / name, dtype=loaded.model.dtype)
    (run / "sft.json").write_text(json.dumps({"base": str(path), "data": str(data), "examples": len(dataset),
                                              "lora": dataclasses.asdict(lora_cfg) if lora_cfg else None,
                                              "train": cfg.to_dict()}, indent=2) + "\n", encoding="utf-8")
    _summary(result, s.models_dir / name)
