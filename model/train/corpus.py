"""Text documents for tokenizer training and pre-training, streamed one at a time from files on disk.

Accepted inputs: `.txt`/`.md` files (one document each), `.jsonl` (one `{"text": ...}` per line), a SQuAD
JSON file (its unique paragraphs), or a folder of any of these (recursively, sorted).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from ember.model.errors import ConfigError

TEXT_SUFFIXES = (".txt", ".md")


def squad_paragraphs(path: Path) -> Iterator[str]:
    """The unique contexts of a SQuAD v1/v2 file, in file order."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        articles = data["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: not a SQuAD JSON file ({e})") from e
    seen: set[str] = set()
    for article in articles:
        for paragraph in article["paragraphs"]:
            text = paragraph["context"]
            if text not in seen:
                seen.add(text)
                yield text


def _jsonl_texts(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ConfigError(f"{path}:{n}: expected a JSON object with a 'text' field ({e})") from e
            if not isinstance(text, str):
                raise ConfigError(f"{path}:{n}: 'text' must be a string")
            yield text


def iter_file(path: Path) -> Iterator[str]:
    if path.suffix in TEXT_SUFFIXES:
        yield path.read_text(encoding="utf-8", errors="replace")
    elif path.suffix == ".jsonl":
        yield from _jsonl_texts(path)
    elif path.suffix == ".json":
        yield from squad_paragraphs(path)
    else:
        raise ConfigError(f"{path}: unsupported corpus file", hint="Use .txt, .md, .jsonl ({\"text\": ...}) or "
                                                                   "a SQuAD .json file, or a folder of them.")


def iter_documents(paths: Sequence[str | Path]) -> Iterator[str]:
    """Every non-empty document under `paths`, streamed (never the whole corpus in memory)."""
    if not paths:
        raise ConfigError("no corpus given")
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (*TEXT_SUFFIXES, ".jsonl"))
            if not files:
                raise ConfigError(f"{p}: no .txt, .md or .jsonl files in this folder")
        elif p.is_file():
            files = [p]
        else:
            raise ConfigError(f"{p}: no such file or folder")
        for f in files:
            for text in iter_file(f):
                if text.strip():
                    yield text
